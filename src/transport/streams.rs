//! The HTTP streaming transports: a long-lived response carries the server's side of one
//! connection. Unidirectional (`/connection/uni_sse`, `/connection/uni_http_stream`: the
//! connect request in the `cf_connect` query parameter or the POST body, then pushes only)
//! and centrifuge-js's bidirectional emulation (`/connection/sse`, `/connection/http_stream`:
//! the connect command in the request, the client's later commands through `/emulation`, see
//! [`super::emulation`]).
//!
//! Each response body is fed by the connection's writer task ([`super::writer`]) through a
//! small channel: a client that stops reading fills it, and the write timeout ends the
//! connection (3009); a client that goes away drops the body, which ends the connection at
//! once. Limits, origin checks, metrics and drain are those of WebSocket connections.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::Conn;
use crate::node::Node;
use crate::outbound::Batch;
use crate::protocol::Encoding;
use crate::protocol::json::{decode_connect_request, uni_push};
use crate::session::Session;

use super::writer::{Sink, count, count_close, write_loop};
use super::{
    Body, ConnCtx, Mode, emulation, json, origin_allowed, proxied_headers, refuse, respond, upgrade,
};

/// How long a bidirectional stream stays open after its disconnect push for the client to
/// close it.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Chunks a streaming response body holds before the writer waits for the client to read.
const BODY_CHUNKS: usize = 2;
/// Client messages (`/emulation` requests) queued for one emulation session.
pub const EMULATION_QUEUE: usize = 64;

/// A response body fed by a connection's writer task.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    /// Marks the request as in progress on its HTTP connection while the body lives.
    in_flight: Option<super::http::InFlight>,
}

impl ChannelBody {
    /// Keeps the request counted as in progress until the body ends.
    pub(super) fn hold(&mut self, in_flight: super::http::InFlight) {
        self.in_flight = Some(in_flight);
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(None) = polled {
            self.in_flight = None;
        }
        polled.map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// Which HTTP streaming transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/connection/uni_sse`: pushes as SSE events, `{}` as the ping.
    UniSse,
    /// `/connection/uni_http_stream`: pushes as newline-delimited JSON, `null` as the ping.
    UniHttpStream,
    /// `/connection/sse`: the bidirectional protocol's messages as SSE events.
    Sse,
    /// `/connection/http_stream`: the bidirectional protocol's messages, JSON
    /// newline-delimited or Protobuf length-delimited.
    HttpStream,
}

impl Kind {
    fn uni(self) -> bool {
        matches!(self, Kind::UniSse | Kind::UniHttpStream)
    }

    fn sse(self) -> bool {
        matches!(self, Kind::UniSse | Kind::Sse)
    }

    fn content_type(self, enc: Encoding) -> &'static str {
        if self.sse() {
            "text/event-stream"
        } else if enc == Encoding::Protobuf {
            "application/octet-stream"
        } else {
            "application/json"
        }
    }

    /// The encoding of a request for this transport: Protobuf only for `http_stream` with
    /// `Content-Type: application/octet-stream` (centrifuge-js's Protobuf build); SSE carries
    /// text, and the unidirectional transports speak JSON.
    fn encoding(self, headers: &hyper::HeaderMap) -> Encoding {
        match self {
            Kind::HttpStream => emulation::encoding_of(headers),
            _ => Encoding::Json,
        }
    }

    /// Appends one message in this transport's framing.
    fn frame(self, enc: Encoding, out: &mut BytesMut, msg: &[u8]) {
        if self.sse() {
            // Encoded JSON holds no raw line breaks: one `data:` line per message.
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(msg);
            out.extend_from_slice(b"\n\n");
        } else {
            // Protobuf messages carry their length: nothing between them.
            out.extend_from_slice(msg);
            out.extend_from_slice(enc.separator());
        }
    }
}

/// A response body as a writer's sink.
struct HttpSink {
    tx: mpsc::Sender<Bytes>,
    kind: Kind,
    enc: Encoding,
}

