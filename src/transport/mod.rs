//! Listeners, HTTP routing and WebSocket connections.
//!
//! Invariant: the only module that knows sockets, HTTP framing and WebSocket frames.

pub mod deflate;
pub mod echo;
pub mod emulation;
pub mod frame;

mod handoff;

mod http;
mod peer_stream;
pub mod reader;
pub mod streams;
pub mod uni_ws;
pub mod writer;
pub mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use anyhow::Context;

use crate::api;
use crate::config::Config;
use crate::node::Node;
use handoff::{Moved, api_connection};

/// Response body type of every route: whole, or fed by a connection's writer (the HTTP
/// streaming transports).
pub type Body = http_body_util::Either<Full<Bytes>, streams::ChannelBody>;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Clients and the server API.
    Client,
    /// Operators: readiness and (later) metrics and admin.
    Admin,
    /// Other nodes: Raft RPC and proposal forwarding.
    Cluster,
}

/// Longest time a peer node may take to finish its TLS handshake and send request headers.
const CLUSTER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body on the cluster listener (append-entries batches, snapshot chunks).
const CLUSTER_MAX_BODY: usize = 256 * 1024 * 1024;
/// Largest request head accepted on the admin and cluster listeners.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Accept backlog of the client listener: a reconnect storm (thousands of clients within a
/// second, e.g. after a node restart) must queue, not overflow into SYN retries a second
/// later. The kernel caps it at `net.core.somaxconn` (the shipped sysctl file sets 65535).
const CLIENT_BACKLOG: u32 = 16_384;

/// Binds a listener with `SO_REUSEADDR` and the given accept backlog.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(backlog)
}

/// The node's three bound listeners, before anything is served on them.
pub struct Listeners {
    client: TcpListener,
    admin: TcpListener,
    cluster: TcpListener,
}

impl Listeners {
    /// Binds `client.listen`, `admin.listen` and `cluster.listen`.
    pub async fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
        let client = bind(cfg.client_addr(), CLIENT_BACKLOG)
            .with_context(|| format!("binding client.listen {}", cfg.client.listen))?;
        let admin = TcpListener::bind(cfg.admin_addr())
            .await
            .with_context(|| format!("binding admin.listen {}", cfg.admin.listen))?;
        let cluster = TcpListener::bind(cfg.cluster_addr())
            .await
            .with_context(|| format!("binding cluster.listen {}", cfg.cluster.listen))?;
        Ok(Listeners {
            client,
            admin,
            cluster,
        })
    }

    /// Where the client, admin and cluster listeners are bound (real ports for port 0).
    pub fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        Ok((
            self.client.local_addr()?,
            self.admin.local_addr()?,
            self.cluster.local_addr()?,
        ))
    }

    /// Serves: the client and admin listeners until the node starts stopping (their
    /// connections tracked by `tracker`), the cluster listener until `cluster_stop`, on the
    /// `raft` runtime (Raft RPC and forwarded proposals then never wait behind client tasks).
    /// Plain server API connections of the client listener move to the `api` runtime (see
    /// [`api_connection`]).
    pub fn serve(
        self,
        node: Arc<Node>,
        tracker: TaskTracker,
        cluster_stop: CancellationToken,
        raft: &tokio::runtime::Handle,
        api: &tokio::runtime::Handle,
    ) {
        tracker.spawn(accept_loop(
            self.client,
            Listener::Client,
            node.clone(),
            tracker.clone(),
            Some(api.clone()),
        ));
        tracker.spawn(accept_loop(
            self.admin,
            Listener::Admin,
            node.clone(),
            tracker.clone(),
            None,
        ));
        // Re-registered with the Raft runtime's reactor, so its sockets are driven there too.
        let cluster = self.cluster.into_std();
        raft.spawn(async move {
            let listener = match cluster.and_then(TcpListener::from_std) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cluster listener lost");
                    return;
                }
            };
            accept_loop_until(
                listener,
                Listener::Cluster,
                node,
                TaskTracker::new(),
                cluster_stop,
                None,
            )
            .await
        });
    }
}

/// Accepts connections until the node shuts down; each is served in a tracked task.
async fn accept_loop(
    listener: TcpListener,
    which: Listener,
    node: Arc<Node>,
    tracker: TaskTracker,
    api: Option<tokio::runtime::Handle>,
) {
    let stop = node.on_stopping();
    accept_loop_until(listener, which, node, tracker, stop, api).await
}

