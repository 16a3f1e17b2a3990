#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the cluster tests: Debian's slurmctld, slurmd
# and munge, a fake GPU (gres gpu:fake:1 on /dev/null; its model name lets the tests ask for it by
# gpu_model), no accounting database (the workflow's profile
# asks the executor plugin for squeue-based status). Needs root.
#   tests/cluster/slurm.sh up     install if needed, configure, start, wait until the node is idle
#   tests/cluster/slurm.sh down   stop the daemons and remove the state
set -euo pipefail
STATE=${SLURM_TEST_STATE:-/var/lib/cvm-cervix-slurm-test}
HOST=$(hostname -s)

install() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
  fi
}

configure() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
  mkdir -p /etc/slurm "$STATE"/{ctld,d,log} /run/munge
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=cvmtest
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ReturnToService=2
MinJobAge=3600
KillWait=30
SlurmdTimeout=60
NodeName=$HOST CPUs=$cpus RealMemory=$mem Gres=gpu:fake:1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
Name=gpu Type=fake File=/dev/null
CONF
  chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
}

stop_daemons() {
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  sleep 1
}

up() {
  install
  stop_daemons  # always a fresh cluster with this configuration
  configure
  runuser -u munge -- /usr/sbin/munged
  slurmctld -c
  slurmd
  for _ in $(seq 60); do
    if sinfo -h -N -o '%t' 2>/dev/null | grep -qx 'idle'; then
      sinfo -N -o '%N %t %G %c %m'
      return 0
    fi
    sleep 1
  done
  echo "the SLURM node did not become idle; logs:" >&2
  tail -n 30 "$STATE"/log/*.log >&2 || true
  sinfo -N -l >&2 || true
  return 1
}

down() {
  scancel --user="$(id -un)" 2>/dev/null || true
  stop_daemons
  rm -rf "$STATE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
