#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the client SDKs the compatibility tests
# drive (centrifuge-js via npm, centrifuge-python in a venv), then runs every Rust test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "scripts/test.sh: '$1' is required ($2)" >&2; exit 1; }; }
need cargo "Rust toolchain"
need node "Node.js 18+ for the centrifuge-js compatibility test"
need npm "npm for the centrifuge-js compatibility test"
need python3 "Python 3.9+ for the centrifuge-python compatibility test"
need openssl "openssl CLI, used to make RSA/ECDSA test keys"
# Also needed: Debian's chromium (installed below when running as root).

echo "--- installing centrifuge-js (tests/compat/js)"
(cd tests/compat/js && npm ci --no-audit --no-fund --loglevel=error)

echo "--- installing playwright-core (tests/status-page), for the status page test"
(cd tests/status-page && npm ci --no-audit --no-fund --loglevel=error)
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "--- apt-get install chromium (the status page test drives it headless)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    echo "scripts/test.sh: chromium is required for the status page test: sudo apt-get install chromium" >&2
    exit 1
  fi
fi

echo "--- installing centrifuge-python (tests/compat/python/.venv)"
if [ ! -x tests/compat/python/.venv/bin/python ]; then
  python3 -m venv tests/compat/python/.venv
fi
tests/compat/python/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/compat/python/requirements.txt

echo "--- cargo build --examples (tests/dashboard.rs runs the dashboard feed)"
cargo build --examples
echo "--- cargo test"
cargo test --workspace --all-targets "$@"
