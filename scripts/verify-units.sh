#!/usr/bin/env bash
# Checks the operations files in systemd/ the way the system will read them; exits non-zero on
# any problem:
#   - systemd-analyze verify on switchyard.service. Any output is a failure: verify exits 0 on
#     unknown keys and unparsable values, printing only a warning.
#   - systemd-analyze security --offline: the hardening keeps the exposure score <= 2.0.
#   - the sysctl.d file: "key = value" lines whose keys this kernel knows (a "-key" may be
#     absent), with as many fields as the kernel's value.
#   - the limits.d file: "<domain> soft|hard|- nofile <number>" lines, soft <= hard.
#   - the shipped config.toml passes the unit's ExecStartPre (serve --check-config).
#   - bash -n on install.sh, tune-os.sh, build-deb.sh, test-deb-nspawn.sh and this script, sh -n
#     on the .deb's maintainer scripts (debian/), and shellcheck when it is installed.
# verify wants every Exec*= binary to exist, so it runs on a copy of the unit whose
# /usr/local/bin/switchyard is the binary built from this tree (cargo build, or VERIFY_UNITS_BIN).
# Installs Debian's systemd package (for systemd-analyze) when missing.
# Usage: scripts/verify-units.sh
set -euo pipefail
cd "$(dirname "$0")/.."

UNIT=systemd/switchyard.service
SYSCTL=systemd/99-switchyard.conf
LIMITS=systemd/switchyard-limits.conf
# systemd-analyze security reports exposure 0.0-10.0; its --threshold is in tenths.
MAX_EXPOSURE_TENTHS=20

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "--- apt-get install systemd (for systemd-analyze)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd
fi

if [ -n "${VERIFY_UNITS_BIN:-}" ]; then
  bin=$VERIFY_UNITS_BIN
else
  echo "--- cargo build --bin switchyard"
  cargo build --quiet --bin switchyard
  bin=$PWD/target/debug/switchyard
fi
[ -x "$bin" ] || { echo "verify-units: $bin is not an executable" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- the unit -----------------------------------------------------------------------------
echo "--- systemd-analyze verify $UNIT"
# Same file name (the unit's name comes from it), binary path rewritten.
sed "s#/usr/local/bin/switchyard#$bin#g" "$UNIT" >"$tmp/switchyard.service"
if ! out=$(systemd-analyze verify --man=no "$tmp/switchyard.service" 2>&1); then
  fail "systemd-analyze verify exited non-zero"
fi
if [ -n "$out" ]; then
  printf '%s\n' "$out" >&2
  fail "systemd-analyze verify reported problems"
fi

echo "--- systemd-analyze security --offline (exposure <= $((MAX_EXPOSURE_TENTHS / 10)).$((MAX_EXPOSURE_TENTHS % 10)))"
if ! systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE_TENTHS" --no-pager \
  "$tmp/switchyard.service" >"$tmp/security.txt" 2>&1; then
  cat "$tmp/security.txt" >&2
  fail "hardening regressed: exposure above the threshold"
else
  grep 'Overall exposure' "$tmp/security.txt" || true
fi

# Lines the unit must keep whatever else changes: the contract with the binary and the docs.
# shellcheck disable=SC2016 # $MAINPID is literal unit text
for want in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=' 'ExecReload=/bin/kill -HUP $MAINPID' \
  'StateDirectory=switchyard' 'Environment=SWITCHYARD_NODE__DATA_DIR=/var/lib/switchyard' \
  'LimitNOFILE=' 'TimeoutStopSec=' 'User=switchyard'; do
  grep -qF -- "$want" "$UNIT" || fail "$UNIT lacks '$want'"
done
# The stop timeout must cover the default drain (node.drain_timeout 10s + 0.5s of tasks).
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$UNIT")
if [ -z "$stop" ] || [ "$stop" -le 11 ]; then
  fail "TimeoutStopSec= must be plain seconds above 11 (drain 10 s + margin), got '${stop}'"
fi

# --- sysctl.d -----------------------------------------------------------------------------
echo "--- $SYSCTL"
n=0
while IFS= read -r line || [ -n "$line" ]; do
  n=$((n + 1))
  case "$line" in '' | '#'* | ';'*) continue ;; esac
  if [[ ! "$line" =~ ^(-?)([a-z0-9_][a-z0-9_.-]*)\ =\ ([0-9]+( [0-9]+)*)$ ]]; then
    fail "$SYSCTL:$n: not 'key = number[ number...]': $line"
    continue
  fi
  optional=${BASH_REMATCH[1]} key=${BASH_REMATCH[2]} value=${BASH_REMATCH[3]}
  proc=/proc/sys/${key//.//}
  if [ ! -e "$proc" ]; then
    [ -n "$optional" ] || fail "$SYSCTL:$n: this kernel has no $key"
    continue
  fi
  read -r -a have <"$proc" || true
  read -r -a want <<<"$value"
  [ "${#have[@]}" -eq "${#want[@]}" ] ||
    fail "$SYSCTL:$n: $key takes ${#have[@]} value(s), the file gives ${#want[@]}"
done <"$SYSCTL"

# --- limits.d -----------------------------------------------------------------------------
echo "--- $LIMITS"
n=0 soft='' hard=''
while IFS= read -r line || [ -n "$line" ]; do
  n=$((n + 1))
  case "$line" in '' | '#'*) continue ;; esac
  read -r domain type item value extra <<<"$line"
  if [ -z "$value" ] || [ -n "${extra:-}" ] || [[ ! "$value" =~ ^[0-9]+$ ]] || [ "$item" != nofile ]; then
    fail "$LIMITS:$n: not '<domain> soft|hard|- nofile <number>': $line"
    continue
  fi
  case "$type" in
    soft) soft=$value ;;
    hard) hard=$value ;;
    -) soft=$value hard=$value ;;
    *) fail "$LIMITS:$n: type must be soft, hard or -: $line" ;;
  esac
  [ "$domain" = switchyard ] || fail "$LIMITS:$n: domain should be the service user 'switchyard'"
