//! The write path's seam: proposers hand operations to the [`Replicator`], which batches
//! everything waiting into one log entry, commits it through the cluster (Raft: on the leader,
//! or forwarded to it) and answers each proposer with its results once applied.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::cluster::Cluster;
use crate::state::{Op, OpResult};

/// Most operations gathered into one entry.
const MAX_BATCH_OPS: usize = 1024;
/// Proposals that may wait for the batcher before proposers are slowed down.
const QUEUE: usize = 8192;

/// Why a proposal was not committed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// No leader could be reached in time; nothing was committed. Retrying is safe.
    #[error("no leader: not committed")]
    NoLeader,
    /// The commit failed or its outcome is unknown.
    #[error("write failed")]
    Failed,
    /// The node is shutting down.
    #[error("log unavailable")]
    Unavailable,
}

struct Proposal {
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<(Vec<OpResult>, u64), ProposeError>>,
}

/// Handle used by sessions, the API and forwarded proposals to commit operations.
#[derive(Clone)]
pub struct Replicator {
    tx: mpsc::Sender<Proposal>,
}

impl Replicator {
    /// Starts the batcher; it ends when every clone is dropped.
    pub fn start(cluster: Arc<Cluster>) -> Replicator {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(cluster, rx));
        Replicator { tx }
    }

    /// Proposes operations; resolves with one result per op after they are committed and
    /// applied here (so local subscribers have been handed their events).
    pub async fn propose(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, ProposeError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        self.propose_indexed(ops).await.map(|(r, _)| r)
    }

    /// Like [`Replicator::propose`], also returning the log index of the entry.
    pub async fn propose_indexed(
        &self,
        ops: Vec<Op>,
    ) -> Result<(Vec<OpResult>, u64), ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { ops, reply })
            .await
            .map_err(|_| ProposeError::Unavailable)?;
        rx.await.map_err(|_| ProposeError::Unavailable)?
    }

    /// Proposes one operation.
    pub async fn propose_one(&self, op: Op) -> Result<OpResult, ProposeError> {
        let mut r = self.propose(vec![op]).await?;
        r.pop().ok_or(ProposeError::Failed)
    }
}

/// One entry in flight at a time; whatever queues meanwhile becomes the next entry, so
/// batches grow with load and a commit's cost is shared by everything in it.
async fn run(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Proposal>) {
    let mut batch: Vec<Proposal> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut n_ops = first.ops.len();
        batch.push(first);
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
        match cluster.write(ops).await {
            Ok((results, index)) => {
                let mut results = results.into_iter();
                for (reply, n) in replies.into_iter().zip(counts) {
                    let _ = reply.send(Ok((results.by_ref().take(n).collect(), index)));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
