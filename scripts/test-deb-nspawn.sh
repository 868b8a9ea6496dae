#!/usr/bin/env bash
# The .deb on a real systemd. Builds the package (scripts/build-deb.sh --dev), boots a
# container (systemd-nspawn --boot, its own network namespace) from an overlay of this
# machine's root (the host's files stay untouched: every write lands in a tmpfs), and checks
# inside it:
#   1. dpkg -i: the user, /etc/switchyard/config.toml (0640 root:switchyard, random secrets),
#      the unit installed but not enabled;
#   2. systemctl enable --now switchyard returns once the node sent READY=1 (Type=notify);
#      the unit is a CPU scheduling group of its own (CPUWeight=, when the container has the
#      cpu controller), and the client threads run 10 nicer than the write path's;
#   3. a WebSocket client subscribes and receives a publication sent through the HTTP API;
#   4. systemctl reload applies a log.level change (the journal says so), the client stays;
#   5. systemctl stop closes the client with 3001;
#   6. dpkg -i again (an upgrade) keeps the edited config;
#   7. dpkg --remove keeps config and state; apt-get purge removes them and the user.
# Needs root, systemd-nspawn (installed from systemd-container when missing), overlayfs,
# node (and the `ws` package of tests/compat/js, installed by scripts/test.sh or here). When
# the container cannot run here, it prints "SKIPPED: <reason>" and exits 0; a failing check
# exits 1. Everything it starts is stopped and every mount undone on exit.
# Usage: scripts/test-deb-nspawn.sh
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$SECONDS
step() { echo "--- [$((SECONDS - t0))s] $*"; }
skip() {
  echo "SKIPPED: scripts/test-deb-nspawn.sh: $*"
  exit 0
}

tmp='' ovl='' nspawn_pid='' ct_pid='' client_pid='' machine=switchyard-deb-$$

# Runs a command inside the container, with a clean environment (no SWITCHYARD_* of ours).
in_ct() {
  nsenter --target "$ct_pid" --all -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

# What a failure needs to be understood: the unit, its journal, the client, the container.
dump() {
  set +e
  if [ -n "$ct_pid" ]; then
    echo "--- systemctl status switchyard"
    in_ct systemctl status --no-pager --lines=0 switchyard
    echo "--- journalctl -u switchyard (last 40 lines)"
    in_ct journalctl -u switchyard --no-pager -o cat -n 40
  fi
  for f in client.err client.out dpkg.log; do
    [ -s "$tmp/$f" ] && { echo "--- $f"; tail -n 20 "$tmp/$f"; }
  done
  [ -s "$tmp/nspawn.log" ] && { echo "--- container console (last 15 lines)"; tail -n 15 "$tmp/nspawn.log"; }
}
fail() {
  echo "FAIL: scripts/test-deb-nspawn.sh: $*" >&2
  dump >&2
  exit 1
}

# Polls `$@` every 0.2 s until it succeeds or `secs` pass; returns 1 on timeout.
wait_for() {
  local secs=$1 end
  shift
  end=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}
gone() { ! kill -0 "$1" 2>/dev/null; }

cleanup() {
  set +e
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    # systemd-nspawn --boot turns SIGTERM into a clean halt of the container.
    kill -TERM "$nspawn_pid"
    if ! wait_for 30 gone "$nspawn_pid"; then
      echo "test-deb-nspawn: the container did not halt in 30 s: killing it" >&2
      [ -n "$ct_pid" ] && kill -KILL "$ct_pid"
      kill -KILL "$nspawn_pid"
    fi
    wait "$nspawn_pid" 2>/dev/null
  fi
  if [ -n "$ovl" ]; then
    for m in "$ovl/root" "$ovl"; do
      if mountpoint -q "$m"; then umount "$m" || umount -l "$m"; fi
    done
  fi
  rmdir "/run/systemd/nspawn/propagate/$machine" 2>/dev/null
  if [ -n "$tmp" ]; then
    if [ -n "$ovl" ] && mountpoint -q "$ovl"; then
      echo "test-deb-nspawn: $ovl is still mounted: left in place" >&2
    else
      rm -rf --one-file-system "$tmp"
    fi
  fi
}
trap cleanup EXIT

# --- can a container run here? -------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (mount, systemd-nspawn)"
if ! command -v systemd-nspawn >/dev/null 2>&1; then
  step "apt-get install systemd-container (systemd-nspawn)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container; } ||
    true
  command -v systemd-nspawn >/dev/null 2>&1 || skip "no systemd-nspawn (apt-get install systemd-container failed)"
fi
[ -x /lib/systemd/systemd ] || skip "no systemd on this root to boot the container with"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || skip "the kernel has no overlayfs"

# --- what the test needs, whether or not a container runs ----------------------------------
command -v node >/dev/null 2>&1 || fail "node is required (the WebSocket client)"
if [ ! -d tests/compat/js/node_modules/ws ]; then
  step "npm ci (tests/compat/js: the ws package)"
  (cd tests/compat/js && npm ci --no-audit --no-fund --loglevel=error)
fi
step "scripts/build-deb.sh --dev"
deb=$(scripts/build-deb.sh --dev | tail -n 1)
[ -f "$deb" ] || fail "build-deb.sh printed no package path"
echo "$deb"

# --- the container -------------------------------------------------------------------------
step "boot a container from an overlay of /"
tmp=$(mktemp -d /var/tmp/switchyard-deb-test.XXXXXX)
ovl=$tmp/ovl
mkdir "$ovl"
mount -t tmpfs -o mode=0755 tmpfs "$ovl" || skip "cannot mount a tmpfs"
mkdir "$ovl/upper" "$ovl/work" "$ovl/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$ovl/upper,workdir=$ovl/work" "$ovl/root" ||
  skip "cannot mount an overlay of / (overlayfs refused it)"
cp "$deb" "$ovl/root/root/switchyard.deb"
# --register=no --keep-unit: no systemd-machined or system bus needed on the host.
systemd-nspawn --quiet --boot --directory="$ovl/root" --machine="$machine" --private-network \
  --register=no --keep-unit --link-journal=no --console=passive >"$tmp/nspawn.log" 2>&1 &
nspawn_pid=$!
find_init() {
  kill -0 "$nspawn_pid" 2>/dev/null || return 0 # exited: stop polling, checked below
  ct_pid=$(pgrep -P "$nspawn_pid" -x systemd | head -n 1)
  [ -n "$ct_pid" ]
}
wait_for 30 find_init || true
if [ -z "$ct_pid" ]; then
  skip "systemd-nspawn did not start systemd in the container: $(tail -n 3 "$tmp/nspawn.log" | tr '\n' ' ')"
fi
# Until systemd answers (its socket appears a moment after it starts) and start-up is over.
booted() {
  state=$(nsenter --target "$ct_pid" --all -- systemctl is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) true ;; *) false ;; esac
}
state=''
wait_for 120 booted || skip "the container's boot did not finish within 120 s (state '$state')"
echo "container booted ($state)"

