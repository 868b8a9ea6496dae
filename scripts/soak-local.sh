#!/usr/bin/env bash
# Steady publishing against the cluster started by scripts/cluster-local.sh, sampling each
# node's RSS and data-directory size, to show memory and disk growth over time.
# Bounded: stops after DURATION seconds.
#
#   scripts/soak-local.sh [DURATION_S=600] [RATE_PER_S=200] [CHANNELS=20]
#
# Environment as for cluster-local.sh (CLUSTER_DIR, PORT_BASE); API_KEY (default: the shipped
# example key). Publishes 100-byte payloads to chat:soak-0..N through node 1, 2 and 3 in turn.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
RATE=${2:-200}
CHANNELS=${3:-20}
DIR=${CLUSTER_DIR:-./cluster-local}
PORT=${PORT_BASE:-8000}
KEY=${API_KEY:-switchyard-example-api-key-change-me}

exec python3 - "$DURATION" "$RATE" "$CHANNELS" "$DIR" "$PORT" "$KEY" <<'PY'
import http.client, json, os, subprocess, sys, time
duration, rate, channels, d, port, key = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
conns = [http.client.HTTPConnection(ip, port, timeout=5) for ip in ips]
def pid(n):
    try: return int(open(f"{d}/node-{n}/pid").read())
    except Exception: return None
def rss_kib(p):
    try:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmRSS:"): return int(line.split()[1])
    except Exception: return None
def du(n):
    out = subprocess.run(["du", "-sk", f"{d}/node-{n}/data"], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else None
payload = "x" * 80
print("elapsed_s published errors " + " ".join(f"rss{n}_kib disk{n}_kib" for n in (1, 2, 3)), flush=True)
start = time.time(); sent = errors = 0; next_sample = start
while time.time() - start < duration:
    now = time.time()
    if now >= next_sample:
        cols = []
        for n in (1, 2, 3):
            cols += [str(rss_kib(pid(n))), str(du(n))]
        print(f"{int(now - start)} {sent} {errors} " + " ".join(cols), flush=True)
        next_sample += 30
    body = json.dumps({"channel": f"chat:soak-{sent % channels}", "data": {"seq": sent, "p": payload}})
    c = conns[sent % 3]
    try:
        c.request("POST", "/api/publish", body, {"X-API-Key": key})
        r = c.getresponse(); data = r.read()
        if r.status != 200 or b'"result"' not in data: errors += 1
    except Exception:
        errors += 1
        conns[sent % 3] = http.client.HTTPConnection(ips[sent % 3], port, timeout=5)
    sent += 1
    behind = start + sent / rate - time.time()
    if behind > 0: time.sleep(behind)
print(f"done: {sent} published, {errors} errors in {int(time.time() - start)} s", flush=True)
PY
