//! permessage-deflate (RFC 7692) over the wire, against an in-process node: what is agreed
//! for which offer (unsupported ones declined, the connection going on uncompressed),
//! compressed commands in and publications out, compressed and plain subscribers on one
//! channel, and a deflate bomb.
//!
//! The compressing client here is a raw one (its own framing, flate2 for deflate) so every
//! byte is visible; `tests/compat` drives real compressing clients (Python `websockets`,
//! chromium).

mod common;

use std::net::SocketAddr;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Node config with compression on (`extra`: more `[client]` keys).
fn config(extra: &str) -> String {
    base_toml().replace(
        "[client]\n",
        &format!("[client]\nwebsocket_compression = true\n{extra}\n"),
    )
}

/// A message as the client read it.
#[derive(Debug)]
struct Received {
    /// Its first frame had RSV1 (compressed).
    compressed: bool,
    /// Its payload on the wire.
    wire_len: usize,
    /// That payload.
    payload: Vec<u8>,
    /// Its data (inflated if compressed).
    data: Vec<u8>,
}

/// A raw WebSocket client that may offer, and then speak, permessage-deflate.
struct Zc {
    s: TcpStream,
    /// The server's `Sec-WebSocket-Extensions` answer.
    answer: Option<String>,
    next_id: u32,
}

impl Zc {
    /// Upgrades `path` with `offer` as `Sec-WebSocket-Extensions` (none if `None`).
    async fn open(addr: SocketAddr, path: &str, offer: Option<&str>) -> Zc {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let ext = offer
            .map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n"))
            .unwrap_or_default();
        let head = raw_upgrade(&mut s, addr, path, &ext).await;
        let answer = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_string())
        });
        Zc {
            s,
            answer,
            next_id: 0,
        }
    }

    /// Sends one text message, compressed (RSV1) or not.
    async fn send(&mut self, text: &[u8], compress: bool) {
        let (b0, payload) = if compress {
            (0xC1, deflate(text))
        } else {
            (0x81, text.to_vec())
        };
        self.s.write_all(&masked_frame(b0, &payload)).await.unwrap();
    }

    /// Sends a command (compressed or not) and returns its reply (the one message of its
    /// frame: no push is pending meanwhile in these tests).
    async fn call(&mut self, cmd: &str, params: Value, compress: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut v = json!({ "id": id });
        v[cmd] = params;
        self.send(v.to_string().as_bytes(), compress).await;
        let m = self.read().await.expect("reply");
        let v: Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(v["id"], id, "{v}");
        v
    }

    /// Reads the next data message (`None` on close or end); closes return their code via
    /// [`Zc::close_code`].
    async fn read(&mut self) -> Option<Received> {
        match self.frame().await? {
            (0x1, rsv1, payload) => Some(Received {
                compressed: rsv1,
                wire_len: payload.len(),
                data: if rsv1 {
                    inflate(&payload)
                } else {
                    payload.clone()
                },
                payload,
            }),
            (0x8, _, _) => None,
            (op, _, _) => panic!("unexpected opcode {op}"),
        }
    }

    /// Reads until a close frame; its code.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let (op, _, p) = self.frame().await?;
            if op == 0x8 {
                return p.get(0..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
    }

    /// One whole server frame (servers do not fragment): opcode, RSV1, payload.
    async fn frame(&mut self) -> Option<(u8, bool, Vec<u8>)> {
        tokio::time::timeout(WAIT, async {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).await.ok()?;
            assert_eq!(h[0] & 0x80, 0x80, "server frames are final");
            assert_eq!(h[0] & 0x30, 0, "no RSV2/RSV3");
            let mut len = (h[1] & 0x7f) as usize;
            if len == 126 {
                let mut l = [0u8; 2];
                self.s.read_exact(&mut l).await.ok()?;
                len = u16::from_be_bytes(l) as usize;
            } else if len == 127 {
                let mut l = [0u8; 8];
                self.s.read_exact(&mut l).await.ok()?;
                len = u64::from_be_bytes(l) as usize;
            }
            let mut p = vec![0u8; len];
            self.s.read_exact(&mut p).await.ok()?;
            Some((h[0] & 0x0f, h[0] & 0x40 != 0, p))
        })
        .await
        .expect("a frame in time")
    }

    /// Connects and subscribes to `channel` (the subscribe compressed when `compress`).
    async fn connect_and_subscribe(&mut self, user: &str, channel: &str, compress: bool) {
        let r = self
            .call("connect", json!({"token": token(user)}), false)
            .await;
        assert!(r["connect"]["client"].is_string(), "{r}");
        let r = self
            .call("subscribe", json!({"channel": channel}), compress)
            .await;
        assert!(r["subscribe"].is_object(), "{r}");
    }

    /// The next message, which must be one publication's push on `channel`: how it came,
    /// and its data.
    async fn publication(&mut self, channel: &str) -> (Received, Value) {
        let m = self.read().await.expect("a publication");
        let v: Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(v["push"]["channel"], channel, "{v}");
        let p = v["push"]["pub"]["data"].clone();
        (m, p)
    }
}

