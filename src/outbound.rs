//! A connection's bounded outbound queue.
//!
//! Producers (the session's replies, the hub's fan-out) push already-encoded messages; the
//! connection's writer task takes everything queued at once and writes it as one WebSocket
//! frame (messages joined by `\n`). The bound is in bytes: a push that would exceed it closes
//! the connection with 3008 (slow consumer) instead of growing memory or blocking the producer,
//! so one slow reader never holds back the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::protocol::{Disconnect, Encoding, codes};

/// A message's compressed form (permessage-deflate, made by the first writer that sends it
/// and shared by every connection of this node that negotiated the full window; `None`: the
/// compressor failed and the message goes uncompressed). The bytes are opaque here.
pub type SharedDeflate = Arc<OnceLock<Option<Bytes>>>;

/// One queued protocol message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its encoding in the connection's [`Encoding`] (the field keeps its historical name:
    /// for a Protobuf connection these are the length-delimited Protobuf bytes).
    pub json: Bytes,
    /// For a message fanned out to several connections, the slot of its shared compressed
    /// form (only when some subscriber compresses).
    pub deflated: Option<SharedDeflate>,
}

impl From<Bytes> for Message {
    fn from(json: Bytes) -> Message {
        Message {
            json,
            deflated: None,
        }
    }
}

/// What the writer must do next.
#[derive(Debug, Default)]
pub struct Batch {
    /// WebSocket pong payloads owed to the client (answers to its pings).
    pub pongs: Vec<Bytes>,
    /// Protocol messages, in order.
    pub messages: Vec<Message>,
    /// When each publication among them was applied (for the delivery latency metric).
    pub applied_at: Vec<std::time::Instant>,
    /// Send a close frame with this code and reason after the messages, then stop.
    pub close: Option<(u16, String)>,
}

/// The most messages a cleared batch keeps room for.
const KEEP_MESSAGES: usize = 256;

