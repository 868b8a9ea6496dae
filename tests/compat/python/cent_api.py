"""The server API through `cent`, Centrifugo's official Python API client, unchanged.

Environment (set by tests/compat.rs): SY_API_URL, SY_API_KEY, SY_CHANNEL_PREFIX.
Exits non-zero (an assertion or a cent exception) on any difference it can see.
"""

import os

from cent import (
    BatchRequest,
    ChannelsRequest,
    Client,
    HistoryRequest,
    InfoRequest,
    PresenceStatsRequest,
    PublishRequest,
)

api = Client(os.environ["SY_API_URL"], os.environ["SY_API_KEY"])
ch = os.environ["SY_CHANNEL_PREFIX"] + "cent"

first = api.publish(PublishRequest(channel=ch, data={"n": 1}))
assert first.offset == 1, first
again = api.publish(PublishRequest(channel=ch, data={"n": 1}, idempotency_key="k1"))
retry = api.publish(PublishRequest(channel=ch, data={"n": 1}, idempotency_key="k1"))
assert (again.offset, again.epoch) == (retry.offset, retry.epoch) == (2, first.epoch), (again, retry)

# A batch: cent reads its replies at the top level of the response, one per command in order.
batch = api.batch(
    BatchRequest(
        requests=[
            PublishRequest(channel=ch, data={"n": 3}),
            PublishRequest(channel=ch, data={"n": 4}),
            PresenceStatsRequest(channel=ch),
            HistoryRequest(channel=ch, limit=10),
        ]
    )
)
offsets = [batch.replies[0].offset, batch.replies[1].offset]
assert offsets == [3, 4], batch
assert batch.replies[2].num_clients == 0, batch
history = batch.replies[3]
assert [p.data["n"] for p in history.publications] == [1, 1, 3, 4], history
assert [p.offset for p in history.publications] == [1, 2, 3, 4], history

info = api.info(InfoRequest())
assert len(info.nodes) == 1 and info.nodes[0].version, info
channels = api.channels(ChannelsRequest(pattern=ch))
assert channels.channels == {}, channels  # nobody subscribed
print("cent: ok")