/// Raw deflate of `data` as a client sends it (sync flush, tail removed).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, data.len());
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

/// Inflates a server message (tail put back).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let input = [payload, &TAIL].concat();
    let mut out = Vec::with_capacity(payload.len() * 20 + 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(d.total_in() as usize, input.len(), "whole payload inflated");
    out
}

/// Inflates a compressed payload with zlib (Python's) limited to a `2^bits`-byte window,
/// one output byte per call so that it checks every back-reference against that window
/// (within one large call zlib would also accept references into the call's own output).
fn strict_inflate(payload: &[u8], bits: u8) -> Vec<u8> {
    use std::io::Write;
    let script = format!(
        "import sys, zlib\n\
         d = zlib.decompressobj(-{bits})\n\
         data = sys.stdin.buffer.read() + b'\\x00\\x00\\xff\\xff'\n\
         out = bytearray()\n\
         while data:\n    out += d.decompress(data, 1)\n    data = d.unconsumed_tail\n\
         out += d.flush()\n\
         sys.stdout.buffer.write(out)\n"
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (zlib) for the window check");
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "zlib with a {bits}-bit window refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An analytics summary like the seeds' (about 2 KB of JSON).
fn analytics(n: u64) -> Value {
    let pages: Vec<Value> = (0..24)
        .map(|i| {
            json!({"path": format!("/products/category-{i}/item"), "views": 1000 + i * 37 + n,
                   "unique": 800 + i * 11, "bounce_rate": 0.42, "avg_time_s": 63.5})
        })
        .collect();
    json!({"kind": "analytics_summary", "window": "5m", "seq": n, "top_pages": pages})
}

/// Each offer gets the answer RFC 7692 asks for; declined offers leave a working,
/// uncompressed connection; with compression off nothing is agreed.
#[tokio::test]
async fn offers_are_answered_or_declined() {
    let on = TestServer::start_toml(&config("")).await;
    let full = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    let cases: &[(&str, Option<String>)] = &[
        ("permessage-deflate", Some(full.into())),
        (
            "permessage-deflate; client_max_window_bits",
            Some(full.into()),
        ),
        (
            "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
            Some(format!("{full}; server_max_window_bits=10")),
        ),
        // The first offer is unsupported (window 7), the second is taken.
        (
            "permessage-deflate; server_max_window_bits=7, permessage-deflate",
            Some(full.into()),
        ),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; client_max_window_bits=16", None),
        ("permessage-deflate; unknown_parameter", None),
        (
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            None,
        ),
        ("x-webkit-deflate-frame", None),
    ];
    for (offer, want) in cases {
        let mut c = Zc::open(on.addr, "/connection/websocket", Some(*offer)).await;
        assert_eq!(&c.answer, want, "offer {offer}");
        let r = c.call("connect", json!({"token": token("u")}), false).await;
        assert!(r["connect"]["client"].is_string(), "{offer}: {r}");
        if want.is_none() {
            // Declined: a compressed message is a protocol error.
            c.send(b"{}", true).await;
            assert_eq!(c.close_code().await, Some(1002), "{offer}");
        }
    }
    let off = TestServer::start().await;
    let c = Zc::open(
        off.addr,
        "/connection/websocket",
        Some("permessage-deflate"),
    )
    .await;
    assert_eq!(c.answer, None, "compression off: never agreed");
}

/// On one channel, a compressing subscriber gets the large publication compressed (and the
/// small one plain), a plain subscriber gets both plain, and one that limited our window
/// gets its own compression; all decode to the same data. Commands may come compressed.
#[tokio::test]
async fn compressed_and_plain_subscribers_share_a_channel() {
    let node = TestServer::start_toml(&config("websocket_compression_min_size = 256")).await;
    let ch = "open:mixed";
    let mut full = Zc::open(
        node.addr,
        "/connection/websocket",
        Some("permessage-deflate"),
    )
    .await;
    let mut small = Zc::open(
        node.addr,
        "/connection/websocket",
        Some("permessage-deflate; server_max_window_bits=9"),
    )
    .await;
    let mut plain = Zc::open(node.addr, "/connection/websocket", None).await;
    assert!(full.answer.is_some() && small.answer.is_some() && plain.answer.is_none());
    // Compressed subscribe commands are inflated and served like any other.
    full.connect_and_subscribe("a", ch, true).await;
    small.connect_and_subscribe("b", ch, true).await;
    plain.connect_and_subscribe("c", ch, false).await;

    let big = analytics(1);
    node.publish(ch, big.clone()).await;
    let (f, fd) = full.publication(ch).await;
    let (s, sd) = small.publication(ch).await;
    let (p, pd) = plain.publication(ch).await;
    assert_eq!((fd, sd, &pd), (big.clone(), big.clone(), &big));
    assert!(f.compressed && s.compressed && !p.compressed);
    assert_eq!(
        strict_inflate(&s.payload, 9),
        s.data,
        "within a 512-byte window"
    );
    assert!(
        f.wire_len * 100 <= p.wire_len * 40,
        "≥ 60 % smaller: {} vs {} bytes",
        f.wire_len,
        p.wire_len
    );
    assert_eq!(f.data, p.data, "the same push, byte for byte");

    // Under the threshold: plain for everyone.
    node.publish(ch, json!({"t": 21.5})).await;
    for c in [&mut full, &mut small, &mut plain] {
        let (m, d) = c.publication(ch).await;
        assert!(!m.compressed, "small publication sent plain");
        assert_eq!(d, json!({"t": 21.5}));
    }
    let admin = node.server.as_ref().unwrap().admin_addr;
    let shared = metric(admin, "switchyard_shared_compressions_total").await;
    assert!(shared >= 1.0, "the shared form was made: {shared}");
}

/// Delta updates through permessage-deflate: a compressing and a plain delta subscriber of
/// one channel get the same pushes (the full form, then deltas), the compressed ones
/// inflating to exactly the plain ones, and both reconstruct what was published.
#[tokio::test]
async fn delta_updates_go_through_compression() {
    let toml = format!(
        "{}\n[[channel.namespaces]]\nname = \"live\"\nallow_subscribe_for_client = true\n\
         allowed_delta_types = [\"fossil\"]\n",
        config("websocket_compression_min_size = 64")
    );
    let node = TestServer::start_toml(&toml).await;
    let ch = "live:deflated";
    let mut z = Zc::open(
        node.addr,
        "/connection/websocket",
        Some("permessage-deflate"),
    )
    .await;
    let mut plain = Zc::open(node.addr, "/connection/websocket", None).await;
    for (c, user, compress) in [(&mut z, "a", true), (&mut plain, "b", false)] {
        let r = c
            .call("connect", json!({"token": token(user)}), false)
            .await;
        assert!(r["connect"]["client"].is_string(), "{r}");
        let sub = json!({"channel": ch, "delta": "fossil"});
        let r = c.call("subscribe", sub, compress).await;
        assert_eq!(r["subscribe"]["delta"], true, "{r}");
    }
    let mut prev: Option<Vec<u8>> = None;
    for n in 1..=5 {
        let doc = analytics(n);
        node.publish(ch, doc.clone()).await;
        let (zm, _) = z.publication(ch).await;
        let (pm, _) = plain.publication(ch).await;
        assert!(zm.compressed && !pm.compressed);
        assert_eq!(zm.data, pm.data, "the same push, byte for byte");
        let v: Value = serde_json::from_slice(&pm.data).unwrap();
        let p = &v["push"]["pub"];
        let s = p["data"].as_str().expect("data as a JSON string");
        let bytes = if n == 1 {
            assert!(p.get("delta").is_none(), "first in full: {p}");
            s.as_bytes().to_vec()
        } else {
            assert_eq!(p["delta"], true, "{p}");
            apply_fossil(prev.as_ref().unwrap(), s.as_bytes()).expect("delta applies")
        };
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), doc);
        prev = Some(bytes);
    }
}

