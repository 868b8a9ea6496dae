//! The write path's seam: proposers hand operations to the [`Replicator`], which batches them
//! into log entries, commits them and answers each proposer with its results once applied.
//!
//! This is the single-node log: entries are ordered and applied in one task, in memory. The
//! cluster replaces [`LocalLog`] with an openraft log; proposers and the state machine do not
//! change.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, wall_ms};
use crate::state::{Entry, Op, OpResult};

/// Most operations gathered into one entry.
const MAX_BATCH_OPS: usize = 1024;
/// Proposals that may wait for the batcher before proposers are slowed down.
const QUEUE: usize = 8192;

/// Why a proposal was not committed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// The log is shutting down or gone; nothing was committed.
    #[error("log unavailable")]
    Unavailable,
}

struct Proposal {
    ops: Vec<Op>,
    reply: oneshot::Sender<Vec<OpResult>>,
}

/// Handle used by sessions and the API to propose operations.
#[derive(Clone)]
pub struct Replicator {
    tx: mpsc::Sender<Proposal>,
}

impl Replicator {
    /// Proposes operations; resolves with one result per op after they are committed and
    /// applied (so their events have been delivered locally).
    pub async fn propose(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, ProposeError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { ops, reply })
            .await
            .map_err(|_| ProposeError::Unavailable)?;
        rx.await.map_err(|_| ProposeError::Unavailable)
    }

    /// Proposes one operation.
    pub async fn propose_one(&self, op: Op) -> Result<OpResult, ProposeError> {
        let mut r = self.propose(vec![op]).await?;
        r.pop().ok_or(ProposeError::Unavailable)
    }
}

/// The single-node log: one task that stamps, orders and applies entries.
pub struct LocalLog;

impl LocalLog {
    /// Starts the log task; it ends when every [`Replicator`] clone is dropped.
    pub fn start(engine: Arc<Engine>) -> Replicator {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(engine, rx));
        Replicator { tx }
    }
}

async fn run(engine: Arc<Engine>, mut rx: mpsc::Receiver<Proposal>) {
    let mut index = engine.read(|sm| sm.last_applied());
    let mut last_time = 0u64;
    let mut batch: Vec<Proposal> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut n_ops = first.ops.len();
        batch.push(first);
        // Gather what is already waiting: under load many proposals become one entry.
        while n_ops < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(p) => {
                    n_ops += p.ops.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let mut ops = Vec::with_capacity(n_ops);
        let mut counts = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for p in batch.drain(..) {
            counts.push(p.ops.len());
            ops.extend(p.ops);
            replies.push(p.reply);
        }
        index += 1;
        last_time = wall_ms().max(last_time);
        let entry = Entry {
            index,
            time_ms: last_time,
            ops,
        };
        let mut results = engine.apply(&entry).into_iter();
        for (reply, n) in replies.into_iter().zip(counts) {
            let _ = reply.send(results.by_ref().take(n).collect());
        }
    }
}
