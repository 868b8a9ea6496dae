//! The bench's own protocol client: a WebSocket over fastwebsockets' client handshake (optionally
//! leaving from a chosen loopback source address), JSON commands, server pings answered, a
//! connection that splits into a reading and a writing half (so commands can be sent while
//! replies are read), a tiny kept-alive client for the server API (HTTP/1.1 or HTTP/2), a
//! pipelined HTTP/1.1 one, and an HTTP/2 one whose requests go out concurrently.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocketWrite};
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::deflate::{DeflateReader, Msg, OFFER};

/// A parsed `ws://host:port/path` or `http://host:port` URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, for the Host header.
    pub authority: String,
    /// Resolved address.
    pub addr: SocketAddr,
    /// Request path (`/connection/websocket`, or empty for API bases).
    pub path: String,
}

impl Endpoint {
    /// Splits a URL into its authority (`host:port`) and path, without resolving it (see
    /// `loopback::endpoint`, which resolves and checks it). Only plain `ws://` and
    /// `http://` are supported.
    pub fn split(url: &str) -> anyhow::Result<(&str, &str)> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                anyhow!(
                    "{}: only ws:// and http:// URLs are supported",
                    super::redact::url(url)
                )
            })?;
        Ok(match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        })
    }
}

/// Opens a TCP connection to `addr`, from `source` when given (port chosen by the kernel).
pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let sock = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.bind(SocketAddr::new(ip, 0))?;
            sock.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs hyper's background tasks (WebSocket upgrade, HTTP/2 connection) on tokio.
#[derive(Clone, Copy)]
struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

/// What a read returned.
pub enum Incoming {
    /// A text message (possibly several protocol messages joined by `\n`).
    Text(Vec<u8>),
    /// The server closed the connection with this code (0 when it gave none) and reason.
    Closed(u16, String),
}

/// The upgraded connection a WebSocket runs over.
type Io = TokioIo<Upgraded>;

/// The writing half of a connection; its clones share it (the reading half answers pings
/// through it).
#[derive(Clone)]
pub struct Writer(Arc<tokio::sync::Mutex<WebSocketWrite<WriteHalf<Io>>>>);

impl Writer {
    /// Sends one text message.
    pub async fn send(&self, text: &[u8]) -> anyhow::Result<()> {
        self.frame(Frame::text(Payload::Borrowed(text))).await
    }

    async fn frame(&self, frame: Frame<'_>) -> anyhow::Result<()> {
        self.0
            .lock()
            .await
            .write_frame(frame)
            .await
            .map_err(|e| anyhow!("write: {e}"))
    }

    /// Sends a normal close frame (best effort).
    pub async fn close(&self) {
        let _ = self.frame(Frame::close(1000, b"")).await;
    }
}

/// Where a connection's frames are read from.
enum Source {
    /// fastwebsockets (no extension agreed).
    Plain(FragmentCollectorRead<ReadHalf<Io>>),
    /// Our own reader, inflating (permessage-deflate agreed).
    Deflate(DeflateReader<ReadHalf<Io>>),
}

/// The reading half of a connection.
pub struct Reader {
    ws: Source,
    writer: Writer,
}

