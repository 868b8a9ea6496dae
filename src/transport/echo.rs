//! `GET /autobahn/echo` (test-only, `[testing] echo_endpoint`): a WebSocket that echoes every
//! message back as it came (text or binary), for the Autobahn conformance suite.
//!
//! It reads through the same [`MessageReader`] as client connections, so the suite checks the
//! framing, fragmentation, UTF-8 and close handling real clients meet; only the writing differs
//! (one frame per message instead of the session writer's `\n`-joined batches). One task per
//! connection: no timers are needed, so it reads, then writes, in turn. permessage-deflate is
//! negotiated as on `/connection/websocket` (`client.websocket_compression` and its
//! settings), so the suite's compression cases (12, 13) check the same code.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio_util::task::TaskTracker;

use super::deflate::{self, Settings};
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
    let cfg = &node.cfg.client;
    let (agreed, extensions) = cfg
        .websocket_compression
        .then(|| deflate::answer(req.headers()))
        .flatten()
        .unzip();
    let settings = agreed.map(|a| Settings::new(cfg, a));
    let shutdown = node.on_shutdown();
    tracker.spawn(async move {
        let Ok(ws) = fut.await else { return };
        let (rd, wr) = split(ws, max, agreed);
        tokio::select! {
            _ = serve(rd, wr, settings) => {}
            _ = shutdown.cancelled() => {}
        }
    });
    let (mut parts, _) = resp.into_parts();
    if let Some(v) = extensions {
        parts
            .headers
            .insert(hyper::header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    Response::from_parts(parts, http_body_util::Either::Left(Full::new(Bytes::new())))
}

/// What the echo sends next.
enum Reply {
    Message { text: bool, data: Bytes },
    Pong(Bytes),
    Close(u16, &'static str),
}

async fn serve(
    mut rd: super::reader::MessageReader<tokio::io::ReadHalf<super::ws::Io>>,
    mut wr: Writer,
    deflate: Option<Settings>,
) {
    loop {
        let reply = match rd.next().await {
            Ok(Event::Message { text, data }) => Reply::Message { text, data },
            Ok(Event::Ping(p)) => Reply::Pong(p),
            Ok(Event::Pong(_)) => continue,
            Ok(ev @ Event::Close { .. }) => {
                let code = ev.close_reply().unwrap_or(1000);
                let _ = write(&mut wr, Reply::Close(code, ""), deflate).await;
                // The client already closed: end the TCP stream now.
                return;
            }
            Err(ReadError::Violation(d)) => {
                tracing::debug!(code = d.code, reason = d.reason, "echo: protocol violation");
                if write(&mut wr, Reply::Close(d.code, d.reason), deflate)
                    .await
                    .is_ok()
                {
                    drain_until_close(&mut rd).await;
                }
                return;
            }
            Err(ReadError::Gone) => return,
        };
        if write(&mut wr, reply, deflate).await.is_err() {
            return;
        }
    }
}

async fn write(wr: &mut Writer, reply: Reply, deflate: Option<Settings>) -> std::io::Result<()> {
    let write = async {
        match reply {
            Reply::Message { text, data } => match deflate.and_then(|d| d.message(&data)) {
                Some(z) => wr.message(text, true, &z).await?,
                None => wr.message(text, false, &data).await?,
            },
            Reply::Pong(p) => wr.pong(&p).await?,
            Reply::Close(code, reason) => wr.close(code, reason.as_bytes()).await?,
        }
        wr.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}
