//! The unidirectional transports against real clients: curl (`curl -N`) on `uni_sse` and
//! `uni_http_stream`, a plain WebSocket client (tokio-tungstenite, no SDK) on
//! `uni_websocket`; each receives API publications on the channels its token names. Bad input
//! on each path gets its documented status or close code; the switches are off by default;
//! drain ends each stream with the shutdown disconnect.

mod common;

use std::process::Stdio;

use base64::Engine as _;
use common::*;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use switchyard::protocol::proto as pb;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;

/// A node with every transport switched on (`ping` = client.ping_interval).
async fn node_with_transports(ping: &str) -> TestServer {
    let toml = base_toml().replace(
        "[client]\n",
        &format!(
            "[client]\nuni_websocket = true\nuni_sse = true\nuni_http_stream = true\n\
             http_stream = true\nsse = true\nping_interval = \"{ping}\"\npong_timeout = \"500ms\"\n"
        ),
    );
    TestServer::start_toml(&toml).await
}

/// A connection token for `user` with server-side subscriptions to `channels`.
fn token_with_channels(user: &str, channels: &[&str]) -> String {
    let exp = switchyard::auth::unix_now() + 3600;
    hs256(json!({"sub": user, "exp": exp, "channels": channels}))
}

/// A curl process streaming a response; its output read line by line.
struct Curl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Curl {
    fn start(args: &[&str]) -> Curl {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "--no-progress-meter"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Curl { child, lines }
    }

    /// The next non-empty line (`None`: the stream ended).
    async fn line(&mut self) -> Option<String> {
        loop {
            let l = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("a line in time")
                .expect("readable");
            match l {
                Some(l) if l.trim().is_empty() => continue,
                other => return other,
            }
        }
    }

