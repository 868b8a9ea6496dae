//! Test harness: a node started in-process on 127.0.0.1:0, a real WebSocket client
//! (tokio-tungstenite, an independent implementation), a raw HTTP/1.1 client for the API and
//! hyper's HTTP/2 client.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard::auth::{MintRequest, mint};
use switchyard::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret";
pub const API_KEY: &str = "test-api-key";
/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// Base config for tests: loopback, port 0, known secrets, a few namespaces.
pub fn base_toml() -> String {
    format!(
        r#"
[client]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[cluster]
listen = "127.0.0.1:0"
heartbeat_interval = "50ms"
election_timeout_min = "150ms"
election_timeout_max = "300ms"
[auth]
token_hmac_secret = "{SECRET}"
api_key = "{API_KEY}"
[channel]
allow_subscribe_for_client = true
[[channel.namespaces]]
name = "chat"
history_size = 100
history_ttl = "5m"
presence = true
join_leave = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
allow_user_limited_channels = true
[[channel.namespaces]]
name = "open"
history_size = 10
history_ttl = "5m"
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_history_for_client = true
allow_presence_for_client = true
[[channel.namespaces]]
name = "locked"
history_size = 10
history_ttl = "5m"
presence = true
"#
    )
}

pub struct TestServer {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    /// The node's data directory (removed on drop).
    pub data: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    /// Starts a node from the base config with `extra` TOML appended (extra tables only; to
    /// change a base key use [`TestServer::start_toml`]).
    pub async fn start_with(extra: &str) -> TestServer {
        Self::start_toml(&format!("{}\n{}", base_toml(), extra)).await
    }

    pub async fn start_toml(toml: &str) -> TestServer {
        let data = tempfile::tempdir().unwrap();
        let toml = format!("{toml}\n[node]\ndata_dir = {:?}\n", data.path());
        let cfg = Config::from_toml(&toml).expect("test config");
        let server = Server::start(cfg).await.expect("server starts");
        let addr = server.client_addr;
        TestServer {
            server: Some(server),
            addr,
            data,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// A connected client for `user` (asserts the connect reply).
    pub async fn client(&self, user: &str) -> Client {
        let mut c = Client::open(&self.ws_url()).await;
        let r = c.connect(&token(user)).await;
        assert!(r["connect"]["client"].is_string(), "connect reply: {r}");
        c.client_id = r["connect"]["client"].as_str().unwrap().to_string();
        c
    }

    pub async fn api(&self, method: &str, body: Value) -> (u16, Value) {
        api_call(self.addr, method, Some(API_KEY), &body.to_string()).await
    }

    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        let (status, body) = self
            .api("publish", json!({"channel": channel, "data": data}))
            .await;
        assert_eq!(status, 200);
        assert!(body["result"].is_object(), "publish failed: {body}");
        body["result"].clone()
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            assert!(s.wait(Duration::from_secs(10)).await, "drained in time");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.shutdown();
            s.node.close_clients();
        }
    }
}

pub fn token(user: &str) -> String {
    mint(
        SECRET,
        MintRequest {
            user: user.into(),
            ttl: Some(Duration::from_secs(3600)),
            ..Default::default()
        },
    )
    .unwrap()
}

