"""Drives the real centrifuge-python SDK against a running Switchyard node.

Run by tests/compat.rs with SY_WS_URL, SY_API_URL, SY_API_KEY, SY_BIN, SY_CONFIG and
SY_CHANNEL_PREFIX set. Exits 0 when every phase passes, 1 with a message otherwise.
"""

import asyncio
import json
import os
import subprocess
import sys
import urllib.request

from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
)

WS_URL = os.environ["SY_WS_URL"]
API_URL = os.environ["SY_API_URL"]
API_KEY = os.environ["SY_API_KEY"]
PREFIX = os.environ["SY_CHANNEL_PREFIX"]
CHANNEL = f"{PREFIX}room"


def phase(name: str) -> None:
    print(f"--- phase: {name}", flush=True)


def mint(user: str) -> str:
    out = subprocess.run(
        [os.environ["SY_BIN"], "token", "--config", os.environ["SY_CONFIG"], "--user", user, "--ttl", "1h"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _api_sync(method: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{API_URL}/{method}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200, f"{method}: HTTP {resp.status}"
        payload = json.loads(resp.read())
    assert "result" in payload, f"{method}: {payload}"
    return payload["result"]


async def api(method: str, body: dict) -> dict:
    return await asyncio.get_running_loop().run_in_executor(None, _api_sync, method, body)


async def wait_for(what: str, pred, timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.connected: list[ConnectedContext] = []

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.subscribed: list[SubscribedContext] = []
        self.pubs: list = []
        self.joins: list = []
        self.leaves: list = []

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.append(ctx.pub)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append(ctx.info)


async def main() -> None:
    phase("connect with a minted token")
    events = ClientEvents()
    alice = Client(WS_URL, events=events, token=mint("py-alice"), min_reconnect_delay=1.5, max_reconnect_delay=2.0)
    await alice.connect()
    await wait_for("alice connected", lambda: len(events.connected) == 1)
    client_id = events.connected[0].client
    assert len(client_id) == 36, client_id

    phase("subscribe recoverable + positioned + join/leave")
    sev = SubEvents()
    sub = alice.new_subscription(CHANNEL, events=sev, recoverable=True, positioned=True, join_leave=True)
    await sub.subscribe()
    await wait_for("subscribed", lambda: len(sev.subscribed) == 1)
    first = sev.subscribed[0]
    assert first.recoverable and first.positioned, first
    assert first.stream_position and first.stream_position.epoch, first

    phase("receive publications made through the server API")
    offsets = [(await api("publish", {"channel": CHANNEL, "data": {"n": i}}))["offset"] for i in range(3)]
    await wait_for("3 API publications", lambda: len(sev.pubs) == 3)
    assert [p.data for p in sev.pubs] == [{"n": 0}, {"n": 1}, {"n": 2}], sev.pubs
    assert [p.offset for p in sev.pubs] == offsets, (sev.pubs, offsets)

    phase("publish from the client")
    await sub.publish({"from": "py"})
    await wait_for("own publication", lambda: len(sev.pubs) == 4)
    assert sev.pubs[3].data == {"from": "py"}
    assert sev.pubs[3].info.user == "py-alice" and sev.pubs[3].info.client == client_id, sev.pubs[3]

    phase("history")
    h = await sub.history(limit=10)
    assert [p.offset for p in h.publications] == [p.offset for p in sev.pubs], h
    assert h.epoch == first.stream_position.epoch and h.offset == sev.pubs[3].offset, h
    h2 = await sub.history(limit=-1, reverse=True)
    assert [p.offset for p in h2.publications] == [p.offset for p in reversed(sev.pubs)], h2

    phase("presence and presence stats")
    pr = await sub.presence()
    assert client_id in pr.clients and pr.clients[client_id].user == "py-alice", pr
    ps = await sub.presence_stats()
    assert ps.num_clients >= 1 and ps.num_users >= 1, ps

    phase("join and leave of a second client")
    await wait_for("own join", lambda: any(j.user == "py-alice" for j in sev.joins))
    bob = Client(WS_URL, token=mint("py-bob"))
    await bob.connect()
    bev = SubEvents()
    bob_sub = bob.new_subscription(CHANNEL, events=bev, join_leave=True)
    await bob_sub.subscribe()
    await wait_for("bob subscribed", lambda: len(bev.subscribed) == 1)
    await wait_for("join of bob", lambda: any(j.user == "py-bob" for j in sev.joins))
    await bob.disconnect()
    await wait_for("leave of bob", lambda: any(leave.user == "py-bob" for leave in sev.leaves))

    phase("recover after the server drops the connection")
    before = len(sev.pubs)
    last = sev.pubs[-1].offset
    await api("disconnect", {"user": "py-alice", "disconnect": {"code": 3011, "reason": "force reconnect"}})
    missed = [(await api("publish", {"channel": CHANNEL, "data": {"missed": i}}))["offset"] for i in range(5)]
    await wait_for("resubscribed after reconnect", lambda: len(sev.subscribed) == 2, timeout=15)
    again = sev.subscribed[1]
    assert again.was_recovering and again.recovered, again
    await wait_for("missed publications", lambda: len(sev.pubs) == before + 5)
    got = sev.pubs[before:]
    assert [p.offset for p in got] == missed, (got, missed)
    assert [p.data for p in got] == [{"missed": i} for i in range(5)]
    assert missed[0] == last + 1, "no gap"
    all_offsets = [p.offset for p in sev.pubs]
    assert len(set(all_offsets)) == len(all_offsets), "no duplicates"
    assert len(events.connected) == 2, "reconnected once"

    phase("disconnect")
    await alice.disconnect()
    print("centrifuge-python compatibility: all phases passed", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), timeout=60))
    except Exception as e:  # noqa: BLE001 - report any failure as a test failure
        import traceback

        traceback.print_exc()
        print(f"FAIL: {e!r}", file=sys.stderr)
        sys.exit(1)
