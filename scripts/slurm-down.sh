#!/usr/bin/env bash
# Stop the private Slurm that scripts/slurm-up.sh DIR started, by pid, never by name:
#   1. cancel its jobs and wait (10 s at most) for its queue to empty;
#   2. SIGKILL what is left of its steps: each slurmstepd that listens on a socket in DIR/spool,
#      each task whose environment names DIR/slurm.conf (SLURM_CONF) inside a step, and each srun
#      whose environment names it;
#   3. SIGTERM the daemons listed in DIR/pids (when the pid still runs that program), SIGKILL
#      whatever still runs 10 s later.
# With DIR/hosts (slurm-up.sh's SLURM_UP_HOSTS), squeue and scancel run inside the first host, and
# each node's slurmd ("slurmd@NAME" in DIR/pids) is stopped like the others.
# Idempotent; prints what it killed beyond the daemons. Exit 0 unless a pid survives SIGKILL.
set -uo pipefail
dir="${1:?usage: slurm-down.sh DIR}"
dir="$(cd "$dir" 2>/dev/null && pwd)" || exit 0
conf="$dir/slurm.conf"
pids_file="$dir/pids"

# Is PID alive and running the program NAME (its pid not reused by something else)?
runs() {
  local pid="$1" name="$2" exe
  [ -d "/proc/$pid" ] || return 1
  exe="$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" || return 1
  case "$exe" in *"$name"*) return 0 ;; *) return 1 ;; esac
}

daemon_pid() { # NAME [WHAT] -> pid of NAME in DIR/pids, when it still runs WHAT (default NAME)
  [ -f "$pids_file" ] || return 1
  local pid
  pid="$(awk -v n="$1" '$1 == n {print $2}' "$pids_file" | tail -n 1)"
  [ -n "$pid" ] && runs "$pid" "${2:-$1}" && echo "$pid"
}

# The guard (slurm-up.sh's SLURM_UP_WATCH_PID) is not needed once we run; unless we are it.
if guard="$(daemon_pid guard pmibridge-slurm-guard)" && [ "$guard" != $$ ]; then kill -TERM "$guard" 2>/dev/null || true; fi

# Slurm's clients reach slurmctld from inside the first host, when there are hosts.
pre=()
if [ -s "$dir/hosts" ]; then
  holder="$(head -n 1 "$dir/hosts" | cut -d: -f3)"
  if [ -d "/proc/$holder" ]; then pre=(nsenter -t "$holder" -n -u -i -m --); else pre=(false); fi
fi
if [ -f "$conf" ] && daemon_pid slurmctld >/dev/null; then
  export SLURM_CONF="$conf"
  jobs="$(timeout 10 "${pre[@]}" squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    timeout 10 "${pre[@]}" scancel $jobs 2>/dev/null || true
    for _ in $(seq 40); do
      [ -z "$(timeout 5 "${pre[@]}" squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.25
    done
  fi
fi

# Leftover steps: stepds own the sockets in our spool dir; their tasks, and sruns still waiting
# for them, carry our SLURM_CONF in their environment.
leftovers=()
if command -v ss >/dev/null; then
  while read -r pid; do [ -n "$pid" ] && leftovers+=("$pid"); done < <(ss -xlpn 2>/dev/null | grep -F "$dir/spool/" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
fi
for env in /proc/[0-9]*/environ; do
  pid="${env#/proc/}"
  pid="${pid%/environ}"
  [ "$pid" = $$ ] && continue
  e="$({ tr '\0' '\n' <"$env"; } 2>/dev/null)" || continue
  grep -qxF "SLURM_CONF=$conf" <<<"$e" || continue
  if grep -q '^SLURM_STEP_ID=' <<<"$e" || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = srun ]; then leftovers+=("$pid"); fi
done
for pid in "${leftovers[@]}"; do
  [ -d "/proc/$pid" ] || continue
  echo "slurm-down: killing leftover $({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | cut -c1-80) (pid $pid)"
  kill -KILL "$pid" 2>/dev/null || true
done

daemons=()
slurmds=()
[ -f "$pids_file" ] && mapfile -t slurmds < <(awk '$1 ~ /^slurmd@/ {print $1}' "$pids_file" | sort -u)
for name in slurmd "${slurmds[@]}" slurmctld munged; do
  pid="$(daemon_pid "$name" "${name%%@*}")" || continue
  kill -TERM "$pid" 2>/dev/null || true
  daemons+=("${name%%@*}:$pid")
done
for _ in $(seq 100); do
  alive=0
  for d in "${daemons[@]}"; do runs "${d#*:}" "${d%%:*}" && alive=1; done
  [ $alive -eq 0 ] && break
  sleep 0.1
done
rc=0
for d in "${daemons[@]}"; do
  if runs "${d#*:}" "${d%%:*}"; then
    echo "slurm-down: ${d%%:*} (pid ${d#*:}) ignored SIGTERM for 10 s; SIGKILL"
    kill -KILL "${d#*:}" 2>/dev/null || true
    sleep 0.2
    runs "${d#*:}" "${d%%:*}" && rc=1
  fi
done
exit $rc
