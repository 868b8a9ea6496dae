//! Pipelined forwarding: a follower keeps several entries in flight to the leader without
//! losing their order.
//!
//! The follower numbers the entries it forwards on a *stream* (a random id, a sequence from
//! 0) and sends them over up to `max_inflight` connections at once. The leader hands the
//! entries of one stream to its batcher strictly in sequence order (a gate), so they are
//! appended to the log in the order the follower started them, whatever order the requests
//! arrive in. When anything goes wrong on a stream (the leader refuses an entry, the gate
//! waits too long for a missing one, a request fails), the leader marks the stream broken and
//! refuses everything after on it (nothing of that is submitted, so a retry is safe); the
//! follower then settles those entries in order (see the replicator) and opens a new stream.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::state::Op;
use crate::store::types::NodeId;

/// What `/cluster/propose` carries: a sequenced entry of a stream (a JSON object), or (from
/// the sequential path, and from older nodes) the bare operations (a JSON array).
pub(super) enum Proposed {
    /// One entry of a forwarding stream.
    Sequenced(Sequenced),
    /// Operations committed on their own.
    Plain(Vec<Op>),
}

/// One entry of a forwarding stream: sent with borrowed operations (`&[Op]`: the follower
/// keeps them to settle a refusal), received with owned ones.
#[derive(Serialize, Deserialize)]
pub(super) struct Sequenced<O = Vec<Op>> {
    /// The stream (chosen at random by the follower).
    pub stream: u64,
    /// The entry's place in the stream, from 0.
    pub seq: u64,
    /// The operations.
    pub ops: O,
}

impl Proposed {
    /// Parses a request body (not an untagged serde enum: operations do not survive serde's
    /// buffering of untagged content).
    pub(super) fn parse(body: &[u8]) -> Option<Proposed> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => serde_json::from_slice(body).ok().map(Proposed::Sequenced),
            Some(b'[') => serde_json::from_slice(body).ok().map(Proposed::Plain),
            _ => None,
        }
    }
}

/// The follower's current stream to the leader.
#[derive(Default)]
pub(super) struct Outgoing {
    state: Mutex<Option<OutState>>,
}

struct OutState {
    leader: NodeId,
    stream: u64,
    next: u64,
    broken: bool,
}

impl Outgoing {
    /// The stream and sequence number for the next entry forwarded to `leader`; a new stream
    /// after a leader change or a failure.
    pub(super) fn next(&self, leader: NodeId) -> (u64, u64) {
        let mut st = self.state.lock();
        let fresh = match &*st {
            Some(s) => s.leader != leader || s.broken,
            None => true,
        };
        if fresh {
            *st = Some(OutState {
                leader,
                stream: rand::random(),
                next: 0,
                broken: false,
            });
        }
        let s = st.as_mut().expect("set above");
        let seq = s.next;
        s.next += 1;
        (s.stream, seq)
    }

    /// Something failed on `stream`: the next entry opens a new one.
    pub(super) fn broken(&self, stream: u64) {
        if let Some(s) = self.state.lock().as_mut()
            && s.stream == stream
        {
            s.broken = true;
        }
    }
}

/// Why the leader did not take a sequenced entry (nothing was submitted: safe to retry).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The stream is broken (an earlier entry was refused) or the entry is a duplicate.
    Broken,
    /// The entry before it did not arrive in time.
    Gap,
}

/// The leader's side: per stream, the next sequence number it will hand on.
pub(super) struct Gates {
    streams: Mutex<HashMap<u64, Gate>>,
    turn: Notify,
    /// How long an entry waits for the one before it.
    wait: Duration,
}

struct Gate {
    next: u64,
    broken: bool,
    used: Instant,
}

/// Streams kept before idle ones are forgotten.
const MAX_STREAMS: usize = 256;
/// A stream idle this long is forgotten once there are many.
const IDLE: Duration = Duration::from_secs(60);