impl HttpSink {
    /// One message in this transport's form (`None`: nothing to send).
    fn form(&self, msg: &Bytes) -> Option<Bytes> {
        if !self.kind.uni() {
            return Some(msg.clone());
        }
        let push = uni_push(msg)?;
        if self.kind == Kind::UniHttpStream && push.as_ref() == crate::protocol::json::PING {
            return Some(Bytes::from_static(b"null"));
        }
        Some(push)
    }
}

impl Sink for HttpSink {
    async fn write(&mut self, batch: &Batch) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        for m in &batch.messages {
            if let Some(msg) = self.form(&m.json) {
                self.kind.frame(self.enc, &mut out, &msg);
            }
        }
        count(batch, out.len());
        if let Some((code, reason)) = &batch.close {
            count_close(*code);
            if let Some(msg) = self.form(&self.enc.disconnect_push(*code, reason)) {
                self.kind.frame(self.enc, &mut out, &msg);
            }
        }
        if !out.is_empty() {
            self.tx
                .send(out.freeze())
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        if batch.close.is_some() && !self.kind.uni() {
            // centrifuge-js handles a message after the event loop turns, but a stream's end
            // at once: were the response to end with the disconnect push, the SDK could see
            // "transport closed" first and lose the code (3011 would not recover as such).
            // As a WebSocket server waits for the client's close frame, wait (briefly) for
            // the SDK to close the stream itself once it has read the push.
            let _ = tokio::time::timeout(CLOSE_GRACE, self.tx.closed()).await;
        }
        Ok(())
    }

