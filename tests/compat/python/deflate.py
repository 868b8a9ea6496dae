"""permessage-deflate with Python `websockets` (zlib underneath), run by tests/compat.rs
against a node with client.websocket_compression on.

Two clients: websockets' default offer (compression on, `client_max_window_bits`), and one
that limits the server's window to 512 bytes (`server_max_window_bits=9`, inflated by zlib
with that window; tests/deflate.rs checks every back-reference against it byte by byte).
Each must agree permessage-deflate, send a compressed
subscribe, and receive 20 large publications that decode unchanged; the node's metrics must
show them sent compressed, in fewer bytes than their JSON.

Env: SY_WS_URL, SY_API_URL, SY_API_KEY, SY_ADMIN_URL, SY_BIN, SY_CONFIG, SY_CHANNEL_PREFIX.
Exits 0 when every check passes, 1 with "FAIL: ..." otherwise; every wait is bounded.
"""

import asyncio
import json
import os
import subprocess
import sys
import urllib.request

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)

WS_URL = os.environ["SY_WS_URL"]
API_URL = os.environ["SY_API_URL"]
API_KEY = os.environ["SY_API_KEY"]
ADMIN_URL = os.environ["SY_ADMIN_URL"]
PREFIX = os.environ["SY_CHANNEL_PREFIX"]
WAIT = 10
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check(cond, msg) -> None:
    """An assertion that survives python -O."""
    if not cond:
        raise AssertionError(msg)


def mint(user: str) -> str:
    args = [os.environ["SY_BIN"], "token", "--config", os.environ["SY_CONFIG"], "--user", user, "--ttl", "1h"]
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=10).stdout.strip()


def publish(channel: str, data) -> None:
    req = urllib.request.Request(
        f"{API_URL}/publish",
        data=json.dumps({"channel": channel, "data": data}).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        method="POST",
    )
    with _opener.open(req, timeout=5) as resp:
        body = json.loads(resp.read())
    check("result" in body, f"publish: {body}")


def metric(name: str) -> float:
    with _opener.open(f"{ADMIN_URL}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def document(n: int) -> dict:
    """An analytics summary of about 2 KB, changing a little with n."""
    return {
        "kind": "analytics_summary",
        "seq": n,
        "top_pages": [
            {"path": f"/products/category-{i}/item", "views": 1000 + i * 37 + n, "unique": 800 + i * 11}
            for i in range(30)
        ],
    }


async def messages(ws):
    """Every protocol message of the next frame (frames may join several with newlines)."""
    frame = await asyncio.wait_for(ws.recv(), WAIT)
    return [json.loads(line) for line in frame.split("\n") if line]


async def reply(ws, want_id: int) -> dict:
    while True:
        for m in await messages(ws):
            if m.get("id") == want_id:
                check("error" not in m, f"command {want_id}: {m}")
                return m


async def run(name: str, extensions) -> None:
    channel = f"{PREFIX}{name}"
    kwargs = {"extensions": extensions} if extensions else {}
    async with connect(WS_URL, open_timeout=WAIT, max_size=2**22, **kwargs) as ws:
        agreed = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
        header = ws.response.headers.get("Sec-WebSocket-Extensions")
        check(agreed, f"{name}: permessage-deflate not agreed (answer {header!r})")
        print(f"--- {name}: agreed {header!r}", flush=True)
        # websockets compresses every message it sends once the extension is agreed.
        await ws.send(json.dumps({"id": 1, "connect": {"token": mint(name)}}))
        await reply(ws, 1)
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        await reply(ws, 2)
        compressed_before = metric("switchyard_messages_out_compressed_total")
        bytes_before = metric("switchyard_bytes_out_total")
        raw = 0
        for n in range(20):
            doc = document(n)
            publish(channel, doc)
            got = None
            while got is None:
                for m in await messages(ws):
                    if m.get("push", {}).get("channel") == channel:
                        got = m["push"]["pub"]["data"]
                        raw += len(json.dumps(m, separators=(",", ":")))
            check(got == doc, f"{name}: publication {n} decoded differently: {got}")
        sent = metric("switchyard_bytes_out_total") - bytes_before
        compressed = metric("switchyard_messages_out_compressed_total") - compressed_before
        check(compressed >= 20, f"{name}: {compressed} messages went compressed, want 20")
        check(sent < raw * 0.4, f"{name}: {sent} bytes on the wire for {raw} bytes of JSON")
        print(f"--- {name}: 20 publications, {raw} bytes of JSON, {sent:.0f} on the wire", flush=True)


async def main() -> None:
    await run("default", None)
    await run("window9", [ClientPerMessageDeflateFactory(server_max_window_bits=9)])


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 55))
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    print("deflate OK", flush=True)
