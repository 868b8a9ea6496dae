#!/usr/bin/env bash
# Applies the kernel and open-file settings a Switchyard node needs for hundreds of thousands of
# connections, and prints what it changed.
#
#   scripts/tune-os.sh            as root: install systemd/99-switchyard.conf to /etc/sysctl.d/
#                                 and systemd/switchyard-limits.conf to /etc/security/limits.d/
#                                 (so they hold after a reboot), write each sysctl to the running
#                                 kernel, read it back, and print "changed", "ok" or "FAIL"
#   scripts/tune-os.sh --check    report only (any user): what differs from the files;
#                                 exit 0 when everything is already in place, 1 otherwise
#
# The values and why: comments in systemd/99-switchyard.conf and systemd/switchyard-limits.conf.
# A node started by systemd takes its descriptor limit from LimitNOFILE= in the unit; the
# limits.d file is for nodes started from a login shell (from the next login on).
# TUNE_OS_PROC_SYS (default /proc/sys) and TUNE_OS_ETC (default /etc) redirect both for tests.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PROC_SYS=${TUNE_OS_PROC_SYS:-/proc/sys}
ETC=${TUNE_OS_ETC:-/etc}
SYSCTL_SRC=$REPO/systemd/99-switchyard.conf
LIMITS_SRC=$REPO/systemd/switchyard-limits.conf
SYSCTL_DST=$ETC/sysctl.d/99-switchyard.conf
LIMITS_DST=$ETC/security/limits.d/switchyard.conf

check=false
case "${1:-}" in
  '') ;;
  --check) check=true ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "tune-os.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
if ! $check && [ "$(id -u)" -ne 0 ]; then
  echo "tune-os.sh: must run as root to change settings (or use --check to only report)" >&2
  exit 1
fi
for f in "$SYSCTL_SRC" "$LIMITS_SRC"; do
  [ -f "$f" ] || { echo "tune-os.sh: $f is missing" >&2; exit 1; }
done

changed=0 same=0 differ=0 failed=0

# --- files that make the settings persistent --------------------------------------------
persist() { # src dst
  local src=$1 dst=$2
  if [ -e "$dst" ] && cmp -s "$src" "$dst"; then
    echo "ok       $dst"
    same=$((same + 1))
  elif $check; then
    echo "differs  $dst ($([ -e "$dst" ] && echo 'not the shipped one' || echo missing))"
    differ=$((differ + 1))
  elif install -D -m 0644 "$src" "$dst"; then
    echo "changed  $dst: installed"
    changed=$((changed + 1))
  else
    echo "FAIL     $dst: cannot install"
    failed=$((failed + 1))
  fi
}
persist "$SYSCTL_SRC" "$SYSCTL_DST"
persist "$LIMITS_SRC" "$LIMITS_DST"

# --- the running kernel -------------------------------------------------------------------
norm() { tr -s ' \t' '  ' | sed 's/^ //; s/ $//'; }
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in '' | '#'* | ';'*) continue ;; esac
  optional=false
  if [ "${line#-}" != "$line" ]; then optional=true line=${line#-}; fi
  key=$(printf '%s' "${line%%=*}" | norm)
  want=$(printf '%s' "${line#*=}" | norm)
  proc=$PROC_SYS/${key//.//}
  if [ ! -e "$proc" ]; then
    if $optional; then
      echo "skipped  $key (not on this kernel: module not loaded)"
    else
      echo "FAIL     $key: not on this kernel"
      failed=$((failed + 1))
    fi
    continue
  fi
  if ! have=$(norm 2>/dev/null <"$proc"); then
    echo "FAIL     $key: cannot read $proc"
    failed=$((failed + 1))
    continue
  fi
  if [ "$have" = "$want" ]; then
    echo "ok       $key = $want"
    same=$((same + 1))
    continue
  fi
  # Flag a single number that goes down (compared as digit strings: no overflow).
  lower=''
  if [[ "$have" =~ ^[0-9]+$ && "$want" =~ ^[0-9]+$ ]] &&
    { [ "${#want}" -lt "${#have}" ] || { [ "${#want}" -eq "${#have}" ] && [[ "$want" < "$have" ]]; }; }; then
    lower=' (lower than before)'
  fi
  if $check; then
    echo "differs  $key: $have, wanted $want$lower"
    differ=$((differ + 1))
    continue
  fi
  if ! printf '%s\n' "$want" 2>/dev/null >"$proc"; then
    echo "FAIL     $key: cannot write $proc (read-only, e.g. in a container?)"
    failed=$((failed + 1))
    continue
  fi
  now=$(norm 2>/dev/null <"$proc") || now='(unreadable)'
  if [ "$now" = "$want" ]; then
    echo "changed  $key: $have -> $want$lower"
    changed=$((changed + 1))
  else
    echo "FAIL     $key: wrote $want, the kernel has $now"
    failed=$((failed + 1))
  fi
done <"$SYSCTL_SRC"

# --- descriptor limits: report ---------------------------------------------------------------
nr_open=$(cat "$PROC_SYS/fs/nr_open" 2>/dev/null || echo '?')
limit=$(awk '$1 == "switchyard" && $3 == "nofile" && ($2 == "hard" || $2 == "-") { print $4 }' "$LIMITS_SRC")
echo "limits   fs.nr_open = $nr_open; limits.d gives user switchyard nofile $limit (next login);" \
  "this shell has $(ulimit -Sn) soft / $(ulimit -Hn) hard"
if [ "$nr_open" != '?' ] && [ -n "$limit" ] && [ "$limit" -gt "$nr_open" ]; then
  echo "FAIL     nofile $limit in $LIMITS_SRC is above fs.nr_open $nr_open: logins would fail"
  failed=$((failed + 1))
fi
if [ -d /run/systemd/system ] && systemctl cat switchyard.service >/dev/null 2>&1; then
  echo "limits   switchyard.service: $(systemctl show -p LimitNOFILE switchyard.service)"
fi

if $check; then
  echo "tune-os.sh --check: $same in place, $differ differ, $failed failed"
  [ "$differ" -eq 0 ] && [ "$failed" -eq 0 ]
else
  echo "tune-os.sh: $changed changed, $same already in place, $failed failed"
  [ "$failed" -eq 0 ]
fi