/// An HS256 token with the test secret and any `claims`.
pub fn hs256(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn sub_token(user: &str, channel: &str) -> String {
    mint(
        SECRET,
        MintRequest {
            user: user.into(),
            ttl: Some(Duration::from_secs(3600)),
            channel: Some(channel.into()),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Raw HTTP/1.1 POST with `Connection: close`; returns status and JSON body (Null if empty).
pub async fn api_call(
    addr: SocketAddr,
    method: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let (status, raw) = http_post(addr, &format!("/api/{method}"), key, body.as_bytes()).await;
    let v = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw).unwrap_or(Value::String(String::from_utf8_lossy(&raw).into()))
    };
    (status, v)
}

pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(k) = key {
        req.push_str(&format!("X-API-Key: {k}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("HTTP response in time")
        .unwrap();
    parse_http(&out)
}

/// Like [`api_call`], for a node that may die during the call: `None` when the connection
/// is refused or reset, or no whole answer comes within `within`.
pub async fn try_api_call(
    addr: SocketAddr,
    method: &str,
    body: &str,
    within: Duration,
) -> Option<(u16, Value)> {
    let req = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-API-Key: {API_KEY}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, raw) = try_http(addr, &req, within).await?;
    Some((status, serde_json::from_slice(&raw).unwrap_or(Value::Null)))
}

/// A GET to a node that may be down: `None` when it refuses, resets or does not answer in
/// `within`.
pub async fn try_http_get(
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> Option<(u16, Vec<u8>)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    try_http(addr, &req, within).await
}

/// Sends one raw HTTP/1.1 request (`Connection: close`); the status and body, or `None`.
async fn try_http(addr: SocketAddr, req: &str, within: Duration) -> Option<(u16, Vec<u8>)> {
    let call = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        out.windows(4).any(|w| w == b"\r\n\r\n").then_some(out)
    };
    let out = tokio::time::timeout(within, call).await.ok()??;
    Some(parse_http(&out))
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("HTTP response in time")
        .unwrap();
    parse_http(&out)
}

fn parse_http(out: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(out);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4;
    (status, out[head_end..].to_vec())
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client over a real WebSocket: splits newline-joined frames into messages.
pub struct Client {
    pub ws: Ws,
    inbox: VecDeque<Value>,
    next_id: u32,
    pub client_id: String,
    /// Text frames received (to observe batching).
    pub frames: usize,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16, String),
    NoCode,
}

impl Client {
    pub async fn open(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Client::from_ws(ws)
    }

    /// A client whose socket has a small fixed receive buffer (set before connect, which
    /// disables autotuning): like a slow device, it fills up after a few KiB.
    pub async fn open_small_rcvbuf(addr: SocketAddr) -> Client {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(addr).await.unwrap();
        let url = format!("ws://{addr}/connection/websocket");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("ws handshake");
        Client::from_ws(ws)
    }

    pub fn from_ws(ws: Ws) -> Client {
        Client {
            ws,
            inbox: VecDeque::new(),
            next_id: 1,
            client_id: String::new(),
            frames: 0,
        }
    }

    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.unwrap();
    }

    pub async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await;
    }

    /// Sends `{"id":N,"<method>":params}` and returns the reply with that id (pushes are kept).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.id();
        let mut m = serde_json::Map::new();
        m.insert("id".into(), json!(id));
        m.insert(method.into(), params);
        self.send(Value::Object(m)).await;
        self.reply(id).await
    }

    pub async fn connect(&mut self, token: &str) -> Value {
        self.call("connect", json!({"token": token, "name": "rust-test"}))
            .await
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let r = self.call("subscribe", json!({"channel": channel})).await;
        assert!(r.get("subscribe").is_some(), "subscribe {channel}: {r}");
        r
    }

    async fn fill(&mut self) -> Result<(), Closed> {
        loop {
            let msg = match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("timed out waiting for a message"),
                Ok(None) => return Err(Closed::NoCode),
                Ok(Some(Err(_))) => return Err(Closed::NoCode),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    self.frames += 1;
                    for line in t.as_str().split('\n').filter(|l| !l.trim().is_empty()) {
                        let v: Value = serde_json::from_str(line).expect("server sent JSON");
                        if v.as_object().is_some_and(|o| o.is_empty()) {
                            // Server ping: answer like the SDKs do.
                            self.ws.send(Message::text("{}")).await.ok();
                            continue;
                        }
                        self.inbox.push_back(v);
                    }
                    return Ok(());
                }
                Message::Close(Some(f)) => {
                    return Err(Closed::Code(u16::from(f.code), f.reason.to_string()));
                }
                Message::Close(None) => return Err(Closed::NoCode),
                _ => continue,
            }
        }
    }

    /// Next message (reply or push), in arrival order.
    pub async fn next(&mut self) -> Value {
        loop {
            if let Some(v) = self.inbox.pop_front() {
                return v;
            }
            if let Err(c) = self.fill().await {
                panic!("connection closed while waiting for a message: {c:?}");
            }
        }
    }

    /// The reply with `id`; other messages stay queued.
    pub async fn reply(&mut self, id: u32) -> Value {
        loop {
            if let Some(pos) = self.inbox.iter().position(|v| v["id"] == json!(id)) {
                return self.inbox.remove(pos).unwrap();
            }
            if let Err(c) = self.fill().await {
                panic!("connection closed while waiting for reply {id}: {c:?}");
            }
        }
    }

    /// The next push (messages without id); replies stay queued.
    pub async fn push(&mut self) -> Value {
        loop {
            if let Some(pos) = self.inbox.iter().position(|v| v.get("push").is_some()) {
                return self.inbox.remove(pos).unwrap()["push"].clone();
            }
            if let Err(c) = self.fill().await {
                panic!("connection closed while waiting for a push: {c:?}");
            }
        }
    }

    /// The next publication push on `channel`.
    pub async fn publication(&mut self, channel: &str) -> Value {
        loop {
            let p = self.push().await;
            if p["channel"] == channel && p.get("pub").is_some() {
                return p["pub"].clone();
            }
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self) -> Closed {
        loop {
            self.inbox.clear();
            if let Err(c) = self.fill().await {
                return c;
            }
        }
    }

    /// Keeps reading (and answering pings) for `d`; messages are queued.
    pub async fn pump(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < deadline {
            let left = deadline - tokio::time::Instant::now();
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    self.frames += 1;
                    for line in t.as_str().split('\n').filter(|l| !l.trim().is_empty()) {
                        let v: Value = serde_json::from_str(line).expect("server sent JSON");
                        if v.as_object().is_some_and(|o| o.is_empty()) {
                            self.ws.send(Message::text("{}")).await.ok();
                        } else {
                            self.inbox.push_back(v);
                        }
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => panic!("closed while pumping: {f:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("connection ended while pumping: {other:?}"),
            }
        }
    }

    /// Asserts nothing arrives for `d`.
    pub async fn assert_quiet(&mut self, d: Duration) {
        assert!(
            self.inbox.is_empty(),
            "unexpected queued message: {:?}",
            self.inbox.front()
        );
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("unexpected message: {t}");
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if f().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP/2 client connection (hyper): `send` is cloned for concurrent requests; `conn`
/// ends when the connection does (GOAWAY, close).
pub struct H2 {
    pub send: hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    pub conn: tokio::task::JoinHandle<()>,
}

impl H2 {
    /// The HTTP/2 handshake on `io`: prior knowledge on plain TCP (h2c), or after ALPN `h2`.
    pub async fn handshake<T>(io: T) -> H2
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = tokio::time::timeout(
            WAIT,
            hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(io),
            ),
        )
        .await
        .expect("HTTP/2 handshake in time")
        .expect("HTTP/2 handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 { send, conn }
    }

    /// h2c with prior knowledge to `addr`.
    pub async fn connect(addr: SocketAddr) -> H2 {
        H2::handshake(TcpStream::connect(addr).await.unwrap()).await
    }
}

/// `POST path` on an HTTP/2 connection with `X-API-Key: key` and `headers`; the status and
/// body, or the error when the stream or connection failed.
pub async fn h2_post(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
) -> Result<(u16, Vec<u8>), hyper::Error> {
    use http_body_util::BodyExt;
    let mut req = hyper::Request::post(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(WAIT, async {
        send.ready().await?;
        send.send_request(req).await
    })
    .await
    .expect("HTTP/2 response in time")?;
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("HTTP/2 body in time")?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

/// An API call over HTTP/2 that must succeed: HTTP 200 and a `result`.
pub async fn h2_api(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    method: &str,
    body: Value,
) -> Value {
    let (st, raw) = h2_post(
        send,
        &format!("/api/{method}"),
        Some(API_KEY),
        &[],
        body.to_string(),
    )
    .await
    .expect("HTTP/2 request");
    let v: Value = serde_json::from_slice(&raw).expect("JSON reply");
    assert_eq!(st, 200, "{v}");
    assert!(v["result"].is_object(), "{method} failed: {v}");
    v["result"].clone()
}

/// The built `switchyard` binary running as a child process (killed on drop).
pub struct Proc {
    pub child: std::process::Child,
    pub client_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Log lines read so far (JSON).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The data directory the test made for it, unless the caller gave one.
    pub data: Option<tempfile::TempDir>,
}

impl Proc {
    /// Starts `switchyard serve --config <file>` with JSON logs and waits for both listeners.
    /// The binary is this build's, or `SY_TEST_BIN` when set (a release build for numbers).
    pub fn start(config: &std::path::Path, envs: &[(&str, &str)]) -> Proc {
        use std::io::BufRead;
        let bin = std::env::var("SY_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchyard").to_string());
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .env("SWITCHYARD_LOG__FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let data = if envs.iter().any(|(k, _)| *k == "SWITCHYARD_NODE__DATA_DIR") {
            None
        } else {
            let d = tempfile::tempdir().unwrap();
            cmd.env("SWITCHYARD_NODE__DATA_DIR", d.path());
            Some(d)
        };
        let mut child = cmd.spawn().expect("spawn switchyard");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "listening"
                {
                    let _ = tx.send((
                        v["fields"]["listener"].as_str().unwrap_or("").to_string(),
                        v["fields"]["addr"]
                            .as_str()
                            .unwrap_or("")
                            .parse::<SocketAddr>()
                            .ok(),
                    ));
                }
                log2.lock().unwrap().push(line);
            }
        });
        let (mut client_addr, mut admin_addr) = (None, None);
        while client_addr.is_none() || admin_addr.is_none() {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok((l, a)) if l == "client" => client_addr = a,
                Ok((l, a)) if l == "admin" => admin_addr = a,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("switchyard did not start: {:?}", log.lock().unwrap());
                }
            }
        }
        Proc {
            child,
            client_addr: client_addr.unwrap(),
            admin_addr: admin_addr.unwrap(),
            log,
            data,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.client_addr)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (polling, bounded by `within`) for a child process the test started; kills it and