# --- 1. install -----------------------------------------------------------------------------
step "dpkg -i switchyard.deb"
in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /root/switchyard.deb >"$tmp/dpkg.log" 2>&1 ||
  fail "dpkg -i failed"
cat "$tmp/dpkg.log"
in_ct getent passwd switchyard >/dev/null || fail "no system user switchyard"
perm=$(in_ct stat -c '%a %U:%G' /etc/switchyard/config.toml) || fail "no /etc/switchyard/config.toml"
[ "$perm" = "640 root:switchyard" ] || fail "config.toml is $perm, want 640 root:switchyard"
in_ct grep -q change-me /etc/switchyard/config.toml && fail "config.toml has the example secrets"
enabled=$(in_ct systemctl is-enabled switchyard || true)
[ "$enabled" = disabled ] || fail "after install the unit is '$enabled', want disabled"
in_ct grep -q '^ExecStart=/usr/bin/switchyard ' /usr/lib/systemd/system/switchyard.service ||
  fail "the installed unit does not run /usr/bin/switchyard"
in_ct man -w switchyard-genconfig >/dev/null || fail "man switchyard-genconfig: no page"

# Ports free in the container's network namespace (its own services listen there too).
read -r client_port admin_port cluster_port < <(nsenter --target "$ct_pid" --net -- python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
in_ct sed -i -e "s|^listen = \"0.0.0.0:8000\"$|listen = \"127.0.0.1:$client_port\"|" \
  -e "s|^listen = \"127.0.0.1:8001\"$|listen = \"127.0.0.1:$admin_port\"|" \
  -e "s|^listen = \"127.0.0.1:8100\"$|listen = \"127.0.0.1:$cluster_port\"|" /etc/switchyard/config.toml
[ "$(in_ct grep -cE "^listen = \"127.0.0.1:($client_port|$admin_port|$cluster_port)\"$" /etc/switchyard/config.toml)" = 3 ] ||
  fail "could not set the three listen addresses in config.toml"

# --- 2. enable --now: returns after READY=1 --------------------------------------------------
step "systemctl enable --now switchyard (client 127.0.0.1:$client_port)"
timeout 120 nsenter --target "$ct_pid" --all -- systemctl enable --now switchyard ||
  fail "systemctl enable --now switchyard failed"
state=$(in_ct systemctl show -p ActiveState --value switchyard)
[ "$state" = active ] || fail "after enable --now the unit is '$state'"
in_ct journalctl -u switchyard --no-pager -o cat | grep -q 'node ready' ||
  fail "the journal has no 'node ready' line"

step "the unit is its own CPU group; client threads are nicer than the write path's"
cg=$(in_ct systemctl show -p ControlGroup --value switchyard)
if in_ct grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
  in_ct test -e "/sys/fs/cgroup$cg/cpu.weight" || fail "no cpu controller on $cg (CPUWeight=)"
  [ "$(in_ct cat "/sys/fs/cgroup$cg/cpu.weight")" = 100 ] || fail "cpu.weight of $cg is not 100"
else
  echo "the container has no cpu controller: CPUWeight= not checked"
fi
main_pid=$(in_ct systemctl show -p MainPID --value switchyard)
nices=$(in_ct ps -L -o comm=,nice= -p "$main_pid")
echo "$nices" | awk '$1 == "tokio-rt-worker" && $2 == 10 { c++ } END { exit !c }' ||
  fail "no client thread at nice 10: $nices"
echo "$nices" | awk '($1 == "raft" || $1 == "api") && $2 != 0 { bad++ } $1 == "raft" { r++ } END { exit bad || !r }' ||
  fail "the write path's threads are not at nice 0: $nices"

# --- 3. subscribe, publish through the API, receive ------------------------------------------
step "a client subscribes and receives an API publication"
token=$(in_ct switchyard token --user deb-smoke --config /etc/switchyard/config.toml)
api_key=$(in_ct sed -n '/^\[auth\]/,/^\[/s/^api_key = "\(.*\)"$/\1/p' /etc/switchyard/config.toml)
[ -n "$api_key" ] || fail "no auth.api_key in config.toml"
nsenter --target "$ct_pid" --net -- node tests/compat/js/deb-smoke.mjs \
  "ws://127.0.0.1:$client_port/connection/websocket" "http://127.0.0.1:$client_port/api" \
  "$api_key" "$token" news >"$tmp/client.out" 2>"$tmp/client.err" &
client_pid=$!
got() { grep -qx "$1" "$tmp/client.out" || ! kill -0 "$client_pid" 2>/dev/null; }
wait_for 30 got publication || true
grep -qx publication "$tmp/client.out" || fail "the client did not receive the publication"

# --- 4. reload applies log.level ---------------------------------------------------------------
step "systemctl reload with log.level = debug"
in_ct sed -i 's/^level = "info"$/level = "debug"/' /etc/switchyard/config.toml
in_ct grep -qx 'level = "debug"' /etc/switchyard/config.toml || fail "could not set log.level"
timeout 30 nsenter --target "$ct_pid" --all -- systemctl reload switchyard || fail "systemctl reload failed"
reloaded() { in_ct journalctl -u switchyard --no-pager -o cat | grep -q 'reload done.*level=debug'; }
wait_for 20 reloaded || fail "the journal has no 'reload done level=debug' after the reload"
kill -0 "$client_pid" 2>/dev/null || fail "the client was disconnected by the reload"

# --- 5. stop: clients closed with 3001 -----------------------------------------------------------
step "systemctl stop switchyard"
timeout 60 nsenter --target "$ct_pid" --all -- systemctl stop switchyard || fail "systemctl stop failed"
wait_for 30 gone "$client_pid" || fail "the client is still connected after stop"
wait "$client_pid" || fail "the client failed"
client_pid=''
grep -q '^closed 3001 ' "$tmp/client.out" || fail "the client was not closed with 3001: $(tail -n 1 "$tmp/client.out")"
echo "client: $(tr '\n' ' ' <"$tmp/client.out")"

# --- 6. an upgrade keeps the config ------------------------------------------------------------
step "dpkg -i again (upgrade): the edited config is kept"
before=$(in_ct sha256sum /etc/switchyard/config.toml)
in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /root/switchyard.deb >"$tmp/dpkg.log" 2>&1 ||
  fail "dpkg -i (upgrade) failed"
[ "$(in_ct sha256sum /etc/switchyard/config.toml)" = "$before" ] || fail "the upgrade changed config.toml"

# --- 7. remove keeps state; purge removes it ---------------------------------------------------
step "dpkg --remove keeps config and state; apt-get purge removes them"
in_ct test -d /var/lib/switchyard/raft || fail "no Raft state in /var/lib/switchyard after a run"
in_ct dpkg --remove switchyard >"$tmp/dpkg.log" 2>&1 || fail "dpkg --remove failed"
in_ct test -e /usr/bin/switchyard && fail "dpkg --remove left /usr/bin/switchyard"
in_ct test -f /etc/switchyard/config.toml || fail "dpkg --remove deleted the config"
in_ct test -d /var/lib/switchyard/raft || fail "dpkg --remove deleted the state"
in_ct env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq switchyard >"$tmp/dpkg.log" 2>&1 ||
  fail "apt-get purge failed"
for d in /etc/switchyard /var/lib/switchyard; do
  in_ct test -e "$d" && fail "apt-get purge left $d"
done
in_ct getent passwd switchyard >/dev/null && fail "apt-get purge left the user switchyard"
in_ct test -e /etc/systemd/system/multi-user.target.wants/switchyard.service &&
  fail "apt-get purge left the enablement symlink"

echo "test-deb-nspawn: ok ($((SECONDS - t0))s)"
