//! Pipelined replication: a leader's appends to one follower over one upgraded connection,
//! several in flight, answered in order.
//!
//! openraft hands each replication session (and each heartbeat) over as a stream of
//! AppendEntries requests and reads a stream of answers in the same order. Sent one HTTP
//! request at a time, an entry waits for the previous request's round trip, the follower's
//! fsync included. Here the leader writes each request as soon as openraft makes it (up to
//! `cluster.append_pipeline` unanswered) and the follower hands them to its Raft in order
//! ([`openraft::Raft::stream_append`]), which stores them while later ones arrive.
//!
//! The connection is an HTTP/1.1 upgrade on the cluster listener (so mutual TLS and the
//! source address are those of every other cluster call), then length-prefixed frames, each
//! a tag byte and JSON:
//! - leader → follower: [`REQUEST`] (an `AppendEntriesRequest`), [`END`] (the session's
//!   requests are over);
//! - follower → leader: [`ANSWER`] (`Result<StreamAppendResult, String>`; `Err` is the
//!   follower's Raft stopped), [`DONE`] (every request of the session was answered).
//!
//! A session that ends cleanly (`END` answered by `DONE`) leaves the connection for the next
//! one (heartbeats are one-request sessions); any error, a refusal (conflict, higher vote)
//! or an answer later than the RPC timeout closes it, and the next session dials again.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{NetworkError, RPCError, Unreachable};
use openraft::raft::{AppendEntriesRequest, StreamAppendError, StreamAppendResult};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::peer_health::PeerHealth;
use crate::peer::{PeerError, PeerStream};
use crate::store::types::{NodeId, TypeConfig};

/// The `Upgrade` protocol name of an append stream.
pub const PROTOCOL: &str = "switchyard-append-stream";

/// Leader → follower: one AppendEntries request.
const REQUEST: u8 = b'R';
/// Leader → follower: the session has no more requests.
const END: u8 = b'E';
/// Follower → leader: the answer to the oldest unanswered request.
const ANSWER: u8 = b'A';
/// Follower → leader: the session's requests are all answered.
const DONE: u8 = b'D';

/// Largest frame either side accepts (an append carries at most a batch of entries).
const MAX_FRAME: usize = 256 * 1024 * 1024;
/// Most unanswered requests a follower takes on one connection (the leader's
/// `cluster.append_pipeline` is at most this).
const MAX_PIPELINE: usize = crate::config::MAX_APPEND_PIPELINE;

type Io = PeerStream;
type Answer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

fn frame<T: serde::Serialize>(tag: u8, body: Option<&T>) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(tag);
    if let Some(b) = body {
        serde_json::to_writer((&mut buf).writer(), b).expect("serialise");
    }
    buf.freeze()
}

/// A leader's open connection to one follower, between sessions.
pub struct Conn {
    read: FramedRead<ReadHalf<Io>, LengthDelimitedCodec>,
    write: FramedWrite<WriteHalf<Io>, LengthDelimitedCodec>,
}

impl Conn {
    /// Frames an upgraded connection.
    pub fn new(io: Io) -> Conn {
        let (r, w) = tokio::io::split(io);
        Conn {
            read: FramedRead::new(r, codec()),
            write: FramedWrite::new(w, codec()),
        }
    }

    /// Whether a connection kept between sessions still looks open: not closed by the peer
    /// (a restarted follower's old connection), nothing unasked for waiting in it.
    pub fn alive(&mut self) -> bool {
        self.read.next().now_or_never().is_none()
    }
}

/// The leader's side of one session.
pub struct Session<'a, S> {
    conn: Option<Conn>,
    /// Where the connection goes when the session ends cleanly.
    idle: &'a parking_lot::Mutex<Option<Conn>>,
    /// openraft's requests; `None` once it ended (and `END` was sent).
    input: Option<S>,
    /// When each unanswered request was sent, oldest first.
    sent: VecDeque<Instant>,
    pipeline: usize,
    /// How long a request may go unanswered (openraft's RPC timeout).
    ttl: Duration,
    target: NodeId,
    addr: String,
    health: PeerHealth,
}

