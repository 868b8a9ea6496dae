//! A client WebSocket connection: a reader task (the shared [`MessageReader`]: frames → whole,
//! validated messages → the session) and a writer task (outbound queue → one frame per drain;
//! ping, pong, stale and expiry timers).
//!
//! A connection speaks JSON (text frames, messages joined by `\n`) or, with the
//! `centrifuge-protobuf` subprotocol, Protobuf (binary frames, length-delimited messages
//! back to back); the session and the hub encode what they queue in the connection's
//! [`Encoding`], and the writer only frames it.
//!
//! With permessage-deflate, a drain still goes out as one frame: its messages joined (by the
//! encoding's separator) in one deflate stream, each a segment of its own (a publication's
//! shared, compressed once per encoding per node) or stored as it is when short; see
//! [`super::deflate`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use crate::conn::Conn;
use crate::node::Node;
use crate::outbound::{Batch, Message, join};
use crate::protocol::json::{encode_disconnect_push, uni_push};
use crate::protocol::{Disconnect, Encoding, codes};
use crate::session::Session;

use super::deflate::{self, Agreed, Part, Settings};
use super::frame::FrameWriter;
use super::reader::{Event, MessageReader, ReadError};
use super::writer::{Sink, count, count_close, write_loop};

/// An upgraded client connection.
pub type Io = TokioIo<Upgraded>;

/// How long the reader keeps draining for the client's close frame after ours was sent.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The subprotocol a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subprotocol {
    /// JSON (no subprotocol, or `centrifuge-json`).
    Json,
    /// `centrifuge-protobuf`: Protobuf in binary frames.
    Protobuf,
}

impl Subprotocol {
    /// The encoding the connection speaks.
    pub fn encoding(self) -> Encoding {
        match self {
            Subprotocol::Json => Encoding::Json,
            Subprotocol::Protobuf => Encoding::Protobuf,
        }
    }
}

/// Splits an upgraded connection into the shared message reader (inflating when
/// permessage-deflate was agreed) and the frame writer.
pub fn split(
    ws: WebSocket<Io>,
    max_message_size: usize,
    deflate: Option<Agreed>,
) -> (MessageReader<ReadHalf<Io>>, Writer) {
    let (rd, wr) = tokio::io::split(ws.into_inner());
    let mut rd = MessageReader::new(rd, max_message_size);
    if deflate.is_some() {
        rd = rd.inflating();
    }
    (rd, FrameWriter::new(wr))
}

/// The write half of an upgraded connection.
pub type Writer = FrameWriter<WriteHalf<Io>>;

/// Serves one upgraded connection until it ends.
/// `headers`: the request headers kept for proxy calls; `deflate`: permessage-deflate, when
/// agreed.
pub async fn serve(
    node: Arc<Node>,
    ws: WebSocket<Io>,
    proto: Subprotocol,
    headers: Vec<(String, String)>,
    deflate: Option<Agreed>,
) {
    let conn = Arc::new(
        Conn::new(node.next_conn_id(), node.cfg.client.outbound_queue_bytes).with_headers(headers),
    );
    let enc = proto.encoding();
    conn.out.set_encoding(enc);
    let settings = deflate.map(|a| Settings::new(&node.cfg.client, a));
    if settings.is_some_and(|s| s.shares()) {
        conn.out.set_deflate();
    }
    let (mut rd, wr) = split(ws, node.cfg.client.max_message_size, deflate);
    let writer_done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        node.clone(),
        conn.clone(),
        WsSink::new(wr, settings, enc),
        writer_done.clone(),
    ));
    let mut session = Session::new(node.clone(), conn.clone());
    loop {
        // `MessageReader::next` is cancel-safe.
        let event = tokio::select! {
            e = rd.next() => e,
            _ = writer_done.cancelled() => break,
        };
        let (text, msg) = match event {
            Ok(Event::Message { text, data }) => (text, data),
            Ok(Event::Ping(p)) => {
                conn.out.pong(p);
                continue;
            }
            Ok(Event::Pong(_)) => continue,
            Ok(ev @ Event::Close { .. }) => {
                // Echo the client's code (1000 when it sent none) and stop.
                conn.out.close_with(ev.close_reply().unwrap_or(1000), "");
                break;
            }
            Err(ReadError::Violation(d)) => {
                tracing::debug!(
                    conn = conn.id,
                    code = d.code,
                    reason = d.reason,
                    "protocol violation"
                );
                if d.code == codes::MESSAGE_TOO_BIG.code {
                    metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "max_message_size")
                        .increment(1);
                }
                conn.out.close(d);
                break;
            }
            Err(ReadError::Gone) => {
                conn.out.close(codes::NORMAL);
                break;
            }
        };
        metrics::counter!(crate::metrics::BYTES_IN).increment(msg.len() as u64);
        if text != enc.text() {
            let why = if text {
                "text frame on a Protobuf connection"
            } else {
                "binary frame on a JSON connection"
            };
            conn.out.close_with(codes::BAD_REQUEST_DISCONNECT.code, why);
            break;
        }
        // Boxed: the command futures are large, and an unboxed one would make every idle
        // connection's task that large for its whole life.
        if let Err(d) = Box::pin(session.handle_message(&msg)).await {
            close_with(&conn, d);
            break;
        }
        if conn.out.is_closing() {
            break;
        }
    }
    // Leave channels first, so presence is cleaned even if the client lingers.
    Box::pin(session.close()).await;
    // Give the client a moment to answer our close frame, so it reads the code before the
    // socket goes away; never wait long.
    let _ = tokio::time::timeout(CLOSE_GRACE * 3, writer_done.cancelled()).await;
    drain_until_close(&mut rd).await;
    writer.abort();
}

