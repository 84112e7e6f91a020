#!/usr/bin/env bash
# A Valkey (or Redis) server from Debian's packages on 127.0.0.1, without systemd: the shared limits
# store of several gateways (`store: {url: redis://127.0.0.1:PORT/0}` in serving/gateway.yaml), for the
# test suite and for trying scale-out on one machine.
#
#   scripts/valkey-local.sh start PORT DIR    install if missing, start on 127.0.0.1:PORT with data in DIR, wait
#   scripts/valkey-local.sh stop PORT DIR     stop the server this script started there (by PID)
#   scripts/valkey-local.sh status PORT DIR
#
# valkey-server is used when Debian has it, else redis-server (Debian 12 ships only Redis 7.0). Data is
# kept in DIR with an append-only file (fsync every second), so budgets survive a restart of the server.
# Installing needs root; running does not. Idempotent: `start` on a port where our server runs changes
# nothing. Knob: VALKEY_WAIT_S (default 20).
set -euo pipefail

WAIT_S=${VALKEY_WAIT_S:-20}

die() { echo "valkey-local: $*" >&2; exit 1; }
log() { echo "valkey-local: $*" >&2; }

server_bin() {  # the first of valkey-server, redis-server on PATH
  command -v valkey-server || command -v redis-server || true
}

cli_bin() {
  command -v valkey-cli || command -v redis-cli || true
}

install_packages() {
  [ -n "$(server_bin)" ] && [ -n "$(cli_bin)" ] && return 0
  [ "$(id -u)" -eq 0 ] || die "neither valkey-server nor redis-server is installed, and installing needs root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  local pkg=redis-server
  if apt-cache policy valkey-server 2>/dev/null | grep -q 'Candidate: [0-9]'; then pkg=valkey-server; fi
  log "installing $pkg"
  # the package's own service is not wanted: keep invoke-rc.d from starting it where nothing else does
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1; fi
  apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null || { [ $made_policy = 1 ] && rm -f "$policy"; die "apt-get install $pkg failed"; }
  [ $made_policy = 1 ] && rm -f "$policy"
  [ -n "$(server_bin)" ] || die "$pkg installed, but no valkey-server or redis-server on PATH"
}

alive() {  # alive DIR -> 0 if the PID recorded in DIR is a running valkey/redis server
  local f=$1/server.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -r "/proc/$pid/comm" ] && grep -qE '^(valkey|redis)-server' "/proc/$pid/comm"
}

ping() {  # ping PORT -> 0 when the server answers PONG
  [ "$("$(cli_bin)" -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

cmd_start() {
  local port=$1 dir=$2
  install_packages
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if alive "$dir"; then ping "$port" && return 0; die "a server from $dir runs but does not answer on port $port"; fi
  ping "$port" && die "port $port already has another server; choose another port"
  setsid "$(server_bin)" --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize no \
    --appendonly yes --appendfsync everysec --save "" --protected-mode yes \
    --logfile "$dir/server.log" </dev/null >/dev/null 2>&1 &
  local pid=$!
  echo $pid >"$dir/server.pid"
  local deadline=$((SECONDS + WAIT_S))
  until ping "$port"; do  # (until it has exec'd, the child is not yet called *-server: watch the PID)
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir/server.log" >&2 || true; die "the server exited; see $dir/server.log"; }
    [ $SECONDS -lt $deadline ] || { kill -TERM "$pid" 2>/dev/null || true; die "no answer on 127.0.0.1:$port after ${WAIT_S}s; see $dir/server.log"; }
    sleep 0.1
  done
  log "up: $(basename "$(server_bin)") on 127.0.0.1:$port (data: $dir)"
}

cmd_stop() {
  local dir=$2 pid
  [ -d "$dir" ] || { log "stopped"; return 0; }
  if alive "$dir"; then
    pid=$(cat "$dir/server.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/server.pid"
  log "stopped"
}

cmd_status() {
  local port=$1 dir=$2
  if alive "$dir" && ping "$port"; then echo "running (pid $(cat "$dir/server.pid"), port $port)"; else echo "not running"; fi
}

[ $# -eq 3 ] || { echo "usage: $0 start|stop|status PORT DIR" >&2; exit 2; }
[[ $2 =~ ^[0-9]+$ ]] && [ "$2" -gt 0 ] && [ "$2" -lt 65536 ] || die "PORT must be a number from 1 to 65535, not '$2'"
case "$1" in
  start) cmd_start "$2" "$3" ;;
  stop) cmd_stop "$2" "$3" ;;
  status) cmd_status "$2" "$3" ;;
  *) echo "usage: $0 start|stop|status PORT DIR" >&2; exit 2 ;;
esac
