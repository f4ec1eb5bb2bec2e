#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the `cluster` tests and for trying the slurm executor:
#
#   scripts/slurm-local.sh start     # install slurm-wlm + munge (Debian, as root) if needed, start, wait for sinfo
#   scripts/slurm-local.sh status    # sinfo and squeue
#   scripts/slurm-local.sh stop      # cancel its jobs, stop the daemons it started
#
# Exit code 3: SLURM is not installed and cannot be (not root, no apt-get, the packages cannot be fetched);
# any other failure to start is 1 (the logs' tails are printed).
# Runs as root without systemd (CI machines, containers): the daemons are started directly and stopped by the
# pids they wrote. slurm.conf is generated for this host (`slurmd -C`: CPUs, memory) into /etc/slurm (the
# clients' default place), marked as ours; a slurm.conf that this script did not write is never touched.
# State, spool and logs go to $SLURM_LOCAL_DIR (default /tmp/cmrprior-slurm). No accounting database: job
# states come from squeue (what cmrprior's slurm executor reads). KillWait (the time between a cancelled job's
# SIGTERM and its SIGKILL) is SLURM's default, 30 s, as on real clusters: a job that ignored SIGTERM would run on.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/cmrprior-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by cmrprior scripts/slurm-local.sh"
READY_TIMEOUT="${SLURM_LOCAL_TIMEOUT:-90}"

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }
cannot_install() { echo "slurm-local: cannot install SLURM: $*" >&2; exit 3; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
      && command -v sinfo >/dev/null; then
    return
  fi
  [ "$(id -u)" -eq 0 ] || cannot_install "slurm-wlm and munge are not installed and this is not root"
  command -v apt-get >/dev/null || cannot_install "slurm-wlm and munge are not installed and there is no apt-get"
  say "installing slurm-wlm and munge"
  apt-get update -qq || cannot_install "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
    || cannot_install "apt-get install slurm-wlm munge failed"
}

write_conf() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script: not touching it (stop that cluster or use it)"
  fi
  local node host
  host="$(hostname -s)"
  # slurmd -C: "NodeName=host CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=.."
  node="$(slurmd -C | head -n 1)"
  [ -n "$node" ] || die "slurmd -C printed nothing"
  mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
  cat >"$CONF" <<EOF
$MARK
ClusterName=cmrprior-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=60
SlurmdTimeout=60
$node State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  say "wrote $CONF ($node)"
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return  # a munged already answers
  fi
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  chmod 0755 /run/munge
  if command -v runuser >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
  else
    su -s /bin/sh munge -c /usr/sbin/munged
  fi
  cp /run/munge/munged.pid "$DIR/munged.pid" 2>/dev/null || true
  munge -n </dev/null | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install_packages
  mkdir -p "$DIR"
  write_conf
  start_munge
  alive "$DIR/slurmctld.pid" || slurmctld
  alive "$DIR/slurmd.pid" || slurmd
  local host t0
  host="$(hostname -s)"
  t0=$(date +%s)
  until sinfo -h -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; do
    if sinfo -h -o "%T" 2>/dev/null | grep -qE "^(down|drain)"; then
      scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$READY_TIMEOUT" ]; then
      sinfo >&2 || true
      tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
      die "the node is not ready after ${READY_TIMEOUT}s (logs: $DIR/slurmctld.log, $DIR/slurmd.log)"
    fi
    sleep 1
  done
  say "ready in $(( $(date +%s) - t0 ))s:"
  sinfo
}

stop() {
  if command -v scancel >/dev/null && alive "$DIR/slurmctld.pid"; then
    scancel --user "$(id -un)" >/dev/null 2>&1 || true
  fi
  local pid
  for name in slurmd slurmctld munged; do
    if alive "$DIR/$name.pid"; then
      pid="$(cat "$DIR/$name.pid")"
      kill "$pid" && say "stopped $name (pid $pid)"
    fi
    rm -f "$DIR/$name.pid"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
