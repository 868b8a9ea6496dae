"""Drives the real centrifuge-python SDK against a running Switchyard node.

Run by tests/compat.rs with SY_WS_URL, SY_API_URL, SY_API_KEY, SY_BIN, SY_CONFIG and
SY_CHANNEL_PREFIX set; with SY_PROTOBUF=1 the SDK speaks the Protobuf protocol
(use_protobuf=True: payloads are bytes both ways) and a last phase checks binary payloads.
Prints "--- phase: ..." per phase; exits 0 when every phase passes,
1 with a "FAIL: ..." message otherwise. Every wait is bounded; the run is cut at 55 s.

API facts relied on (centrifuge-python 0.7.0, centrifuge/client.py, contexts.py, types.py):
- Client(address, events=ClientEventHandler, token=..., min_reconnect_delay=s,
  max_reconnect_delay=s, proxy=None); the reconnect delay is backoff(attempt, min, max) >= min.
- ClientEventHandler.on_connected(ConnectedContext{client, version, data}),
  on_connecting / on_disconnected(ctx{code, reason}), on_error(ErrorContext{code, error}).
- client.new_subscription(channel, events=SubscriptionEventHandler, positioned=, recoverable=,
  join_leave=); SubscriptionEventHandler.on_subscribed(SubscribedContext{channel, recoverable,
  positioned, stream_position{offset, epoch}, was_recovering, recovered, data}),
  on_publication(PublicationContext{pub: Publication{offset, data, info, tags, delta}}),
  on_join / on_leave(ctx{info: ClientInfo{client, user, conn_info, chan_info}}).
- sub.history(limit=0, since=StreamPosition, reverse=False) -> HistoryResult{publications,
  offset, epoch}; sub.presence() -> PresenceResult{clients}; sub.presence_stats() ->
  PresenceStatsResult{num_clients, num_users}.
"""

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import threading
import traceback
import urllib.error
import urllib.request

from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    ErrorContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    StreamPosition,
    SubscribedContext,
    SubscriptionErrorContext,
    SubscriptionEventHandler,
)

WS_URL = os.environ["SY_WS_URL"]
API_URL = os.environ["SY_API_URL"]
API_KEY = os.environ["SY_API_KEY"]
PREFIX = os.environ["SY_CHANNEL_PREFIX"]
CHANNEL = f"{PREFIX}room"
PROTOBUF = os.environ.get("SY_PROTOBUF") == "1"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

# The API is on 127.0.0.1: never go through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def phase(name: str) -> None:
    print(f"--- phase: {name}", flush=True)


def check(cond, msg) -> None:
    """An assertion that survives python -O."""
    if not cond:
        raise AssertionError(msg)


def enc(value):
    """A payload as the SDK takes it: JSON text as bytes in Protobuf mode, the value in JSON."""
    return json.dumps(value, separators=(",", ":")).encode() if PROTOBUF else value


def dec(data):
    """A received payload as a value: Protobuf mode gives the JSON text's bytes."""
    if PROTOBUF:
        check(isinstance(data, bytes), f"Protobuf payloads are bytes: {data!r}")
        return json.loads(data)
    return data


def mint(user: str, info=None) -> str:
    args = [os.environ["SY_BIN"], "token", "--config", os.environ["SY_CONFIG"], "--user", user, "--ttl", "1h"]
    if info is not None:
        args += ["--info", json.dumps(info)]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=10)
    token = out.stdout.strip()
    check(token and "\n" not in token, f"switchyard token printed one line, got {out.stdout!r}")
    return token


