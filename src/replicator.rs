//! The write path's seam: proposers hand operations to the [`Replicator`], which batches
//! everything waiting into one log entry, commits it through a [`Commit`] (the cluster: Raft on
//! the leader, or forwarded to it) and answers each proposer with its results once applied.
//!
//! This module names neither Raft nor the cluster: the cluster implements [`Commit`], and the
//! batcher is unit-tested with a fake one.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::state::{Op, OpResult};

/// Proposals that may wait for the batcher before proposers are slowed down.
const QUEUE: usize = 8192;

/// How the batcher forms entries and how many it keeps in flight (`[cluster]` keys; their
/// defaults live with the config).
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most operations gathered into one entry.
    pub max_ops: usize,
    /// After the first proposal of an entry, wait up to this long for more (0 = take only
    /// what is already queued).
    pub linger: std::time::Duration,
    /// Entries started and not yet committed, where the node can pipeline them (the leader).
    pub max_inflight: usize,
}

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

/// How a started entry ended.
pub enum Attempt {
    /// Committed and applied here.
    Committed(Committed),
    /// Refused before it was appended (this node is no longer the leader): nothing of it can
    /// commit, so it may be retried. The ops come back.
    Refused(Vec<Op>),
    /// Failed, or the outcome is unknown.
    Failed(ProposeError),
}

/// A started entry's outcome.
pub type InFlight = std::pin::Pin<Box<dyn Future<Output = Attempt> + Send>>;

/// Commits log entries. Implemented by the cluster; the replicator's only way down.
pub trait Commit: Send + Sync + 'static {
    /// Commits `ops` as one entry and resolves once it is applied on this node, with one
    /// result per op and the entry's index. Retries only where nothing can have committed.
    fn commit(&self, ops: Vec<Op>) -> impl Future<Output = Result<Committed, ProposeError>> + Send;

    /// Starts `ops` as one entry without waiting for its commit, where this node can (the
    /// leader): resolves once the entry is queued in the log behind every entry started
    /// before it, with its outcome to come. `Err(ops)`: not possible here; use `commit`.
    fn start(&self, ops: Vec<Op>) -> impl Future<Output = Result<InFlight, Vec<Op>>> + Send;
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
    pub fn start<C: Commit>(commit: Arc<C>, batching: Batching) -> Replicator {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(commit, rx, batching));
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

/// The proposers of one entry, answered together.
struct Replies(Vec<(oneshot::Sender<Result<Committed, ProposeError>>, usize)>);

