//! The write path's seam: proposers hand operations to the [`Replicator`], which batches
//! everything waiting into one log entry, commits it through a [`Commit`] (the cluster: Raft on
//! the leader, or forwarded to it) and answers each proposer with its results once applied.
//!
//! This module names neither Raft nor the cluster: the cluster implements [`Commit`], and the
//! batcher is unit-tested with a fake one.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

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

/// What a committed entry gives back: one result per op, and the entry's log index.
pub type Committed = (Vec<OpResult>, u64);

/// Commits one log entry. Implemented by the cluster; the replicator's only way down.
pub trait Commit: Send + Sync + 'static {
    /// Commits `ops` as one entry and resolves once it is applied on this node, with one
    /// result per op and the entry's index. Retries only where nothing can have committed.
    fn commit(&self, ops: Vec<Op>) -> impl Future<Output = Result<Committed, ProposeError>> + Send;
}

struct Proposal {
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<Committed, ProposeError>>,
}

/// Handle used by sessions, the API and forwarded proposals to commit operations.
#[derive(Clone)]
pub struct Replicator {
    tx: mpsc::Sender<Proposal>,
}

impl Replicator {
    /// Starts the batcher; it ends when every clone is dropped.
    pub fn start<C: Commit>(commit: Arc<C>) -> Replicator {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(commit, rx));
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
    pub async fn propose_indexed(&self, ops: Vec<Op>) -> Result<Committed, ProposeError> {
        self.submit(ops).await?.await
    }

    /// Hands `ops` to the batcher and returns without waiting for the commit: once this
    /// resolves, the proposal is queued behind every proposal submitted before it (so one
    /// caller's submissions commit in submission order), and the returned [`Pending`] resolves
    /// with the results. Waits only while the batcher's queue is full.
    pub async fn submit(&self, ops: Vec<Op>) -> Result<Pending, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { ops, reply })
            .await
            .map_err(|_| ProposeError::Unavailable)?;
        Ok(Pending { rx })
    }

    /// Proposes one operation.
    pub async fn propose_one(&self, op: Op) -> Result<OpResult, ProposeError> {
        let mut r = self.propose(vec![op]).await?;
        r.pop().ok_or(ProposeError::Failed)
    }
}

/// A submitted proposal: resolves with its results once its entry is committed and applied
/// here, or with why not.
pub struct Pending {
    rx: oneshot::Receiver<Result<Committed, ProposeError>>,
}

impl Future for Pending {
    type Output = Result<Committed, ProposeError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ProposeError::Unavailable)))
    }
}

/// One entry in flight at a time; whatever queues meanwhile becomes the next entry, so
/// batches grow with load and a commit's cost is shared by everything in it.
async fn run<C: Commit>(commit: Arc<C>, mut rx: mpsc::Receiver<Proposal>) {
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
        match commit.commit(ops).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// A fake commit: records each entry's ops and holds the first commit until released, so
    /// proposals queue behind it; fails entries containing a `NodeDown { node: 0 }`.
    struct Fake {
        entries: Mutex<Vec<Vec<Op>>>,
        gate: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
        started: mpsc::UnboundedSender<()>,
    }

    impl Commit for Fake {
        async fn commit(&self, ops: Vec<Op>) -> Result<Committed, ProposeError> {
            let _ = self.started.send(());
            if let Some(gate) = self.gate.lock().await.take() {
                let _ = gate.await;
            }
            let fail = ops.iter().any(|o| matches!(o, Op::NodeDown { node: 0 }));
            let mut entries = self.entries.lock();
            entries.push(ops.clone());
            if fail {
                return Err(ProposeError::Failed);
            }
            let index = entries.len() as u64;
            let results = ops
                .iter()
                .map(|o| match o {
                    Op::NodeDown { node } => OpResult::Position {
                        offset: *node,
                        epoch: String::new(),
                    },
                    _ => OpResult::Done,
                })
                .collect();
            Ok((results, index))
        }
    }

    fn down(node: u64) -> Op {
        Op::NodeDown { node }
    }

    fn offset(r: &OpResult) -> u64 {
        match r {
            OpResult::Position { offset, .. } => *offset,
            OpResult::Done => 0,
        }
    }

    fn fake() -> (Arc<Fake>, oneshot::Sender<()>, mpsc::UnboundedReceiver<()>) {
        let (open, gate) = oneshot::channel();
        let (started, started_rx) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            entries: Mutex::new(Vec::new()),
            gate: tokio::sync::Mutex::new(Some(gate)),
            started,
        });
        (fake, open, started_rx)
    }

    #[tokio::test]
    async fn proposals_queued_behind_a_commit_become_one_entry_with_results_in_order() {
        let (fake, open, mut started) = fake();
        let r = Replicator::start(fake.clone());
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.propose(vec![down(1)]).await }
        });
        started.recv().await.expect("first commit started");
        // The first entry is in flight: these three wait and must form the next entry.
        let mut rest = Vec::new();
        for ops in [
            vec![down(2), down(3)],
            vec![down(4)],
            vec![down(5), down(6)],
        ] {
            let r = r.clone();
            rest.push(tokio::spawn(async move { r.propose_indexed(ops).await }));
        }
        // Each proposal is queued once the batcher's channel holds it.
        while r.tx.capacity() > QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        open.send(()).unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.iter().map(offset).collect::<Vec<_>>(), vec![1]);
        let mut got = Vec::new();
        for h in rest {
            let (results, index) = h.await.unwrap().unwrap();
            assert_eq!(index, 2, "all three share the second entry");
            got.push(results.iter().map(offset).collect::<Vec<_>>());
        }
        assert_eq!(got, vec![vec![2, 3], vec![4], vec![5, 6]]);
        let entries = fake.entries.lock();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].len(), 5);
    }

    #[tokio::test]
    async fn a_failed_entry_fails_every_proposal_in_it_and_empty_proposals_commit_nothing() {
        let (fake, open, mut started) = fake();
        let r = Replicator::start(fake.clone());
        assert_eq!(r.propose(Vec::new()).await, Ok(Vec::new()));
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.propose_one(down(7)).await }
        });
        started.recv().await.unwrap();
        let a = tokio::spawn({
            let r = r.clone();
            async move { r.propose(vec![down(0)]).await }
        });
        let b = tokio::spawn({
            let r = r.clone();
            async move { r.propose(vec![down(8)]).await }
        });
        while r.tx.capacity() > QUEUE - 2 {
            tokio::task::yield_now().await;
        }
        open.send(()).unwrap();
        assert_eq!(first.await.unwrap().map(|r| offset(&r)), Ok(7));
        assert_eq!(a.await.unwrap(), Err(ProposeError::Failed));
        assert_eq!(b.await.unwrap(), Err(ProposeError::Failed));
        // Still serving after a failure.
        assert_eq!(r.propose_one(down(9)).await.map(|r| offset(&r)), Ok(9));
        assert_eq!(fake.entries.lock().len(), 3);
    }

    #[tokio::test]
    async fn a_proposal_after_the_batcher_is_gone_is_unavailable() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let r = Replicator { tx };
        assert_eq!(r.propose_one(down(1)).await, Err(ProposeError::Unavailable));
    }
}