/// A compressed message that would inflate far past `client.max_message_size` ends in 1009
/// while inflating: the node's memory does not grow by its inflated size (1 GiB here) and it
/// keeps serving.
#[tokio::test]
async fn a_deflate_bomb_ends_in_1009() {
    let node = TestServer::start_toml(&config(
        "max_message_size = 2097152\noutbound_queue_bytes = 4194304",
    ))
    .await;
    // One MiB of spaces deflated once, repeated: every copy stands alone after a sync flush.
    let mut c = Compress::new(Compression::best(), false);
    let mut seg = Vec::with_capacity(1 << 16);
    c.compress_vec(&vec![b' '; 1 << 20], &mut seg, FlushCompress::Sync)
        .unwrap();
    let bomb = seg.repeat(1024);
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let mut z = Zc::open(
        node.addr,
        "/connection/websocket",
        Some("permessage-deflate"),
    )
    .await;
    let r = z.call("connect", json!({"token": token("u")}), false).await;
    assert!(r["connect"].is_object());
    z.s.write_all(&masked_frame(0xC1, &bomb[..bomb.len() - TAIL.len()]))
        .await
        .unwrap();
    assert_eq!(z.close_code().await, Some(1009));
    let peak = proc_status_kib("self", "VmHWM");
    assert!(
        peak < 512 * 1024,
        "peak RSS {peak} KiB: the bomb was inflated whole"
    );
    let mut again = node.client("v").await;
    again.subscribe("open:after").await;
}

