#!/usr/bin/env bash
# Install a single-node SLURM (slurmctld, slurmd, client tools) and munge.
#
# Idempotent: does nothing when the binaries are already there. Used by CI
# before the slow tests; tests/slurm_cluster.py starts the daemons itself
# (in a temp dir), so nothing is configured or started here.
#
#   sudo .ci/install_slurm.sh
set -euo pipefail

need=(sbatch squeue scontrol slurmctld slurmd munged)
missing=0
for b in "${need[@]}"; do
    # slurmctld/slurmd/munged live in /usr/sbin, which is not on every PATH.
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing=1
done
if [ "$missing" = 0 ]; then
    echo "slurm and munge are already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge

# The munge package normally creates a key; make sure one exists.
if [ ! -s /etc/munge/munge.key ]; then
    $SUDO mungekey --create --force
    $SUDO chown munge:munge /etc/munge/munge.key
    $SUDO chmod 400 /etc/munge/munge.key
fi
echo "installed: $(dpkg-query -W -f '${Package} ${Version}, ' slurmctld slurmd slurm-client munge)"
