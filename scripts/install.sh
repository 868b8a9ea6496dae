#!/usr/bin/env bash
# Installs a Switchyard node on this machine (Debian/Ubuntu or any systemd distribution).
# Safe to run again: that is also how to upgrade the binary and the units.
#
#   scripts/install.sh [--dry-run] [BINARY]     install or upgrade (BINARY: default
#                                               target/release/switchyard of this tree)
#   scripts/install.sh --uninstall [--purge] [--dry-run]
#                                               remove binary, unit, sysctl and limits files;
#                                               --purge also removes config, data and the user
#
# What it does (as root; --dry-run prints it instead and needs no root):
#   - system user and group "switchyard" (no login shell, home /var/lib/switchyard)
#   - /etc/switchyard (root:switchyard 0750) and /var/lib/switchyard (switchyard 0750)
#   - BINARY -> /usr/local/bin/switchyard
#   - systemd/switchyard.service -> /etc/systemd/system/, then systemctl daemon-reload
#   - systemd/99-switchyard.conf -> /etc/sysctl.d/ (applied at boot; now: scripts/tune-os.sh)
#   - systemd/switchyard-limits.conf -> /etc/security/limits.d/switchyard.conf
#   - /etc/switchyard/config.toml (root:switchyard 0640) only when there is none: an existing
#     config is never overwritten. A new one is `BINARY genconfig` (the shipped config.toml with
#     random auth and admin secrets, node.data_dir = /var/lib/switchyard); it is then checked
#     with `serve --check-config`.
# It neither enables nor (re)starts the service: it prints the command to run.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
USER_NAME=switchyard
BIN_DST=/usr/local/bin/switchyard
ETC_DIR=/etc/switchyard
CONFIG=$ETC_DIR/config.toml
DATA_DIR=/var/lib/switchyard
UNIT_DST=/etc/systemd/system/switchyard.service
SYSCTL_DST=/etc/sysctl.d/99-switchyard.conf
LIMITS_DST=/etc/security/limits.d/switchyard.conf

dry_run=false uninstall=false purge=false bin_src=''
args=("$@")
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=true ;;
    --uninstall) uninstall=true ;;
    --purge) purge=true ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      [ -z "$bin_src" ] || { echo "install.sh: one BINARY only" >&2; exit 2; }
      bin_src=$1
      ;;
  esac
  shift
done
if $purge && ! $uninstall; then
  echo "install.sh: --purge goes with --uninstall" >&2
  exit 2
fi
if ! $dry_run && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: must run as root (sudo $0 ${args[*]}), or with --dry-run to see what it would do" >&2
  exit 1
fi

# Runs a command, or in --dry-run prints it.
run() {
  if $dry_run; then
    printf 'would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    echo "+ $*"
    "$@"
  fi
}
note() { echo "install.sh: $*"; }
tmp_file=''
trap 'rm -f "$tmp_file"' EXIT
systemd_running() { [ -d /run/systemd/system ]; }

uninstall() {
  if systemd_running && systemctl cat switchyard.service >/dev/null 2>&1; then
    run systemctl disable --now switchyard.service
  fi
  for f in "$UNIT_DST" "$BIN_DST" "$SYSCTL_DST" "$LIMITS_DST"; do
    if [ -e "$f" ]; then run rm -f "$f"; else note "$f: already absent"; fi
  done
  if systemd_running; then run systemctl daemon-reload; fi
  note "kernel settings already applied stay in force until reboot"
  if $purge; then
    for d in "$ETC_DIR" "$DATA_DIR"; do
      if [ -e "$d" ]; then run rm -rf "$d"; else note "$d: already absent"; fi
    done
    if getent passwd "$USER_NAME" >/dev/null; then run userdel "$USER_NAME"; fi
    if getent group "$USER_NAME" >/dev/null; then run groupdel "$USER_NAME"; fi
  else
    note "kept $CONFIG, $DATA_DIR and the user $USER_NAME (--purge removes them)"
  fi
}

install_file() { # mode src dst: install when missing or different
  local mode=$1 src=$2 dst=$3
  if [ -e "$dst" ] && cmp -s "$src" "$dst"; then
    note "$dst: up to date"
  else
    run install -D -m "$mode" -o root -g root "$src" "$dst"
  fi
}

new_config() {
  local tmp
  tmp=$(mktemp)
  tmp_file=$tmp
  # The shipped config.toml with random secrets, from the binary being installed (as the
  # .deb's postinst does): one implementation of it, `switchyard genconfig`.
  "$bin_src" genconfig --data-dir "$DATA_DIR" --force --output "$tmp" >/dev/null
  if $dry_run; then
    note "would create $CONFIG with switchyard genconfig (random auth.token_hmac_secret, auth.api_key, admin.api_key)"
  fi
  run install -m 0640 -o root -g "$USER_NAME" "$tmp" "$CONFIG"
}

install_all() {
  bin_src=${bin_src:-$REPO/target/release/switchyard}
  if [ ! -x "$bin_src" ]; then
    echo "install.sh: no executable at $bin_src: build it (cargo build --release) or pass its path" >&2
    exit 1
  fi
  for f in systemd/switchyard.service systemd/99-switchyard.conf systemd/switchyard-limits.conf; do
    [ -f "$REPO/$f" ] || { echo "install.sh: $REPO/$f is missing" >&2; exit 1; }
  done

  # User and group: a system account that cannot log in.
  if getent group "$USER_NAME" >/dev/null; then
    note "group $USER_NAME: exists"
  else
    run groupadd --system "$USER_NAME"
  fi
  if getent passwd "$USER_NAME" >/dev/null; then
    note "user $USER_NAME: exists"
  else
    local nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    run useradd --system --gid "$USER_NAME" --home-dir "$DATA_DIR" --no-create-home \
      --shell "$nologin" --comment "Switchyard node" "$USER_NAME"
  fi

  # Directories (install -d also corrects owner and mode of existing ones).
  run install -d -m 0750 -o root -g "$USER_NAME" "$ETC_DIR"
  run install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$DATA_DIR"

  # The binary. install(1) replaces the file (new inode), so a running node is unaffected
  # until it is restarted.
  install_file 0755 "$bin_src" "$BIN_DST"
  install_file 0644 "$REPO/systemd/switchyard.service" "$UNIT_DST"
  install_file 0644 "$REPO/systemd/99-switchyard.conf" "$SYSCTL_DST"
  install_file 0644 "$REPO/systemd/switchyard-limits.conf" "$LIMITS_DST"

  if [ -e "$CONFIG" ]; then
    note "$CONFIG: exists, kept as it is"
  else
    new_config
  fi
  if ! $dry_run; then
    # The unit's ExecStartPre, run now so that a bad config is reported at install time.
    if ! SWITCHYARD_NODE__DATA_DIR=$DATA_DIR "$BIN_DST" serve --check-config --config "$CONFIG"; then
      note "WARNING: $CONFIG does not validate: the service will refuse to start until it is fixed"
    fi
  fi

  if systemd_running; then
    run systemctl daemon-reload
    if systemctl is-active --quiet switchyard.service; then
      note "switchyard is running the previous binary: systemctl restart switchyard"
    else
      note "next: systemctl enable --now switchyard"
    fi
  else
    note "systemd is not running here: the unit takes effect when it is (systemctl enable --now switchyard)"
  fi
  note "kernel tuning is installed for the next boot; apply it now with scripts/tune-os.sh"
}

if $uninstall; then uninstall; else install_all; fi
if $dry_run; then note "dry run: nothing was changed"; else note "done"; fi
