//! HTTP/2 on the client listener, over the wire with hyper's client: h2c with prior
//! knowledge carrying many concurrent API requests on one connection, and the protections
//! HTTP/1.1 has (head size, body size, head/idle timeout, per-IP refusals, drain) on HTTP/2.
//! HTTP/2 over TLS (ALPN `h2`) is in `tests/tls.rs`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn with_client(extra: &str) -> String {
    base_toml().replace("[client]", &format!("[client]\n{extra}"))
}

/// 200 publishes in flight at once on one h2c connection: every one answered 200 with its
/// own offset, and a WebSocket subscriber receives all 200.
#[tokio::test]
async fn h2c_carries_many_concurrent_publishes_on_one_connection() {
    let s = TestServer::start().await;
    let mut sub = s.client("watcher").await;
    sub.subscribe("open:h2").await;
    let h2 = H2::connect(s.addr).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let mut send = h2.send.clone();
        tasks.spawn(async move {
            let body = json!({"channel": "open:h2", "data": {"i": i}}).to_string();
            h2_post(&mut send, "/api/publish", Some(API_KEY), &[], body)
                .await
                .expect("HTTP/2 request")
        });
    }
    let mut offsets = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let (st, raw) = r.unwrap();
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(st, 200, "{v}");
        offsets.insert(v["result"]["offset"].as_u64().expect("an offset"));
    }
    assert_eq!(
        offsets,
        (1..=200).collect::<BTreeSet<u64>>(),
        "each publish committed once, with its own offset"
    );
    let mut got = BTreeSet::new();
    for _ in 0..200 {
        let p = sub.publication("open:h2").await;
        got.insert(p["data"]["i"].as_u64().unwrap());
    }
    assert_eq!(got, (0..200).collect::<BTreeSet<u64>>());
    assert!(!h2.conn.is_finished(), "one connection carried them all");
}

/// A request head over `client.max_header_size` is refused per stream with 431, a body over
/// `api.max_body_size` with 413, as on HTTP/1.1; the connection goes on serving.
#[tokio::test]
async fn h2_head_and_body_bounds() {
    let s = TestServer::start_toml(
        &with_client("max_header_size = 8192")
            .replace("[auth]", "[api]\nmax_body_size = 1000\n[auth]"),
    )
    .await;
    let mut h2 = H2::connect(s.addr).await;
    let big = "a".repeat(10 * 1024);
    let (st, _) = h2_post(
        &mut h2.send,
        "/api/info",
        Some(API_KEY),
        &[("x-big", &big)],
        "{}",
    )
    .await
    .expect("a 431 answer, not a connection error");
    assert_eq!(st, 431, "an oversized header list is refused");
    let body = json!({"channel": "open:big", "data": "x".repeat(2000)}).to_string();
    let (st, _) = h2_post(&mut h2.send, "/api/publish", Some(API_KEY), &[], body)
        .await
        .expect("a 413 answer");
    assert_eq!(st, 413, "an oversized body is refused");
    // Unauthenticated: refused before the body is read, with the key to set named.
    let (st, b) = h2_post(&mut h2.send, "/api/info", None, &[], "{}")
        .await
        .unwrap();
    assert_eq!(st, 401);
    assert!(
        String::from_utf8_lossy(&b).contains("auth.api_key"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    let r = h2_api(
        &mut h2.send,
        "publish",
        json!({"channel": "open:big", "data": 1}),
    )
    .await;
    assert_eq!(r["offset"], 1, "the same connection still serves");
}

/// Waits for `stream` to be closed by the server (EOF or error); the time it took.
async fn closed_by_server(mut stream: tokio::net::TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("closed by the server in time");
    t.elapsed()
}

/// `client.handshake_timeout` holds for HTTP/2 too: a connection that stops inside the
/// preface, or that sends the preface and no request, is closed after it; so is an HTTP/2
/// connection left idle after its requests.
#[tokio::test]
async fn h2_head_timeout_and_idle_close() {
    let s = TestServer::start_toml(&with_client("handshake_timeout = \"1s\"")).await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // Half the preface; then all of it and an empty SETTINGS frame, but no request.
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    for sent in [
        preface[..10].to_vec(),
        [&preface[..], &settings[..]].concat(),
    ] {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        stream.write_all(&sent).await.unwrap();
        let took = closed_by_server(stream).await;
        assert!(
            took >= Duration::from_millis(900),
            "not before the timeout: {took:?}"
        );
    }
    let mut h2 = H2::connect(s.addr).await;
    h2_api(&mut h2.send, "info", json!({})).await;
    let t = Instant::now();
    tokio::time::timeout(WAIT, h2.conn)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

/// An HTTP/2 connection from `src`.
async fn h2_from(addr: SocketAddr, src: &str) -> H2 {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
    H2::handshake(sock.connect(addr).await.unwrap()).await
}

/// A connection a per-IP limit refused answers each HTTP/2 request with the refusal (503 and
/// `Retry-After`, as on HTTP/1.1), then is closed; the admitted connection goes on.
#[tokio::test]
async fn h2_per_ip_refusal_is_answered_per_request() {
    let s = TestServer::start_toml(&with_client(
        "max_connections_per_ip = 1\nconnection_rate_per_ip = 0",
    ))
    .await;
    let mut first = h2_from(s.addr, "127.0.0.21").await;
    h2_api(&mut first.send, "info", json!({})).await;
    let mut second = h2_from(s.addr, "127.0.0.21").await;
    let (st, body) = h2_post(&mut second.send, "/api/info", Some(API_KEY), &[], "{}")
        .await
        .expect("the refusal is an HTTP answer");
    assert_eq!(st, 503);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"],
        "max_connections_per_ip"
    );
    tokio::time::timeout(WAIT, second.conn)
        .await
        .expect("the refused connection is closed")
        .unwrap();
    h2_api(&mut first.send, "info", json!({})).await;
    // Another address is not affected.
    let mut other = h2_from(s.addr, "127.0.0.22").await;
    h2_api(&mut other.send, "info", json!({})).await;
}

/// A drain closes HTTP/2 connections gracefully (GOAWAY) and waits for them.
#[tokio::test]
async fn h2_connections_close_on_drain() {
    let mut s = TestServer::start().await;
    let mut h2 = H2::connect(s.addr).await;
    h2_api(
        &mut h2.send,
        "publish",
        json!({"channel": "open:d", "data": 1}),
    )
    .await;
    s.stop().await;
    tokio::time::timeout(WAIT, h2.conn)
        .await
        .expect("the HTTP/2 connection is closed by the drain")
        .unwrap();
}
