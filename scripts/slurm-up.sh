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
#
# Several hosts (test/fixtures/slurm-hosts.ts): SLURM_UP_HOSTS="h1:10.77.0.1:PID h2:10.77.0.2:PID"
# names hosts already set up as namespaces (test/fixtures/hosts.ts), each entered with
# `nsenter -t PID -n -u -i -m` (its holder's network, UTS, IPC and mount namespaces; not
# `ip netns exec`, which remounts /sys). Then slurmctld runs in the first host, one `slurmd -N NAME`
# in each (NodeName=NAME NodeAddr=ADDR CPUs=4; spool, log and pid file per node), munged stays
# here (its socket is a path in DIR, reachable from every host); the list is kept in DIR/hosts for
# slurm-down.sh, and srun, sinfo or scontrol must run inside a host.
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

# SLURM_UP_HOSTS: name:addr:holder-pid per host; in_host runs a command inside the first host.
hosts=()
read -r -a hosts <<<"${SLURM_UP_HOSTS:-}"
for h in "${hosts[@]}"; do
  IFS=: read -r hn ha hp <<<"$h"
  [[ "$hn" =~ ^[a-z][a-z0-9-]*$ && "$ha" =~ ^[0-9.]+$ && "$hp" =~ ^[0-9]+$ ]] || { echo "slurm-up: bad SLURM_UP_HOSTS entry $h (name:addr:pid)" >&2; exit 1; }
  kill -0 "$hp" 2>/dev/null || { echo "slurm-up: host $hn: no process $hp to enter" >&2; exit 1; }
  install -d -m 755 "$dir/spool/$hn" # each node's own spool, made before its slurmd starts
  echo "$h" >>"$dir/hosts"
done
host_pid() { local h; for h in "${hosts[@]}"; do [ "${h%%:*}" = "$1" ] && { echo "${h##*:}"; return; }; done; return 1; }
enter_args() { # NAME -> the command prefix that enters host NAME, one word a line (none without SLURM_UP_HOSTS)
  [ ${#hosts[@]} -eq 0 ] || printf '%s\n' nsenter -t "$(host_pid "$1")" -n -u -i -m --
}
enter() { # NAME command… : run inside host NAME
  local pre=()
  mapfile -t pre < <(enter_args "$1")
  shift
  "${pre[@]}" "$@"
}

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
if [ ${#hosts[@]} -eq 0 ]; then
  ctld_port="$(free_port)"
  slurmd_port="$(free_port)"
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port="$(free_port)"; done
  host="$(hostname -s)"
  ctld_addr=127.0.0.1
  node_files=""
  nodes="NodeName=$host NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN"
  node_names="$host"
else
  # The hosts' network namespaces are ours alone: Slurm's own ports are free there.
  ctld_port=6817
  slurmd_port=6818
  IFS=: read -r host ctld_addr _ <<<"${hosts[0]}"
  node_files="/%n"
  nodes=""
  node_names=""
  for h in "${hosts[@]}"; do
    IFS=: read -r hn ha _ <<<"$h"
    nodes+="NodeName=$hn NodeAddr=$ha CPUs=4 State=UNKNOWN"$'\n'
    node_names+="${node_names:+,}$hn"
  done
fi
sock="$dir/munge/socket"
cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-up.sh: a private single-node cluster for pmibridge's tests.
ClusterName=pmibridge
SlurmctldHost=$host($ctld_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool$node_files
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd${node_files:+-%n}.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd${node_files:+-%n}.log
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
$nodes
PartitionName=test Nodes=$node_names Default=YES MaxTime=30 State=UP OverSubscribe=YES
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
# The prefix is an external command (nsenter execs the daemon): the pid recorded is the daemon's.
mapfile -t pre < <(enter_args "$host")
start slurmctld "${pre[@]}" slurmctld -D -i -f "$SLURM_CONF"
if [ ${#hosts[@]} -eq 0 ]; then
  start slurmd slurmd -D -f "$SLURM_CONF" -N "$host"
else
  for h in "${hosts[@]}"; do
    mapfile -t pre < <(enter_args "${h%%:*}")
    start "slurmd@${h%%:*}" "${pre[@]}" slurmd -D -f "$SLURM_CONF" -N "${h%%:*}"
  done
fi

deadline=$((SECONDS + timeout))
state=""
while [ $SECONDS -lt $deadline ]; do
  for name_pid in $(awk '$1 != "guard" {print $1 ":" $2}' "$dir/pids"); do
    kill -0 "${name_pid#*:}" 2>/dev/null || fail "${name_pid%%:*} (pid ${name_pid#*:}) exited: $(tail -n 5 "$dir/log/${name_pid%%:*}.out" 2>/dev/null)"
  done
  # One "NAME STATE" line per node; idle once every node is.
  lines="$(enter "$host" sinfo -h -N -n "$node_names" -o '%N %T' 2>/dev/null | sort -u || true)"
  state="$(tr '\n' ' ' <<<"$lines")"
  if [ -n "$lines" ] && [ "$(grep -c ' idle$' <<<"$lines")" -eq "$(tr ',' '\n' <<<"$node_names" | wc -l)" ] && [ "$(wc -l <<<"$lines")" -eq "$(tr ',' '\n' <<<"$node_names" | wc -l)" ]; then
    state=idle
    break
  fi
  case "$state" in
    *down* | *drain*) enter "$host" scontrol update NodeName="$node_names" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
[ "$state" = idle ] || fail "nodes $node_names not all idle within ${timeout}s (sinfo says: ${state:-nothing})"
echo "SLURM_CONF=$SLURM_CONF"
