//! `GET /autobahn/echo` (test-only, `[testing] echo_endpoint`): a WebSocket that echoes every
//! message back as it came (text or binary), for the Autobahn conformance suite.
//!
//! It reads through the same [`MessageReader`] as client connections, so the suite checks the
//! framing, fragmentation, UTF-8 and close handling real clients meet; only the writing differs
//! (one frame per message instead of the session writer's `\n`-joined batches). One task per
//! connection: no timers are needed, so it reads, then writes, in turn.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame, Payload, WebSocketError};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio_util::task::TaskTracker;

use super::reader::{Event, ReadError};
use super::ws::{Writer, drain_until_close, split};
use super::{Body, respond};
use crate::node::Node;

/// Longest time one echo write may take (the suite's client always reads).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Upgrades the request and serves the echo in a tracked task.
pub fn upgrade(
    mut req: Request<Incoming>,
    node: Arc<Node>,
    tracker: TaskTracker,
) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return respond(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    }
    let (resp, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "echo upgrade refused");
            return respond(StatusCode::BAD_REQUEST, "bad WebSocket upgrade");
        }
    };
    let max = node.cfg.testing.echo_max_message_size;
    let shutdown = node.on_shutdown();
    tracker.spawn(async move {
        let Ok(ws) = fut.await else { return };
        tokio::select! {
            _ = serve(ws, max) => {}
            _ = shutdown.cancelled() => {}
        }
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

async fn serve(ws: fastwebsockets::WebSocket<super::ws::Io>, max: usize) {
    let (mut rd, mut wr) = split(ws, max);
    loop {
        let reply = match rd.next().await {
            Ok(Event::Message { text, data }) => {
                let payload = Payload::Bytes(BytesMut::from(data));
                if text {
                    Frame::text(payload)
                } else {
                    Frame::binary(payload)
                }
            }
            Ok(Event::Ping(p)) => Frame::pong(Payload::Bytes(BytesMut::from(p))),
            Ok(Event::Pong(_)) => continue,
            Ok(ev @ Event::Close { .. }) => {
                let code = ev.close_reply().unwrap_or(1000);
                let _ = write(&mut wr, Frame::close(code, b"")).await;
                // The client already closed: end the TCP stream now.
                return;
            }
            Err(ReadError::Violation(d)) => {
                tracing::debug!(code = d.code, reason = d.reason, "echo: protocol violation");
                if write(&mut wr, Frame::close(d.code, d.reason.as_bytes()))
                    .await
                    .is_ok()
                {
                    drain_until_close(&mut rd).await;
                }
                return;
            }
            Err(ReadError::Gone) => return,
        };
        if write(&mut wr, reply).await.is_err() {
            return;
        }
    }
}

async fn write(wr: &mut Writer, frame: Frame<'_>) -> Result<(), WebSocketError> {
    // write_frame does not flush; over TLS the frame could otherwise sit in rustls's buffer.
    let write = async {
        wr.write_frame(frame).await?;
        wr.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Err(WebSocketError::ConnectionClosed),
    }
}
