#!/usr/bin/env bash
# A real single-node Slurm cluster (slurmctld + slurmd + munged from Debian) on this machine, without
# systemd: for the test suite and for users who want to try `gptnl slurm` and `--executor slurm` locally.
#
#   scripts/slurm-local.sh start    install if missing, write slurm.conf from `slurmd -C`, start, wait for idle
#   scripts/slurm-local.sh stop     cancel jobs, stop only the daemons this script started (by PID)
#   scripts/slurm-local.sh status
#
# Knobs: SLURM_NODE_CPUS=N (advertise N CPUs; lets more 1-CPU jobs run at once on a small machine),
#        SLURM_KEEP_STATE=1 (keep job state across a cold start), SLURM_WAIT_S (default 60).
# Needs root (it installs packages and runs the daemons as their users). Idempotent: a second `start`
# while the cluster is up changes nothing unless the generated config changed.
set -euo pipefail

RUN=/run/gptnl-slurm
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
STATE=/var/lib/slurm
WAIT_S=${SLURM_WAIT_S:-60}
NODE=$(hostname -s)

die() { echo "slurm-local: $*" >&2; exit 1; }
log() { echo "slurm-local: $*" >&2; }

alive() {  # alive NAME -> 0 if the PID recorded for NAME is that daemon
  local f=$RUN/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ]
}

install_packages() {
  local missing=()
  for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

write_conf() {  # prints "changed" when the config file changed
  local hw cpus sockets cores threads mem overrides=""
  hw=$(slurmd -C | head -n1)
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  sockets=$(sed -n 's/.*Boards=1 SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")
  cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")
  threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot read the node's hardware from 'slurmd -C': $hw"
  sockets=${sockets:-1}; cores=${cores:-$cpus}; threads=${threads:-1}
  if [ -n "${SLURM_NODE_CPUS:-}" ] && [ "$SLURM_NODE_CPUS" != "$cpus" ]; then
    cpus=$SLURM_NODE_CPUS; sockets=1; cores=$cpus; threads=1
    overrides="SlurmdParameters=config_overrides"
  fi
  mkdir -p /etc/slurm
  local tmp
  tmp=$(mktemp /etc/slurm/.slurm.conf.XXXXXX)
  cat >"$tmp" <<EOF
# Written by gptnl scripts/slurm-local.sh from 'slurmd -C'; rewritten on every start.
ClusterName=gptnl-local
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
EnforcePartLimits=ALL
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ProctrackType=proctrack/pgid
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.txt
MinJobAge=3600
KillWait=5
InactiveLimit=0
GresTypes=gpu
$overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  chmod 644 "$tmp"
  if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then rm -f "$tmp"; else mv -f "$tmp" "$CONF"; echo changed; fi
}

start_munge() {
  alive munged && return 0
  [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (the munge package creates it)"
  chown munge:munge /etc/munge/munge.key /etc/munge /var/lib/munge /var/log/munge
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
  setsid setpriv --reuid=munge --regid=munge --init-groups munged --foreground \
    </dev/null >"$LOGDIR/munged.out" 2>&1 &
  echo $! >"$RUN/munged.pid"
  for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && return 0; sleep 0.1; done
  die "munged did not start; see $LOGDIR/munged.out"
}

start_daemon() {  # start_daemon NAME ARGS...
  local name=$1; shift
  alive "$name" && return 0
  setsid "$name" "$@" </dev/null >"$LOGDIR/$name.out" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

stop_daemon() {
  local name=$1 pid
  if alive "$name"; then
    pid=$(cat "$RUN/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
}

wait_idle() {
  local deadline=$((SECONDS + WAIT_S)) state resumed=0
  until scontrol ping 2>/dev/null | grep -q UP; do
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$LOGDIR/slurmctld.log" >&2 || true; die "slurmctld did not come up"; }
    sleep 0.2
  done
  while :; do
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1)
    case "$state" in
      idle|mixed|allocated) return 0 ;;
      inval*) tail -n 20 "$LOGDIR/slurmd.log" >&2 || true; die "node $NODE is invalid (see above)" ;;
      down*|drain*) if [ $resumed -eq 0 ]; then scontrol update nodename="$NODE" state=resume 2>/dev/null || true; resumed=1; fi ;;
    esac
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$LOGDIR/slurmd.log" >&2 || true; die "node $NODE is '$state', not idle, after ${WAIT_S}s"; }
    sleep 0.2
  done
}

cmd_start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (installs packages and starts daemons as their users)"
  install_packages
  mkdir -p "$RUN" "$LOGDIR" "$STATE/slurmctld" "$STATE/slurmd"
  chown slurm:slurm "$LOGDIR" "$STATE/slurmctld"
  getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts
  local changed
  changed=$(write_conf)
  if [ -n "$changed" ] && { alive slurmctld || alive slurmd; }; then
    log "config changed; restarting"
    stop_daemon slurmd; stop_daemon slurmctld
  fi
  if ! alive slurmctld && ! alive slurmd && [ "${SLURM_KEEP_STATE:-0}" != 1 ]; then
    # A cold start with old state would rerun whatever was running when the cluster died.
    rm -rf "${STATE:?}/slurmctld/"* "${STATE:?}/slurmd/"*
  fi
  start_munge
  start_daemon slurmctld -D -i
  start_daemon slurmd -D -N "$NODE"
  wait_idle
  log "up: node $NODE $(sinfo -h -N -o '%c CPUs %m MB %T' | head -n1)"
}

cmd_stop() {
  if alive slurmctld; then
    scancel --full --state=RUNNING,PENDING,SUSPENDED -u "$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
  fi
  stop_daemon slurmd; stop_daemon slurmctld; stop_daemon munged
  for f in /run/slurmctld.pid /run/slurmd.pid; do
    [ -f "$f" ] && ! [ -d "/proc/$(cat "$f")" ] && rm -f "$f"
  done
  log "stopped"
}

cmd_status() {
  for d in munged slurmctld slurmd; do
    if alive $d; then echo "$d running (pid $(cat $RUN/$d.pid))"; else echo "$d not running"; fi
  done
  alive slurmctld && sinfo -N || true
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
