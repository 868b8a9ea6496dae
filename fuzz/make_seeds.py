#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/seeds/<target>/) from real client frames: what centrifuge-js
and centrifuge-python send (connect with subs, subscribe with recovery, publish, history,
presence, rpc, send, refresh, pong, newline-batched frames), in JSON and (protobuf_command)
in the Protobuf form, encoded here by hand with the field numbers of client.proto. Re-run after changing it; the
output is committed."""
import json, os, shutil, struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")

def j(v):
    return json.dumps(v, separators=(",", ":"))

CONNECT = j({"id": 1, "connect": {"name": "js", "version": "5.0.0", "data": {"x": 1},
                                  "subs": {"chat:a": {"recover": True, "offset": 3, "epoch": "e"}}}})
COMMANDS = [
    j({"id": 2, "subscribe": {"channel": "chat:a", "recoverable": True, "positioned": True, "join_leave": True}}),
    j({"id": 3, "subscribe": {"channel": "news", "recover": True, "offset": 1, "epoch": "abc"}}),
    j({"id": 4, "publish": {"channel": "chat:a", "data": {"text": "hi", "n": [1, 2.5, None, True]}}}),
    j({"id": 5, "publish": {"channel": "news", "data": "plain"}}),
    j({"id": 6, "history": {"channel": "chat:a", "limit": 10, "since": {"offset": 0, "epoch": "e"}, "reverse": True}}),
    j({"id": 7, "history": {"channel": "news", "limit": -1}}),
    j({"id": 8, "presence": {"channel": "chat:a"}}),
    j({"id": 9, "presence_stats": {"channel": "chat:a"}}),
    j({"id": 10, "rpc": {"method": "m", "data": {"a": 1}}}),
    j({"send": {"data": {"a": 1}}}),
    j({"id": 11, "refresh": {"token": "x.y.z"}}),
    j({"id": 12, "sub_refresh": {"channel": "chat:a", "token": "x.y.z"}}),
    j({"id": 13, "unsubscribe": {"channel": "chat:a"}}),
    j({"id": 14, "subscribe": {"channel": "news#42,43"}}),
    j({"id": 15, "subscribe": {"channel": "$private", "token": "x.y.z"}}),
    "{}",
]

def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def frame(b0, payload, mask=b"\x11\x22\x33\x44"):
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def fv(tag, n):  # varint field
    return varint(tag << 3) + varint(n)

def fb(tag, b):  # length-delimited field
    b = b.encode() if isinstance(b, str) else b
    return varint(tag << 3 | 2) + varint(len(b)) + b

def delimited(body):
    return varint(len(body)) + body

PB_SUB = fb(1, "chat:a") + fv(3, 1) + fb(6, "e") + fv(7, 3) + fv(9, 1) + fv(10, 1) + fv(11, 1)
PB_COMMANDS = [
    fv(1, 1) + fb(4, fb(1, "x.y.z") + fb(2, b'{"x":1}') + fb(3, fb(1, "chat:a") + fb(2, PB_SUB))
                  + fb(4, "py") + fb(5, "0.7.0")),
    fv(1, 2) + fb(5, PB_SUB),
    fv(1, 3) + fb(7, fb(1, "chat:a") + fb(2, b'{"text":"hi"}')),
    fv(1, 4) + fb(7, fb(1, "news") + fb(2, bytes([0, 255, 128]))),
    fv(1, 5) + fb(10, fb(1, "chat:a") + fv(7, 10) + fb(8, fv(1, 0) + fb(2, "e")) + fv(9, 1)),
    fv(1, 6) + fb(10, fb(1, "news") + varint(7 << 3) + varint(2**64 - 1)),  # limit -1
    fv(1, 7) + fb(8, fb(1, "chat:a")),
    fv(1, 8) + fb(9, fb(1, "chat:a")),
    fv(1, 9) + fb(13, fb(1, b'{"a":1}') + fb(2, "m")),
    fb(12, fb(1, b"x")),
    fv(1, 10) + fb(14, fb(1, "x.y.z")),
    fv(1, 11) + fb(15, fb(1, "chat:a") + fb(2, "x.y.z")),
    fv(1, 12) + fb(6, fb(1, "chat:a")),
    b"",  # pong
]

shutil.rmtree(OUT, ignore_errors=True)
for i, c in enumerate([CONNECT] + COMMANDS):
    write("json_command", f"cmd{i:02}", c.encode())
write("json_command", "batched", "\n".join([CONNECT] + COMMANDS[:4]).encode())

for i, c in enumerate(PB_COMMANDS):
    write("protobuf_command", f"cmd{i:02}", delimited(c))
write("protobuf_command", "batched", b"".join(delimited(c) for c in PB_COMMANDS))
write("protobuf_command", "truncated", delimited(PB_COMMANDS[0])[:-3])

# session, Protobuf: marker byte 0xB1, then messages behind a 2-byte little-endian length; an
# anonymous connect (the harness allows them) first.
PB_CONNECT = delimited(fv(1, 1) + fb(4, fb(4, "py") + fb(5, "0.7.0")))
def pb_session(msgs):
    return b"\xb1" + b"".join(struct.pack("<H", len(m)) + m for m in msgs)
write("session", "protobuf_all_commands", pb_session([PB_CONNECT] + [delimited(c) for c in PB_COMMANDS[1:]]))
write("session", "protobuf_batched", pb_session([PB_CONNECT + b"".join(delimited(c) for c in PB_COMMANDS[1:])]))

# session: messages separated by NUL, each message possibly newline-batched.
write("session", "all_commands", b"\0".join(c.encode() for c in [CONNECT] + COMMANDS))
write("session", "batched", "\n".join([CONNECT] + COMMANDS).encode())
for i, c in enumerate(COMMANDS):
    write("session", f"connect_then_{i:02}", (CONNECT + "\0" + c).encode())
write("session", "no_connect", COMMANDS[2].encode())

# ws_frames: masked client frames.
msgs = [CONNECT] + COMMANDS[:5]
write("ws_frames", "text_frames", b"".join(frame(0x81, m.encode()) for m in msgs))
batched = "\n".join(msgs).encode()
write("ws_frames", "batched_frame", frame(0x81, batched))
third = len(batched) // 3
write("ws_frames", "fragmented_with_ping",
      frame(0x01, batched[:third]) + frame(0x89, b"ping") + frame(0x00, batched[third:2 * third])
      + frame(0x80, batched[2 * third:]))
write("ws_frames", "binary_ping_pong_close",
      frame(0x82, bytes(range(200))) + frame(0x89, b"") + frame(0x8A, b"p") + frame(0x88, struct.pack(">H", 1000) + b"bye"))
write("ws_frames", "long_frame", frame(0x81, ("x" * 5000).encode()))
write("ws_frames", "utf8", frame(0x01, "caf\u00e9 \u20ac".encode()[:5]) + frame(0x80, "caf\u00e9 \u20ac".encode()[5:]))
