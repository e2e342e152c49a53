#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to try (and test) the cluster path without a cluster.
#
#   bash tools/misc/local_slurm.sh start    # idempotent; waits until the node is idle
#   bash tools/misc/local_slurm.sh status   # exit 0 if sinfo answers
#   bash tools/misc/local_slurm.sh stop     # stops only the daemons this script started
#
# Debian/Ubuntu's slurm-wlm + munge, no systemd and no cgroups: munged as the munge user,
# slurmctld and slurmd as root, proctrack/pgid (proctrack/linuxproc leaked a cancelled job's
# child in 5 of ~50 tries), task/none, select/cons_tres with CR_Core, one node at 127.0.0.1 with
# CPUs from nproc. With ACON_MM_SLURM_INSTALL=1 (and root) `start` installs the packages with
# apt-get when they are missing. State, logs and pid files: $ACON_MM_SLURM_DIR
# (default /tmp/acon-mm-slurm). The config goes to /etc/slurm/slurm.conf, where the Slurm
# commands look for it, only if no other Slurm config is there (an existing cluster's
# config is never touched: then `start` refuses). Needs root (the daemons, /etc/slurm).
set -euo pipefail

DIR="${ACON_MM_SLURM_DIR:-/tmp/acon-mm-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by acon-mm tools/misc/local_slurm.sh"
NODE="$(hostname -s)"
log() { printf '[local_slurm %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

answers() { timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -q .; }

alive() {  # alive PIDFILE: the process of the pid file runs
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
  [[ "${ACON_MM_SLURM_INSTALL:-0}" == 1 ]] ||
    die "slurm-wlm/munge are not installed; install them (apt-get install slurm-wlm munge) or set ACON_MM_SLURM_INSTALL=1"
  [[ $EUID == 0 ]] || die "installing slurm-wlm needs root"
  log "installing slurm-wlm and munge (apt-get)"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q slurm-wlm munge >"$DIR/apt.log" 2>&1 ||
    die "apt-get install slurm-wlm munge failed: see $DIR/apt.log"
}

write_conf() {
  if [[ -f "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script: this machine has a Slurm config; not touching it"
  fi
  mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
  cat >"$CONF.tmp" <<EOF
$MARK
ClusterName=acon-mm-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start() {
  [[ $EUID == 0 ]] || die "start needs root (the daemons and $CONF)"
  mkdir -p "$DIR"
  if answers && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
    log "already running (node $NODE)"; return 0
  fi
  install_packages
  write_conf
  if ! alive "$DIR/munged.pid"; then
    [[ -f /etc/munge/munge.key ]] || { /usr/sbin/mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
    chmod 0755 /run/munge
    # munged writes its pid file as the munge user: into its own run dir, then copied
    rm -f /run/munge/acon-mm-munged.pid
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/acon-mm-munged.pid --force
    for _ in $(seq 50); do [[ -s /run/munge/acon-mm-munged.pid ]] && break; sleep 0.1; done
    cp /run/munge/acon-mm-munged.pid "$DIR/munged.pid" 2>/dev/null ||
      die "munged did not start (see /var/log/munge/munged.log)"
  fi
  alive "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -i
  alive "$DIR/slurmd.pid" || /usr/sbin/slurmd
  for _ in $(seq 60); do
    state="$(timeout 5 sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true)"
    if [[ "$state" == idle* || "$state" == mixed* || "$state" == allocated* ]]; then
      log "running: node $NODE $state, $(nproc) CPUs, partition debug (logs in $DIR)"; return 0
    fi
    sleep 0.5
  done
  die "the node did not become idle within 30 s (state '${state:-none}'); see $DIR/slurmctld.log, $DIR/slurmd.log"
}

stop() {
  local name
  for name in slurmd slurmctld munged; do
    if alive "$DIR/$name.pid"; then
      kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
      for _ in $(seq 50); do alive "$DIR/$name.pid" || break; sleep 0.1; done
      alive "$DIR/$name.pid" && kill -9 "$(cat "$DIR/$name.pid")" 2>/dev/null || true
      log "stopped $name"
    fi
    rm -f "$DIR/$name.pid"
  done
  if [[ -f "$CONF" ]] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if answers; then sinfo; else log "no Slurm answers here"; exit 1; fi ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
