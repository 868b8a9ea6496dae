#!/usr/bin/env bash
# Builds the switchyard .deb (cargo-deb, configured in Cargo.toml [package.metadata.deb]) and
# prints its path as the last line.
#
#   scripts/build-deb.sh [--dev] [--output DIR]
#     --dev         package the debug build (what scripts/test.sh built: fast, for CI tests of
#                   the package; not for production)
#     --output DIR  where the .deb goes (default: <target dir>/debian)
#
# Steps: install cargo-deb $CARGO_DEB_VERSION when missing (cargo install --locked, a few
# minutes once); build the binary; write into <target dir>/<profile>/deb-assets/ what comes
# from the binary itself (the man pages, bash/zsh/fish completions: `switchyard manpage`,
# `switchyard completions`) and the unit with the binary at /usr/bin (the repository's unit
# names /usr/local/bin, where scripts/install.sh puts it); then cargo deb --no-build.
# What the package installs and its maintainer scripts: README "The .deb".
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
profile=release out=''
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) profile=dev ;;
    --output) out=${2:?--output needs a directory}; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "--- cargo install cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

target=${CARGO_TARGET_DIR:-$PWD/target}
case "$profile" in
  dev) profile_dir=$target/debug ;;
  *) profile_dir=$target/$profile ;;
esac
echo "--- cargo build --profile $profile --bin switchyard" >&2
cargo build --quiet --profile "$profile" --bin switchyard
bin=$profile_dir/switchyard

# The assets Cargo.toml names as target/release/deb-assets/...
assets=$profile_dir/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man"
"$bin" manpage --dir "$assets/man"
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/switchyard.bash"
"$bin" completions zsh >"$assets/_switchyard"
"$bin" completions fish >"$assets/switchyard.fish"
sed 's#/usr/local/bin/switchyard#/usr/bin/switchyard#g' systemd/switchyard.service >"$assets/switchyard.service"
if grep -q /usr/local/ "$assets/switchyard.service" ||
  [ "$(grep -c '^Exec[A-Za-z]*=/usr/bin/switchyard ' "$assets/switchyard.service")" -ne 2 ]; then
  echo "build-deb.sh: the packaged unit does not run /usr/bin/switchyard (ExecStartPre and ExecStart)" >&2
  exit 1
fi

out=${out:-$target/debian}
mkdir -p "$out"
echo "--- cargo deb --profile $profile --no-build" >&2
# --fast: a debug binary is ~100 MB, and xz at the default level takes most of a minute.
fast=()
[ "$profile" = dev ] && fast=(--fast)
deb=$(cargo deb --no-build --profile "$profile" --output "$out" "${fast[@]}" --quiet)
[ -f "$deb" ] || { echo "build-deb.sh: cargo deb made no file ($deb)" >&2; exit 1; }
echo "$deb"
