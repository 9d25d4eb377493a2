#!/usr/bin/env bash
# Debian packages the tests need: the real MPICH 4.0.2 peer (mpicc.mpich, mpiexec.hydra), the
# debuggers and tools the --attach and wrap tests start ranks under (gdb, lldb, valgrind), iptables
# and iproute2 for the frozen-connection tests (inside a private network namespace), and Chromium (/usr/bin/chromium) for the web
# monitor's browser test, Slurm 22.05 and munge for the Slurm tests (scripts/slurm-up.sh starts a
# private cluster; the packages' own services are not used), Slurm's libpmi2 (libpmi2-0-dev) as the PMI-2
# client the PMI-2 tests link. Never python3-mpi4py: it pulls OpenMPI
# and switches mpicc/mpiexec to it.
# Needs root; skips apt entirely when everything is present.
set -euo pipefail
packages=(mpich libmpich-dev gdb lldb valgrind iptables iproute2 systemd python3 chromium slurmctld slurmd slurm-client munge libpmi2-0-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages present: ${packages[*]}"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; run this script as root (sudo $0)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
