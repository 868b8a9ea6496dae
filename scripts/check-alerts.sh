#!/usr/bin/env bash
# Checks the shipped Prometheus alert rules; exits non-zero on any problem:
#   - promtool check rules contrib/prometheus-alerts.yml: YAML, PromQL, templates.
#   - promtool test rules contrib/prometheus-alerts.test.yml: every alert fires in its
#     scenario (all nodes down, two of three down, ...) and a healthy cluster fires none.
# promtool is $PROMTOOL, or the one on PATH. When there is none (and we are root), the
# promtool binary alone is taken from Debian's prometheus package (apt-get download, then
# dpkg-deb) into /usr/local/bin: installing the package would add 15 web-asset packages and
# set up a prometheus service, for one static binary. A few seconds, once per machine.
# Usage: scripts/check-alerts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=contrib/prometheus-alerts.yml
TESTS=contrib/prometheus-alerts.test.yml

promtool=${PROMTOOL:-$(command -v promtool || true)}
if [ -z "$promtool" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/check-alerts.sh: promtool is required: sudo apt-get install prometheus, or set PROMTOOL" >&2
    exit 1
  fi
  echo "--- promtool from Debian's prometheus package (the binary alone, into /usr/local/bin)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # apt fetches as the _apt user: let it write here.
  chown _apt "$tmp" 2>/dev/null || true
  fetch() { (cd "$tmp" && apt-get download -qq prometheus); }
  # Without package lists (a fresh machine) the download fails: update them, once, and retry.
  fetch 2>/dev/null || { apt-get update -qq && fetch; }
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -xO ./usr/bin/promtool > "$tmp/promtool"
  install -m 755 "$tmp/promtool" /usr/local/bin/promtool
  promtool=/usr/local/bin/promtool
fi
"$promtool" --version 2>&1 | head -1

echo "--- promtool check rules $RULES"
"$promtool" check rules "$RULES"
echo "--- promtool test rules $TESTS"
"$promtool" test rules "$TESTS"