/// Accepts connections until `stop`; each is served in a tracked task and closed gracefully
/// on `stop`. With `api`, plain server API connections move there ([`api_connection`]).
async fn accept_loop_until(
    listener: TcpListener,
    which: Listener,
    node: Arc<Node>,
    tracker: TaskTracker,
    stop: CancellationToken,
    api: Option<tokio::runtime::Handle>,
) {
    let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
    loop {
        let (stream, peer) = tokio::select! {
            _ = housekeeping.tick(), if which == Listener::Client => {
                node.limits.housekeeping();
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        if which == Listener::Cluster {
            crate::peer::keep_alive(&stream);
        }
        let node = node.clone();
        let t = tracker.clone();
        match (&api, node.client_tls.is_none()) {
            (Some(api), true) => {
                let api = api.clone();
                let stop = stop.clone();
                tracker.spawn(async move {
                    // Counted at accept, before waiting for its first bytes.
                    let admitted = admit(&node, which, peer);
                    let timeout = node.cfg.client.handshake_timeout;
                    match api_connection(stream, timeout, &stop).await {
                        Moved::Api(std) => {
                            let tt = t.clone();
                            api.spawn(t.track_future(async move {
                                match tokio::net::TcpStream::from_std(std) {
                                    Ok(s) => {
                                        serve_admitted(s, which, node, tt, stop, admitted).await
                                    }
                                    Err(e) => tracing::warn!(error = %e, "API connection lost"),
                                }
                            }));
                        }
                        Moved::Stay(s) => serve_admitted(s, which, node, t, stop, admitted).await,
                        Moved::Closed => {}
                    }
                });
            }
            _ => {
                tracker.spawn(serve_tcp(stream, peer, which, node, t, stop.clone()));
            }
        }
    }
}

/// A connection past the client listener's limits: its peer, its IP slot (held while any part
/// of the connection lives) and the limit that refuses it, if one does.
struct Admitted {
    peer: SocketAddr,
    slot: Option<Arc<crate::limits::IpSlot>>,
    reject: Option<crate::limits::Reject>,
}

/// The client listener's limits for a connection from `peer`, at accept (other listeners
/// have none).
fn admit(node: &Node, which: Listener, peer: SocketAddr) -> Admitted {
    let (slot, reject) = if which == Listener::Client {
        let (slot, reject) = node.limits.admit_tcp(peer.ip());
        (Some(Arc::new(slot)), reject)
    } else {
        (None, None)
    };
    if let Some(r) = reject {
        r.count();
        tracing::debug!(peer = %peer, limit = r.name(), "connection refused by a limit");
    }
    Admitted { peer, slot, reject }
}

/// One accepted TCP connection: limits (client listener), the TLS handshake when configured,
/// then HTTP.
async fn serve_tcp(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    which: Listener,
    node: Arc<Node>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let admitted = admit(&node, which, peer);
    serve_admitted(stream, which, node, tracker, shutdown, admitted).await
}

/// [`serve_tcp`] once admitted: the TLS handshake when configured, then HTTP.
async fn serve_admitted(
    stream: tokio::net::TcpStream,
    which: Listener,
    node: Arc<Node>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    admitted: Admitted,
) {
    let Admitted { peer, slot, reject } = admitted;
    let (acceptor, timeout) = match which {
        Listener::Client => (
            node.client_tls.as_ref().map(|t| t.acceptor()),
            node.cfg.client.handshake_timeout,
        ),
        Listener::Cluster => (
            node.cluster_tls.as_ref().map(|t| t.acceptor()),
            CLUSTER_HANDSHAKE_TIMEOUT,
        ),
        Listener::Admin => (None, node.cfg.client.handshake_timeout),
    };
    let ctx = ConnCtx {
        peer,
        which,
        reject,
        tls: acceptor.is_some(),
        slot: slot.clone(),
    };
    // The client listener serves HTTP/2 too: chosen by ALPN, else by the first bytes.
    let plain = match which {
        Listener::Client => http::Proto::Sniff,
        _ => http::Proto::Http1,
    };
    match acceptor {
        None => serve_http(stream, plain, ctx, timeout, node, tracker, shutdown).await,
        Some(acceptor) => {
            let hs = tokio::select! {
                r = tokio::time::timeout(timeout, acceptor.accept(stream)) => r,
                _ = shutdown.cancelled() => return,
            };
            match hs {
                Ok(Ok(tls)) => {
                    let proto = match which {
                        Listener::Client => http::Proto::from_alpn(tls.get_ref().1.alpn_protocol()),
                        _ => http::Proto::Http1,
                    };
                    serve_http(tls, proto, ctx, timeout, node, tracker, shutdown).await
                }
                Ok(Err(e)) => {
                    metrics::counter!(crate::metrics::CONNECTIONS_REJECTED, "reason" => "tls_handshake")
                        .increment(1);
                    // A peer node without a certificate from the cluster CA ends here.
                    if which == Listener::Cluster {
                        tracing::warn!(peer = %peer, error = %e, "cluster TLS handshake refused");
                    } else {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    }
                }
                Err(_) => {
                    metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "handshake_timeout")
                        .increment(1);
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                }
            }
        }
    }
    drop(slot);
}

/// What the router knows about the connection a request came on.
#[derive(Clone)]
struct ConnCtx {
    /// Counts the connection against its IP's limit while any holder lives (an upgraded
    /// WebSocket outlives the HTTP connection task).
    slot: Option<Arc<crate::limits::IpSlot>>,
    peer: SocketAddr,
    which: Listener,
    /// A limit refused this connection: every request on it gets the refusal.
    reject: Option<crate::limits::Reject>,
    tls: bool,
}

/// Serves HTTP on one connection: HTTP/1.1 (with upgrades, for WebSockets) or HTTP/2 (the
/// client listener only; see `http`).
async fn serve_http<I>(
    mut io: I,
    proto: http::Proto,
    ctx: ConnCtx,
    head_timeout: Duration,
    node: Arc<Node>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some((proto, prefix)) = http::settle(&mut io, proto, head_timeout, &shutdown).await else {
        tracing::debug!(peer = %ctx.peer, "closed before its first request");
        return;
    };
    let max_head = match ctx.which {
        Listener::Client => node.cfg.client.max_header_size,
        _ => MAX_HEAD_BYTES,
    };
    let refused = ctx.reject.is_some();
    let activity = Arc::new(http::Activity::default());
    let svc = {
        let activity = activity.clone();
        let tracker = tracker.clone();
        service_fn(move |req| {
            let in_flight = activity.start();
            let node = node.clone();
            let tracker = tracker.clone();
            let ctx = ctx.clone();
            async move {
                let mut resp = route(req, ctx, node, tracker).await;
                match resp.body_mut() {
                    // A streaming response is in progress until its body ends: an HTTP/2
                    // connection carrying one is not idle.
                    http_body_util::Either::Right(stream) => stream.hold(in_flight),
                    http_body_util::Either::Left(_) => drop(in_flight),
                }
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let io = TokioIo::new(http::Prefixed::new(prefix, io));
    if proto == http::Proto::Http2 {
        let conn = http::h2_builder(max_head, tracker).serve_connection(io, svc);
        let closing = activity.until_closing(head_timeout, refused);
        http::drive(
            conn,
            |c| c.graceful_shutdown(),
            closing,
            head_timeout,
            shutdown,
        )
        .await;
    } else {
        // hyper closes idle and refused (`Connection: close`) HTTP/1.1 connections itself.
        let conn = http::h1_builder(max_head, head_timeout)
            .serve_connection(io, svc)
            .with_upgrades();
        let closing = std::future::pending::<()>();
        http::drive(
            conn,
            |c| c.graceful_shutdown(),
            closing,
            head_timeout,
            shutdown,
        )
        .await;
    }
}

/// A response with a status and a body.
pub fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(http_body_util::Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    r
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = respond(status, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A refusal: the status, a short reason, `Retry-After` for 429/503, and on HTTP/1
/// `Connection: close` (HTTP/2 has no such header: the connection is closed with GOAWAY).
fn refuse(status: StatusCode, why: &'static str, version: hyper::Version) -> Response<Body> {
    let mut r = json(status, format!(r#"{{"error":"{why}"}}"#));
    if version < hyper::Version::HTTP_2 {
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// Whether the admin request carries `admin.api_key` (always, when none is configured).
fn admin_authorized(req: &Request<Incoming>, node: &Node) -> bool {
    let want = &node.cfg.admin.api_key;
    want.is_empty() || api::key_matches(request_key(req).as_deref(), want)
}

async fn route(
    req: Request<Incoming>,
    ctx: ConnCtx,
    node: Arc<Node>,
    tracker: TaskTracker,
) -> Response<Body> {
    if let Some(r) = ctx.reject {
        let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return refuse(status, r.name(), req.version());
    }
    let which = ctx.which;
    let path = req.uri().path().to_string();
    match (which, req.method(), path.as_str()) {
        (_, &Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#),
        (Listener::Client, &Method::GET, "/connection/websocket") => {
            upgrade(req, ctx, node, tracker, Mode::Bidirectional)
        }
        (Listener::Client, _, p) if p.starts_with("/connection/") || p == "/emulation" => {
            streams::route(req, ctx, node, tracker, p).await
        }
        (Listener::Client, &Method::GET, "/autobahn/echo") if node.cfg.testing.echo_endpoint => {
            echo::upgrade(req, node, tracker)
        }
        (Listener::Client, &Method::POST, p) if p.starts_with("/api/") => {
            let method = p["/api/".len()..].to_string();
            api_call(req, &method, &node).await
        }
        (Listener::Admin, &Method::GET, "/readyz") => {
            if node.is_stopping() || !node.is_ready() {
                json(StatusCode::SERVICE_UNAVAILABLE, r#"{"ready":false}"#)
            } else {
                json(StatusCode::OK, r#"{"ready":true}"#)
            }
        }
        (Listener::Admin, &Method::GET, "/" | "/status") => {
            let mut r = respond(StatusCode::OK, crate::admin::STATUS_HTML);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        (Listener::Admin, &Method::GET, "/status/channels") => {
            json(StatusCode::OK, crate::admin::top_channels(&node))
        }
        (Listener::Admin, &Method::POST, "/status/presence") => {
            let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return respond(StatusCode::PAYLOAD_TOO_LARGE, ""),
            };
            let (status, body) = crate::admin::presence(&node, &body);
            json(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                body,
            )
        }
        (Listener::Admin, &Method::GET, "/metrics") => match crate::metrics::install() {
            Some(h) => {
                let mut r = respond(StatusCode::OK, crate::admin::render_metrics(&node, &h));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            None => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics recorder not installed",
            ),
        },
        (Listener::Admin, &Method::GET | &Method::POST, "/cluster/status") => {
            json(StatusCode::OK, crate::admin::cluster_status(&node).await)
        }
        (Listener::Admin, &Method::POST, p) if p.starts_with("/cluster/") => {
            if !admin_authorized(&req, &node) {
                return json(StatusCode::UNAUTHORIZED, crate::admin::UNAUTHORIZED);
            }
            let op = p["/cluster/".len()..].to_string();
            let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return respond(StatusCode::PAYLOAD_TOO_LARGE, ""),
            };
            let (status, body) = node.cluster.admin(&op, &body, true).await;
            json(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            )
        }
        (Listener::Cluster, &Method::POST, emulation::CLUSTER_PATH) => {
            emulation::serve_forwarded(req, &node, crate::protocol::Encoding::Json).await
        }
        (Listener::Cluster, &Method::POST, emulation::CLUSTER_PATH_PROTOBUF) => {
            emulation::serve_forwarded(req, &node, crate::protocol::Encoding::Protobuf).await
        }
        (Listener::Cluster, &Method::POST, crate::cluster::network::APPEND_STREAM) => {
            peer_stream::accept(req, node)
        }
        (Listener::Cluster, &Method::POST, p) => {
            let path = p.to_string();
            cluster_call(req, &path, &node).await
        }
        _ => respond(StatusCode::NOT_FOUND, ""),
    }
}

/// What a WebSocket upgrade serves.
enum Mode {
    /// The client protocol (`/connection/websocket`).
    Bidirectional,
    /// `/connection/uni_websocket`, with the connect request of `cf_connect` when given.
    Unidirectional(Option<Bytes>),
}

/// A request from another node: its own figures (`survey`), or Raft RPC, a forwarded write
/// or a membership change (`cluster`).
async fn cluster_call(req: Request<Incoming>, path: &str, node: &Node) -> Response<Body> {
    let body = match http_body_util::Limited::new(req.into_body(), CLUSTER_MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return respond(StatusCode::PAYLOAD_TOO_LARGE, ""),
    };
    let replicator = node.replicator.clone();
    let (status, body) = match crate::survey::answer(node, path, &body) {
        Some(answer) => answer,
        None => {
            node.cluster
                .handle_rpc(
                    path,
                    &body,
                    |ops| async move { replicator.submit(ops).await },
                )
                .await
        }
    };
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

/// `POST /api/<method>`: key check before the body is read, then a size-limited body.
/// The key a request carries: `X-API-Key: KEY` or `Authorization: apikey KEY`.
fn request_key(req: &Request<Incoming>) -> Option<String> {
    let headers = req.headers();
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("apikey "))
                .map(|k| k.trim().to_string())
        })
}

async fn api_call(req: Request<Incoming>, method: &str, node: &Node) -> Response<Body> {
    let key = request_key(&req);
    if !api::authorized(node, key.as_deref()) {
        return json(StatusCode::UNAUTHORIZED, api::unauthorized(node));
    }
    let limited = http_body_util::Limited::new(req.into_body(), node.cfg.api.max_body_size);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return respond(StatusCode::PAYLOAD_TOO_LARGE, "");
        }
        Err(_) => return respond(StatusCode::BAD_REQUEST, ""),
    };
    let (status, body) = api::call(node, method, &body).await;
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

/// Whether a WebSocket upgrade with this `Origin` may proceed (see `client.allowed_origins`).
fn origin_allowed(allowed: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else {
        // Not a browser: origins protect browsers' users, other clients can send anything.
        return true;
    };
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    let origin = origin.trim_end_matches('/');
    if allowed.is_empty() {
        // Same origin only: the Origin's host[:port] is the Host the request was sent to.
        let Some(rest) = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
        else {
            return false;
        };
        return host.is_some_and(|h| h.eq_ignore_ascii_case(rest));
    }
    allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The request headers some proxy forwards (`http_headers`), kept for the connection's
/// proxy calls.
fn proxied_headers(node: &Node, headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    for name in node.proxy.header_names() {
        for v in headers.get_all(name.as_str()) {
            if let Ok(v) = v.to_str() {
                kept.push((name.clone(), v.to_string()));
            }
        }
    }
    kept
}

fn upgrade(
    mut req: Request<Incoming>,
    ctx: ConnCtx,
    node: Arc<Node>,
    tracker: TaskTracker,
    mode: Mode,
) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return respond(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    }
    if node.is_stopping() {
        metrics::counter!(crate::metrics::CONNECTIONS_REJECTED, "reason" => "shutting_down")
            .increment(1);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            req.version(),
        );
    }
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let origin = header(hyper::header::ORIGIN);
    let host = header(hyper::header::HOST);
    if !origin_allowed(
        &node.limits.allowed_origins(),
        origin.as_deref(),
        host.as_deref(),
    ) {
        metrics::counter!(crate::metrics::CONNECTIONS_REJECTED, "reason" => "origin").increment(1);
        tracing::info!(peer = %ctx.peer, origin = ?origin, tls = ctx.tls, "WebSocket origin not allowed");
        return refuse(StatusCode::FORBIDDEN, "origin", req.version());
    }
    let slot = match node.limits.admit_websocket() {
        Ok(s) => s,
        Err(r) => {
            r.count();
            return refuse(StatusCode::SERVICE_UNAVAILABLE, r.name(), req.version());
        }
    };
    let asked: Vec<String> = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .collect();
    let (proto, echo) = if asked.iter().any(|p| p == "centrifuge-json") {
        (ws::Subprotocol::Json, Some("centrifuge-json"))
    } else if asked.iter().any(|p| p == "centrifuge-protobuf") {
        (ws::Subprotocol::Protobuf, Some("centrifuge-protobuf"))
    } else {
        (ws::Subprotocol::Json, None)
    };
    let uni = matches!(mode, Mode::Unidirectional(_));
    let deflate = (node.cfg.client.websocket_compression && !uni)
        .then(|| deflate::answer(req.headers()))
        .flatten();
    let (resp, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade refused");
            metrics::counter!(crate::metrics::CONNECTIONS_REJECTED, "reason" => "bad_upgrade")
                .increment(1);
            return respond(StatusCode::BAD_REQUEST, "bad WebSocket upgrade");
        }
    };
    metrics::counter!(crate::metrics::CONNECTIONS_ACCEPTED).increment(1);
    let kept = proxied_headers(&node, req.headers());
    let ip_slot = ctx.slot.clone();
    let (agreed, extensions) = deflate.unzip();
    tracker.spawn(async move {
        match (fut.await, mode) {
            (Ok(ws), Mode::Bidirectional) => ws::serve(node, ws, proto, kept, agreed).await,
            (Ok(ws), Mode::Unidirectional(c)) => uni_ws::serve(node, ws, kept, c).await,
            (Err(e), _) => tracing::debug!(error = %e, "upgrade failed"),
        }
        drop(slot);
        drop(ip_slot);
    });
    let (mut parts, _) = resp.into_parts();
    if let Some(p) = echo.filter(|_| !uni) {
        parts
            .headers
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    if let Some(v) = extensions {
        parts.headers.insert(SEC_WEBSOCKET_EXTENSIONS, v);
    }
    Response::from_parts(parts, http_body_util::Either::Left(Full::new(Bytes::new())))
}