def _api_sync(method: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{API_URL}/{method}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _opener.open(req, timeout=5) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    check(status == 200, f"API {method}: HTTP {status}: {text}")
    payload = json.loads(text)
    check("result" in payload and "error" not in payload, f"API {method} returned {text}")
    return payload["result"]


def metric(name: str) -> float:
    """A counter from the node's /metrics (SY_ADMIN_URL)."""
    with _opener.open(f"{os.environ['SY_ADMIN_URL']}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def api(method: str, body: dict) -> dict:
    return await asyncio.get_running_loop().run_in_executor(None, _api_sync, method, body)


async def api_publish(data) -> dict:
    r = await api("publish", {"channel": CHANNEL, "data": data})
    check(isinstance(r.get("offset"), int), f"API publish result has a numeric offset: {r}")
    check(isinstance(r.get("epoch"), str) and r["epoch"], f"API publish result has an epoch: {r}")
    return r


async def wait_for(what: str, pred, timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ClientEvents(ClientEventHandler):
    def __init__(self, who: str) -> None:
        self.who = who
        self.connected: list[ConnectedContext] = []
        self.connecting: list[ConnectingContext] = []
        self.disconnected: list[DisconnectedContext] = []

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx)

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.connecting.append(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnected.append(ctx)

    async def on_error(self, ctx: ErrorContext) -> None:
        print(f"[{self.who}] error event: {ctx}", file=sys.stderr, flush=True)


class SubEvents(SubscriptionEventHandler):
    def __init__(self, who: str) -> None:
        self.who = who
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

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        print(f"[{self.who} sub] error event: {ctx}", file=sys.stderr, flush=True)


def offs(pubs) -> list:
    return [p.offset for p in pubs]


async def main() -> None:
    phase("a) connect with a minted token")
    events = ClientEvents("py-alice")
    # A reconnect waits 1.5-2 s, so the recovery phase can publish while the client is away.
    alice = Client(
        WS_URL,
        events=events,
        token=mint("py-alice"),
        min_reconnect_delay=1.5,
        max_reconnect_delay=2.0,
        proxy=None,
        use_protobuf=PROTOBUF,
    )
    await alice.connect()
    await wait_for("alice connected", lambda: len(events.connected) == 1)
    client_id = events.connected[0].client
    check(isinstance(client_id, str) and UUID_RE.match(client_id), f"client id is a UUID: {client_id!r}")
    check(alice.state.value == "connected", alice.state)

    phase("b) subscribe recoverable + positioned + join/leave")
    sev = SubEvents("py-alice")
    sub = alice.new_subscription(CHANNEL, events=sev, recoverable=True, positioned=True, join_leave=True)
    await sub.subscribe()
    await wait_for("subscribed", lambda: len(sev.subscribed) == 1)
    first = sev.subscribed[0]
    check(first.channel == CHANNEL, first)
    check(first.recoverable is True and first.positioned is True, f"recoverable/positioned: {first}")
    check(not first.was_recovering and not first.recovered, first)
    check(first.stream_position is not None and first.stream_position.epoch, f"epoch in subscribe reply: {first}")
    epoch = first.stream_position.epoch
    top0 = first.stream_position.offset

    phase("c) receive publications made through the server API")
    results = [await api_publish({"n": i}) for i in range(3)]
    offsets = [r["offset"] for r in results]
    check(all(r["epoch"] == epoch for r in results), f"API publish epoch equals the subscribe epoch: {results}")
    check(offsets == [top0 + 1, top0 + 2, top0 + 3], f"offsets grow by 1 from {top0}: {offsets}")
    await wait_for("3 API publications", lambda: len(sev.pubs) >= 3)
    check(len(sev.pubs) == 3, f"exactly 3 publications: {sev.pubs}")
    check([dec(p.data) for p in sev.pubs] == [{"n": 0}, {"n": 1}, {"n": 2}], f"data, in order: {sev.pubs}")
    check(offs(sev.pubs) == offsets, f"offsets equal the API-returned ones: {sev.pubs} vs {offsets}")

    phase("d) publish from the client")
    await sub.publish(enc({"from": "py"}))
    await wait_for("own publication", lambda: len(sev.pubs) >= 4)
    own = sev.pubs[3]
    check(len(sev.pubs) == 4 and dec(own.data) == {"from": "py"}, sev.pubs)
    check(own.info is not None, f"own publication carries info: {own}")
    check(own.info.user == "py-alice", f"info.user is the publisher: {own}")
    check(own.info.client == client_id, f"info.client is the publishing connection: {own}")
    check(own.offset == offsets[2] + 1, own)

    phase("e) history")
    received = [(p.offset, p.data) for p in sev.pubs]
    top = own.offset
    h = await sub.history(limit=10)
    check([(p.offset, p.data) for p in h.publications] == received, f"history limit 10: {h}")
    check(h.epoch == epoch and h.offset == top, f"history position: {h}")
    check(h.publications[3].info is not None and h.publications[3].info.user == "py-alice", f"history info: {h}")
    h_all = await sub.history(limit=-1)
    check(offs(h_all.publications) == [o for o, _ in received], f"history limit -1 = all: {h_all}")
    h_pos = await sub.history()
    check(h_pos.publications == [] and h_pos.offset == top and h_pos.epoch == epoch, f"position only: {h_pos}")
    h_rev = await sub.history(limit=2, reverse=True)
    check(offs(h_rev.publications) == [top, top - 1], f"reverse history, newest first: {h_rev}")
    h_since = await sub.history(limit=10, since=StreamPosition(offset=offsets[0], epoch=epoch))
    check(offs(h_since.publications) == [offsets[1], offsets[2], top], f"history since: {h_since}")

    phase("f) presence and presence stats")
    pr = await sub.presence()
    check(client_id in pr.clients, f"own client in presence: {pr}")
    check(pr.clients[client_id].user == "py-alice" and pr.clients[client_id].client == client_id, pr)
    ps = await sub.presence_stats()
    check(ps.num_clients >= 1 and ps.num_users >= 1, f"presence stats: {ps}")

    phase("g) join and leave of a second client")
    await wait_for("own join", lambda: any(j.user == "py-alice" and j.client == client_id for j in sev.joins))
    bev_client = ClientEvents("py-bob")
    bob = Client(
        WS_URL, events=bev_client, token=mint("py-bob", {"name": "Bob"}), proxy=None, use_protobuf=PROTOBUF
    )
    await bob.connect()
    bev = SubEvents("py-bob")
    bob_sub = bob.new_subscription(CHANNEL, events=bev, join_leave=True)
    await bob_sub.subscribe()
    await wait_for("bob subscribed", lambda: len(bev.subscribed) == 1)
    bob_id = bev_client.connected[0].client
    await wait_for("join of bob", lambda: any(j.user == "py-bob" for j in sev.joins))
    bob_join = next(j for j in sev.joins if j.user == "py-bob")
    check(bob_join.client == bob_id, f"join carries bob's client id: {bob_join}")
    check(dec(bob_join.conn_info) == {"name": "Bob"}, f"join carries conn_info from the token: {bob_join}")
    ps2 = await sub.presence_stats()
    check(ps2.num_clients >= 2 and ps2.num_users >= 2, f"presence stats with bob: {ps2}")
    pr2 = await sub.presence()
    check(bob_id in pr2.clients and dec(pr2.clients[bob_id].conn_info) == {"name": "Bob"}, f"bob in presence: {pr2}")
    # Leave through a disconnect here (the js script unsubscribes instead).
    await bob.disconnect()
    await wait_for("leave of bob", lambda: any(x.user == "py-bob" for x in sev.leaves))
    check(next(x for x in sev.leaves if x.user == "py-bob").client == bob_id, sev.leaves)

    phase("h) recover after the server drops the connection (API disconnect 3011)")
    before = len(sev.pubs)
    last = sev.pubs[-1].offset
    n_connecting = len(events.connecting)  # connect() itself emitted one (code 0)
    await api("disconnect", {"user": "py-alice", "disconnect": {"code": 3011, "reason": "force reconnect"}})
    await wait_for("alice dropped by the server", lambda: len(events.connecting) > n_connecting, timeout=5)
    drop = events.connecting[n_connecting]
    check(drop.code == 3011, f"connecting event has the close code: {drop}")
    check(not events.disconnected, f"3011 is not terminal: {events.disconnected}")
    missed = [(await api_publish({"missed": i}))["offset"] for i in range(5)]
    check(len(events.connected) == 1, "test setup: the 5 publications were made while alice was away")
    check(missed == [last + k for k in range(1, 6)], f"no gap in the offsets: {missed} after {last}")
    await wait_for("resubscribed after reconnect", lambda: len(sev.subscribed) == 2, timeout=15)
    check(len(events.connected) == 2, "reconnected once")
    again = sev.subscribed[1]
    check(again.was_recovering is True, f"was_recovering: {again}")
    check(again.recovered is True, f"recovered: {again}")
    check(again.stream_position is not None and again.stream_position.epoch == epoch, f"same epoch: {again}")
    await wait_for("the 5 missed publications", lambda: len(sev.pubs) >= before + 5)
    await asyncio.sleep(0.3)  # a duplicate would show up here
    got = sev.pubs[before:]
    check(offs(got) == missed, f"exactly the missed ones, in order: {got} vs {missed}")
    check([dec(p.data) for p in got] == [{"missed": i} for i in range(5)], got)
    all_offsets = offs(sev.pubs)
    check(len(set(all_offsets)) == len(all_offsets), f"no duplicate publication: {all_offsets}")
    live = await api_publish({"live": True})
    await wait_for("live publication after recovery", lambda: len(sev.pubs) >= before + 6)
    check(sev.pubs[before + 5].offset == live["offset"] == missed[4] + 1, sev.pubs[before:])

    if PROTOBUF:
        phase("h2) binary payloads: API b64data and a client publication, bytes unchanged")
        n = len(sev.pubs)
        raw = bytes([0, 0xFF, 0x80, 10, 13])
        # 4 KiB: over client.websocket_compression_min_size, so sent compressed (a shared slot).
        big = bytes(range(256)) * 16
        shared0 = metric("switchyard_shared_compressions_total")
        await api("publish", {"channel": CHANNEL, "b64data": base64.b64encode(raw).decode()})
        await api("publish", {"channel": CHANNEL, "b64data": base64.b64encode(big).decode()})
        await sub.publish(bytes([0xC3, 0x28]))
        await wait_for("three binary publications", lambda: len(sev.pubs) >= n + 3)
        check([p.data for p in sev.pubs[n:]] == [raw, big, bytes([0xC3, 0x28])], sev.pubs[n:])
        shared = metric("switchyard_shared_compressions_total")
        check(shared > shared0, f"the 4 KiB Protobuf push went out compressed: {shared0} -> {shared}")
        hb = await sub.history(limit=2, reverse=True)
        check([p.data for p in hb.publications] == [bytes([0xC3, 0x28]), big], f"binary history: {hb}")

    if PROTOBUF:
        # tests/compat.rs runs the Protobuf mode with server pings every second: stay connected
        # through a few, answering each (an empty Reply) with a pong (an empty Command).
        phase("h3) keep-alive: three server pings answered")
        await asyncio.sleep(3.2)
    # The only drop was the forced one: no 3012 (a missed pong) or any other along the way.
    codes = [c.code for c in events.connecting]
    check(codes == [0, 3011], f"connecting events: {events.connecting}")

    phase("i) disconnect")
    await alice.disconnect()
    await wait_for("disconnected event", lambda: len(events.disconnected) == 1, timeout=3)
    check(alice.state.value == "disconnected", alice.state)
    mode = "Protobuf" if PROTOBUF else "JSON"
    print(f"centrifuge-python compatibility ({mode}): all phases passed", flush=True)


def _watchdog() -> None:
    print("FAIL: centrifuge-python compatibility run exceeded 58 s", file=sys.stderr, flush=True)
    os._exit(1)


if __name__ == "__main__":
    # Last resort if the event loop itself hangs (asyncio.wait_for below handles the rest).
    hard = threading.Timer(58, _watchdog)
    hard.daemon = True
    hard.start()
    try:
        # A TimeoutError raised from wait_for itself means the whole run exceeded 55 s.
        asyncio.run(asyncio.wait_for(main(), timeout=55))
    except BaseException as e:  # noqa: BLE001 - any failure is a test failure
        traceback.print_exc()
        print(f"FAIL: {e!r}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    sys.exit(0)