impl Reader {
    /// The next data message or close frame (opcode and payload); pings and closes are
    /// answered on the way.
    async fn frame(&mut self) -> anyhow::Result<(OpCode, Vec<u8>)> {
        let ws = match &mut self.ws {
            Source::Plain(ws) => ws,
            Source::Deflate(r) => {
                let (opcode, obligated, payload) = match r.next().await? {
                    Msg::Data(d) => return Ok((OpCode::Text, d)),
                    Msg::Ping(p) => (OpCode::Pong, p.clone(), p),
                    Msg::Close(p) => (OpCode::Close, p.clone(), p),
                };
                let _ = (self.writer)
                    .frame(Frame::new(true, opcode, None, Payload::Owned(obligated)))
                    .await;
                return Ok((opcode, payload));
            }
        };
        // Frames the protocol obliges us to answer (a close echo, a pong), sent once the
        // read is over: the writing half is not borrowed while reading.
        let mut obligated: Option<(OpCode, Vec<u8>)> = None;
        let read = ws
            .read_frame(&mut |f: Frame<'_>| {
                obligated = Some((f.opcode, f.payload.to_vec()));
                std::future::ready(Ok::<(), std::convert::Infallible>(()))
            })
            .await;
        if let Some((opcode, payload)) = obligated {
            let _ = (self.writer)
                .frame(Frame::new(true, opcode, None, Payload::Owned(payload)))
                .await;
        }
        let frame = read.map_err(|e| anyhow!("read: {e}"))?;
        Ok((frame.opcode, frame.payload.to_vec()))
    }

    /// Reads the next text message; answers server pings (`{}`) on the way, so callers only
    /// see the other lines (a message that held only pings yields an empty text).
    pub async fn recv(&mut self) -> anyhow::Result<Incoming> {
        loop {
            let (opcode, payload) = self.frame().await?;
            match opcode {
                OpCode::Text | OpCode::Binary => {
                    let text = payload;
                    // Cheap pre-check: a ping is a `{}` line, and pushes rarely hold `{}`.
                    static PING: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
                        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"{}"));
                    if PING.find(&text).is_some() && lines(&text).any(|l| l == b"{}") {
                        self.writer.send(b"{}").await?;
                        let rest: Vec<&[u8]> = lines(&text).filter(|l| *l != b"{}").collect();
                        return Ok(Incoming::Text(rest.join(&b'\n')));
                    }
                    return Ok(Incoming::Text(text));
                }
                OpCode::Close => {
                    let p = &payload[..];
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        0
                    };
                    let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default()).into();
                    return Ok(Incoming::Closed(code, reason));
                }
                _ => continue,
            }
        }
    }
}

/// One protocol connection.
pub struct Conn {
    reader: Reader,
    writer: Writer,
    next_id: u32,
}

/// Splits a text message into its non-empty lines.
pub fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
    std::iter::from_fn(move || {
        loop {
            let end = ends.next()?;
            let line = &text[start..end];
            start = end + 1;
            if !line.is_empty() {
                return Some(line);
            }
        }
    })
}

impl Conn {
    /// WebSocket handshake to `ep` (from `source` when given).
    pub async fn open(ep: &Endpoint, source: Option<IpAddr>) -> anyhow::Result<Conn> {
        Self::open_with(ep, source, false).await
    }

    /// [`Conn::open`], offering permessage-deflate when `compression` (the server may
    /// decline: the connection then reads plain frames).
    pub async fn open_with(
        ep: &Endpoint,
        source: Option<IpAddr>,
        compression: bool,
    ) -> anyhow::Result<Conn> {
        let stream = tcp(ep.addr, source).await?;
        let path = if ep.path.is_empty() {
            "/connection/websocket"
        } else {
            &ep.path
        };
        let mut req = Request::builder()
            .method("GET")
            .uri(path)
            .header("Host", &ep.authority);
        if compression {
            req = req.header(hyper::header::SEC_WEBSOCKET_EXTENSIONS, OFFER);
        }
        let req = req
            .header(hyper::header::UPGRADE, "websocket")
            .header(hyper::header::CONNECTION, "upgrade")
            .header(
                "Sec-WebSocket-Key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("Sec-WebSocket-Version", "13")
            .body(Empty::<Bytes>::new())?;
        let (mut ws, resp) = fastwebsockets::handshake::client(&SpawnExecutor, req, stream)
            .await
            .map_err(|e| anyhow!("websocket handshake: {e}"))?;
        let agreed = resp
            .headers()
            .get(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("permessage-deflate"));
        let (source, write) = if agreed {
            let (rd, wr) = tokio::io::split(ws.into_inner());
            let (_, write) =
                fastwebsockets::after_handshake_split(tokio::io::empty(), wr, Role::Client);
            (Source::Deflate(DeflateReader::new(rd)), write)
        } else {
            ws.set_auto_pong(true);
            ws.set_auto_close(true);
            let (read, write) = ws.split(tokio::io::split);
            (Source::Plain(FragmentCollectorRead::new(read)), write)
        };
        let writer = Writer(Arc::new(tokio::sync::Mutex::new(write)));
        Ok(Conn {
            reader: Reader {
                ws: source,
                writer: writer.clone(),
            },
            writer,
            next_id: 1,
        })
    }

    /// The two halves, to read replies while sending commands (command ids go on from
    /// [`Conn::id`]'s next one).
    pub fn split(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }

    /// A fresh command id.
    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends one text message.
    pub async fn send(&mut self, text: &[u8]) -> anyhow::Result<()> {
        self.writer.send(text).await
    }

    /// Reads the next text message (see [`Reader::recv`]).
    pub async fn recv(&mut self) -> anyhow::Result<Incoming> {
        self.reader.recv().await
    }

    /// Reads until the reply with `id` arrives; returns it (parsed) and every other line that
    /// came before or with it (pushes the caller must still account for).
    pub async fn reply(
        &mut self,
        id: u32,
        within: Duration,
    ) -> anyhow::Result<(serde_json::Value, Vec<Vec<u8>>)> {
        let (mut replies, other) = self.replies(&[id], within).await?;
        Ok((replies.pop().unwrap_or_default(), other))
    }

    /// Reads until the replies with all of `ids` arrived (they may share a frame); returns
    /// them in the order of `ids` and every other line seen meanwhile.
    pub async fn replies(
        &mut self,
        ids: &[u32],
        within: Duration,
    ) -> anyhow::Result<(Vec<serde_json::Value>, Vec<Vec<u8>>)> {
        let prefixes: Vec<String> = ids.iter().map(|id| format!("{{\"id\":{id},")).collect();
        let mut found: Vec<Option<serde_json::Value>> = vec![None; ids.len()];
        let mut other = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while found.iter().any(Option::is_none) {
            let msg = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| anyhow!("no reply to command(s) {ids:?} within {within:?}"))??;
            let text = match msg {
                Incoming::Text(t) => t,
                Incoming::Closed(code, reason) => bail!("closed by the server: {code} {reason}"),
            };
            for line in lines(&text) {
                match prefixes.iter().position(|p| line.starts_with(p.as_bytes())) {
                    Some(k) => {
                        let v: serde_json::Value = serde_json::from_slice(line)?;
                        if let Some(e) = v.get("error") {
                            bail!("command {} failed: {e}", ids[k]);
                        }
                        found[k] = Some(v);
                    }
                    None => other.push(line.to_vec()),
                }
            }
        }
        Ok((found.into_iter().flatten().collect(), other))
    }