impl Batch {
    /// Empties it, keeping the vectors' capacity unless a burst made them large (a
    /// connection does not keep the largest batch it ever had).
    pub fn clear(&mut self) {
        self.pongs.clear();
        self.messages.clear();
        self.applied_at.clear();
        self.close = None;
        if self.messages.capacity() > KEEP_MESSAGES {
            self.messages = Vec::new();
            self.applied_at = Vec::new();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    batch: Batch,
    /// Bytes held in `batch.messages`.
    bytes: usize,
    /// A close was requested: accept nothing more.
    closing: bool,
    /// The code and reason of that close (kept for the disconnect log line).
    closed_with: Option<(u16, String)>,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing or closed.
    Closed,
    /// The queue bound was hit; the connection is now closing with 3008.
    Overflow,
}

/// The queue shared by a connection's producers and its writer.
#[derive(Debug)]
pub struct Outbound {
    state: Mutex<State>,
    notify: Notify,
    /// Quiet pushes are waiting for a [`Outbound::wake`].
    wake_pending: AtomicBool,
    /// Most bytes of messages held at once.
    limit: usize,
    /// The connection compresses what it sends (permessage-deflate).
    deflate: AtomicBool,
    /// The connection speaks Protobuf (set once, before anything is queued).
    protobuf: AtomicBool,
}

impl Outbound {
    /// A queue holding at most `limit` bytes of messages.
    pub fn new(limit: usize) -> Outbound {
        Outbound {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            wake_pending: AtomicBool::new(false),
            limit,
            deflate: AtomicBool::new(false),
            protobuf: AtomicBool::new(false),
        }
    }

    /// Sets the connection's encoding (at the upgrade, before anything is queued): producers
    /// encode what they queue here in it.
    pub fn set_encoding(&self, enc: Encoding) {
        self.protobuf
            .store(enc == Encoding::Protobuf, Ordering::Relaxed);
    }

    /// The connection's encoding.
    pub fn encoding(&self) -> Encoding {
        if self.protobuf.load(Ordering::Relaxed) {
            Encoding::Protobuf
        } else {
            Encoding::Json
        }
    }

    /// Marks the connection as compressing: fan-out attaches a shared compressed-form slot to
    /// what it queues here.
    pub fn set_deflate(&self) {
        self.deflate.store(true, Ordering::Relaxed);
    }

    /// Whether the connection compresses what it sends.
    pub fn deflates(&self) -> bool {
        self.deflate.load(Ordering::Relaxed)
    }

    /// Queues one encoded message.
    pub fn push(&self, msg: Bytes) -> Result<(), PushError> {
        self.enqueue(msg.into(), None)?;
        self.wake();
        Ok(())
    }

    /// Queues a publication push applied at `applied_at` (its delivery latency is measured).
    pub fn push_timed(&self, msg: Bytes, applied_at: std::time::Instant) -> Result<(), PushError> {
        self.enqueue(msg.into(), Some(applied_at))?;
        self.wake();
        Ok(())
    }

    /// Queues a message without waking the writer, so that a producer delivering several
    /// messages (all publications of one log entry) wakes each writer once, and the writer
    /// finds them all and writes them as one frame. Returns true when this is the first quiet
    /// push since the last [`Outbound::wake`]: the caller must then call `wake` when done.
    pub fn push_quiet(
        &self,
        msg: Message,
        applied_at: Option<std::time::Instant>,
    ) -> Result<bool, PushError> {
        self.enqueue(msg, applied_at)?;
        Ok(!self.wake_pending.swap(true, Ordering::AcqRel))
    }

    /// Wakes the writer (after quiet pushes).
    pub fn wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
        self.notify.notify_one();
    }

    fn enqueue(
        &self,
        msg: Message,
        applied_at: Option<std::time::Instant>,
    ) -> Result<(), PushError> {
        let mut st = self.state.lock();
        if st.closing {
            return Err(PushError::Closed);
        }
        if st.bytes + msg.json.len() > self.limit {
            // Drop what is queued: the client is told 3008 right away and will recover.
            st.batch.messages.clear();
            st.batch.applied_at.clear();
            st.bytes = 0;
            st.closing = true;
            st.batch.close = Some((codes::SLOW.code, codes::SLOW.reason.to_string()));
            drop(st);
            self.notify.notify_one();
            return Err(PushError::Overflow);
        }
        st.bytes += msg.json.len();
        st.batch.messages.push(msg);
        if let Some(t) = applied_at {
            st.batch.applied_at.push(t);
        }
        Ok(())
    }

    /// Queues a pong for a client ping.
    pub fn pong(&self, payload: Bytes) {
        let mut st = self.state.lock();
        if !st.closing {
            st.batch.pongs.push(payload);
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Closes with a disconnect code after what is already queued. The first close wins.
    pub fn close(&self, d: Disconnect) {
        self.close_with(d.code, d.reason);
    }

    /// Closes with any code and reason (reason cut to the 123 bytes a close frame allows).
    pub fn close_with(&self, code: u16, reason: &str) {
        let mut st = self.state.lock();
        if st.closing {
            return;
        }
        st.closing = true;
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        st.batch.close = Some((code, reason[..end].to_string()));
        st.closed_with = st.batch.close.clone();
        drop(st);
        self.notify.notify_one();
    }

    /// The code and reason the connection was closed with, once a close was requested.
    pub fn closed_with(&self) -> Option<(u16, String)> {
        self.state.lock().closed_with.clone()
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Takes everything queued (empty if nothing is).
    pub fn take(&self) -> Batch {
        let mut st = self.state.lock();
        st.bytes = 0;
        std::mem::take(&mut st.batch)
    }

    /// Like [`Outbound::take`], into `into`, whose emptied vectors (with their capacity) the
    /// queue keeps in exchange: a writer that takes into the same batch every time makes the
    /// queue allocate nothing as messages come and go.
    pub fn take_into(&self, into: &mut Batch) {
        into.clear();
        let mut st = self.state.lock();
        st.bytes = 0;
        std::mem::swap(&mut st.batch, into);
    }

    /// Waits until something may have been queued.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

/// Joins messages into one frame payload, with `sep` between them (`\n` for JSON, nothing
/// for Protobuf: see [`Encoding::separator`]).
pub fn join(messages: &[Message], sep: &[u8]) -> Vec<u8> {
    let len = messages
        .iter()
        .map(|m| m.json.len() + sep.len())
        .sum::<usize>();
    let mut buf = Vec::with_capacity(len);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            buf.extend_from_slice(sep);
        }
        buf.extend_from_slice(&m.json);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_slow_and_refuses_more() {
        let q = Outbound::new(10);
        assert!(q.push(Bytes::from_static(b"12345")).is_ok());
        assert!(q.push(Bytes::from_static(b"12345")).is_ok());
        assert_eq!(q.push(Bytes::from_static(b"1")), Err(PushError::Overflow));
        assert_eq!(q.push(Bytes::from_static(b"1")), Err(PushError::Closed));
        let b = q.take();
        assert!(b.messages.is_empty());
        assert_eq!(b.close.unwrap().0, 3008);
    }

    #[test]
    fn take_drains_in_order_and_close_is_first_wins() {
        let q = Outbound::new(100);
        q.push(Bytes::from_static(b"a")).unwrap();
        q.push(Bytes::from_static(b"b")).unwrap();
        q.close(codes::SHUTDOWN);
        q.close(codes::NO_PONG);
        let b = q.take();
        assert_eq!(join(&b.messages, b"\n"), b"a\nb");
        assert_eq!(b.close.unwrap().0, 3001);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn quiet_pushes_ask_for_one_wake() {
        let q = Outbound::new(100);
        let m = |s: &'static [u8]| Message::from(Bytes::from_static(s));
        assert_eq!(q.push_quiet(m(b"a"), None), Ok(true));
        assert_eq!(q.push_quiet(m(b"b"), None), Ok(false));
        q.wake();
        assert_eq!(q.push_quiet(m(b"c"), None), Ok(true));
        assert_eq!(join(&q.take().messages, b"\n"), b"a\nb\nc");
    }

    #[test]
    fn take_into_swaps_vectors_and_empties_the_previous_batch() {
        let q = Outbound::new(100);
        let mut b = Batch {
            messages: Vec::with_capacity(16),
            ..Batch::default()
        };
        q.push(Bytes::from_static(b"a")).unwrap();
        q.take_into(&mut b);
        assert_eq!(join(&b.messages, b"\n"), b"a");
        q.push(Bytes::from_static(b"b")).unwrap();
        q.close(codes::SHUTDOWN);
        q.take_into(&mut b);
        assert_eq!(
            join(&b.messages, b"\n"),
            b"b",
            "what was written before is gone"
        );
        assert!(
            b.messages.capacity() >= 16,
            "the queue used the vector it was given"
        );
        assert_eq!(b.close.as_ref().unwrap().0, 3001);
        q.take_into(&mut b);
        assert!(b.messages.is_empty() && b.close.is_none());
        assert_eq!(q.queued_bytes(), 0);
        b.messages.reserve(KEEP_MESSAGES + 1);
        b.clear();
        assert_eq!(b.messages.capacity(), 0, "a burst's room is not kept");
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let q = Outbound::new(100);
        q.close_with(3000, &"é".repeat(100));
        let (_, reason) = q.take().close.unwrap();
        assert!(reason.len() <= 123);
    }
}
