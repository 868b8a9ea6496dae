#!/usr/bin/env bash
# Autobahn WebSocket conformance (cases 1–10, and 12–13: permessage-deflate, with
# client.websocket_compression on) against the test-only echo endpoint, which reads through the
# same frame reader, and negotiates and compresses with the same code, as client connections.
#
# The runner is kosoku (PyPI), a Python 3 runner of Autobahn's own case files with Autobahn's
# report format (the PyPI `autobahntestsuite` is Python 2 only). It is installed into a venv
# under .autobahn/ (git-ignored); reports go to .autobahn/reports/.
#
# Usage: scripts/autobahn.sh [--release] [extra kosoku args, e.g. -i '9.*']
# Prints pass/fail counts; exits non-zero if any case fails. OK, NON-STRICT and
# INFORMATIONAL pass; FAILED, UNIMPLEMENTED and ERROR fail.
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
WORK=.autobahn
VENV=$WORK/venv
PROFILE=debug
if [ "${1:-}" = "--release" ]; then
  PROFILE=release
  shift
fi

need() { command -v "$1" >/dev/null 2>&1 || { echo "scripts/autobahn.sh: '$1' is required ($2)" >&2; exit 1; }; }
need cargo "Rust toolchain"
need python3 "Python 3.10+ for the kosoku runner"

mkdir -p "$WORK"
if [ ! -x "$VENV/bin/kosoku" ]; then
  echo "--- installing kosoku $KOSOKU_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

echo "--- building switchyard ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --quiet --release --bin switchyard
else
  cargo build --quiet --bin switchyard
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/switchyard

TMP=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/config.toml" <<EOF
[node]
data_dir = "$TMP/data"
[client]
listen = "127.0.0.1:0"
websocket_compression = true
# Compress even the 16-byte messages of case 12.1.1 (sent as they are when that does not pay).
websocket_compression_min_size = 0
[admin]
listen = "127.0.0.1:0"
[cluster]
listen = "127.0.0.1:0"
[auth]
token_hmac_secret = "autobahn-only"
[log]
level = "warn,switchyard=info"
format = "json"
[testing]
echo_endpoint = true
echo_max_message_size = 16777216
EOF

echo "--- starting switchyard with the echo endpoint"
"$BIN" serve --config "$TMP/config.toml" 2>"$TMP/log" &
PID=$!
ADDR=
for _ in $(seq 1 200); do
  ADDR=$(python3 - "$TMP/log" <<'PY' || true
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    f = v.get("fields", {})
    if f.get("message") == "listening" and f.get("listener") == "client":
        print(f["addr"])
        break
PY
)
  [ -n "$ADDR" ] && break
  kill -0 "$PID" 2>/dev/null || { cat "$TMP/log" >&2; echo "switchyard exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$TMP/log" >&2; echo "switchyard did not start listening" >&2; exit 1; }
echo "    echo endpoint: ws://$ADDR/autobahn/echo"

REPORTS=$WORK/reports
rm -rf "$REPORTS"
echo "--- running Autobahn cases 1-10, 12 and 13 (kosoku)"
START=$(date +%s)
set +e
"$VENV/bin/kosoku" "ws://$ADDR/autobahn/echo" \
  -i '1.*' -i '2.*' -i '3.*' -i '4.*' -i '5.*' -i '6.*' -i '7.*' -i '9.*' -i '10.*' \
  -i '12.*' -i '13.*' -p 2 -o "$REPORTS" "$@" >"$TMP/kosoku.out" 2>&1
KOSOKU_RC=$?
set -e
END=$(date +%s)
tail -n 3 "$TMP/kosoku.out"
kill -0 "$PID" 2>/dev/null || { echo "switchyard died during the run" >&2; tail -n 20 "$TMP/log" >&2; exit 1; }

python3 - "$REPORTS/index.json" "$((END - START))" "$KOSOKU_RC" <<'PY'
import json, sys
index, secs, rc = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts, failed = {}, []
for agent in index.values():
    for case, r in sorted(agent.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
        b = r["behavior"]
        counts[b] = counts.get(b, 0) + 1
        # UNIMPLEMENTED is a failure (in 12 and 13: permessage-deflate was not agreed).
        if b not in PASS:
            failed.append(f"  {case}: behavior={b} behaviorClose={r['behaviorClose']} remoteCloseCode={r.get('remoteCloseCode')}")
npass = sum(v for k, v in counts.items() if k in PASS)
print("--- Autobahn: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
if failed:
    print("failing cases:")
    print("\n".join(failed))
print(f"autobahn: {npass} passed, {len(failed)} failed ({secs} s)")
if not failed and rc != 0:
    print(f"kosoku exited with {rc} although every case passed", file=sys.stderr)
sys.exit(1 if failed or rc != 0 else 0)
PY
