#!/usr/bin/env bash
# Fuzzes the client-facing parsers with cargo-fuzz (libFuzzer) on stable Rust:
#   json_command  the JSON command decoder (protocol/json.rs)
#   protobuf_command  the Protobuf command decoder and payload classification (protocol/protobuf.rs)
#   ws_frames     raw client bytes through the WebSocket MessageReader (transport/reader.rs)
#   session       whole messages (JSON, or Protobuf after a 0xB1 byte) through
#                 Session::handle_message on an in-process node
# Stable rustc cannot build the sanitizers, so targets run with `-s none` (coverage-guided,
# panics and aborts still caught; no AddressSanitizer — the code under test is safe Rust).
#
# Usage: scripts/fuzz.sh [seconds per target, default 60] [target ...]
# Seeds (real client frames, fuzz/make_seeds.py) are in fuzz/seeds/<target>/; the growing corpus
# goes to fuzz/corpus/<target>/ and crashes to fuzz/artifacts/<target>/ (both git-ignored).
# Exits non-zero if any target finds a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(json_command protobuf_command ws_frames session)
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "--- installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

cd fuzz
echo "--- building fuzz targets (release, -s none)"
cargo fuzz build -s none

failed=0
summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  echo "--- fuzzing $t for ${SECS}s"
  set +e
  cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  if [ $rc -ne 0 ]; then
    failed=1
    echo "!!! $t: libFuzzer exited with $rc"
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written|artifact' "$log" | head -20 || true
    summary+=("$t: CRASH (rc $rc), ${runs:-?} execs")
  else
    summary+=("$t: ok, ${runs:-?} execs in ${SECS}s")
  fi
  rm -f "$log"
done
echo "--- fuzz summary"
printf '%s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
  echo "crash inputs are in fuzz/artifacts/; reproduce with: cd fuzz && cargo fuzz run -s none <target> <file>" >&2
  exit 1
fi