    /// The next JSON message: a line, or the `data:` of an SSE event.
    async fn message(&mut self) -> Option<Value> {
        let l = self.line().await?;
        let l = l.strip_prefix("data: ").unwrap_or(&l);
        Some(serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
    }

    /// Headers (with `-i`): lower-cased lines up to the blank line.
    async fn headers(&mut self) -> Vec<String> {
        let mut h = Vec::new();
        loop {
            let l = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("headers in time")
                .unwrap()
                .expect("headers");
            if l.trim().is_empty() {
                return h;
            }
            h.push(l.trim().to_ascii_lowercase());
        }
    }

    /// Waits for curl to exit; its exit code.
    async fn exit(mut self) -> i32 {
        let st = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("curl exits in time")
            .unwrap();
        st.code().unwrap_or(-1)
    }
}

/// Publishes through the API and returns what a unidirectional client must receive.
async fn publish_expect(s: &TestServer, channel: &str, n: u64) -> Value {
    s.publish(channel, json!({"n": n})).await;
    json!({"n": n})
}

fn assert_pub(msg: &Value, channel: &str, data: &Value) {
    assert_eq!(msg["channel"], channel, "push: {msg}");
    assert_eq!(&msg["pub"]["data"], data, "push: {msg}");
    assert!(
        msg.get("push").is_none(),
        "unidirectional pushes are unwrapped: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uni_http_stream_with_curl_receives_publications() {
    let s = node_with_transports("25s").await;
    let body = json!({"token": token_with_channels("alice", &["open:news"])}).to_string();
    let url = format!("http://{}/connection/uni_http_stream", s.addr);
    let mut curl = Curl::start(&["-i", "-X", "POST", "--data-binary", &body, &url]);
    let headers = curl.headers().await;
    assert_eq!(headers[0].split(' ').nth(1), Some("200"), "{headers:?}");
    assert!(
        headers
            .iter()
            .any(|h| h == "content-type: application/json"),
        "{headers:?}"
    );
    let connect = curl.message().await.expect("connect push");
    assert!(connect["connect"]["client"].is_string(), "{connect}");
    assert!(
        connect["connect"]["subs"]["open:news"].is_object(),
        "{connect}"
    );
    for n in 1..=3 {
        let data = publish_expect(&s, "open:news", n).await;
        let msg = curl.message().await.expect("publication");
        assert_pub(&msg, "open:news", &data);
        assert_eq!(msg["pub"]["offset"], n, "{msg}");
    }
    // Drain: the stream gets the shutdown disconnect and ends.
    let mut s = s;
    s.stop().await;
    let bye = curl.message().await.expect("disconnect push");
    assert_eq!(bye["disconnect"]["code"], 3001, "{bye}");
    assert_eq!(
        curl.line().await,
        None,
        "the stream ends after the disconnect"
    );
    assert_eq!(curl.exit().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uni_sse_with_curl_get_and_post_receives_publications() {
    let s = node_with_transports("25s").await;
    let req = json!({"token": token_with_channels("bob", &["open:sse"])}).to_string();
    let url = format!("http://{}/connection/uni_sse", s.addr);
    // EventSource's way: GET with cf_connect in the query.
    let cf = format!("cf_connect={req}");
    let mut get = Curl::start(&["-i", "-G", "--data-urlencode", &cf, &url]);
    let headers = get.headers().await;
    assert!(headers[0].contains(" 200"), "{headers:?}");
    assert!(
        headers
            .iter()
            .any(|h| h == "content-type: text/event-stream"),
        "{headers:?}"
    );
    // A device's way: POST with the connect request as the body.
    let mut post = Curl::start(&["-X", "POST", "--data-binary", &req, &url]);
    for c in [&mut get, &mut post] {
        let l = c.line().await.expect("connect event");
        assert!(l.starts_with("data: {\"connect\":"), "{l}");
    }
    let data = publish_expect(&s, "open:sse", 1).await;
    for c in [&mut get, &mut post] {
        let msg = c.message().await.expect("publication event");
        assert_pub(&msg, "open:sse", &data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uni_streams_ping_with_their_own_forms() {
    let s = node_with_transports("1s").await;
    let req = json!({"token": token("carol")}).to_string();
    let stream = format!("http://{}/connection/uni_http_stream", s.addr);
    let mut c = Curl::start(&["-X", "POST", "--data-binary", &req, &stream]);
    assert!(c.message().await.unwrap()["connect"].is_object());
    // No pong is expected from a unidirectional client: pings keep coming, no 3012.
    for _ in 0..2 {
        assert_eq!(
            c.line().await.as_deref(),
            Some("null"),
            "ping of uni_http_stream"
        );
    }
    let sse = format!("http://{}/connection/uni_sse", s.addr);
    let mut c = Curl::start(&["-X", "POST", "--data-binary", &req, &sse]);
    assert!(c.message().await.unwrap()["connect"].is_object());
    for _ in 0..2 {
        assert_eq!(
            c.line().await.as_deref(),
            Some("data: {}"),
            "ping of uni_sse"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uni_http_bad_input_gets_documented_answers() {
    let s = node_with_transports("25s").await;
    let stream = format!("{}/connection/uni_http_stream", s.addr);
    let sse = format!("{}/connection/uni_sse", s.addr);
    // Not a connect request: 400 before any stream.
    let (st, body) = http_post(s.addr, "/connection/uni_http_stream", None, b"{nope").await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    let (st, _) = http_post(s.addr, "/connection/uni_sse", None, b"[1,2]").await;
    assert_eq!(st, 400);
    // A body over client.http_max_request_body_size (64 KiB): 413.
    let huge = format!("{{\"token\":\"{}\"}}", "x".repeat(70_000));
    let (st, _) = http_post(s.addr, "/connection/uni_http_stream", None, huge.as_bytes()).await;
    assert_eq!(st, 413);
    // SSE by GET without cf_connect: 400; uni_http_stream by GET: 405.
    let (st, _) = http_get(s.addr, "/connection/uni_sse").await;
    assert_eq!(st, 400);
    let (st, _) = http_get(s.addr, "/connection/uni_http_stream").await;
    assert_eq!(st, 405);
    // An invalid token: the stream carries the disconnect (3500) and ends.
    for url in [&stream, &sse] {
        let mut c = Curl::start(&[
            "-X",
            "POST",
            "--data-binary",
            r#"{"token":"not.a.jwt"}"#,
            &format!("http://{url}"),
        ]);
        let bye = c.message().await.expect("disconnect");
        assert_eq!(bye["disconnect"]["code"], 3500, "{bye}");
        assert_eq!(bye["disconnect"]["reason"], "invalid token", "{bye}");
        assert_eq!(c.line().await, None);
        assert_eq!(c.exit().await, 0);
    }
    // The node is still serving.
    let ok = s.client("still-here").await;
    ok.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_are_off_by_default() {
    let s = TestServer::start().await;
    for path in [
        "/connection/uni_sse",
        "/connection/uni_http_stream",
        "/connection/sse",
        "/connection/http_stream",
        "/emulation",
        "/connection/uni_websocket",
    ] {
        let (st, _) = http_post(s.addr, path, None, br#"{"token":""}"#).await;
        assert_eq!(st, 404, "{path} must be off by default");
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn uni_ws(s: &TestServer, query: &str) -> Ws {
    let url = format!("ws://{}/connection/uni_websocket{query}", s.addr);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade")
        .0
}

/// The next text message, or the close frame's code.
async fn ws_next(ws: &mut Ws) -> Result<Value, u16> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        match m {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(f))) => return Err(f.map(|f| u16::from(f.code)).unwrap_or(0)),
            Some(Ok(_)) => continue,
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uni_websocket_plain_client_receives_publications() {
    let s = node_with_transports("25s").await;
    let tok = token_with_channels("dave", &["open:ws"]);
    // The connect request as the first message.
    let mut a = uni_ws(&s, "").await;
    a.send(Message::text(json!({"token": tok}).to_string()))
        .await
        .unwrap();
    // Or in cf_connect.
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("cf_connect", &json!({"token": tok}).to_string())
        .finish();
    let mut b = uni_ws(&s, &format!("?{q}")).await;
    for ws in [&mut a, &mut b] {
        let c = ws_next(ws).await.expect("connect push");
        assert!(c["connect"]["subs"]["open:ws"].is_object(), "{c}");
    }
    for n in 1..=2 {
        let data = publish_expect(&s, "open:ws", n).await;
        for ws in [&mut a, &mut b] {
            let msg = ws_next(ws).await.expect("publication");
            assert_pub(&msg, "open:ws", &data);
        }
    }
    // Later messages from the client are ignored; the connection stays.
    a.send(Message::text("{\"whatever\":1}")).await.unwrap();
    let data = publish_expect(&s, "open:ws", 3).await;
    assert_pub(&ws_next(&mut a).await.unwrap(), "open:ws", &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uni_websocket_bad_input_closes_with_documented_codes() {
    let s = node_with_transports("25s").await;
    // Not a connect request: disconnect push, then close 3501.
    let mut ws = uni_ws(&s, "").await;
    ws.send(Message::text("{not json")).await.unwrap();
    let bye = ws_next(&mut ws).await.expect("disconnect push");
    assert_eq!(bye["disconnect"]["code"], 3501, "{bye}");
    assert_eq!(ws_next(&mut ws).await, Err(3501));
    // An invalid token: 3500.
    let mut ws = uni_ws(&s, "").await;
    ws.send(Message::text(r#"{"token":"a.b.c"}"#))
        .await
        .unwrap();
    let bye = ws_next(&mut ws).await.expect("disconnect push");
    assert_eq!(bye["disconnect"]["code"], 3500, "{bye}");
    assert_eq!(ws_next(&mut ws).await, Err(3500));
    // An over-long first message: 1009.
    let mut ws = uni_ws(&s, "").await;
    let big = format!("{{\"token\":\"{}\"}}", "x".repeat(70_000));
    ws.send(Message::text(big)).await.unwrap();
    let mut code = None;
    for _ in 0..2 {
        if let Err(c) = ws_next(&mut ws).await {
            code = Some(c);
            break;
        }
    }
    assert_eq!(code, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulation_bad_input_gets_documented_answers() {
    let s = node_with_transports("25s").await;
    let post = |path: &'static str, body: Vec<u8>| {
        let addr = s.addr;
        async move { http_post(addr, path, None, &body).await.0 }
    };
    // /emulation: not an emulation request 400, too large 413, no such session 404.
    assert_eq!(post("/emulation", b"{nope".to_vec()).await, 400);
    assert_eq!(
        post("/emulation", br#"{"session":"1-x"}"#.to_vec()).await,
        400
    );
    let huge = format!(r#"{{"session":"1-x","data":"{}"}}"#, "x".repeat(70_000));
    assert_eq!(post("/emulation", huge.into_bytes()).await, 413);
    let unknown = br#"{"session":"1-00000000-0000-0000-0000-000000000000","data":"{}"}"#;
    assert_eq!(post("/emulation", unknown.to_vec()).await, 404);
    // A stream whose first command is not a connect: the disconnect push (3501), then the end.
    for path in ["/connection/http_stream", "/connection/sse"] {
        let url = format!("http://{}{path}", s.addr);
        for body in ["{nope", r#"{"id":1,"subscribe":{"channel":"open:x"}}"#] {
            let mut c = Curl::start(&["-X", "POST", "--data-binary", body, &url]);
            let bye = c.message().await.expect("disconnect push");
            assert_eq!(bye["push"]["disconnect"]["code"], 3501, "{path}: {bye}");
            assert_eq!(c.line().await, None);
        }
    }
    // An origin that is not allowed: 403 before anything else.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /connection/sse?cf_connect=%7B%7D HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n",
        s.addr
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulation_session_ends_when_its_stream_ends() {
    let s = node_with_transports("25s").await;
    let tok = token("erin");
    let url = format!("http://{}/connection/http_stream", s.addr);
    let body = json!({"id": 1, "connect": {"token": tok}}).to_string();
    let mut c = Curl::start(&["-X", "POST", "--data-binary", &body, &url]);
    let reply = c.message().await.expect("connect reply");
    let session = reply["connect"]["session"]
        .as_str()
        .expect("a session id")
        .to_string();
    assert_eq!(reply["id"], 1, "{reply}");
    // A command through /emulation is answered on the stream.
    let cmd = json!({"id": 2, "subscribe": {"channel": "open:e"}}).to_string();
    let emu = json!({"session": session, "node": reply["connect"]["node"], "data": cmd});
    let (st, _) = http_post(s.addr, "/emulation", None, emu.to_string().as_bytes()).await;
    assert_eq!(st, 204);
    let sub = c.message().await.expect("subscribe reply");
    assert_eq!(sub["id"], 2, "{sub}");
    assert!(sub["subscribe"].is_object(), "{sub}");
    // The client goes away: its session is forgotten.
    drop(c);
    let addr = s.addr;
    let body = emu.to_string();
    eventually("the session is gone", || {
        let body = body.clone();
        async move { http_post(addr, "/emulation", None, body.as_bytes()).await.0 == 404 }
    })
    .await;
}

/// Sends a raw HTTP/1.1 request; the response head, lower-cased.
async fn raw_head(s: &TestServer, req: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    text.split("\r\n\r\n").next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_on_allowed_origins_get_cors_answers() {
    let toml = base_toml().replace(
        "[client]\n",
        "[client]\nhttp_stream = true\nuni_sse = true\nallowed_origins = [\"http://app.example\"]\n",
    );
    let s = TestServer::start_toml(&toml).await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /emulation HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n",
            s.addr
        )
    };
    let ok = raw_head(&s, &preflight("http://app.example")).await;
    assert!(ok.starts_with("http/1.1 204"), "{ok}");
    assert!(
        ok.contains("access-control-allow-origin: http://app.example"),
        "{ok}"
    );
    assert!(
        ok.contains("access-control-allow-methods: get, post, options"),
        "{ok}"
    );
    assert!(
        ok.contains("access-control-allow-headers: content-type"),
        "{ok}"
    );
    let evil = raw_head(&s, &preflight("http://evil.example")).await;
    assert!(!evil.contains("access-control-allow-origin"), "{evil}");
    assert!(!evil.starts_with("http/1.1 2"), "{evil}");
    // A real request from the allowed origin carries the header too (here a 404 answer).
    let body = r#"{"session":"1-x","data":"{}"}"#;
    let req = format!(
        "POST /emulation HTTP/1.1\r\nHost: {}\r\nOrigin: http://app.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.addr,
        body.len()
    );
    let head = raw_head(&s, &req).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(
        head.contains("access-control-allow-origin: http://app.example"),
        "{head}"
    );
    // A transport that is off answers no preflight.
    let off = preflight("http://app.example").replace("/emulation", "/connection/sse");
    let head = raw_head(&s, &off).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
}

/// A stream outlives the HTTP connection's idle timeout (`client.handshake_timeout`), on
/// HTTP/1.1 and on HTTP/2 (h2c with prior knowledge): it is a request in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_not_an_idle_connection() {
    let toml = base_toml().replace(
        "[client]\n",
        "[client]\nuni_http_stream = true\nhandshake_timeout = \"1s\"\nping_interval = \"1s\"\npong_timeout = \"500ms\"\n",
    );
    let s = TestServer::start_toml(&toml).await;
    let req = json!({"token": token("frank")}).to_string();
    let url = format!("http://{}/connection/uni_http_stream", s.addr);
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let mut c = Curl::start(&[proto, "-X", "POST", "--data-binary", &req, &url]);
        assert!(c.message().await.unwrap()["connect"].is_object(), "{proto}");
        // Four pings a second apart: past the 1 s idle timeout and its 1 s close grace.
        for i in 0..4 {
            assert_eq!(c.line().await.as_deref(), Some("null"), "{proto}: ping {i}");
        }
    }
}

/// The node-wide connection cap counts streams like WebSockets: beyond it a stream request is
/// answered 503 before it starts; when a stream ends its slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_count_against_the_connection_cap() {
    let toml = base_toml().replace(
        "[client]\n",
        "[client]\nuni_http_stream = true\nuni_websocket = true\nmax_connections = 1\n",
    );
    let s = TestServer::start_toml(&toml).await;
    let req = json!({"token": token("gina")}).to_string();
    let url = format!("http://{}/connection/uni_http_stream", s.addr);
    let mut first = Curl::start(&["-X", "POST", "--data-binary", &req, &url]);
    assert!(first.message().await.unwrap()["connect"].is_object());
    let (st, _) = http_post(s.addr, "/connection/uni_http_stream", None, req.as_bytes()).await;
    assert_eq!(st, 503, "a second stream is over the cap");
    let ws = format!("ws://{}/connection/uni_websocket", s.addr);
    assert!(
        tokio_tungstenite::connect_async(ws).await.is_err(),
        "so is a WebSocket"
    );
    drop(first);
    let addr = s.addr;
    eventually("the slot is free again", || {
        let req = req.clone();
        async move {
            let mut c = Curl::start(&[
                "-X",
                "POST",
                "--data-binary",
                &req,
                &format!("http://{addr}/connection/uni_http_stream"),
            ]);
            matches!(c.message().await, Some(m) if m["connect"].is_object())
        }
    })
    .await;
}

/// Drain reaches emulated streams as it reaches WebSockets: the disconnect push 3001, then
/// the end of the response; the node drains in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_emulated_streams_with_3001() {
    let mut s = node_with_transports("25s").await;
    let body = json!({"id": 1, "connect": {"token": token("hank")}}).to_string();
    let mut streams = Vec::new();
    for path in ["http_stream", "sse"] {
        let url = format!("http://{}/connection/{path}", s.addr);
        let args: Vec<String> = if path == "sse" {
            let q = form_urlencoded::Serializer::new(String::new())
                .append_pair("cf_connect", &body)
                .finish();
            vec![format!("{url}?{q}")]
        } else {
            ["-X", "POST", "--data-binary", &body, &url]
                .map(String::from)
                .to_vec()
        };
        let mut c = Curl::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let reply = c.message().await.expect("connect reply");
        assert!(reply["connect"]["session"].is_string(), "{path}: {reply}");
        streams.push((path, c));
    }
    s.stop().await;
    for (path, mut c) in streams {
        let bye = c.message().await.expect("disconnect push");
        assert_eq!(bye["push"]["disconnect"]["code"], 3001, "{path}: {bye}");
        assert_eq!(c.line().await, None, "{path}: the stream ends");
    }
}

/// A unidirectional client recovers its server-side subscription through `subs` in its
/// connect request: the missed publications come in the connect push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uni_connect_recovers_through_subs() {
    let s = node_with_transports("25s").await;
    let first = s.publish("open:rec", json!({"n": 1})).await;
    let epoch = first["epoch"].as_str().unwrap().to_string();
    s.publish("open:rec", json!({"n": 2})).await;
    s.publish("open:rec", json!({"n": 3})).await;
    let req = json!({
        "token": token_with_channels("ivy", &["open:rec"]),
        "subs": {"open:rec": {"recover": true, "offset": 1, "epoch": epoch}},
    })
    .to_string();
    let url = format!("http://{}/connection/uni_http_stream", s.addr);
    let mut c = Curl::start(&["-X", "POST", "--data-binary", &req, &url]);
    let connect = c.message().await.expect("connect push");
    let sub = &connect["connect"]["subs"]["open:rec"];
    assert_eq!(sub["recovered"], true, "{connect}");
    let got: Vec<&Value> = sub["publications"]
        .as_array()
        .expect("recovered publications")
        .iter()
        .map(|p| &p["data"]["n"])
        .collect();
    assert_eq!(got, [&json!(2), &json!(3)], "{connect}");
}

/// A Protobuf `http_stream` read by curl: the response head, then length-delimited Replies.
struct PbStream {
    child: Child,
    out: ChildStdout,
    head: String,
    buf: Vec<u8>,
}

impl PbStream {
    /// POSTs `body` (`Content-Type: application/octet-stream`, as centrifuge-js's Protobuf
    /// build) to `/connection/http_stream`.
    async fn start(s: &TestServer, body: &[u8]) -> PbStream {
        use tokio::io::AsyncWriteExt;
        let url = format!("http://{}/connection/http_stream", s.addr);
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "-i", "-X", "POST", "--data-binary", "@-", &url])
            .args(["-H", "Content-Type: application/octet-stream"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body).await.unwrap();
        drop(stdin);
        let out = child.stdout.take().unwrap();
        let mut st = PbStream {
            child,
            out,
            head: String::new(),
            buf: Vec::new(),
        };
        while !st.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(st.fill().await, "the response head");
        }
        let end = st.buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        st.head = String::from_utf8_lossy(&st.buf[..end]).to_ascii_lowercase();
        st.buf.drain(..end);
        st
    }

    /// Reads more of the body; false at its end.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.out.read(&mut chunk))
            .await
            .expect("bytes in time")
            .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next Reply (`None`: the stream ended with nothing left over). Every byte must
    /// belong to a length-delimited Reply: a separator between them would not decode.
    async fn reply(&mut self) -> Option<pb::Reply> {
        loop {
            let mut b = &self.buf[..];
            if let Ok(len) = prost::encoding::decode_varint(&mut b)
                && b.len() as u64 >= len
            {
                let used = self.buf.len() - b.len() + len as usize;
                let r = pb::Reply::decode(&b[..len as usize]).expect("a Reply");
                self.buf.drain(..used);
                return Some(r);
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "trailing bytes: {:?}", self.buf);
                return None;
            }
        }
    }

    /// The next Reply that is not a ping.
    async fn message(&mut self) -> pb::Reply {
        loop {
            let r = self.reply().await.expect("a message");
            if r != pb::Reply::default() {
                return r;
            }
        }
    }
}

fn delimited(cmd: pb::Command) -> Vec<u8> {
    cmd.encode_length_delimited_to_vec()
}

/// POSTs `body` with `content_type`; the status.
async fn post_typed(s: &TestServer, path: &str, content_type: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.addr,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let _ = tcp.write_all(body).await; // a 413 may come before the whole body is read
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

const OCTETS: &str = "application/octet-stream";

/// Protobuf over `http_stream` + `/emulation` without an SDK: the stream is Protobuf
/// (`application/octet-stream`, Replies back to back with no `\n`), commands go through
/// `/emulation` as `EmulationRequest`s, a binary publication arrives byte for byte, the
/// disconnect push is a Protobuf `Disconnect`; bad input gets the documented answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_http_stream_and_emulation() {
    let s = node_with_transports("25s").await;
    let connect = pb::Command {
        id: 1,
        connect: Some(pb::ConnectRequest {
            token: token("pia"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut st = PbStream::start(&s, &delimited(connect)).await;
    assert!(st.head.starts_with("http/1.1 200"), "{}", st.head);
    assert!(
        st.head.contains("content-type: application/octet-stream"),
        "{}",
        st.head
    );
    let r = st.message().await;
    let c = r.connect.expect("connect reply");
    assert_eq!((r.id, c.node.is_empty()), (1, false), "{c:?}");
    assert!(c.session.starts_with("1-"), "session id: {:?}", c.session);
    let emu = |data: Vec<u8>| {
        pb::EmulationRequest {
            node: c.node.clone(),
            session: c.session.clone(),
            data,
        }
        .encode_to_vec()
    };
    let sub = pb::Command {
        id: 2,
        subscribe: Some(pb::SubscribeRequest {
            channel: "open:pb".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        post_typed(&s, "/emulation", OCTETS, &emu(delimited(sub))).await,
        204
    );
    let r = st.message().await;
    assert_eq!((r.id, r.subscribe.is_some()), (2, true), "{r:?}");
    // Binary bytes that a newline-split stream would cut.
    let raw = [10u8, 0, 255, 10, 13];
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let (code, _) = s
        .api("publish", json!({"channel": "open:pb", "b64data": b64}))
        .await;
    assert_eq!(code, 200);
    let p = st
        .message()
        .await
        .push
        .and_then(|p| p.r#pub)
        .expect("a publication");
    assert_eq!(p.data, raw);

    // Bad /emulation bodies: malformed (truncated length, wrong wire type, no session) 400;
    // JSON for a Protobuf session 400; too large 413; unknown session 404.
    for bad in [&[0x12u8, 0x80][..], &[0x12, 0x05, b'a'], &[0x12, 0x01], &[]] {
        assert_eq!(
            post_typed(&s, "/emulation", OCTETS, bad).await,
            400,
            "{bad:?}"
        );
    }
    let as_json = json!({"session": c.session, "data": "{}"}).to_string();
    let ct_json = "application/json";
    assert_eq!(
        post_typed(&s, "/emulation", ct_json, as_json.as_bytes()).await,
        400
    );
    assert_eq!(
        post_typed(&s, "/emulation", OCTETS, &emu(vec![7; 70_000])).await,
        413
    );
    let unknown = pb::EmulationRequest {
        session: "1-00000000-0000-0000-0000-000000000000".into(),
        ..Default::default()
    };
    assert_eq!(
        post_typed(&s, "/emulation", OCTETS, &unknown.encode_to_vec()).await,
        404
    );
    // Bad commands inside a good request end the session like a bad WebSocket message:
    // a truncated length prefix 3501.
    assert_eq!(
        post_typed(&s, "/emulation", OCTETS, &emu(vec![0x85])).await,
        204
    );
    let bye = st
        .message()
        .await
        .push
        .and_then(|p| p.disconnect)
        .expect("disconnect push");
    assert_eq!(bye.code, 3501, "{bye:?}");
    assert_eq!(
        st.reply().await,
        None,
        "the stream ends after the disconnect push"
    );
    let _ = st.child.wait().await;

    // Bad stream requests: a truncated length prefix, a truncated field or a wrong wire type
    // 3501, a length (2^30) over client.max_message_size 1009 (each a Protobuf disconnect push,
    // then the end); a body over client.http_max_request_body_size 413.
    for (body, code) in [
        (vec![0x85], 3501),
        (vec![0x02, 0x22, 0x05], 3501),
        (vec![0x03, 0x0a, 0x01, b'A'], 3501),
        (vec![0x80, 0x80, 0x80, 0x80, 0x04], 1009),
    ] {
        let mut st = PbStream::start(&s, &body).await;
        let bye = st
            .message()
            .await
            .push
            .and_then(|p| p.disconnect)
            .expect("disconnect");
        assert_eq!(bye.code, code, "{body:?}: {bye:?}");
        assert_eq!(st.reply().await, None);
    }
    let big = vec![0u8; 70_000];
    assert_eq!(
        post_typed(&s, "/connection/http_stream", OCTETS, &big).await,
        413
    );
}
