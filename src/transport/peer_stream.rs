//! The cluster listener's side of a leader's append stream: the HTTP/1.1 upgrade, then
//! `cluster::append_stream` serves the connection.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{Body, respond};
use crate::cluster::append_stream::PROTOCOL;
use crate::node::Node;

/// Answers `POST /raft/append-stream` with `Upgrade: switchyard-append-stream`: 101, then the
/// connection is served until it closes or Raft stops (503 once it has).
pub(super) fn accept(mut req: Request<Incoming>, node: Arc<Node>) -> Response<Body> {
    let asked = req
        .headers()
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()));
    if !asked {
        return respond(
            StatusCode::BAD_REQUEST,
            "expected Upgrade: switchyard-append-stream",
        );
    }
    if node.cluster.is_stopped() {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "raft stopped");
    }
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => node.cluster.serve_append_stream(TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, "append stream upgrade failed"),
        }
    });
    let mut resp = respond(StatusCode::SWITCHING_PROTOCOLS, "");
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp
}