/// After our close frame: reads (and drops) what the client still sends until its close
/// frame, a violation or [`CLOSE_GRACE`], so the server is the side that ends the TCP stream.
pub async fn drain_until_close<R: tokio::io::AsyncRead + Unpin>(rd: &mut MessageReader<R>) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Ok(ev) = rd.next().await {
            if matches!(ev, Event::Close { .. }) {
                break;
            }
        }
    })
    .await;
}

fn close_with(conn: &Conn, d: Disconnect) {
    tracing::debug!(
        conn = conn.id,
        code = d.code,
        reason = d.reason,
        "disconnecting"
    );
    conn.out.close(d);
}

/// A WebSocket as a writer's sink: the bidirectional protocol (messages joined into one frame,
/// compressed when agreed) or the unidirectional one (each push a frame of its own, the
/// disconnect push before the close frame).
pub struct WsSink {
    wr: Writer,
    deflate: Option<Settings>,
    enc: Encoding,
    uni: bool,
}

impl WsSink {
    /// A bidirectional connection's sink.
    pub fn new(wr: Writer, deflate: Option<Settings>, enc: Encoding) -> WsSink {
        WsSink {
            wr,
            deflate,
            enc,
            uni: false,
        }
    }

    /// A unidirectional connection's sink (`/connection/uni_websocket`).
    pub fn unidirectional(wr: Writer) -> WsSink {
        WsSink {
            wr,
            deflate: None,
            enc: Encoding::Json,
            uni: true,
        }
    }
}

impl Sink for WsSink {
    async fn write(&mut self, batch: &Batch) -> std::io::Result<()> {
        if self.uni {
            write_uni(&mut self.wr, batch).await
        } else {
            write_batch(&mut self.wr, batch, self.enc, self.deflate).await
        }
    }

    fn gone(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    fn pongs(&self) -> bool {
        !self.uni
    }
}

/// Writes one drain to a unidirectional client: each message in its push form, a frame each;
/// before the close frame, the disconnect push (the close frame carries the same code).
async fn write_uni(wr: &mut Writer, batch: &Batch) -> std::io::Result<()> {
    for p in &batch.pongs {
        wr.pong(p).await?;
    }
    let mut len = 0;
    for m in &batch.messages {
        if let Some(push) = uni_push(&m.json) {
            wr.message(true, false, &push).await?;
            len += push.len();
        }
    }
    count(batch, len);
    if let Some((code, reason)) = &batch.close {
        count_close(*code);
        if let Some(push) = uni_push(&encode_disconnect_push(*code, reason)) {
            wr.message(true, false, &push).await?;
        }
        wr.close(*code, reason.as_bytes()).await?;
    }
    wr.flush().await
}

/// Writes what one drain of the queue holds: pongs, the messages as one frame, the close.
async fn write_batch(
    wr: &mut Writer,
    batch: &Batch,
    enc: Encoding,
    deflate: Option<Settings>,
) -> std::io::Result<()> {
    for p in &batch.pongs {
        wr.pong(p).await?;
    }
    if !batch.messages.is_empty() {
        let (text, sep) = (enc.text(), enc.separator());
        let compressed = deflate.and_then(|d| compress(&batch.messages, sep, d));
        let len = match compressed {
            Some(payload) => {
                wr.message(text, true, &payload).await?;
                metrics::counter!(crate::metrics::MESSAGES_OUT_COMPRESSED)
                    .increment(batch.messages.len() as u64);
                payload.len()
            }
            None if batch.messages.len() == 1 => {
                wr.message(text, false, &batch.messages[0].json).await?;
                batch.messages[0].json.len()
            }
            None => {
                let payload = join(&batch.messages, sep);
                wr.message(text, false, &payload).await?;
                payload.len()
            }
        };
        count(batch, len);
    }
    if let Some((code, reason)) = &batch.close {
        count_close(*code);
        wr.close(*code, reason.as_bytes()).await?;
    }
    // Over TLS the last records can otherwise stay in rustls's buffer (when the socket was
    // briefly full) until the next write, minutes later.
    wr.flush().await
}

/// The compressed payload of one frame carrying `messages` joined by `sep`, or `None` when
/// none of them is worth compressing or compressing does not pay. A message's compressed
/// form shared by the node is used (and made, by the first writer) when the connection can
/// use it; a lone shared message goes out without a copy.
fn compress(messages: &[Message], sep: &[u8], d: Settings) -> Option<Bytes> {
    let shared = |m: &Message| -> Option<Bytes> {
        let slot = m.deflated.as_ref().filter(|_| d.shares())?;
        slot.get_or_init(|| {
            metrics::counter!(crate::metrics::SHARED_COMPRESSIONS).increment(1);
            d.segment(&m.json).map(Bytes::from)
        })
        .clone()
    };
    let segments: Vec<Option<Bytes>> = messages
        .iter()
        .map(|m| {
            if m.json.len() < d.min_size {
                return None;
            }
            shared(m).or_else(|| d.segment(&m.json).map(Bytes::from))
        })
        .collect();
    let raw_len = messages
        .iter()
        .map(|m| m.json.len() + sep.len())
        .sum::<usize>()
        - sep.len();
    let payload = match &segments[..] {
        [Some(seg)] => seg.slice(..seg.len() - deflate::TAIL.len()),
        _ if segments.iter().all(Option::is_none) => return None,
        _ => {
            let parts: Vec<Part> = messages
                .iter()
                .zip(&segments)
                .map(|(m, s)| match s {
                    Some(seg) => Part::Deflated(seg),
                    None => Part::Raw(&m.json),
                })
                .collect();
            Bytes::from(deflate::frame_payload(&parts, sep))
        }
    };
    (payload.len() < raw_len).then_some(payload)
}
