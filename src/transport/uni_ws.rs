//! `/connection/uni_websocket`: a unidirectional WebSocket for clients without an SDK. The
//! connect request comes in the `cf_connect` query parameter or as the first message (a bare
//! `ConnectRequest` object), then the server sends pushes only: `{"connect":{…}}` first, then
//! `{"channel":…,"pub":{…}}` and the like, `{}` as the ping (no pong expected: WebSocket
//! pings, answered by the client's stack, keep the link checked), and before the close frame
//! `{"disconnect":{"code":…,"reason":…}}` with the close frame's code.
//!
//! A first message that is not a connect request closes with 3501; later messages are read
//! (so pings and the close handshake work) and ignored.

use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::WebSocket;
use tokio_util::sync::CancellationToken;

use crate::conn::Conn;
use crate::node::Node;
use crate::protocol::codes;
use crate::protocol::json::decode_connect_request;
use crate::session::Session;

use super::reader::{Event, ReadError};
use super::writer::write_loop;
use super::ws::{CLOSE_GRACE, Io, WsSink, drain_until_close, split};

/// Serves one upgraded unidirectional connection until it ends; `connect`: the request from
/// the `cf_connect` query parameter, when given.
pub async fn serve(
    node: Arc<Node>,
    ws: WebSocket<Io>,
    headers: Vec<(String, String)>,
    connect: Option<Bytes>,
) {
    let conn = Arc::new(
        Conn::new(node.next_conn_id(), node.cfg.client.outbound_queue_bytes).with_headers(headers),
    );
    let (mut rd, wr) = split(ws, node.cfg.client.max_message_size, None);
    let done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        node.clone(),
        conn.clone(),
        WsSink::unidirectional(wr),
        done.clone(),
    ));
    let mut session = Session::new(node.clone(), conn.clone());
    let mut pending = connect;
    let mut connected = false;
    loop {
        if !connected && let Some(data) = pending.take() {
            connected = true;
            metrics::counter!(crate::metrics::BYTES_IN).increment(data.len() as u64);
            match decode_connect_request(&data) {
                Ok(req) => {
                    if let Err(d) = Box::pin(session.connect_unidirectional(req)).await {
                        conn.out.close(d);
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(conn = conn.id, error = %e, "bad unidirectional connect");
                    conn.out.close(codes::BAD_REQUEST_DISCONNECT);
                    break;
                }
            }
        }
        let event = tokio::select! {
            e = rd.next() => e,
            _ = done.cancelled() => break,
        };
        match event {
            Ok(Event::Message { data, .. }) if !connected => pending = Some(data),
            Ok(Event::Message { .. }) | Ok(Event::Pong(_)) => {}
            Ok(Event::Ping(p)) => conn.out.pong(p),
            Ok(ev @ Event::Close { .. }) => {
                conn.out.close_with(ev.close_reply().unwrap_or(1000), "");
                break;
            }
            Err(ReadError::Violation(d)) => {
                conn.out.close(d);
                break;
            }
            Err(ReadError::Gone) => {
                conn.out.close(codes::NORMAL);
                break;
            }
        }
        if conn.out.is_closing() {
            break;
        }
    }
    Box::pin(session.close()).await;
    let _ = tokio::time::timeout(CLOSE_GRACE * 3, done.cancelled()).await;
    drain_until_close(&mut rd).await;
    writer.abort();
}