    /// Sends `connect` (and, in the same frame, `subscribe` to each of `channels` with `sub`
    /// as extra request fields); returns the last subscribe reply (or the connect reply without
    /// channels) and any pushes that came with them.
    pub async fn connect_subscribe(
        &mut self,
        token: &str,
        channels: &[&str],
        sub: serde_json::Value,
        within: Duration,
    ) -> anyhow::Result<(serde_json::Value, Vec<Vec<u8>>)> {
        let mut ids = vec![self.id()];
        let mut frame = serde_json::json!({"id": ids[0], "connect": {"token": token, "name": "switchyard-bench"}})
            .to_string();
        for channel in channels {
            let sid = self.id();
            let mut req = serde_json::json!({ "channel": channel });
            if let (Some(o), serde_json::Value::Object(e)) = (req.as_object_mut(), sub.clone()) {
                o.extend(e);
            }
            frame.push('\n');
            frame.push_str(&serde_json::json!({"id": sid, "subscribe": req}).to_string());
            ids.push(sid);
        }
        self.send(frame.as_bytes()).await?;
        let (mut r, rest) = self.replies(&ids, within).await?;
        Ok((r.pop().unwrap_or_default(), rest))
    }

    /// Sends a normal close frame (best effort).
    pub async fn close(self) {
        self.writer.close().await;
    }
}

/// The HTTP version of an API connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1: one request at a time on a kept-alive connection (or pipelined: [`api_pipe`]).
    H1,
    /// HTTP/2, h2c with prior knowledge (the connection starts with the HTTP/2 preface; plain
    /// `http://` only): many requests at once on one connection.
    H2,
}

impl Http {
    /// The version as a number for the reports: 1.1 or 2.
    pub fn number(self) -> f64 {
        match self {
            Http::H1 => 1.1,
            Http::H2 => 2.0,
        }
    }

    /// The version of a response.
    pub fn of(v: hyper::Version) -> Option<Http> {
        match v {
            hyper::Version::HTTP_11 => Some(Http::H1),
            hyper::Version::HTTP_2 => Some(Http::H2),
            _ => None,
        }
    }

    /// `HTTP/1.1` or `HTTP/2`.
    pub fn name(self) -> &'static str {
        match self {
            Http::H1 => "HTTP/1.1",
            Http::H2 => "HTTP/2",
        }
    }
}

