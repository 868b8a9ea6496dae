#!/usr/bin/env bash
# Start, inspect and stop a three-node Switchyard cluster on this machine, one node per
# loopback address (127.0.0.1, .2, .3), for trying the cluster by hand.
#
#   scripts/cluster-local.sh start    # builds (debug) if needed, starts 3 nodes
#   scripts/cluster-local.sh status   # PIDs, readiness and Raft status of each node
#   scripts/cluster-local.sh stop     # SIGTERM to the PIDs this script started
#   scripts/cluster-local.sh kill N   # SIGKILL node N (1-3), to watch a failover
#   scripts/cluster-local.sh start-node N
#   scripts/cluster-local.sh restart-node N  # SIGTERM node N, wait for it to exit, start it
#                                            # again, wait until it is ready (a rolling restart
#                                            # step: `switchyard bench run --restart-cmd`)
#
# Environment: SWITCHYARD_BIN (binary; default target/debug/switchyard), CONFIG (config file;
# default config.toml), CLUSTER_DIR (state,
# logs, PIDs; default ./cluster-local), PORT_BASE (client port; admin = +1, cluster = +100;
# default 8000, so 127.0.0.N:8000 / :8001 / :8100).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SWITCHYARD_BIN:-target/debug/switchyard}
CONFIG=${CONFIG:-config.toml}
DIR=${CLUSTER_DIR:-./cluster-local}
PORT=${PORT_BASE:-8000}
IPS=(127.0.0.1 127.0.0.2 127.0.0.3)

pid_of() { cat "$DIR/node-$1/pid" 2>/dev/null || true; }
# A zombie (exited, not yet reaped by whoever inherited it) is not alive.
alive() {
  local p; p=$(pid_of "$1")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$p/status" 2>/dev/null
}

start_node() {
  local n=$1
  if alive "$n"; then echo "node $n already running (pid $(pid_of "$n"))"; return; fi
  mkdir -p "$DIR/node-$n"
  # Channel options and secrets come from the shipped config.toml; identity, addresses and
  # the voter list are layered on top as SWITCHYARD_* environment variables.
  (
    # SWITCHYARD_* variables are config keys to the node: not this script's own.
    config=$CONFIG
    unset SWITCHYARD_BIN CONFIG
    set -a
    SWITCHYARD_NODE__ID=$n
    SWITCHYARD_NODE__DATA_DIR="$DIR/node-$n/data"
    SWITCHYARD_CLIENT__LISTEN="${IPS[$(( n - 1 ))]}:$PORT"
    SWITCHYARD_ADMIN__LISTEN="${IPS[$(( n - 1 ))]}:$(( PORT + 1 ))"
    SWITCHYARD_CLUSTER__LISTEN="${IPS[$(( n - 1 ))]}:$(( PORT + 100 ))"
    SWITCHYARD_CLUSTER__PEERS="[{id=1,addr=\"${IPS[0]}:$(( PORT + 100 ))\"},{id=2,addr=\"${IPS[1]}:$(( PORT + 100 ))\"},{id=3,addr=\"${IPS[2]}:$(( PORT + 100 ))\"}]"
    set +a
    exec "$BIN" serve --config "$config"
  ) > "$DIR/node-$n/log" 2>&1 &
  echo $! > "$DIR/node-$n/pid"
  echo "node $n started: pid $!, ws://${IPS[$(( n - 1 ))]}:$PORT/connection/websocket, log $DIR/node-$n/log"
}

case "${1:-}" in
  start)
    [ -x "$BIN" ] || cargo build
    for n in 1 2 3; do start_node "$n"; done
    echo "waiting for readiness…"
    for _ in $(seq 1 100); do
      ready=0
      for n in 1 2 3; do
        curl -fsS "http://${IPS[$(( n - 1 ))]}:$(( PORT + 1 ))/readyz" >/dev/null 2>&1 && ready=$(( ready + 1 ))
      done
      [ "$ready" = 3 ] && { echo "cluster ready"; exit 0; }
      sleep 0.2
    done
    echo "cluster not ready after 20 s; see $DIR/node-*/log" >&2; exit 1
    ;;
  start-node) start_node "${2:?node number}";;
  restart-node)
    n=${2:?node number}; p=$(pid_of "$n")
    if alive "$n"; then
      kill -TERM "$p"
      for _ in $(seq 1 300); do alive "$n" || break; sleep 0.1; done
      if alive "$n"; then echo "node $n (pid $p) did not exit within 30 s" >&2; exit 1; fi
      echo "node $n (pid $p) stopped"
    fi
    start_node "$n"
    for _ in $(seq 1 300); do
      curl -fsS "http://${IPS[$(( n - 1 ))]}:$(( PORT + 1 ))/readyz" >/dev/null 2>&1 && { echo "node $n ready"; exit 0; }
      sleep 0.1
    done
    echo "node $n not ready after 30 s; see $DIR/node-$n/log" >&2; exit 1
    ;;
  status)
    for n in 1 2 3; do
      if alive "$n"; then
        echo "node $n pid $(pid_of "$n"): $(curl -s "http://${IPS[$(( n - 1 ))]}:$(( PORT + 1 ))/cluster/status" || echo unreachable)"
      else
        echo "node $n: not running"
      fi
    done
    ;;
  kill)
    n=${2:?node number}; p=$(pid_of "$n")
    if alive "$n"; then kill -KILL "$p"; echo "node $n (pid $p) killed"; else echo "node $n not running"; fi
    ;;
  stop)
    for n in 1 2 3; do
      if alive "$n"; then kill -TERM "$(pid_of "$n")"; echo "node $n: SIGTERM"; fi
    done
    for n in 1 2 3; do
      for _ in $(seq 1 150); do alive "$n" || break; sleep 0.1; done
      rm -f "$DIR/node-$n/pid"
    done
    ;;
  *) sed -n '2,17p' "$0"; exit 2;;
esac
