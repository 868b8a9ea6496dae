#!/usr/bin/env bash
# Bytes on the wire and server CPU per delivery with and without permessage-deflate (#17).
#
# One release node with client.websocket_compression on (per-IP and command limits lifted for
# the generator); `switchyard bench fanout` with 1,000 subscribers on one channel, once with
# subscribers that do not offer compression and once with --compression, for an analytics
# summary (--payload-kind analytics, 2 KiB) and sensor readings (--payload-kind sensor,
# 200 B). The runs alternate (plain, compressed, plain, …) ROUNDS times so drift on a shared
# box shows as spread. Server CPU comes from /proc/<pid>/stat (--pid), bytes from the node's
# switchyard_bytes_out_total (--admin): WebSocket payload bytes, frame headers excluded.
#
# Usage: scripts/measure-compression.sh [BIN]   (default: $CARGO_TARGET_DIR or target, release)
# Env: ROUNDS (2), RATE publications/s (50), DURATION (20s), SUBSCRIBERS (1000).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-${CARGO_TARGET_DIR:-target}/release/switchyard}
ROUNDS=${ROUNDS:-2}
RATE=${RATE:-50}
DURATION=${DURATION:-20s}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 1; }

TMP=$(mktemp -d)
OUT=${OUT:-$TMP/reports}
mkdir -p "$OUT"
PID=
cleanup() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP/data"
}
trap cleanup EXIT

SECRET=measure-compression-secret
KEY=measure-compression-key
cat >"$TMP/config.toml" <<EOF
[node]
data_dir = "$TMP/data"
[client]
listen = "127.0.0.1:0"
websocket_compression = true
max_connections_per_ip = 0
connection_rate_per_ip = 0
command_rate = 0
[admin]
listen = "127.0.0.1:0"
[cluster]
listen = "127.0.0.1:0"
[auth]
token_hmac_secret = "$SECRET"
api_key = "$KEY"
[log]
level = "warn,switchyard=info"
format = "json"
[channel]
allow_subscribe_for_client = true
EOF

"$BIN" serve --config "$TMP/config.toml" 2>"$TMP/log" &
PID=$!
addr() {
  python3 - "$TMP/log" "$1" <<'PY' || true
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        f = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if f.get("message") == "listening" and f.get("listener") == sys.argv[2]:
        print(f["addr"])
        break
PY
}
CLIENT= ADMIN=
for _ in $(seq 1 200); do
  CLIENT=$(addr client) ADMIN=$(addr admin)
  [ -n "$CLIENT" ] && [ -n "$ADMIN" ] && break
  kill -0 "$PID" 2>/dev/null || { cat "$TMP/log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$CLIENT" ] && [ -n "$ADMIN" ] || { echo "node did not start" >&2; exit 1; }
echo "--- node $PID: client $CLIENT, admin $ADMIN; reports in $OUT"

run() { # kind size compression round
  local kind=$1 size=$2 comp=$3 round=$4 extra=()
  [ "$comp" = on ] && extra=(--compression)
  "$BIN" bench fanout --url "ws://$CLIENT/connection/websocket" --api "http://$CLIENT" \
    --api-key "$KEY" --token-secret "$SECRET" --pid "$PID" --admin "http://$ADMIN" \
    --subscribers "$SUBSCRIBERS" --publishers 1 --rate "$RATE" --duration "$DURATION" \
    --payload "$size" --payload-kind "$kind" --channel "zip-$kind-$comp-$round" \
    --quiet --json "$OUT/$kind-$comp-$round.json" "${extra[@]}" >/dev/null
}

for round in $(seq 1 "$ROUNDS"); do
  for spec in analytics:2048 sensor:200; do
    for comp in off on; do
      echo "--- round $round: ${spec%%:*} (${spec##*:} B), compression $comp"
      run "${spec%%:*}" "${spec##*:}" "$comp" "$round"
    done
  done
done

python3 - "$OUT" <<'PY'
import glob, json, os, sys
rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    kind, comp, _ = os.path.basename(f)[:-5].split("-")
    fig = json.load(open(f))["figures"]
    rows.setdefault((kind, comp), []).append(fig)
print("| payload | compression | bytes written per delivery | server CPU s per million deliveries | delivered | publish→delivery p99 ms |")
print("|---|---|---|---|---|---|")
for (kind, comp), figs in sorted(rows.items()):
    span = lambda k, fmt: "–".join(fmt.format(v) for v in sorted({round(f.get(k, 0), 1) for f in figs}))
    got = sum(f.get("deliveries_received", 0) for f in figs)
    exp = sum(f.get("deliveries_expected", 0) for f in figs)
    print(f"| {kind} | {comp} | {span('wire_bytes_per_delivery', '{:.0f}')} | "
          f"{span('server_cpu_secs_per_million', '{:.2f}')} | {got:.0f}/{exp:.0f} | "
          f"{span('latency_p99_ms', '{:.1f}')} |")
PY
