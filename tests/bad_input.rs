//! Hostile and broken clients: every bad input ends in its documented close code, and the node
//! keeps serving others.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Proves the node still serves a fresh client end to end.
async fn still_serving(s: &TestServer) {
    let mut c = s.client("probe").await;
    c.subscribe("chat:probe").await;
    s.publish("chat:probe", json!("ok")).await;
    assert_eq!(c.publication("chat:probe").await["data"], "ok");
}

#[tokio::test]
async fn binary_frame_on_json_connection_closes_3501() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert!(matches!(c.closed().await, Closed::Code(3501, _)));
    still_serving(&s).await;
}

#[tokio::test]
async fn oversized_message_closes_1009() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    let big = format!(
        r#"{{"id":2,"publish":{{"channel":"open:x","data":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    c.send_raw(&big).await;
    assert!(matches!(c.closed().await, Closed::Code(1009, _)));
    still_serving(&s).await;
}

/// Many small continuation frames adding up past the limit: 1009, not unbounded memory.
#[tokio::test]
async fn fragmented_oversized_message_closes_1009() {
    let s = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    handshake(&mut stream, &s).await;
    // text frame, fin=0, then continuations of 1000 bytes each (masked, as a client must).
    let chunk = vec![b'a'; 1000];
    stream
        .write_all(&client_frame(false, 0x1, &chunk))
        .await
        .unwrap();
    let mut code = None;
    for _ in 0..100 {
        if stream
            .write_all(&client_frame(false, 0x0, &chunk))
            .await
            .is_err()
        {
            break;
        }
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(5), read_close(&mut stream)).await
        {
            code = n;
            break;
        }
    }
    if code.is_none() {
        code = tokio::time::timeout(WAIT, read_close(&mut stream))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(code, Some(1009));
    still_serving(&s).await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let s = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    handshake(&mut stream, &s).await;
    stream
        .write_all(&client_frame(true, 0x1, &[0x7b, 0xff, 0xfe, 0x7d]))
        .await
        .unwrap();
    let code = tokio::time::timeout(WAIT, read_close(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, Some(1007));
    still_serving(&s).await;
}

/// A ping with a payload over 125 bytes is a protocol error (1002).
#[tokio::test]
async fn oversized_control_frame_closes_1002() {
    let s = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    handshake(&mut stream, &s).await;
    stream
        .write_all(&client_frame(true, 0x9, &[0u8; 200]))
        .await
        .unwrap();
    let code = tokio::time::timeout(WAIT, read_close(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, Some(1002));
    still_serving(&s).await;
}

/// Garbage commands of many shapes: each closes with 3501 and nothing panics.
#[tokio::test]
async fn garbage_commands() {
    let s = TestServer::start().await;
    let deep = format!(
        "{{\"id\":1,\"publish\":{{\"channel\":\"open:x\",\"data\":{}1{}}}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let inputs = [
        "null".to_string(),
        "[]".into(),
        "\"str\"".into(),
        "{\"id\":\"1\",\"connect\":{}}".into(),
        "{\"id\":1e400,\"publish\":{}}".into(),
        "{\"id\":18446744073709551616,\"publish\":{}}".into(),
        "{\"id\":1,\"subscribe\":{\"channel\":[1,2]}}".into(),
        "{\"id\":1,\"history\":{\"channel\":\"chat:x\",\"limit\":\"all\"}}".into(),
        deep,
        "{\"id\":1,\"publish\":{\"channel\":\"open:x\",\"data\":1},\"presence\":{}}".into(),
    ];
    for input in inputs {
        let mut c = s.client("fuzzy").await;
        eprintln!("input {:.60}", input);
        c.send_raw(&input).await;
        let closed = c.closed().await;
        assert_eq!(
            closed,
            Closed::Code(3501, "bad request".into()),
            "input {:.60}",
            input
        );
    }
    // A negative history limit below -1 is a bad request reply, not a disconnect.
    let mut c = s.client("fuzzy").await;
    c.subscribe("open:x").await;
    let r = c
        .call("history", json!({"channel": "open:x", "limit": -5}))
        .await;
    assert_eq!(r["error"]["code"], 107);
    still_serving(&s).await;
}

/// A subscriber that stops reading is cut off with 3008 while a reading subscriber of the same
/// channel receives every publication.
#[tokio::test]
async fn slow_consumer_is_disconnected_and_others_unaffected() {
    let s = TestServer::start_toml(&base_toml().replace(
        "[client]",
        "[client]\noutbound_queue_bytes = 262144\nmax_message_size = 65536",
    ))
    .await;
    let mut slow = s.client("slow").await;
    slow.subscribe("open:flood").await;
    let mut fast = s.client("fast").await;
    fast.subscribe("open:flood").await;
    let payload = "y".repeat(16 * 1024);
    let total = 800u64; // ~13 MB: more than socket buffers plus the 256 KiB queue
    let addr = s.addr;
    let publisher = tokio::spawn(async move {
        for i in 0..total {
            let body = json!({"channel": "open:flood", "data": {"i": i, "p": payload}}).to_string();
            let (st, _) = api_call(addr, "publish", Some(API_KEY), &body).await;
            assert_eq!(st, 200);
        }
    });
    let mut next = 0u64;
    while next < total {
        let p = fast.publication("open:flood").await;
        assert_eq!(
            p["data"]["i"], next,
            "fast subscriber sees every publication in order"
        );
        next += 1;
    }
    publisher.await.unwrap();
    assert!(matches!(slow.closed().await, Closed::Code(3008, _)));
}

/// A client that opens TCP and never finishes the HTTP request head is closed by the server.
#[tokio::test]
async fn incomplete_http_request_is_dropped() {
    let s = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // hyper's header read timeout is 10 s; allow some margin.
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(_)) | Ok(Err(_))),
        "server closed the half-open request"
    );
    still_serving(&s).await;
}

