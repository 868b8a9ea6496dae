//! A corpus of garbage, malformed and hostile WebSocket input (JSON and Protobuf connections)
//! sent over raw TCP to the real binary: each input ends in its documented close code (or error reply), the node keeps
//! serving a healthy client afterwards, and its memory stays bounded when the whole corpus is
//! repeated.

mod common;

use std::net::SocketAddr;

use common::masked_frame as frame;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Rounds of the whole corpus after the warm-up round.
const ROUNDS: usize = 4;
/// Most RSS growth tolerated between the end of the warm-up round and the last round.
const RSS_SLACK_KIB: u64 = 64 * 1024;
/// `client.max_message_size` in the test config (the default).
const MAX: usize = 65_536;

/// What the server must do with an input.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Close the connection with this code.
    Close(u16),
    /// Answer command 2 with this error code and keep the connection.
    Error(u64),
    /// Answer with a pong carrying the ping's payload.
    Pong,
}

struct Case {
    name: &'static str,
    /// Send a valid `connect` first (and wait for its reply).
    connect: bool,
    bytes: Vec<u8>,
    expect: Expect,
}

fn text(payload: &[u8]) -> Vec<u8> {
    frame(0x81, payload)
}

fn cmd(v: Value) -> Vec<u8> {
    text(v.to_string().as_bytes())
}