done <"$LIMITS"
if [ -z "$soft" ] || [ -z "$hard" ] || [ "$soft" -gt "$hard" ]; then
  fail "$LIMITS: needs soft <= hard nofile (soft='$soft' hard='$hard')"
fi

# --- the unit's ExecStartPre on the shipped config -----------------------------------------
echo "--- switchyard serve --check-config --config config.toml"
# With the unit's environment (and the data dir it sets), from an empty working directory.
if ! (cd "$tmp" && SWITCHYARD_NODE__DATA_DIR=/var/lib/switchyard \
  "$bin" serve --check-config --config "$OLDPWD/config.toml" >/dev/null); then
  fail "the shipped config.toml does not pass --check-config"
fi

# --- the operations scripts that install and tune what this checks ------------------------
ops_scripts=(scripts/install.sh scripts/tune-os.sh scripts/verify-units.sh scripts/build-deb.sh
  scripts/test-deb-nspawn.sh)
echo "--- bash -n ${ops_scripts[*]}"
for f in "${ops_scripts[@]}"; do
  bash -n "$f" || fail "bash -n $f"
done
# The .deb's maintainer scripts run under /bin/sh (dash on Debian).
maint_scripts=(debian/postinst debian/postrm)
echo "--- sh -n ${maint_scripts[*]}"
for f in "${maint_scripts[@]}"; do
  sh -n "$f" || fail "sh -n $f"
  grep -qx '#DEBHELPER#' "$f" || fail "$f lacks the #DEBHELPER# line cargo-deb fills in"
done
if command -v shellcheck >/dev/null 2>&1; then
  echo "--- shellcheck ${ops_scripts[*]} ${maint_scripts[*]}"
  shellcheck "${ops_scripts[@]}" "${maint_scripts[@]}" || fail "shellcheck"
else
  echo "--- shellcheck not installed: skipped"
fi

if [ "$failures" -gt 0 ]; then
  echo "verify-units: $failures problem(s)" >&2
  exit 1
fi
echo "verify-units: ok"