async fn handshake(stream: &mut tokio::net::TcpStream, s: &TestServer) {
    raw_upgrade(stream, s.addr, "/connection/websocket", "").await;
    let connect = json!({"id": 1, "connect": {"token": token("raw")}}).to_string();
    stream
        .write_all(&client_frame(true, 0x1, connect.as_bytes()))
        .await
        .unwrap();
}

/// A masked client frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame((if fin { 0x80 } else { 0 }) | opcode, payload)
}

/// Reads server frames until a close frame; returns its code (None if the socket ended).
async fn read_close(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<u16>> {
    loop {
        let mut h = [0u8; 2];
        if stream.read_exact(&mut h).await.is_err() {
            return Ok(None);
        }
        let opcode = h[0] & 0x0f;
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            stream.read_exact(&mut l).await?;
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            stream.read_exact(&mut l).await?;
            len = u64::from_be_bytes(l) as usize;
        }
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        if opcode == 0x8 {
            return Ok(payload.get(0..2).map(|c| u16::from_be_bytes([c[0], c[1]])));
        }
    }
}

/// A client that stops reading while its queue still has room pins the writer in a blocked
/// write; after `client.write_timeout` the node drops it and forgets it.
#[tokio::test]
async fn stuck_reader_is_dropped_after_write_timeout() {
    let s = TestServer::start_toml(&base_toml().replace(
        "[client]",
        "[client]\noutbound_queue_bytes = 67108864\nwrite_timeout = \"1s\"",
    ))
    .await;
    let mut stuck = Client::open_small_rcvbuf(s.addr).await;
    stuck.connect(&token("stuck")).await;
    stuck.subscribe("open:stuck").await;
    // ~10 MB: more than the server's send buffer (≤ 4 MiB) and the client's 4 KiB receive
    // buffer hold, less than the 64 MiB queue, so no 3008: the write itself blocks.
    let payload = "z".repeat(64 * 1024);
    for i in 0..160 {
        s.publish("open:stuck", json!({"i": i, "p": payload})).await;
    }
    eventually("the stuck client is dropped", || async {
        let (_, b) = s.api("info", json!({})).await;
        b["result"]["nodes"][0]["num_clients"] == 0
    })
    .await;
    drop(stuck);
    still_serving(&s).await;
}
