//! Every limit of `[client]` / `[api]`, provoked over the wire: the documented refusal or code,
//! its metric, and other clients unaffected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn with_client(extra: &str) -> String {
    base_toml().replace("[client]", &format!("[client]\n{extra}"))
}

fn admin(s: &TestServer) -> std::net::SocketAddr {
    s.server.as_ref().unwrap().admin_addr
}

fn limited(limit: &str) -> String {
    format!("switchyard_rate_limited_total{{limit=\"{limit}\"}}")
}

/// A connected, working client opened from `src`.
async fn working_client(s: &TestServer, src: &str, user: &str) -> Client {
    let mut c = try_open_from(s.addr, src, None)
        .await
        .unwrap_or_else(|st| panic!("{src} refused with HTTP {st}"));
    let r = c.connect(&token(user)).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    c
}

/// Waits until a connection from `src` is accepted again (its IP has a free slot).
async fn slot_frees(s: &TestServer, src: &str) {
    eventually("a slot is free again", || async {
        match try_open_from(s.addr, src, None).await {
            Ok(c) => {
                c.close().await;
                true
            }
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test]
async fn concurrent_connections_per_ip() {
    let s = TestServer::start_toml(&with_client(
        "max_connections_per_ip = 3\nconnection_rate_per_ip = 0",
    ))
    .await;
    let before = metric(admin(&s), &limited("max_connections_per_ip")).await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(working_client(&s, "127.0.0.1", &format!("u{i}")).await);
    }
    assert_eq!(
        try_open_from(s.addr, "127.0.0.1", None).await.err(),
        Some(503),
        "a fourth connection from the same IP is refused"
    );
    // Another address is not affected.
    let mut other = working_client(&s, "127.0.0.2", "other").await;
    other.subscribe("open:x").await;
    // A closed connection frees its slot.
    open.pop().unwrap().close().await;
    slot_frees(&s, "127.0.0.1").await;
    assert!(metric(admin(&s), &limited("max_connections_per_ip")).await >= before + 1.0);
}

/// Connections count against the per-IP limit from the moment they are accepted, before
/// they send anything (the node peeks at a connection's first bytes to tell server API
/// connections apart): three silent connections from an address hold its three slots.
#[tokio::test]
async fn silent_connections_hold_their_slots_from_accept() {
    let s = TestServer::start_toml(&with_client(
        "max_connections_per_ip = 3\nconnection_rate_per_ip = 0",
    ))
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        silent.push(sock.connect(s.addr).await.unwrap());
    }
    eventually("the fourth connection from that IP is refused", || async {
        try_open_from(s.addr, "127.0.0.3", None).await.err() == Some(503)
    })
    .await;
    drop(silent);
    slot_frees(&s, "127.0.0.3").await;
}

#[tokio::test]
async fn connection_rate_per_ip() {
    let s = TestServer::start_toml(&with_client(
        "connection_rate_per_ip = 1\nconnection_burst_per_ip = 4",
    ))
    .await;
    let before = metric(admin(&s), &limited("connection_rate_per_ip")).await;
    let mut statuses = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..7 {
        match try_open_from(s.addr, "127.0.0.3", None).await {
            Ok(c) => keep.push(c),
            Err(st) => statuses.push(st),
        }
    }
    assert_eq!(keep.len(), 4, "the burst is admitted");
    assert_eq!(statuses, vec![429; 3], "the rest are refused with 429");
    // A different address has its own allowance.
    working_client(&s, "127.0.0.4", "fresh").await;
    assert!(metric(admin(&s), &limited("connection_rate_per_ip")).await >= before + 3.0);
}

#[tokio::test]
async fn node_wide_connection_cap() {
    let s = TestServer::start_toml(&with_client("max_connections = 2")).await;
    let a = working_client(&s, "127.0.0.5", "a").await;
    let _b = working_client(&s, "127.0.0.6", "b").await;
    assert_eq!(
        try_open_from(s.addr, "127.0.0.7", None).await.err(),
        Some(503)
    );
    // The API (not a WebSocket) still works at the cap.
    s.publish("open:cap", json!({"n": 1})).await;
    a.close().await;
    eventually("a slot frees when a client leaves", || async {
        match try_open_from(s.addr, "127.0.0.7", None).await {
            Ok(c) => {
                c.close().await;
                true
            }
            Err(_) => false,
        }
    })
    .await;
}

/// A client flooding commands gets 111 past its burst, then 3013; another client's deliveries
/// meanwhile arrive complete and promptly.
#[tokio::test]
async fn command_flood_gets_111_then_3013_without_delaying_others() {
    let s = TestServer::start_toml(&with_client("command_rate = 1\ncommand_burst = 10")).await;
    let mut watcher = s.client("watcher").await; // connect took one token of its own limiter
    watcher.subscribe("open:calm").await;
    let mut flooder = s.client("flooder").await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for i in 0..20u64 {
            let p = watcher.publication("open:calm").await;
            assert_eq!(p["data"]["i"], i, "every publication, in order");
            got.push(Instant::now());
        }
        got
    });
    let publisher = {
        let addr = s.addr;
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..20u64 {
                let t = Instant::now();
                let body = json!({"channel": "open:calm", "data": {"i": i}}).to_string();
                let (st, _) = api_call(addr, "publish", Some(API_KEY), &body).await;
                assert_eq!(st, 200);
                sent.push(t);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    // 9 presence-stats calls fit the remaining burst (connect used one); the 10th is refused.
    let mut batch = String::new();
    for id in 100..119 {
        batch.push_str(
            &json!({"id": id, "history": {"channel": "open:calm", "limit": 0}}).to_string(),
        );
        batch.push('\n');
    }
    flooder.send_raw(batch.trim_end()).await;
    let mut ok = 0;
    let mut refused = 0;
    for id in 100..119 {
        let r = flooder.reply(id).await;
        if r["error"]["code"] == 111 {
            assert_eq!(r["error"]["temporary"], true, "111 is temporary: {r}");
            refused += 1;
        } else {
            assert!(r["history"].is_object(), "{r}");
            ok += 1;
        }
    }
    assert_eq!(
        (ok, refused),
        (9, 10),
        "burst answered, then 111 up to the burst again"
    );
    // Keep flooding: past `command_burst` refusals in the window the connection is closed.
    flooder
        .send_raw(&json!({"id": 200, "history": {"channel": "open:calm", "limit": 0}}).to_string())
        .await;
    assert_eq!(
        flooder.closed().await,
        Closed::Code(3013, "too many requests".into())
    );
    let sent = publisher.await.unwrap();
    let got = reader.await.unwrap();
    for (s, g) in sent.iter().zip(&got) {
        assert!(
            g.duration_since(*s) < Duration::from_secs(1),
            "a delivery took {:?} during the flood",
            g.duration_since(*s)
        );
    }
    let m = metric(admin(&s), &limited("command_rate")).await;
    assert!(m >= 11.0, "command_rate limit counted: {m}");
}

#[tokio::test]
async fn channel_limits() {
    let s = TestServer::start_toml(&with_client("max_channels = 2\nchannel_max_length = 20")).await;
    let mut c = s.client("u").await;
    c.subscribe("open:a").await;
    c.subscribe("open:b").await;
    let r = c.call("subscribe", json!({"channel": "open:c"})).await;
    assert_eq!(r["error"]["code"], 106, "{r}");
    let r = c
        .call(
            "subscribe",
            json!({"channel": format!("open:{}", "x".repeat(20))}),
        )
        .await;
    assert_eq!(r["error"]["code"], 107, "too long a name: {r}");
    let (st, body) = s
        .api(
            "publish",
            json!({"channel": format!("open:{}", "y".repeat(30)), "data": {}}),
        )
        .await;
    assert_eq!((st, body["error"]["code"].clone()), (200, json!(107)));
    assert!(metric(admin(&s), &limited("max_channels")).await >= 1.0);
    assert!(metric(admin(&s), &limited("channel_max_length")).await >= 2.0);
}

#[tokio::test]
async fn api_publication_size() {
    let s = TestServer::start_toml(
        &base_toml().replace("[auth]", "[api]\nmax_publication_size = 1000\n[auth]"),
    )
    .await;
    let mut sub = s.client("u").await;
    sub.subscribe("open:big").await;
    let (st, body) = s
        .api(
            "publish",
            json!({"channel": "open:big", "data": {"p": "z".repeat(1000)}}),
        )
        .await;
    assert_eq!(
        (st, body["error"]["code"].clone()),
        (200, json!(107)),
        "{body}"
    );
    let (st, body) = s
        .api(
            "broadcast",
            json!({"channels": ["open:big"], "data": {"p": "z".repeat(1000)}}),
        )
        .await;
    assert_eq!(
        (st, body["error"]["code"].clone()),
        (200, json!(107)),
        "{body}"
    );
    s.publish("open:big", json!({"p": "small"})).await;
    let p = sub.publication("open:big").await;
    assert_eq!(p["data"]["p"], "small", "only the small one was published");
    assert!(metric(admin(&s), &limited("api_publication_size")).await >= 2.0);
}

#[tokio::test]
async fn origins() {
    let s = TestServer::start_toml(&with_client(
        "allowed_origins = [\"https://app.example.com\"]",
    ))
    .await;
    assert!(
        try_open_from(s.addr, "127.0.0.1", Some("https://app.example.com"))
            .await
            .is_ok()
    );
    assert_eq!(
        try_open_from(s.addr, "127.0.0.1", Some("https://evil.example.com"))
            .await
            .err(),
        Some(403)
    );
    assert!(
        try_open_from(s.addr, "127.0.0.1", None).await.is_ok(),
        "non-browser clients send no Origin"
    );
    // Default: same origin only.
    let d = TestServer::start().await;
    let same = format!("http://{}", d.addr);
    assert!(
        try_open_from(d.addr, "127.0.0.1", Some(&same))
            .await
            .is_ok()
    );
    assert_eq!(
        try_open_from(d.addr, "127.0.0.1", Some("http://elsewhere:8000"))
            .await
            .err(),
        Some(403)
    );
}

/// Slowloris: a connection that never sends a request head is closed after
/// `client.handshake_timeout`; so is one that sends half of it. Oversized heads are refused.
#[tokio::test]
async fn handshake_timeout_and_header_size() {
    let s = TestServer::start_toml(&with_client("handshake_timeout = \"1s\"")).await;
    for partial in [
        &b""[..],
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n",
    ] {
        let t = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        stream.write_all(partial).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(r.is_ok(), "closed within the timeout");
        assert!(t.elapsed() >= Duration::from_millis(900), "not before it");
    }
    // An idle keep-alive connection (after a complete request) is closed too.
    let mut idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(closed.is_ok(), "an idle keep-alive connection is closed");
    assert!(t.elapsed() >= Duration::from_millis(900));
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "an oversized head is refused: {text:?}"
    );
    // Still serving.
    working_client(&s, "127.0.0.1", "after").await;
}