fn corpus() -> Vec<Case> {
    let c = |name, connect, bytes, expect| Case {
        name,
        connect,
        bytes,
        expect,
    };
    let deep = format!(
        r#"{{"id":2,"publish":{{"channel":"open:x","data":{}0{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let mut many_tiny = frame(0x01, b"{");
    for _ in 0..MAX + 10 {
        many_tiny.extend(frame(0x00, b" "));
    }
    many_tiny.extend(frame(0x80, b"}"));
    let mut unmasked = vec![0x81];
    frame_len(&mut unmasked, 2, false);
    unmasked.extend_from_slice(b"{}");
    // A frame announcing 2^40 bytes: refused on its header, nothing is allocated for it.
    let mut huge_len = vec![0x82, 0x80 | 127];
    huge_len.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge_len.extend_from_slice(&[1, 2, 3, 4]);
    let mut top_bit_len = vec![0x82, 0x80 | 127];
    top_bit_len.extend_from_slice(&(1u64 << 63).to_be_bytes());
    top_bit_len.extend_from_slice(&[1, 2, 3, 4]);
    vec![
        // --- payloads
        c(
            "truncated UTF-8 in a text frame",
            true,
            text(b"{\"id\":2,\"publish\":{\"channel\":\"open:x\",\"data\":\"\xe2\x82\"}}"),
            Expect::Close(1007),
        ),
        c(
            "truncated UTF-8 at the end of a fragmented message",
            true,
            [
                frame(0x01, b"{\"id\":2,\"send\":\"\xe2"),
                frame(0x80, b"\x82"),
            ]
            .concat(),
            Expect::Close(1007),
        ),
        c(
            "deep JSON nesting",
            true,
            text(deep.as_bytes()),
            Expect::Close(3501),
        ),
        c(
            "huge id",
            true,
            text(br#"{"id":123456789012345678901234567890,"presence":{"channel":"open:x"}}"#),
            Expect::Close(3501),
        ),
        c(
            "huge history limit",
            true,
            text(br#"{"id":2,"history":{"channel":"open:x","limit":1e999}}"#),
            Expect::Close(3501),
        ),
        c(
            "wrong type: channel is a number",
            true,
            cmd(json!({"id": 2, "subscribe": {"channel": 42}})),
            Expect::Close(3501),
        ),
        c(
            "wrong type: the command is an array",
            true,
            text(b"[1,2,3]"),
            Expect::Close(3501),
        ),
        c(
            "command before connect",
            false,
            cmd(json!({"id": 2, "publish": {"channel": "open:x", "data": 1}})),
            Expect::Close(3501),
        ),
        c(
            "binary frame",
            true,
            frame(0x82, &[0, 1, 2]),
            Expect::Close(3501),
        ),
        c(
            "unknown method",
            true,
            cmd(json!({"id": 2, "frobnicate": {}})),
            Expect::Error(104),
        ),
        c(
            "unknown namespace",
            true,
            cmd(json!({"id": 2, "publish": {"channel": "nope:x", "data": 1}})),
            Expect::Error(102),
        ),
        // --- framing
        c(
            "ping with 126 bytes",
            true,
            frame(0x89, &[b'p'; 126]),
            Expect::Close(1002),
        ),
        c(
            "pong with 200 bytes",
            true,
            frame(0x8A, &[b'p'; 200]),
            Expect::Close(1002),
        ),
        c(
            "close with 126 bytes",
            true,
            frame(0x88, &[[0x03, 0xe8].as_slice(), &[b'r'; 124]].concat()),
            Expect::Close(1002),
        ),
        c(
            "fragmented ping",
            true,
            [frame(0x09, b"a"), frame(0x80, b"b")].concat(),
            Expect::Close(1002),
        ),
        c("unmasked client frame", true, unmasked, Expect::Close(1002)),
        c("RSV1 set", true, frame(0xC1, b"{}"), Expect::Close(1002)),
        c("RSV2 set", true, frame(0xA1, b"{}"), Expect::Close(1002)),
        c("RSV3 set", true, frame(0x91, b"{}"), Expect::Close(1002)),
        c(
            "unknown data opcode",
            true,
            frame(0x83, b"{}"),
            Expect::Close(1002),
        ),
        c(
            "unknown control opcode",
            true,
            frame(0x8B, b""),
            Expect::Close(1002),
        ),
        c(
            "continuation without a message",
            true,
            frame(0x80, b"{}"),
            Expect::Close(1002),
        ),
        c(
            "new message inside a fragmented one",
            true,
            [frame(0x01, b"{"), frame(0x81, b"{}")].concat(),
            Expect::Close(1002),
        ),
        c(
            "close payload of one byte",
            true,
            frame(0x88, &[0x03]),
            Expect::Close(1002),
        ),
        c(
            "close with an invalid code",
            true,
            frame(0x88, &1005u16.to_be_bytes()),
            Expect::Close(1002),
        ),
        c(
            "close with an invalid UTF-8 reason",
            true,
            frame(0x88, &[0x03, 0xe8, 0xc3, 0x28]),
            Expect::Close(1007),
        ),
        c(
            "close with a valid code is echoed",
            true,
            frame(0x88, &[&4001u16.to_be_bytes()[..], b"bye"].concat()),
            Expect::Close(4001),
        ),
        c(
            "oversized frame",
            true,
            text(&vec![b' '; MAX + 1]),
            Expect::Close(1009),
        ),
        c("frame length 2^40", true, huge_len, Expect::Close(1009)),
        c(
            "frame length with the top bit set",
            true,
            top_bit_len,
            Expect::Close(1002),
        ),
        c(
            "many tiny continuation frames past the cap",
            true,
            many_tiny,
            Expect::Close(1009),
        ),
        c(
            "ping of 125 bytes is answered",
            true,
            frame(0x89, &[b'q'; 125]),
            Expect::Pong,
        ),
    ]
}

/// The Protobuf part of the corpus (subprotocol `centrifuge-protobuf`, binary frames after a
/// Protobuf `connect`): each closes with its code. Commands are encoded by hand (the field
/// numbers of client.proto).
fn protobuf_corpus() -> Vec<(&'static str, Vec<u8>, u16)> {
    let bin = |payload: &[u8]| frame(0x82, payload);
    // id 2, rpc {data: 0xff, method "m"}: binary data for a proxy-only field.
    let rpc = [0x08, 2, 0x6a, 6, 0x0a, 1, 0xff, 0x12, 1, b'm'];
    let mut rpc_msg = vec![rpc.len() as u8];
    rpc_msg.extend_from_slice(&rpc);
    // A message of 60,000 bytes whose last command announces more than is left.
    let mut long_truncated = vec![0u8; 59_990];
    long_truncated.extend_from_slice(&[0xff, 0xff, 0x03, 1, 2, 3, 4, 5, 6, 7]);
    vec![
        ("pb: truncated varint", bin(&[0x80]), 3501),
        ("pb: varint over 10 bytes", bin(&[0xff; 12]), 3501),
        ("pb: length past the end", bin(&[40, 8, 1]), 3501),
        (
            "pb: length of 2^35 announced",
            bin(&[0xff, 0xff, 0xff, 0xff, 0x7f, 0]),
            1009,
        ),
        (
            "pb: id with the wrong wire type",
            bin(&[3, 0x0a, 1, 0]),
            3501,
        ),
        ("pb: binary rpc data", bin(&rpc_msg), 3501),
        (
            "pb: pongs then a truncated command",
            bin(&long_truncated),
            3501,
        ),
        ("pb: a text frame", text(b"{}"), 3501),
    ]
}

/// Opens a raw Protobuf WebSocket and connects (consuming the reply).
async fn open_protobuf(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = raw_upgrade(
        &mut s,
        addr,
        "/connection/websocket",
        "Sec-WebSocket-Protocol: centrifuge-protobuf\r\n",
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: centrifuge-protobuf"),
        "{head}"
    );
    // id 1, connect {token}.
    let t = token("garbage");
    let mut inner = vec![0x0a];
    inner.extend_from_slice(&varint(t.len()));
    inner.extend_from_slice(t.as_bytes());
    let mut cmd = vec![0x08, 1, 0x22];
    cmd.extend_from_slice(&varint(inner.len()));
    cmd.extend_from_slice(&inner);
    let mut msg = varint(cmd.len());
    msg.extend_from_slice(&cmd);
    s.write_all(&frame(0x82, &msg)).await.unwrap();
    match read_frame(&mut s).await {
        Some(ServerFrame::Other) => {}
        other => panic!("no binary connect reply: {other:?}"),
    }
    s
}

fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Sends one Protobuf case and checks the close code.
async fn run_protobuf_case(addr: SocketAddr, (name, bytes, code): &(&str, Vec<u8>, u16)) {
    let mut s = open_protobuf(addr).await;
    let _ = s.write_all(bytes).await;
    for _ in 0..16 {
        match read_frame(&mut s).await {
            Some(ServerFrame::Close(got)) => {
                assert_eq!(got, Some(*code), "{name}");
                return;
            }
            Some(ServerFrame::Other | ServerFrame::Pong(_)) => continue,
            other => panic!("{name}: expected close {code}, got {other:?}"),
        }
    }
    panic!("{name}: no close within 16 frames");
}

/// Opens a raw WebSocket (and connects when asked, consuming the reply).
async fn open(addr: SocketAddr, connect: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_upgrade(&mut s, addr, "/connection/websocket", "").await;
    if connect {
        s.write_all(&cmd(
            json!({"id": 1, "connect": {"token": token("garbage")}}),
        ))
        .await
        .unwrap();
        match read_frame(&mut s).await {
            Some(ServerFrame::Text(t)) => assert!(t.contains("\"client\""), "{t}"),
            other => panic!("no connect reply: {other:?}"),
        }
    }
    s
}

#[derive(Debug)]
enum ServerFrame {
    Text(String),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// Any other opcode (binary, ping, continuation).
    Other,
}

/// Reads one server frame (servers never mask); `None` when the socket ends or stalls.
async fn read_frame(s: &mut TcpStream) -> Option<ServerFrame> {
    tokio::time::timeout(WAIT, async {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.ok()?;
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.ok()?;
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.ok()?;
            len = u64::from_be_bytes(l) as usize;
        }
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).await.ok()?;
        Some(match h[0] & 0x0f {
            0x1 => ServerFrame::Text(String::from_utf8(p).expect("server text is UTF-8")),
            0xA => ServerFrame::Pong(p),
            0x8 => ServerFrame::Close(p.get(0..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
            _ => ServerFrame::Other,
        })
    })
    .await
    .ok()
    .flatten()
}

/// Sends one case and checks the server's answer.
async fn run_case(addr: SocketAddr, case: &Case) {
    let mut s = open(addr, case.connect).await;
    // The server may close before everything is written (e.g. on the first bad header).
    let _ = s.write_all(&case.bytes).await;
    let frames_limit = 16;
    for _ in 0..frames_limit {
        let f = read_frame(&mut s).await;
        match (case.expect, f) {
            (Expect::Close(code), Some(ServerFrame::Close(got))) => {
                assert_eq!(got, Some(code), "{}", case.name);
                return;
            }
            (Expect::Error(code), Some(ServerFrame::Text(t))) => {
                let hit = t.lines().any(|l| {
                    let v: Value = serde_json::from_str(l).expect("server sent JSON");
                    v["id"] == 2 && v["error"]["code"] == code
                });
                if hit {
                    return;
                }
            }
            (Expect::Pong, Some(ServerFrame::Pong(p))) => {
                assert_eq!(p, vec![b'q'; 125], "{}", case.name);
                return;
            }
            (_, Some(ServerFrame::Text(_) | ServerFrame::Pong(_))) => continue,
            (expect, other) => panic!("{}: expected {expect:?}, got {other:?}", case.name),
        }
    }
    panic!("{}: no answer within {frames_limit} frames", case.name);
}

/// Proves the node still serves a fresh client end to end (subscribe, publish, receive).
async fn still_serving(addr: SocketAddr) {
    let mut c = Client::open(&format!("ws://{addr}/connection/websocket")).await;
    let r = c.connect(&token("probe")).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    c.subscribe("open:probe").await;
    let (st, body) = api_call(
        addr,
        "publish",
        Some(API_KEY),
        &json!({"channel": "open:probe", "data": "ok"}).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(c.publication("open:probe").await["data"], "ok");
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(&pid.to_string(), "VmRSS")
}

/// Every corpus input gets its documented answer from the real binary, which keeps serving
/// after each round; repeating the corpus does not grow its memory by more than a bound.
#[tokio::test]
async fn garbage_corpus_against_the_binary() {
    let cfg = config_file("");
    let proc = Proc::start(cfg.path(), &[]);
    let addr = proc.client_addr;
    let pid = proc.child.id();
    let cases = corpus();
    let pb_cases = protobuf_corpus();
    let mut after_warmup = 0;
    for round in 0..=ROUNDS {
        for case in &cases {
            run_case(addr, case).await;
        }
        for case in &pb_cases {
            run_protobuf_case(addr, case).await;
        }
        still_serving(addr).await;
        let rss = rss_kib(pid);
        eprintln!("round {round}: RSS {rss} KiB");
        if round == 0 {
            after_warmup = rss;
        }
    }
    let last = rss_kib(pid);
    assert!(
        last < after_warmup + RSS_SLACK_KIB,
        "RSS grew from {after_warmup} KiB to {last} KiB over {ROUNDS} rounds of the corpus"
    );
    // Every connection of the corpus is gone: the node forgot them all.
    eventually("all garbage connections are closed", || async {
        let (_, b) = api_call(addr, "info", Some(API_KEY), "{}").await;
        b["result"]["nodes"][0]["num_clients"] == 0
    })
    .await;
}

/// `GET /autobahn/echo` exists only when `[testing] echo_endpoint` is on; then it echoes text
/// and binary messages (fragmented ones reassembled) and still refuses protocol violations.
#[tokio::test]
async fn echo_endpoint_only_when_enabled() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let off = TestServer::start().await;
    let url = format!("ws://{}/autobahn/echo", off.addr);
    assert!(
        tokio_tungstenite::connect_async(&url).await.is_err(),
        "the echo endpoint is off by default"
    );

    let on =
        TestServer::start_with("[testing]\necho_endpoint = true\necho_max_message_size = 2048")
            .await;
    let url = format!("ws://{}/autobahn/echo", on.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text("héllo")).await.unwrap();
    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    let got = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text("héllo"));
    let got = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::binary(vec![0u8, 255, 7]));
    drop(ws);

    // Raw: a fragmented text message is echoed whole; then an oversized one closes with 1009.
    let mut s = TcpStream::connect(on.addr).await.unwrap();
    raw_upgrade(&mut s, on.addr, "/autobahn/echo", "").await;
    s.write_all(&[frame(0x01, b"ab"), frame(0x00, b"cd"), frame(0x80, b"e")].concat())
        .await
        .unwrap();
    match read_frame(&mut s).await {
        Some(ServerFrame::Text(t)) => assert_eq!(t, "abcde"),
        other => panic!("expected the echo, got {other:?}"),
    }
    s.write_all(&frame(0x82, &[0u8; 2049])).await.unwrap();
    match read_frame(&mut s).await {
        Some(ServerFrame::Close(code)) => assert_eq!(code, Some(1009)),
        other => panic!("expected close 1009, got {other:?}"),
    }
}