/// A server API connection's sending side.
enum ApiConn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A kept-alive connection to a node's server API, over HTTP/1.1 or HTTP/2 (h2c).
pub struct Api {
    ep: Endpoint,
    key: String,
    source: Option<IpAddr>,
    http: Http,
    conn: Option<ApiConn>,
}

/// An answer of the server API.
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// The HTTP version it came over.
    pub http: Option<Http>,
    /// The body.
    pub body: Bytes,
}

impl Api {
    /// An HTTP/1.1 client for the API at `url` (`http://host:port`) with `key`; connects
    /// lazily.
    pub fn new(ep: Endpoint, key: String, source: Option<IpAddr>) -> Api {
        Api::with(ep, key, source, Http::H1)
    }

    /// A client for the API at `ep` with `key` over `http`; connects lazily.
    pub fn with(ep: Endpoint, key: String, source: Option<IpAddr>, http: Http) -> Api {
        Api {
            ep,
            key,
            source,
            http,
            conn: None,
        }
    }

    /// `POST /api/<method>`; returns the parsed JSON body (error when the status is not 200).
    pub async fn call(&mut self, method: &str, body: Vec<u8>) -> anyhow::Result<serde_json::Value> {
        let resp = self.post(method, body).await?;
        if resp.status != 200 {
            bail!("API {method}: HTTP {}", resp.status);
        }
        Ok(serde_json::from_slice(&resp.body)?)
    }

    /// `POST /api/<method>` (connecting first when there is no open connection): the status,
    /// HTTP version and body of the answer.
    pub async fn post(&mut self, method: &str, body: Vec<u8>) -> anyhow::Result<ApiResponse> {
        let closed = match &self.conn {
            None => true,
            Some(ApiConn::H1(c)) => c.is_closed(),
            Some(ApiConn::H2(c)) => c.is_closed(),
        };
        if closed {
            let io = TokioIo::new(tcp(self.ep.addr, self.source).await?);
            self.conn = Some(match self.http {
                Http::H1 => {
                    let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
                    tokio::spawn(conn);
                    ApiConn::H1(send)
                }
                Http::H2 => {
                    let (send, conn) =
                        hyper::client::conn::http2::handshake(SpawnExecutor, io).await?;
                    tokio::spawn(conn);
                    ApiConn::H2(send)
                }
            });
        }
        let req = api_request(self.http, &self.ep.authority, &self.key, method, body)?;
        let sent = match self.conn.as_mut().expect("connected") {
            ApiConn::H1(send) => match send.ready().await {
                Ok(()) => send.send_request(req).await,
                Err(e) => Err(e),
            },
            ApiConn::H2(send) => send.send_request(req).await,
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(e.into());
            }
        };
        let (status, http) = (resp.status().as_u16(), Http::of(resp.version()));
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(ApiResponse { status, http, body })
    }
}

/// The request `POST /api/<method>` with `body` and the key: origin-form with a `Host`
/// header for HTTP/1.1, an absolute URI (which gives the `:authority`) for HTTP/2.
fn api_request(
    http: Http,
    authority: &str,
    key: &str,
    method: &str,
    body: Vec<u8>,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let req = match http {
        Http::H1 => Request::builder()
            .uri(format!("/api/{method}"))
            .header("Host", authority),
        Http::H2 => Request::builder().uri(format!("http://{authority}/api/{method}")),
    };
    Ok(req
        .method("POST")
        .header("Content-Type", "application/json")
        .header("X-API-Key", key)
        .body(Full::new(Bytes::from(body)))?)
}

/// A server API connection over HTTP/2 (h2c with prior knowledge) whose requests go out
/// concurrently: [`ApiH2::request`] queues one on the connection at once and returns the
/// future of its answer, so one connection carries many publishes in flight (the server
/// takes up to its `SETTINGS_MAX_CONCURRENT_STREAMS` at a time; more wait in the client).
pub struct ApiH2 {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: String,
    key: String,
}