/// fails the test when it takes longer.
pub fn wait_child(
    child: &mut std::process::Child,
    what: &str,
    within: Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes the base test config (plus `extra`) to a temp file.
pub fn config_file(extra: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(f, "{}\n{}", base_toml(), extra).unwrap();
    f
}

/// Opens a WebSocket to `addr` from source IP `src` (any of 127.0.0.0/8), with an optional
/// `Origin`; `Err(status)` when the server answers the upgrade with an HTTP error.
pub async fn try_open_from(
    addr: SocketAddr,
    src: &str,
    origin: Option<&str>,
) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}/connection/websocket")
        .into_client_request()
        .unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await {
        Ok((ws, _)) => Ok(Client::from_ws(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected WebSocket error: {e}"),
    }
}

/// The value of one series in a Prometheus text exposition (`name{labels}` exactly as
/// rendered, e.g. `switchyard_rate_limited_total{limit="command_rate"}`), or 0.
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (st, body) = http_get(admin, "/metrics").await;
    assert_eq!(st, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A port free on `ip` right now (for configs that must name their address up front).
/// Sends `n` publishes to `channel` in one WebSocket message (no waiting between them) and
/// checks that every one is answered without error and that `sub` (subscribed to `channel`)
/// receives them in the order sent, at contiguous offsets.
pub async fn pipelined_publishes_arrive_in_order(
    publisher: &mut Client,
    sub: &mut Client,
    channel: &str,
    n: u32,
) {
    let ids: Vec<u32> = (0..n).map(|_| publisher.id()).collect();
    let lines: Vec<String> = ids
        .iter()
        .zip(0..n)
        .map(|(id, k)| {
            serde_json::json!({"id": id, "publish": {"channel": channel, "data": {"n": k}}})
                .to_string()
        })
        .collect();
    publisher.send_raw(&lines.join("\n")).await;
    for &id in &ids {
        let r = publisher.reply(id).await;
        assert!(r.get("error").is_none(), "publish {id}: {r}");
    }
    let mut offsets = Vec::new();
    for k in 0..n {
        let p = sub.publication(channel).await;
        assert_eq!(p["data"]["n"], k, "publication order: {p}");
        offsets.push(p["offset"].as_u64().expect("offset"));
    }
    let first = offsets[0];
    assert_eq!(
        offsets,
        (first..first + u64::from(n)).collect::<Vec<_>>(),
        "contiguous offsets"
    );
}

/// A port free on `ip` now, for a listener a child process binds later. Picked below the
/// kernel's ephemeral range (32768+ by default), where every port-0 bind of the parallel tests
/// lands, so none of those can take it in between; checked free by binding it.
pub fn free_port(ip: &str) -> u16 {
    use rand::Rng;
    for _ in 0..1000 {
        let port = rand::rng().random_range(20000..32000);
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip} in 20000..32000");
}

/// Appends a frame's length byte(s) (with the MASK bit when `masked`).
pub fn frame_len(f: &mut Vec<u8>, len: usize, masked: bool) {
    let m = if masked { 0x80 } else { 0 };
    if len < 126 {
        f.push(m | len as u8);
    } else if len < 65536 {
        f.push(m | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// A masked client WebSocket frame with first byte `b0` (FIN, RSV bits, opcode).
pub fn masked_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    frame_len(&mut f, payload.len(), true);
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// `target/test-artifacts/<name>`, kept after the test; the directory is made and an old file
/// of that name removed.
pub fn artifact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs `tests/status-page/<script>` (Node.js, driving Debian's chromium headless through
/// playwright-core) with `args`; panics with its output unless it exits 0. Checks first that
/// playwright-core and chromium are there (scripts/test.sh installs both).
pub fn status_page_check(script: &str, args: &[String]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/status-page");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/test.sh"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "chromium is not installed (apt-get install chromium; scripts/test.sh does it as root)"
    );
    let out = std::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status page check {script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Asserts that `path` holds a PNG image (a screenshot).
pub fn assert_png(path: &std::path::Path) {
    let png = std::fs::read(path).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", path.display());
}

/// A figure of `/proc/<pid>/status` in KiB (`pid` may be `self`): `VmRSS`, `VmHWM`, …
pub fn proc_status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} line"))
}

/// Upgrades the raw stream `s` (connected to `addr`) to a WebSocket on `path`, with `extra`
/// header lines (each ending in CRLF); asserts the 101 and returns the response head.
pub async fn raw_upgrade(s: &mut TcpStream, addr: SocketAddr, path: &str, extra: &str) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    head
}

/// Reads an HTTP response head (up to the blank line) byte by byte, so nothing after it is
/// consumed.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
        assert!(head.len() < 4096, "response head too long");
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Environment that switches the bidirectional-emulation transports on (and pings every 2 s,
/// so pongs through `/emulation` are exercised).
pub const EMULATION_ENV: [(&str, &str); 4] = [
    ("SWITCHYARD_CLIENT__HTTP_STREAM", "true"),
    ("SWITCHYARD_CLIENT__SSE", "true"),
    ("SWITCHYARD_CLIENT__PING_INTERVAL", "2s"),
    ("SWITCHYARD_CLIENT__PONG_TIMEOUT", "1s"),
];

/// Runs tests/compat/js/emulation.mjs (centrifuge-js forced onto `http_stream`, then `sse`;
/// with `protobuf`, its Protobuf build on `http_stream`): its streams to `stream`, its
/// `/emulation` requests to `emulation`, the API at `api`; `config`: a config with the test
/// secret (for `switchyard token`). Asserts it passes.
pub fn run_emulation_script(
    (stream, emulation, api): (SocketAddr, SocketAddr, SocketAddr),
    protobuf: bool,
    config: &std::path::Path,
    prefix: &str,
    logs: &dyn Fn() -> String,
) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/js");
    assert!(
        dir.join("node_modules/eventsource").exists(),
        "the eventsource package is not installed: run scripts/test.sh (npm ci in tests/compat/js)"
    );
    let mut child = std::process::Command::new("node")
        .arg(dir.join("emulation.mjs"))
        .env("SY_HTTP_URL", format!("http://{stream}"))
        .env("SY_EMULATION_URL", format!("http://{emulation}"))
        .env("SY_API_URL", format!("http://{api}/api"))
        .env("SY_API_KEY", API_KEY)
        .env("SY_BIN", env!("CARGO_BIN_EXE_switchyard"))
        .env("SY_CONFIG", config)
        .env("SY_CHANNEL_PREFIX", prefix)
        .env("SY_PROTOBUF", if protobuf { "1" } else { "0" })
        .spawn()
        .expect("node runs");
    let status = wait_child(&mut child, "emulation.mjs", Duration::from_secs(90));
    assert!(
        status.success(),
        "emulation.mjs (protobuf: {protobuf}) failed ({status}); server log:\n{}",
        logs()
    );
}

/// Applies a Fossil delta to `src` (fossil-scm.org `www/delta_format.wiki`), checking what
/// the format lets a decoder check: copies within `src`, inserts within the delta, the
/// predicted size and the checksum. Written from the format's description, apart from the
/// server's encoder, so that tests do not check the encoder against itself.
pub fn apply_fossil(src: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    fn digit(b: u8) -> Option<u32> {
        match b {
            b'0'..=b'9' => Some(u32::from(b - b'0')),
            b'A'..=b'Z' => Some(u32::from(b - b'A') + 10),
            b'_' => Some(36),
            b'a'..=b'z' => Some(u32::from(b - b'a') + 37),
            b'~' => Some(63),
            _ => None,
        }
    }
    fn int(d: &[u8], pos: &mut usize) -> usize {
        let mut v: u64 = 0;
        while let Some(x) = d.get(*pos).and_then(|b| digit(*b)) {
            v = (v << 6) + u64::from(x);
            *pos += 1;
        }
        v as usize
    }
    fn checksum(data: &[u8]) -> u32 {
        let mut sum = 0u32;
        for chunk in data.chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            sum = sum.wrapping_add(u32::from_be_bytes(w));
        }
        sum
    }
    let mut pos = 0;
    let size = int(delta, &mut pos);
    if delta.get(pos) != Some(&b'\n') {
        return Err("size not ended by a newline".into());
    }
    pos += 1;
    let mut out = Vec::with_capacity(size);
    while pos < delta.len() {
        let n = int(delta, &mut pos);
        let op = delta.get(pos).copied();
        pos += 1;
        match op {
            Some(b'@') => {
                let at = int(delta, &mut pos);
                if delta.get(pos) != Some(&b',') {
                    return Err("copy not ended by a comma".into());
                }
                pos += 1;
                let part = src.get(at..at + n).ok_or("copy past the source")?;
                out.extend_from_slice(part);
            }
            Some(b':') => {
                let part = delta.get(pos..pos + n).ok_or("insert past the delta")?;
                out.extend_from_slice(part);
                pos += n;
            }
            Some(b';') => {
                if out.len() != size {
                    return Err(format!("{} bytes made, {size} predicted", out.len()));
                }
                if n as u32 != checksum(&out) {
                    return Err("bad checksum".into());
                }
                return Ok(out);
            }
            other => return Err(format!("unknown operator {other:?}")),
        }
    }
    Err("no checksum".into())
}
