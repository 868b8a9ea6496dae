#!/usr/bin/env bash
# The write-path figures of issue #13, for two server binaries in one run (so they share the
# box's noise), each scenario alternating between them ROUNDS times. The load generator is
# always the NEW binary's `switchyard bench` (a client of the public interfaces only), so
# the older server is measured by the same generator.
#
#   scripts/measure-write-path.sh OLD_BIN NEW_BIN [OUT_DIR]
#
# OLD_CONFIG: the config file for OLD_BIN (default config.toml; an older binary refuses keys
# it does not know: give it its own version's file, e.g. `git show REV:config.toml`).
# Each run: a fresh three-node cluster (scripts/cluster-local.sh, 127.0.0.1-3, PORT_BASE),
# the shipped config.toml with connection and command limits lifted for the generator, the
# scenario, then the cluster stopped and its state removed. Reports (text and JSON) go to
# OUT_DIR (default ./measure-out). Loopback only; every run is bounded by --duration.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=${1:?old binary}
NEW=${2:?new binary}
OUT=${3:-./measure-out}
OLD_CONFIG=${OLD_CONFIG:-config.toml}
ROUNDS=${ROUNDS:-2}
# ONLY: run only the scenarios whose name contains this.
PORT=${PORT_BASE:-9000}
DURATION=${DURATION:-10s}
mkdir -p "$OUT"

export SWITCHYARD_CLIENT__COMMAND_RATE=0 SWITCHYARD_CLIENT__CONNECTION_RATE_PER_IP=0 \
  SWITCHYARD_CLIENT__MAX_CONNECTIONS_PER_IP=0
SECRET=switchyard-example-secret-change-me
KEY=switchyard-example-api-key-change-me
URLS="ws://127.0.0.1:$PORT/connection/websocket,ws://127.0.0.2:$PORT/connection/websocket,ws://127.0.0.3:$PORT/connection/websocket"
COMMON=(--url "$URLS" --token-secret "$SECRET" --api "http://127.0.0.1:$PORT" --api-key "$KEY"
  --admin "http://127.0.0.1:$((PORT + 1)),http://127.0.0.2:$((PORT + 1)),http://127.0.0.3:$((PORT + 1))")

# name | bench arguments
SCENARIOS=(
  "ws-1pub-1000sub|fanout --subscribers 1000 --publishers 1 --rate 1000 --via client"
  "api-h2-1conn-1000sub|fanout --subscribers 1000 --publishers 1 --rate 1000 --via api"
  "probe-200bg-1000sub|fanout --subscribers 1000 --publishers 1 --rate 200 --via client --probe-http"
  "probe-200bg4pub-1000sub|fanout --subscribers 1000 --publishers 4 --rate 200 --via client --probe-http"
  "probe-idle|fanout --subscribers 10 --publishers 1 --rate 1 --via client --probe-http"
  "publish-100k|publish --subscribers 3 --channels 100 --publishers 8 --rate 100000 --via client"
)

run() { # binary config label scenario-name args...
  local bin=$1 config=$2 label=$3 name=$4
  shift 4
  local dir
  dir=$(mktemp -d /tmp/measure-cluster.XXXXXX)
  SWITCHYARD_BIN=$bin CONFIG=$config CLUSTER_DIR=$dir PORT_BASE=$PORT \
    scripts/cluster-local.sh start >/dev/null
  local pids
  pids=$(cat "$dir"/node-*/pid | paste -sd,)
  echo "=== $name · $label ($bin)"
  # shellcheck disable=SC2086
  "$NEW" bench $1 "${COMMON[@]}" "${@:2}" --duration "$DURATION" --pid "$pids" \
    --json "$OUT/$name.$label.$ROUND.json" 2>&1 | tee "$OUT/$name.$label.$ROUND.txt" | tail -n 25 || true
  SWITCHYARD_BIN=$bin CLUSTER_DIR=$dir PORT_BASE=$PORT scripts/cluster-local.sh stop >/dev/null || true
  rm -rf "$dir"
}

for ROUND in $(seq "$ROUNDS"); do
  for s in "${SCENARIOS[@]}"; do
    name=${s%%|*}
    [[ -z ${ONLY:-} || $name == *"$ONLY"* ]] || continue
    read -r -a args <<<"${s#*|}"
    run "$OLD" "$OLD_CONFIG" before "$name" "${args[@]}"
    run "$NEW" config.toml after "$name" "${args[@]}"
  done
done
