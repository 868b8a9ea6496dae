//! Listeners, HTTP routing and WebSocket connections.
//!
//! Invariant: the only module that knows sockets, HTTP framing and WebSocket frames.

pub mod peer;
pub mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::node::Node;

/// Response body type of every route.
pub type Body = Full<Bytes>;

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

/// Longest time a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body on the cluster listener (append-entries batches, snapshot chunks).
const CLUSTER_MAX_BODY: usize = 256 * 1024 * 1024;
/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Accepts connections until the node shuts down; each is served in a tracked task.
pub async fn accept_loop(
    listener: TcpListener,
    which: Listener,
    node: Arc<Node>,
    tracker: TaskTracker,
) {
    let stop = node.shutdown.clone();
    accept_loop_until(listener, which, node, tracker, stop).await
}

/// Accepts connections until `stop`; each is served in a tracked task and closed gracefully
/// on `stop`.
pub async fn accept_loop_until(
    listener: TcpListener,
    which: Listener,
    node: Arc<Node>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
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
        let node = node.clone();
        let t = tracker.clone();
        tracker.spawn(serve_http(stream, peer, which, node, t, stop.clone()));
    }
}

async fn serve_http(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    which: Listener,
    node: Arc<Node>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let svc = service_fn(move |req| {
        let node = node.clone();
        let tracker = tracker.clone();
        async move { Ok::<_, Infallible>(route(req, which, node, tracker, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// A response with a status and a body.
pub fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
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

async fn route(
    req: Request<Incoming>,
    which: Listener,
    node: Arc<Node>,
    tracker: TaskTracker,
    _peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (which, req.method(), path.as_str()) {
        (_, &Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#),
        (Listener::Client, &Method::GET, "/connection/websocket") => upgrade(req, node, tracker),
        (Listener::Client, &Method::POST, p) if p.starts_with("/api/") => {
            let method = p["/api/".len()..].to_string();
            api_call(req, &method, &node).await
        }
        (Listener::Admin, &Method::GET, "/readyz") => {
            if node.shutdown.is_cancelled() || !node.cluster.is_ready() {
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
                let mut r = respond(StatusCode::OK, crate::metrics::render(&node, &h));
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
        (Listener::Admin, &Method::GET | &Method::POST, "/cluster/status") => json(
            StatusCode::OK,
            serde_json::to_vec(&node.cluster.status()).unwrap_or_default(),
        ),
        (Listener::Admin, &Method::POST, p) if p.starts_with("/cluster/") => {
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
        (Listener::Cluster, &Method::POST, p) => {
            let path = p.to_string();
            let body = match http_body_util::Limited::new(req.into_body(), CLUSTER_MAX_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return respond(StatusCode::PAYLOAD_TOO_LARGE, ""),
            };
            let log = node.log.clone();
            let (status, body) = node
                .cluster
                .handle_rpc(
                    &path,
                    &body,
                    |ops| async move { log.propose_indexed(ops).await },
                )
                .await;
            json(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            )
        }
        _ => respond(StatusCode::NOT_FOUND, ""),
    }
}

/// `POST /api/<method>`: key check before the body is read, then a size-limited body.
async fn api_call(req: Request<Incoming>, method: &str, node: &Node) -> Response<Body> {
    let headers = req.headers();
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("apikey "))
                .map(|k| k.trim().to_string())
        });
    if !api::authorized(node, key.as_deref()) {
        return respond(StatusCode::UNAUTHORIZED, "");
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

fn upgrade(mut req: Request<Incoming>, node: Arc<Node>, tracker: TaskTracker) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return respond(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    }
    if node.shutdown.is_cancelled() {
        metrics::counter!(crate::metrics::CONNECTIONS_REJECTED, "reason" => "shutting_down")
            .increment(1);
        return respond(StatusCode::SERVICE_UNAVAILABLE, "");
    }
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
    tracker.spawn(async move {
        match fut.await {
            Ok(ws) => ws::serve(node, ws, proto).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let (mut parts, _) = resp.into_parts();
    if let Some(p) = echo {
        parts
            .headers
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}
