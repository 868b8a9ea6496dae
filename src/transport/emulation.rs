//! `POST /emulation`: the client-to-server half of centrifuge-js's bidirectional emulation
//! (HTTP streaming and SSE). A request names its session and carries commands encoded as one
//! WebSocket message would; they go to that session's connection in order. JSON
//! (`{"session":…,"node":…,"data":"<commands>"}`), or with `Content-Type:
//! application/octet-stream` a Protobuf `EmulationRequest` (node 1, session 2, data 3: the
//! length-delimited commands), as centrifuge-js's Protobuf build sends over `http_stream`. The
//! request's encoding must be its session's (400 otherwise).
//!
//! Any node serves it: the session id starts with the id of the node holding the connection
//! (`<node id>-<uuid>`), and a request that lands elsewhere is forwarded once over the cluster
//! listener (`POST /cluster/emulation`, or `/cluster/emulation/protobuf` for the Protobuf form:
//! the body goes on as it came) to that node, whose answer is passed back. No sticky load
//! balancing is needed.
//!
//! Answers: 204 (queued for the session), 400 (not an emulation request in its encoding, or
//! not in its session's encoding), 403 (origin), 404
//! (no such session: unknown, ended, or its node is no member), 413 (body over
//! `client.http_max_request_body_size`), 503 (the session's queue stayed full, or its node did
//! not answer).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::node::Node;
use crate::protocol::Encoding;
use crate::store::types::NodeId;

use super::{Body, ConnCtx, json, refuse, respond};

/// The cluster listener's path for (JSON) emulation requests forwarded by another node.
pub const CLUSTER_PATH: &str = "/cluster/emulation";
/// The cluster listener's path for Protobuf emulation requests forwarded by another node.
pub const CLUSTER_PATH_PROTOBUF: &str = "/cluster/emulation/protobuf";

/// The encoding of a client's emulation request, from its `Content-Type` (centrifuge-js's
/// Protobuf build sends `application/octet-stream`).
pub fn encoding_of(headers: &hyper::HeaderMap) -> Encoding {
    let ct = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/octet-stream") {
        Encoding::Protobuf
    } else {
        Encoding::Json
    }
}

fn cluster_path(enc: Encoding) -> &'static str {
    match enc {
        Encoding::Json => CLUSTER_PATH,
        Encoding::Protobuf => CLUSTER_PATH_PROTOBUF,
    }
}

/// A new emulation session id on this node: `<node id>-<uuid>`.
pub fn new_session_id(node: &Node) -> String {
    format!("{}-{}", node.cfg.node.id, uuid::Uuid::new_v4())
}

/// The node an emulation session id belongs to.
fn node_of(session: &str) -> Option<NodeId> {
    session.split_once('-')?.0.parse().ok()
}

/// Whether some bidirectional emulation transport is enabled.
pub fn enabled(node: &Node) -> bool {
    node.cfg.client.http_stream || node.cfg.client.sse
}

/// `POST /emulation` on the client listener.
pub(super) async fn serve(req: Request<Incoming>, ctx: ConnCtx, node: &Node) -> Response<Body> {
    if !super::streams::allowed(&req, node, &ctx) {
        return refuse(StatusCode::FORBIDDEN, "origin", req.version());
    }
    let enc = encoding_of(req.headers());
    let body = match read_body(req, node).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (status, body) = deliver(node, enc, &body, true).await;
    answer(status, body)
}

/// `POST /cluster/emulation[/protobuf]` on the cluster listener: a request another node
/// forwarded, in `enc`; it is delivered here or refused, never forwarded again.
pub(super) async fn serve_forwarded(
    req: Request<Incoming>,
    node: &Node,
    enc: Encoding,
) -> Response<Body> {
    let body = match read_body(req, node).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (status, body) = deliver(node, enc, &body, false).await;
    answer(status, body)
}

fn answer(status: u16, body: Bytes) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::NO_CONTENT {
        return respond(status, "");
    }
    json(status, body)
}

async fn read_body(req: Request<Incoming>, node: &Node) -> Result<Bytes, Response<Body>> {
    let limit = node.cfg.client.http_max_request_body_size;
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"too large"}"#,
        )),
        Err(_) => Err(json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"unreadable body"}"#,
        )),
    }
}

fn error(status: u16, why: &str) -> (u16, Bytes) {
    (status, Bytes::from(format!(r#"{{"error":"{why}"}}"#)))
}

/// Hands the request's commands to its session: here, or (`forward`) on the node that holds
/// it.
async fn deliver(node: &Node, enc: Encoding, body: &[u8], forward: bool) -> (u16, Bytes) {
    let req = match enc.decode_emulation_request(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "bad emulation request");
            return error(400, "bad emulation request");
        }
    };
    let Some(owner) = node_of(&req.session) else {
        return error(404, "unknown session");
    };
    let wait = node.cfg.cluster.query_timeout;
    if owner != node.cfg.node.id {
        if !forward {
            return error(404, "unknown session");
        }
        metrics::counter!(crate::metrics::EMULATION_FORWARDED).increment(1);
        return match node
            .cluster
            .ask_member(owner, cluster_path(enc), body.to_vec(), wait * 2)
            .await
        {
            Ok(Some(answer)) => answer,
            Ok(None) => error(404, "unknown session"),
            Err(e) => {
                tracing::info!(node = owner, error = %e, "emulation request not forwarded");
                error(503, "session's node unreachable")
            }
        };
    }
    let Some((session_enc, tx)) = node.registry.session(&req.session) else {
        return error(404, "unknown session");
    };
    if session_enc != enc {
        return error(400, "not the session's encoding");
    }
    let data = req.data;
    match tokio::time::timeout(wait.max(Duration::from_millis(100)), tx.send(data)).await {
        Ok(Ok(())) => (204, Bytes::new()),
        Ok(Err(_)) => error(404, "unknown session"),
        Err(_) => error(503, "session busy"),
    }
}
