#!/usr/bin/env bash
# A private single-node Slurm 22.05 for the tests (Debian 12, as root):
#
#   scripts/slurm-up.sh DIR     # prints SLURM_CONF=DIR/slurm.conf once the node is idle
#   SLURM_CONF=DIR/slurm.conf srun -n 4 --mpi=pmi2 pmibridge wrap -- ./prog
#   scripts/slurm-down.sh DIR   # cancels the jobs, stops what slurm-up started, by pid
#
# Installs slurmctld slurmd slurm-client munge when missing (apt-get, noninteractive). Everything
# else lives in DIR (created; must not exist or be empty): a munged of its own on DIR/munge/socket
# (the package's key; the machine's munged, if any, is not touched), slurm.conf with free ports,
# spool, state, logs and pid files. The pids of what it starts are in DIR/pids, one "name pid" a
# line; slurm-down.sh stops exactly those (never by name). On failure it prints the logs' tails,
# stops what it started and exits 1.
#
# The node says CPUs=8 (SlurmdParameters=config_overrides) so 8 tasks fit on a small machine;
# ProctrackType=proctrack/linuxproc and TaskPlugin=task/none need no cgroup set-up.
# SLURM_UP_TIMEOUT (seconds, default 60) bounds the wait for the node to be idle.
# SLURM_UP_WATCH_PID=PID: also start a guard that runs slurm-down.sh DIR once PID is gone, so the
# daemons never outlive a test process that was killed before its teardown (recorded as "guard").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: slurm-up.sh DIR}"
timeout="${SLURM_UP_TIMEOUT:-60}"

if [ "$(id -u)" -ne 0 ]; then
  echo "slurm-up: needs root (slurmd runs the tasks as their user; munged and the daemons as root/munge)" >&2
  exit 1
fi

packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "slurm-up: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d or not, the packages' own services are of no use here: ours are private.
  # Two test files may bring their Slurm up at once: wait for the other's dpkg lock.
  apt=(apt-get -o DPkg::Lock::Timeout=300)
  "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    { "${apt[@]}" update -qq >&2 && "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2; }
fi
for c in munged munge slurmctld slurmd srun sinfo scontrol setpriv ss; do
  command -v "$c" >/dev/null || { echo "slurm-up: $c not found" >&2; exit 1; }
done
[ -r /etc/munge/munge.key ] || { echo "slurm-up: /etc/munge/munge.key missing (the munge package creates it)" >&2; exit 1; }

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [ -n "$(ls -A "$dir")" ]; then
  echo "slurm-up: $dir is not empty" >&2
  exit 1
fi
# Slurm needs the spool dir 755, munged a socket dir of its own user that others may not write.
chmod 755 "$dir"
install -d -o munge -g munge -m 755 "$dir/munge"
install -d -m 755 "$dir/spool" "$dir/state" "$dir/log"
: >"$dir/pids"

started=()
fail() {
  echo "slurm-up: $*" >&2
  for f in "$dir"/log/*.log "$dir"/munge/munged.log; do
    [ -s "$f" ] && { echo "--- tail of $f:" >&2; tail -n 25 "$f" >&2; }
  done
  "$here/slurm-down.sh" "$dir" >&2 || true
  exit 1
}
start() { # name command… ; runs it in the background, its output in log/NAME.out, records the pid
  local name="$1"
  shift
  "$@" >"$dir/log/$name.out" 2>&1 </dev/null &
  local pid=$!
  echo "$name $pid" >>"$dir/pids"
  started+=("$pid")
}

# Two free TCP ports, chosen at random below Linux's ephemeral range (32768-60999, where srun's
# and everyone's outgoing connections get theirs), checked free with ss.
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((10000 + RANDOM % 20000))
    if ! ss -Htan "( sport = :$p )" | grep -q .; then
      echo "$p"
      return
    fi
  done
  fail "no free TCP port found"
}
ctld_port="$(free_port)"
slurmd_port="$(free_port)"
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port="$(free_port)"; done

host="$(hostname -s)"
sock="$dir/munge/socket"
cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-up.sh: a private single-node cluster for pmibridge's tests.
ClusterName=pmibridge
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
KillWait=5
InactiveLimit=0
MinJobAge=10
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=30 State=UP OverSubscribe=YES
EOF
export SLURM_CONF="$dir/slurm.conf"

start munged setpriv --reuid=munge --regid=munge --init-groups -- munged --foreground \
  --socket="$sock" --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
munge -S "$sock" -n </dev/null | unmunge -S "$sock" >/dev/null 2>&1 || fail "munged on $sock does not answer"

if [ -n "${SLURM_UP_WATCH_PID:-}" ]; then
  # setsid: a signal to the watched process's group (a test runner's timeout) does not reach it.
  start guard setsid sh -c ': pmibridge-slurm-guard; while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" "$3"' \
    sh "$SLURM_UP_WATCH_PID" "$here/slurm-down.sh" "$dir"
fi
start slurmctld slurmctld -D -i -f "$SLURM_CONF"
start slurmd slurmd -D -f "$SLURM_CONF" -N "$host"

deadline=$((SECONDS + timeout))
state=""
while [ $SECONDS -lt $deadline ]; do
  for name_pid in $(awk '$1 != "guard" {print $1 ":" $2}' "$dir/pids"); do
    kill -0 "${name_pid#*:}" 2>/dev/null || fail "${name_pid%%:*} (pid ${name_pid#*:}) exited: $(tail -n 5 "$dir/log/${name_pid%%:*}.out" 2>/dev/null)"
  done
  state="$(sinfo -h -N -n "$host" -o '%T' 2>/dev/null || true)"
  case "$state" in
    idle) break ;;
    down* | drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
[ "$state" = idle ] || fail "node $host not idle within ${timeout}s (sinfo says: ${state:-nothing})"
echo "SLURM_CONF=$SLURM_CONF"