impl Replies {
    /// Answers each proposer with its share of the results, or everyone with the error.
    fn answer(self, r: Result<Committed, ProposeError>) {
        match r {
            Ok((results, index)) => {
                let mut results = results.into_iter();
                for (reply, n) in self.0 {
                    let _ = reply.send(Ok((results.by_ref().take(n).collect(), index)));
                }
            }
            Err(e) => {
                for (reply, _) in self.0 {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// An entry refused before it was appended, to be retried in order or answered.
struct Retry {
    ops: Vec<Op>,
    replies: Replies,
}

/// What a started entry's task hands back to the batcher, in start order.
enum Outcome {
    /// Its proposers were answered; `committed` says whether it committed.
    Answered { committed: bool },
    /// Refused: the batcher decides (order).
    Refused(Retry),
}

/// Gathers the next entry: `first`, whatever is queued behind it and, with a linger, what
/// arrives within it; at most `max_ops` operations (a single larger proposal stays whole).
async fn gather(
    first: Proposal,
    rx: &mut mpsc::Receiver<Proposal>,
    b: &Batching,
) -> (Vec<Op>, Replies) {
    let until = tokio::time::Instant::now() + b.linger;
    let mut n_ops = first.ops.len();
    let mut batch = vec![first];
    while n_ops < b.max_ops {
        let next = match rx.try_recv() {
            Ok(p) => Some(p),
            Err(_) if b.linger.is_zero() => None,
            Err(_) => tokio::time::timeout_at(until, rx.recv())
                .await
                .ok()
                .flatten(),
        };
        let Some(p) = next else { break };
        n_ops += p.ops.len();
        batch.push(p);
    }
    let mut ops = Vec::with_capacity(n_ops);
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        replies.push((p.reply, p.ops.len()));
        ops.extend(p.ops);
    }
    (ops, Replies(replies))
}

/// Entries are formed from whatever is queued (so they grow with load) and started without
/// waiting for earlier ones to commit, up to `max_inflight`; each entry's proposers are
/// answered when it commits. Where an entry cannot be started (no leader is known), it is
/// committed alone, after everything in flight.
async fn run<C: Commit>(commit: Arc<C>, mut rx: mpsc::Receiver<Proposal>, b: Batching) {
    let mut inflight: VecDeque<JoinHandle<Outcome>> = VecDeque::new();
    loop {
        let (has_front, can_take) = (!inflight.is_empty(), inflight.len() < b.max_inflight);
        let next = {
            let front = inflight.front_mut();
            tokio::select! {
                biased;
                done = async { front.expect("has front").await }, if has_front => Next::Done(done),
                p = rx.recv(), if can_take => Next::Proposal(p),
            }
        };
        match next {
            Next::Done(done) => {
                inflight.pop_front();
                if let Ok(Outcome::Refused(r)) = done {
                    settle_refused(&*commit, r, &mut inflight).await;
                }
            }
            Next::Proposal(None) => break,
            Next::Proposal(Some(first)) => {
                let (ops, replies) = gather(first, &mut rx, &b).await;
                match commit.start(ops).await {
                    Ok(attempt) => inflight.push_back(tokio::spawn(async move {
                        match attempt.await {
                            Attempt::Committed(c) => {
                                replies.answer(Ok(c));
                                Outcome::Answered { committed: true }
                            }
                            Attempt::Failed(e) => {
                                replies.answer(Err(e));
                                Outcome::Answered { committed: false }
                            }
                            Attempt::Refused(ops) => Outcome::Refused(Retry { ops, replies }),
                        }
                    })),
                    Err(ops) => {
                        // Everything started before goes first.
                        drain(&*commit, &mut inflight).await;
                        replies.answer(commit.commit(ops).await);
                    }
                }
            }
        }
    }
    drain(&*commit, &mut inflight).await;
}

enum Next {
    Done(Result<Outcome, tokio::task::JoinError>),
    Proposal(Option<Proposal>),
}

/// Waits for every entry in flight, in start order, settling refused ones.
async fn drain<C: Commit>(commit: &C, inflight: &mut VecDeque<JoinHandle<Outcome>>) {
    while let Some(h) = inflight.pop_front() {
        if let Ok(Outcome::Refused(r)) = h.await {
            settle_refused(commit, r, inflight).await;
        }
    }
}

/// An entry was refused (leadership lost). Every entry started after it is waited for: if
/// none of them committed, the refused entries are committed again one at a time, in their
/// order (through the new leader), so order holds; if a later one did commit, retrying would
/// put the refused ones after it, so they are answered "no leader" (not committed, safe to
/// retry) instead.
async fn settle_refused<C: Commit>(
    commit: &C,
    first: Retry,
    inflight: &mut VecDeque<JoinHandle<Outcome>>,
) {
    let mut refused = vec![first];
    let mut later_committed = false;
    while let Some(h) = inflight.pop_front() {
        match h.await {
            Ok(Outcome::Refused(r)) => refused.push(r),
            Ok(Outcome::Answered { committed }) => later_committed |= committed,
            Err(_) => {}
        }
    }
    for r in refused {
        if later_committed {
            r.replies.answer(Err(ProposeError::NoLeader));
        } else {
            r.replies.answer(commit.commit(r.ops).await);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// What the test decides for a started entry.
    enum Decide {
        Commit,
        Refuse,
        Fail,
    }

    /// A fake cluster. As a follower (`leader` false) it commits one entry at a time through
    /// `commit`, holding the first until `gate` opens; as the leader it starts entries and the
    /// test decides each one's outcome through `decide`. `log` is the order entries were
    /// started or committed in; results echo each `NodeDown`'s node as an offset.
    struct Fake {
        leader: bool,
        log: Mutex<Vec<Vec<u64>>>,
        gate: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
        started: mpsc::UnboundedSender<oneshot::Sender<Decide>>,
    }

    fn nodes(ops: &[Op]) -> Vec<u64> {
        ops.iter()
            .map(|o| match o {
                Op::NodeDown { node } => *node,
                _ => u64::MAX,
            })
            .collect()
    }

    fn results(ops: &[Op]) -> Vec<OpResult> {
        nodes(ops)
            .into_iter()
            .map(|n| OpResult::Position {
                offset: n,
                epoch: String::new(),
            })
            .collect()
    }

    impl Commit for Fake {
        async fn commit(&self, ops: Vec<Op>) -> Result<Committed, ProposeError> {
            if let Some(gate) = self.gate.lock().await.take() {
                let _ = self.started.send(oneshot::channel().0);
                let _ = gate.await;
            }
            let mut log = self.log.lock();
            log.push(nodes(&ops));
            if ops.iter().any(|o| matches!(o, Op::NodeDown { node: 0 })) {
                return Err(ProposeError::Failed);
            }
            Ok((results(&ops), log.len() as u64))
        }

        async fn start(&self, ops: Vec<Op>) -> Result<InFlight, Vec<Op>> {
            if !self.leader {
                return Err(ops);
            }
            let index = {
                let mut log = self.log.lock();
                log.push(nodes(&ops));
                log.len() as u64
            };
            let (decide, decided) = oneshot::channel();
            let _ = self.started.send(decide);
            Ok(Box::pin(async move {
                match decided.await {
                    Ok(Decide::Commit) => Attempt::Committed((results(&ops), index)),
                    Ok(Decide::Refuse) => Attempt::Refused(ops),
                    _ => Attempt::Failed(ProposeError::Failed),
                }
            }))
        }
    }

    struct Rig {
        fake: Arc<Fake>,
        r: Replicator,
        open: Option<oneshot::Sender<()>>,
        started: mpsc::UnboundedReceiver<oneshot::Sender<Decide>>,
    }

    fn rig(leader: bool, max_inflight: usize) -> Rig {
        let (open, gate) = oneshot::channel();
        let (started, started_rx) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            leader,
            log: Mutex::new(Vec::new()),
            gate: tokio::sync::Mutex::new((!leader).then_some(gate)),
            started,
        });
        let batching = Batching {
            max_ops: 1024,
            linger: std::time::Duration::ZERO,
            max_inflight,
        };
        let r = Replicator::start(fake.clone(), batching);
        Rig {
            fake,
            r,
            open: Some(open),
            started: started_rx,
        }
    }

    fn down(node: u64) -> Op {
        Op::NodeDown { node }
    }

    fn offsets(r: &[OpResult]) -> Vec<u64> {
        r.iter()
            .map(|r| match r {
                OpResult::Position { offset, .. } => *offset,
                OpResult::Done => 0,
            })
            .collect()
    }

    type Answer = JoinHandle<Result<Committed, ProposeError>>;

    fn propose(r: &Replicator, ops: Vec<Op>) -> Answer {
        let r = r.clone();
        tokio::spawn(async move { r.propose_indexed(ops).await })
    }

    /// Waits until `n` more proposals sit in the batcher's queue.
    async fn queued(r: &Replicator, n: usize) {
        while r.tx.capacity() > QUEUE - n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn proposals_queued_behind_a_commit_become_one_entry_with_results_in_order() {
        let mut g = rig(false, 8);
        let first = propose(&g.r, vec![down(1)]);
        g.started.recv().await.expect("first commit started");
        // The first entry is in flight: these three wait and must form the next entry.
        let rest: Vec<Answer> = [
            vec![down(2), down(3)],
            vec![down(4)],
            vec![down(5), down(6)],
        ]
        .into_iter()
        .map(|ops| propose(&g.r, ops))
        .collect();
        queued(&g.r, 3).await;
        g.open.take().unwrap().send(()).unwrap();
        let (first, _) = first.await.unwrap().unwrap();
        assert_eq!(offsets(&first), vec![1]);
        let mut got = Vec::new();
        for h in rest {
            let (results, index) = h.await.unwrap().unwrap();
            assert_eq!(index, 2, "all three share the second entry");
            got.push(offsets(&results));
        }
        assert_eq!(got, vec![vec![2, 3], vec![4], vec![5, 6]]);
        assert_eq!(*g.fake.log.lock(), vec![vec![1], vec![2, 3, 4, 5, 6]]);
    }

    #[tokio::test]
    async fn a_failed_entry_fails_every_proposal_in_it_and_empty_proposals_commit_nothing() {
        let mut g = rig(false, 8);
        assert_eq!(g.r.propose(Vec::new()).await, Ok(Vec::new()));
        let first = propose(&g.r, vec![down(7)]);
        g.started.recv().await.unwrap();
        let a = propose(&g.r, vec![down(0)]);
        let b = propose(&g.r, vec![down(8)]);
        queued(&g.r, 2).await;
        g.open.take().unwrap().send(()).unwrap();
        assert_eq!(offsets(&first.await.unwrap().unwrap().0), vec![7]);
        assert_eq!(a.await.unwrap(), Err(ProposeError::Failed));
        assert_eq!(b.await.unwrap(), Err(ProposeError::Failed));
        // Still serving after a failure.
        assert_eq!(
            g.r.propose_one(down(9)).await.map(|r| offsets(&[r])),
            Ok(vec![9])
        );
        assert_eq!(g.fake.log.lock().len(), 3);
    }

    #[tokio::test]
    async fn a_proposal_after_the_batcher_is_gone_is_unavailable() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let r = Replicator { tx };
        assert_eq!(r.propose_one(down(1)).await, Err(ProposeError::Unavailable));
    }

    /// The leader starts entries without waiting for earlier commits, up to the bound; each is
    /// answered when its own commit comes, and the next starts as soon as the oldest completes.
    #[tokio::test]
    async fn the_leader_keeps_entries_in_flight_up_to_the_bound() {
        let mut g = rig(true, 3);
        let mut answers = Vec::new();
        let mut decide = Vec::new();
        for n in 1..=3 {
            answers.push(propose(&g.r, vec![down(n)]));
            decide.push(g.started.recv().await.expect("started without waiting"));
        }
        // A fourth waits for room.
        answers.push(propose(&g.r, vec![down(4)]));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(g.fake.log.lock().len(), 3, "at most three in flight");
        // The first commits (Raft commits in log order): answered, and the fourth starts.
        let _ = decide.remove(0).send(Decide::Commit);
        decide.push(g.started.recv().await.expect("fourth started"));
        for d in decide {
            let _ = d.send(Decide::Commit);
        }
        let mut got = Vec::new();
        for a in answers {
            let (r, index) = a.await.unwrap().unwrap();
            got.push((offsets(&r), index));
        }
        assert_eq!(
            got,
            vec![(vec![1], 1), (vec![2], 2), (vec![3], 3), (vec![4], 4)]
        );
        assert_eq!(*g.fake.log.lock(), vec![vec![1], vec![2], vec![3], vec![4]]);
    }

    /// Leadership lost with entries in flight, none of them committed: they are committed
    /// again one at a time in their original order (here through `commit`, as a follower would
    /// forward them), and their proposers get those results.
    #[tokio::test]
    async fn refused_entries_are_retried_in_order_when_nothing_after_them_committed() {
        let mut g = rig(true, 8);
        let a = propose(&g.r, vec![down(1)]);
        let da = g.started.recv().await.unwrap();
        let b = propose(&g.r, vec![down(2)]);
        let db = g.started.recv().await.unwrap();
        let _ = db.send(Decide::Refuse);
        let _ = da.send(Decide::Refuse);
        assert_eq!(offsets(&a.await.unwrap().unwrap().0), vec![1]);
        assert_eq!(offsets(&b.await.unwrap().unwrap().0), vec![2]);
        // Started 1, 2; then committed 1, 2 again, in order.
        assert_eq!(*g.fake.log.lock(), vec![vec![1], vec![2], vec![1], vec![2]]);
    }

    /// A refused entry followed by one that committed cannot be retried without landing after
    /// it: its proposers are told it did not commit (safe to retry), and it is not resent.
    #[tokio::test]
    async fn a_refused_entry_before_a_committed_one_is_answered_not_committed() {
        let mut g = rig(true, 8);
        let a = propose(&g.r, vec![down(1)]);
        let da = g.started.recv().await.unwrap();
        let b = propose(&g.r, vec![down(2)]);
        let db = g.started.recv().await.unwrap();
        let _ = da.send(Decide::Refuse);
        let _ = db.send(Decide::Commit);
        assert_eq!(a.await.unwrap(), Err(ProposeError::NoLeader));
        assert_eq!(offsets(&b.await.unwrap().unwrap().0), vec![2]);
        // And a failed (unknown outcome) entry is answered as such.
        let c = propose(&g.r, vec![down(3)]);
        let _ = g.started.recv().await.unwrap().send(Decide::Fail);
        assert_eq!(c.await.unwrap(), Err(ProposeError::Failed));
        assert_eq!(*g.fake.log.lock(), vec![vec![1], vec![2], vec![3]]);
    }
}