/// The echo endpoint (Autobahn's target) compresses what it echoes, when agreed.
#[tokio::test]
async fn echo_endpoint_speaks_deflate() {
    let node = TestServer::start_toml(&format!(
        "{}\n[testing]\necho_endpoint = true\n",
        config("websocket_compression_min_size = 0")
    ))
    .await;
    let mut z = Zc::open(node.addr, "/autobahn/echo", Some("permessage-deflate")).await;
    assert!(z.answer.is_some());
    let text = "echo me ".repeat(100);
    z.send(text.as_bytes(), true).await;
    let m = z.read().await.unwrap();
    assert!(m.compressed && m.wire_len < text.len() / 4);
    assert_eq!(m.data, text.as_bytes());
}

/// Debian's chromium (headless) agrees permessage-deflate and decodes compressed publications
/// (tests/status-page/deflate.mjs).
#[test]
fn chromium_agrees_and_decodes() {
    let cfg = config_file("");
    let p = Proc::start(
        cfg.path(),
        &[("SWITCHYARD_CLIENT__WEBSOCKET_COMPRESSION", "true")],
    );
    let shot = artifact("deflate-chromium.png");
    let args = [
        format!("http://{}", p.client_addr),
        format!("http://{}", p.admin_addr),
        token("browser"),
        API_KEY.to_string(),
        "chat:browser".to_string(),
        shot.display().to_string(),
    ];
    let out = status_page_check("deflate.mjs", &args);
    assert!(out.contains("publications compressed"), "{out}");
}
