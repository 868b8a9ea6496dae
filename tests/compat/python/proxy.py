"""Drives the real centrifuge-python SDK through Switchyard's proxy hooks, against the test
backend tests/proxy/backend.py.

Run by tests/proxy.rs with SY_WS_URL, SY_API_URL, SY_API_KEY and SY_BACKEND set. Prints
"--- phase: ..." per phase; exits 0 when every phase passes, 1 with a "FAIL: ..." message
otherwise. Every wait is bounded; the run is cut at 55 s.

API facts relied on (centrifuge-python 0.7.0): Client(address, events=, headers=, data=)
sends `headers` with the WebSocket request and `data` in connect; on_connected gets
ConnectedContext{client, data}; server-side subscriptions call the client handler's
on_subscribed / on_publication; a subscribe error that is not temporary ends in the
subscription's on_unsubscribed(UnsubscribedContext{code, reason}); rpc / publish raise
ReplyError{code, message, temporary} on an error reply.
"""

import asyncio
import json
import os
import sys
import traceback
import urllib.request

from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
)
from centrifuge.exceptions import ReplyError

WS_URL = os.environ["SY_WS_URL"]
API_URL = os.environ["SY_API_URL"]
API_KEY = os.environ["SY_API_KEY"]
WAIT = 8.0


def phase(name):
    print(f"--- phase: {name}", flush=True)


def api_publish(channel, data):
    req = urllib.request.Request(
        f"{API_URL}/publish",
        data=json.dumps({"channel": channel, "data": data}).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as res:
        body = json.loads(res.read())
    assert "result" in body, body


class Events(ClientEventHandler):
    def __init__(self):
        self.connected = asyncio.get_running_loop().create_future()
        self.server_subs = set()
        self.server_pubs = asyncio.Queue()

    async def on_connected(self, ctx: ConnectedContext) -> None:
        if not self.connected.done():
            self.connected.set_result(ctx)

    async def on_subscribed(self, ctx) -> None:
        self.server_subs.add(ctx.channel)

    async def on_publication(self, ctx) -> None:
        await self.server_pubs.put(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self):
        loop = asyncio.get_running_loop()
        self.subscribed = loop.create_future()
        self.unsubscribed = loop.create_future()
        self.pubs = asyncio.Queue()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        if not self.subscribed.done():
            self.subscribed.set_result(ctx)

    async def on_unsubscribed(self, ctx) -> None:
        if not self.unsubscribed.done():
            self.unsubscribed.set_result(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.pubs.put(ctx)


async def main():
    phase("tokenless connect: the cookie authenticates, data and a server-side channel")
    events = Events()
    client = Client(
        WS_URL,
        events=events,
        headers={"Cookie": "session=py-alice"},
        data={"secret": "s3"},
        proxy=None,
    )
    await client.connect()
    ctx = await asyncio.wait_for(events.connected, WAIT)
    assert ctx.data == {"secret": "s3"}, ctx.data
    channel = "proxied:server-py-alice"
    for _ in range(400):
        if channel in events.server_subs:
            break
        await asyncio.sleep(0.02)
    assert channel in events.server_subs, events.server_subs
    api_publish(channel, {"n": 1})
    pub = await asyncio.wait_for(events.server_pubs.get(), WAIT)
    assert pub.pub.data == {"n": 1}, pub.pub.data

    phase("rpc round trip with data, and a backend error")
    r = await client.rpc("echo", {"a": 1})
    assert r.data == {"echo": {"a": 1}, "user": "py-alice", "method": "echo"}, r.data
    try:
        await client.rpc("fail", {})
        raise AssertionError("rpc fail did not raise")
    except ReplyError as e:
        assert (e.code, e.message) == (1003, "backend says no"), (e.code, e.message)

    phase("subscribe refused for one channel, allowed for another")
    refused_events = SubEvents()
    refused = client.new_subscription("proxied:forbidden-py", events=refused_events)
    await refused.subscribe()
    u = await asyncio.wait_for(refused_events.unsubscribed, WAIT)
    assert u.code == 403, (u.code, u.reason)
    room_events = SubEvents()
    room = client.new_subscription("proxied:room-py", events=room_events)
    await room.subscribe()
    s = await asyncio.wait_for(room_events.subscribed, WAIT)
    assert s.data == {"welcome": "proxied:room-py"}, s.data

    phase("a publication rewritten by the publish proxy")
    await room.publish({"text": "hey"})
    p = await asyncio.wait_for(room_events.pubs.get(), WAIT)
    assert p.pub.data == {"text": "HEY", "by": "backend"}, p.pub.data
    await client.disconnect()


def run():
    try:
        asyncio.run(asyncio.wait_for(main(), 55))
    except BaseException:  # noqa: BLE001 - any failure is the test's failure
        print(f"FAIL: {traceback.format_exc()}", flush=True)
        return 1
    print("--- all phases passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