/// An entry whose turn it is: [`Turn::done`] (it was handed on) or [`Turn::refused`] (it was
/// not) lets the next one go.
pub(super) struct Turn<'a> {
    gates: &'a Gates,
    stream: u64,
}

impl Turn<'_> {
    /// The entry was handed to the batcher: the next one of the stream may go.
    pub(super) fn done(self) {
        self.gates.advance(self.stream, false);
    }

    /// The entry was refused: the stream is broken.
    pub(super) fn refused(self) {
        self.gates.advance(self.stream, true);
    }
}

impl Gates {
    pub(super) fn new(wait: Duration) -> Gates {
        Gates {
            streams: Mutex::new(HashMap::new()),
            turn: Notify::new(),
            wait,
        }
    }

    /// Waits until entry `seq` of `stream` is next (all before it handed on).
    pub(super) async fn turn(&self, stream: u64, seq: u64) -> Result<Turn<'_>, Refusal> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let notified = self.turn.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.check(stream, seq) {
                Some(Ok(())) => {
                    return Ok(Turn {
                        gates: self,
                        stream,
                    });
                }
                Some(Err(r)) => return Err(r),
                None => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.advance(stream, true);
                return Err(Refusal::Gap);
            }
        }
    }

    /// `Some(Ok)`: its turn; `Some(Err)`: refused; `None`: wait.
    fn check(&self, stream: u64, seq: u64) -> Option<Result<(), Refusal>> {
        let mut streams = self.streams.lock();
        if !streams.contains_key(&stream) && streams.len() >= MAX_STREAMS {
            streams.retain(|_, g| g.used.elapsed() < IDLE);
        }
        let g = streams.entry(stream).or_insert(Gate {
            next: 0,
            broken: false,
            used: Instant::now(),
        });
        g.used = Instant::now();
        if g.broken || seq < g.next {
            Some(Err(Refusal::Broken))
        } else if seq == g.next {
            Some(Ok(()))
        } else {
            None
        }
    }

    /// Lets the next entry of `stream` go, or (`broken`) refuses every later one.
    fn advance(&self, stream: u64, broken: bool) {
        if let Some(g) = self.streams.lock().get_mut(&stream) {
            if broken {
                g.broken = true;
            } else {
                g.next += 1;
            }
        }
        self.turn.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn entries_pass_the_gate_in_sequence_order_whatever_order_they_arrive_in() {
        let gates = Arc::new(Gates::new(Duration::from_secs(5)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for seq in [3u64, 1, 4, 0, 2] {
            let (gates, order) = (gates.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let turn = gates.turn(7, seq).await.expect("its turn");
                order.lock().push(seq);
                turn.done();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
        // A duplicate of an entry already handed on is refused.
        assert_eq!(gates.turn(7, 2).await.err(), Some(Refusal::Broken));
    }

    #[tokio::test]
    async fn a_refused_entry_breaks_the_stream_and_a_missing_one_times_out() {
        let gates = Gates::new(Duration::from_millis(50));
        gates.turn(1, 0).await.unwrap().refused();
        assert_eq!(gates.turn(1, 1).await.err(), Some(Refusal::Broken));
        // Entry 0 of stream 2 never comes: entry 1 gives up, and the stream is broken.
        assert_eq!(gates.turn(2, 1).await.err(), Some(Refusal::Gap));
        assert_eq!(gates.turn(2, 0).await.err(), Some(Refusal::Broken));
        // Other streams are not affected.
        gates.turn(3, 0).await.unwrap().done();
        gates.turn(3, 1).await.unwrap().done();
    }

    #[test]
    fn a_new_stream_after_a_failure_or_a_leader_change() {
        let out = Outgoing::default();
        let (s1, a) = out.next(1);
        let (s1b, b) = out.next(1);
        assert_eq!((s1, a, b), (s1b, 0, 1));
        out.broken(s1);
        let (s2, c) = out.next(1);
        assert_ne!(s2, s1);
        assert_eq!(c, 0);
        let (s3, d) = out.next(2);
        assert_ne!(s3, s2);
        assert_eq!(d, 0);
    }
}
