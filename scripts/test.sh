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

echo "--- installing centrifuge-js (tests/compat/js)"
(cd tests/compat/js && npm ci --no-audit --no-fund --loglevel=error)

echo "--- installing centrifuge-python (tests/compat/python/.venv)"
if [ ! -x tests/compat/python/.venv/bin/python ]; then
  python3 -m venv tests/compat/python/.venv
fi
tests/compat/python/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/compat/python/requirements.txt

echo "--- cargo test"
cargo test --all-targets "$@"