    fn gone(&self) -> impl Future<Output = ()> + Send {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    fn pongs(&self) -> bool {
        !self.kind.uni()
    }
}

/// The client transports besides `/connection/websocket`, each behind its switch (off: 404),
/// with CORS for pages on other allowed origins (`client.allowed_origins`): the preflight
/// answered, `Access-Control-Allow-Origin` on every answer.
pub(super) async fn route(
    req: Request<Incoming>,
    ctx: ConnCtx,
    node: Arc<Node>,
    tracker: TaskTracker,
    path: &str,
) -> Response<Body> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin = req
        .headers()
        .get(hyper::header::ORIGIN)
        .filter(|o| {
            let allowed = node.limits.allowed_origins();
            origin_allowed(&allowed, o.to_str().ok(), host)
        })
        .cloned();
    let preflight = req.method() == Method::OPTIONS;
    let asked_headers = req
        .headers()
        .get(hyper::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut resp = if preflight && origin.is_some() && on(path, &node) {
        let mut r = respond(StatusCode::NO_CONTENT, "");
        let h = r.headers_mut();
        h.insert(
            hyper::header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            hyper::header::ACCESS_CONTROL_ALLOW_HEADERS,
            asked_headers.unwrap_or(HeaderValue::from_static("content-type")),
        );
        h.insert(
            hyper::header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        dispatch(req, ctx, node, tracker, path).await
    };
    if let Some(o) = origin {
        let h = resp.headers_mut();
        h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(hyper::header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// Whether `path` names a transport this node has switched on.
fn on(path: &str, node: &Node) -> bool {
    let c = &node.cfg.client;
    match path {
        "/connection/uni_websocket" => c.uni_websocket,
        "/emulation" => emulation::enabled(node),
        "/connection/uni_sse" => c.uni_sse,
        "/connection/uni_http_stream" => c.uni_http_stream,
        "/connection/sse" => c.sse,
        "/connection/http_stream" => c.http_stream,
        _ => false,
    }
}

async fn dispatch(
    req: Request<Incoming>,
    ctx: ConnCtx,
    node: Arc<Node>,
    tracker: TaskTracker,
    path: &str,
) -> Response<Body> {
    if !on(path, &node) {
        return respond(StatusCode::NOT_FOUND, "");
    }
    let kind = match path {
        "/connection/uni_websocket" => {
            if req.method() != Method::GET {
                return respond(StatusCode::METHOD_NOT_ALLOWED, "");
            }
            let connect = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "cf_connect")
                    .map(|(_, v)| Bytes::from(v.into_owned()))
            });
            return upgrade(req, ctx, node, tracker, Mode::Unidirectional(connect));
        }
        "/emulation" if req.method() == Method::POST => {
            return emulation::serve(req, ctx, &node).await;
        }
        "/connection/uni_sse" => Kind::UniSse,
        "/connection/uni_http_stream" => Kind::UniHttpStream,
        "/connection/sse" => Kind::Sse,
        "/connection/http_stream" => Kind::HttpStream,
        _ => return respond(StatusCode::METHOD_NOT_ALLOWED, ""),
    };
    let method_ok = match *req.method() {
        Method::POST => true,
        Method::GET => kind.sse(),
        _ => false,
    };
    if !method_ok {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    serve(req, ctx, node, tracker, kind).await
}

/// Why a streaming request was refused before its stream began.
fn bad(status: StatusCode, why: &'static str) -> Response<Body> {
    json(status, format!(r#"{{"error":"{why}"}}"#))
}

/// The connect request of a streaming request: the `cf_connect` query parameter of a GET
/// (the SSE transports: EventSource can only GET), else the POST body, bounded by
/// `client.http_max_request_body_size`.
async fn connect_data(
    req: Request<Incoming>,
    node: &Node,
    kind: Kind,
) -> Result<Bytes, Response<Body>> {
    let limit = node.cfg.client.http_max_request_body_size;
    if req.method() == Method::GET {
        if !kind.sse() {
            return Err(bad(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST the connect request",
            ));
        }
        let query = req.uri().query().unwrap_or("");
        let value = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "cf_connect")
            .map(|(_, v)| v.into_owned());
        return match value {
            Some(v) if v.len() > limit => Err(bad(StatusCode::PAYLOAD_TOO_LARGE, "too large")),
            Some(v) => Ok(Bytes::from(v)),
            None => Err(bad(StatusCode::BAD_REQUEST, "no cf_connect parameter")),
        };
    }
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(bad(StatusCode::PAYLOAD_TOO_LARGE, "too large"))
        }
        Err(_) => Err(bad(StatusCode::BAD_REQUEST, "unreadable body")),
    }
}

/// `GET|POST /connection/{uni_sse,uni_http_stream,sse,http_stream}`: checks (the transport
/// enabled, not stopping, origin, the node's connection cap), the connect request read and
/// decoded, then a 200 response whose body the connection's writer feeds.
async fn serve(
    req: Request<Incoming>,
    ctx: ConnCtx,
    node: Arc<Node>,
    tracker: TaskTracker,
    kind: Kind,
) -> Response<Body> {
    let version = req.version();
    if node.is_stopping() {
        metrics::counter!(crate::metrics::CONNECTIONS_REJECTED, "reason" => "shutting_down")
            .increment(1);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", version);
    }
    if !allowed(&req, &node, &ctx) {
        return refuse(StatusCode::FORBIDDEN, "origin", version);
    }
    let kept = proxied_headers(&node, req.headers());
    let enc = kind.encoding(req.headers());
    let data = match connect_data(req, &node, kind).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    // The unidirectional request is a bare ConnectRequest; the emulation one a command
    // (`{"id":1,"connect":{…}}`), decoded by the session like a WebSocket message.
    let uni_req = if kind.uni() {
        match decode_connect_request(&data) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!(peer = %ctx.peer, error = %e, "bad connect request");
                return bad(StatusCode::BAD_REQUEST, "bad connect request");
            }
        }
    } else {
        None
    };
    let slot = match node.limits.admit_websocket() {
        Ok(s) => s,
        Err(r) => {
            r.count();
            return refuse(StatusCode::SERVICE_UNAVAILABLE, r.name(), version);
        }
    };
    metrics::counter!(crate::metrics::CONNECTIONS_ACCEPTED).increment(1);
    let (tx, rx) = mpsc::channel(BODY_CHUNKS);
    let ip_slot = ctx.slot.clone();
    let sink = HttpSink { tx, kind, enc };
    tracker.spawn(async move {
        match uni_req {
            Some(r) => serve_uni(node, kept, sink, r).await,
            None => serve_emulated(node, kept, sink, data, enc).await,
        }
        drop(slot);
        drop(ip_slot);
    });
    let mut r = Response::new(Either::Right(ChannelBody {
        rx,
        in_flight: None,
    }));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type(enc)),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
    );
    // Proxies such as nginx must pass each chunk on at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Whether the request's `Origin` may use the client transports (as for WebSockets).