/// What drives an HTTP/2 connection: to be polled (spawned) until it ends, with the
/// connection's error if any; dropping it closes the connection.
pub type H2Driver = std::pin::Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// Opens an HTTP/2 server API connection to `ep` with `key` (from `source` when given), and
/// what drives it.
pub async fn api_h2(
    ep: &Endpoint,
    key: &str,
    source: Option<IpAddr>,
) -> anyhow::Result<(ApiH2, H2Driver)> {
    let io = TokioIo::new(tcp(ep.addr, source).await?);
    let (send, conn) = hyper::client::conn::http2::handshake(SpawnExecutor, io)
        .await
        .map_err(|e| anyhow!("HTTP/2 handshake: {e}"))?;
    let driver: H2Driver = Box::pin(conn);
    Ok((
        ApiH2 {
            send,
            authority: ep.authority.clone(),
            key: key.to_string(),
        },
        driver,
    ))
}

impl ApiH2 {
    /// Queues `POST /api/<method>` with `body` on the connection now; the returned future
    /// resolves to its answer. Fails at once when the connection is closed.
    pub fn request(
        &mut self,
        method: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<impl Future<Output = anyhow::Result<ApiResponse>> + Send + use<>> {
        if self.send.is_closed() {
            bail!("HTTP/2 connection closed");
        }
        let req = api_request(Http::H2, &self.authority, &self.key, method, body)?;
        let resp = self.send.send_request(req);
        Ok(async move {
            let resp = resp.await?;
            let (status, http) = (resp.status().as_u16(), Http::of(resp.version()));
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(ApiResponse { status, http, body })
        })
    }
}

/// The writing half of a pipelined server API connection: requests go out back to back,
/// without waiting for the responses, which [`ApiReplies`] reads in order (HTTP/1.1
/// pipelining; the server answers a connection's requests one after the other).
pub struct ApiPipe {
    w: OwnedWriteHalf,
    authority: String,
    key: String,
}

/// The reading half of a pipelined server API connection.
pub struct ApiReplies {
    r: BufReader<OwnedReadHalf>,
}

/// Opens a pipelined server API connection to `ep` with `key` (from `source` when given).
pub async fn api_pipe(
    ep: &Endpoint,
    key: &str,
    source: Option<IpAddr>,
) -> anyhow::Result<(ApiPipe, ApiReplies)> {
    let (r, w) = tcp(ep.addr, source).await?.into_split();
    let pipe = ApiPipe {
        w,
        authority: ep.authority.clone(),
        key: key.to_string(),
    };
    Ok((
        pipe,
        ApiReplies {
            r: BufReader::new(r),
        },
    ))
}

impl ApiPipe {
    /// Appends the request `POST /api/<method>` with `body` to `buf`.
    pub fn request(&self, buf: &mut Vec<u8>, method: &str, body: &[u8]) {
        use std::io::Write as _;
        let _ = write!(
            buf,
            "POST /api/{method} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nX-API-Key: {}\r\nContent-Length: {}\r\n\r\n",
            self.authority,
            self.key,
            body.len()
        );
        buf.extend_from_slice(body);
    }

    /// Writes `buf` (one or more whole requests).
    pub async fn write(&mut self, buf: &[u8]) -> anyhow::Result<()> {
        self.w
            .write_all(buf)
            .await
            .map_err(|e| anyhow!("write: {e}"))
    }
}

impl ApiReplies {
    /// The next response, in request order: its status, version and body (`Content-Length`
    /// bodies only, as the server sends them).
    pub async fn next(&mut self) -> anyhow::Result<ApiResponse> {
        let mut line = String::new();
        if self.r.read_line(&mut line).await? == 0 {
            bail!("read: connection closed");
        }
        let http = line.starts_with("HTTP/1.1 ").then_some(Http::H1);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("read: bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                bail!("read: connection closed in a response head");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().context("read: bad Content-Length")?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("read: a chunked response (not expected from the server API)");
                }
            }
        }
        let mut body = vec![0; len];
        self.r
            .read_exact(&mut body)
            .await
            .map_err(|e| anyhow!("read: {e}"))?;
        Ok(ApiResponse {
            status,
            http,
            body: body.into(),
        })
    }
}

/// `GET` a path over a fresh connection (for `/metrics` on an admin listener).
pub async fn http_get(ep: &Endpoint, path: &str) -> anyhow::Result<Vec<u8>> {
    let io = TokioIo::new(tcp(ep.addr, None).await?);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method("GET")
        .uri(path)
        .header("Host", &ep.authority)
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    Ok(resp.into_body().collect().await?.to_bytes().to_vec())
}