impl<'a, S> Session<'a, S>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    /// A session over `conn`; a clean end leaves the connection in `idle`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: Conn,
        idle: &'a parking_lot::Mutex<Option<Conn>>,
        input: S,
        pipeline: usize,
        ttl: Duration,
        target: NodeId,
        addr: String,
        health: PeerHealth,
    ) -> Session<'a, S> {
        Session {
            conn: Some(conn),
            idle,
            input: Some(input),
            sent: VecDeque::new(),
            pipeline: pipeline.max(1),
            ttl,
            target,
            addr,
            health,
        }
    }

    /// The answers, in the order of the requests; ends after the last one or after an error.
    pub fn answers(self) -> BoxStream<'a, Answer> {
        Box::pin(futures_util::stream::unfold(self, |mut s| async move {
            let answer = s.next_answer().await?;
            Some((answer, s))
        }))
    }

    /// A failure: the connection is closed and the session ends after this answer.
    fn fail(&mut self, why: String) -> Answer {
        self.conn = None;
        self.input = None;
        let e = PeerError::Failed {
            addr: self.addr.clone(),
            why,
        };
        self.health.record(self.target, Err(&e));
        Err(RPCError::Network(NetworkError::new(&e)))
    }

    async fn next_answer(&mut self) -> Option<Answer> {
        loop {
            let conn = self.conn.as_mut()?;
            if self.input.is_none() && self.sent.is_empty() {
                // Everything answered: the follower confirms the end, and the connection is
                // kept for the next session.
                let done = tokio::time::timeout(self.ttl, conn.read.next()).await;
                if matches!(&done, Ok(Some(Ok(f))) if f[..] == [DONE]) {
                    *self.idle.lock() = self.conn.take();
                } else {
                    self.conn = None;
                }
                return None;
            }
            let deadline = self.sent.front().map(|t| *t + self.ttl);
            let room = self.sent.len() < self.pipeline;
            tokio::select! {
                biased;
                // Read even with nothing in flight: a follower that went away (its connection
                // closed) is noticed then, not at the next append.
                f = conn.read.next() => {
                    if self.sent.pop_front().is_none() {
                        return Some(self.fail(match f {
                            Some(Ok(_)) => "append stream: an answer to no request".into(),
                            _ => "append stream closed by the peer".into(),
                        }));
                    }
                    return Some(self.answer(f));
                }
                req = next_of(&mut self.input), if self.input.is_some() && room => {
                    let sent = match req {
                        Some(req) => conn.write.send(frame(REQUEST, Some(&req))).await,
                        None => {
                            self.input = None;
                            conn.write.send(frame::<()>(END, None)).await
                        }
                    };
                    match sent {
                        Ok(()) if self.input.is_some() => {
                            let path = if self.sent.is_empty() { "alone" } else { "pipelined" };
                            metrics::counter!(crate::metrics::RAFT_APPENDS, "path" => path)
                                .increment(1);
                            self.sent.push_back(Instant::now());
                        }
                        Ok(()) => {}
                        Err(e) => return Some(self.fail(format!("append stream: {e}"))),
                    }
                }
                _ = sleep_until(deadline) => {
                    return Some(self.fail(format!("append unanswered after {:?}", self.ttl)));
                }
            }
        }
    }

    /// The answer in frame `f`; anything but a success ends the session.
    fn answer(&mut self, f: Option<std::io::Result<BytesMut>>) -> Answer {
        let f = match f {
            Some(Ok(f)) => f,
            Some(Err(e)) => return self.fail(format!("append stream: {e}")),
            None => return self.fail("append stream closed by the peer".into()),
        };
        let parsed: Option<Result<StreamAppendResult<TypeConfig>, String>> = match f.split_first() {
            Some((&ANSWER, body)) => serde_json::from_slice(body).ok(),
            _ => None,
        };
        match parsed {
            None => self.fail("append stream: malformed answer".into()),
            Some(Ok(r)) => {
                self.health.record(self.target, Ok(()));
                if r.is_err() {
                    // A conflict or a higher vote: openraft ends the session.
                    self.conn = None;
                    self.input = None;
                }
                Ok(r)
            }
            Some(Err(stopped)) => {
                self.conn = None;
                self.input = None;
                Err(RPCError::Unreachable(Unreachable::new(&Stopped(stopped))))
            }
        }
    }
}

/// The follower's Raft has stopped.
#[derive(Debug, thiserror::Error)]
#[error("peer's raft stopped: {0}")]
struct Stopped(String);

async fn next_of<S: Stream + Unpin>(s: &mut Option<S>) -> Option<S::Item> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Cluster {
    /// Whether this node's Raft has stopped (no append stream is served then).
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }

    /// Serves one upgraded append-stream connection from a leader until it closes, a session
    /// ends uncleanly, or this node's Raft stops.
    pub async fn serve_append_stream<I>(&self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let stop = self.stopped.clone();
        let mut framed = Framed::new(io, codec());
        loop {
            let first = tokio::select! {
                f = framed.next() => f,
                _ = stop.cancelled() => return,
            };
            let Some(Ok(first)) = first else { return };
            if !self.serve_session(&mut framed, first, &stop).await {
                return;
            }
        }
    }

    /// One session, starting with frame `first`; whether it ended cleanly (the connection
    /// stays open for the next).
    async fn serve_session<I>(
        &self,
        framed: &mut Framed<I, LengthDelimitedCodec>,
        first: BytesMut,
        stop: &CancellationToken,
    ) -> bool
    where
        I: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tx = Some(tx);
        let input =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let mut output = std::pin::pin!(self.raft.stream_append(input));
        // Per unanswered request: whether it is an append from the followed leader being
        // stored (the election driver does not campaign meanwhile).
        let mut storing = VecDeque::new();
        let mut next = Some(first);
        loop {
            if let Some(f) = next.take() {
                match f.split_first() {
                    Some((&REQUEST, body)) if storing.len() < MAX_PIPELINE => {
                        let Ok(req) =
                            serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(body)
                        else {
                            return false;
                        };
                        let followed = self.raft.metrics().borrow_watched().vote;
                        storing.push_back(
                            (req.vote.is_committed() && req.vote >= followed)
                                .then(|| self.elections.storing()),
                        );
                        match &tx {
                            Some(tx) if tx.send(req).is_ok() => {}
                            _ => return false,
                        }
                    }
                    Some((&END, [])) if tx.is_some() => tx = None,
                    _ => return false,
                }
            }
            tokio::select! {
                f = framed.next(), if tx.is_some() => match f {
                    Some(Ok(f)) => next = Some(f),
                    _ => return false,
                },
                answer = output.next() => {
                    let Some(answer) = answer else {
                        // Every request answered after `END`: a clean end. Anything else
                        // (a refusal ended openraft's stream early) closes the connection.
                        return tx.is_none()
                            && storing.is_empty()
                            && framed.send(frame::<()>(DONE, None)).await.is_ok();
                    };
                    let Some(_stored) = storing.pop_front() else { return false };
                    let answer = answer.map_err(|fatal| fatal.to_string());
                    if matches!(answer, Ok(Ok(_)) | Ok(Err(StreamAppendError::Conflict(_)))) {
                        self.elections.heard_from_leader();
                    }
                    if framed.send(frame(ANSWER, Some(&answer))).await.is_err() {
                        return false;
                    }
                }
                _ = stop.cancelled() => return false,
            }
        }
    }
}