pub(super) fn allowed(req: &Request<Incoming>, node: &Node, ctx: &ConnCtx) -> bool {
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let origin = header(hyper::header::ORIGIN);
    let host = header(hyper::header::HOST);
    let ok = origin_allowed(
        &node.limits.allowed_origins(),
        origin.as_deref(),
        host.as_deref(),
    );
    if !ok {
        metrics::counter!(crate::metrics::CONNECTIONS_REJECTED, "reason" => "origin").increment(1);
        tracing::info!(peer = %ctx.peer, origin = ?origin, tls = ctx.tls, "origin not allowed");
    }
    ok
}

/// A unidirectional stream: connect, then pushes until the connection ends.
async fn serve_uni(
    node: Arc<Node>,
    headers: Vec<(String, String)>,
    sink: HttpSink,
    req: crate::protocol::types::ConnectRequest,
) {
    let conn = Arc::new(
        Conn::new(node.next_conn_id(), node.cfg.client.outbound_queue_bytes).with_headers(headers),
    );
    let done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(node.clone(), conn.clone(), sink, done.clone()));
    let mut session = Session::new(node.clone(), conn.clone());
    if let Err(d) = Box::pin(session.connect_unidirectional(req)).await {
        conn.out.close(d);
    }
    done.cancelled().await;
    Box::pin(session.close()).await;
    writer.abort();
}

/// A bidirectional emulation stream (in `enc`): the connect command from the request, then the
/// client's commands as `/emulation` delivers them, until the connection ends.
async fn serve_emulated(
    node: Arc<Node>,
    headers: Vec<(String, String)>,
    sink: HttpSink,
    first: Bytes,
    enc: Encoding,
) {
    let id = super::emulation::new_session_id(&node);
    let conn = Arc::new(
        Conn::new(node.next_conn_id(), node.cfg.client.outbound_queue_bytes)
            .with_headers(headers)
            .with_session(id.clone()),
    );
    // The hub then shares this encoding's bytes of each publication with the connection.
    conn.out.set_encoding(enc);
    let (tx, mut rx) = mpsc::channel::<Bytes>(EMULATION_QUEUE);
    node.registry.add_session(&id, enc, tx);
    let done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(node.clone(), conn.clone(), sink, done.clone()));
    let mut session = Session::new(node.clone(), conn.clone());
    let mut next = Some(first);
    loop {
        let msg = match next.take() {
            Some(m) => m,
            None => tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = done.cancelled() => break,
            },
        };
        metrics::counter!(crate::metrics::BYTES_IN).increment(msg.len() as u64);
        if let Err(d) = Box::pin(session.handle_message(&msg)).await {
            tracing::debug!(conn = conn.id, code = d.code, "disconnecting");
            conn.out.close(d);
            break;
        }
        if conn.out.is_closing() {
            break;
        }
    }
    node.registry.remove_session(&id);
    Box::pin(session.close()).await;
    // The writer sends what is queued and the disconnect push, then ends the body.
    let _ = tokio::time::timeout(node.cfg.client.write_timeout, done.cancelled()).await;
    writer.abort();
}
