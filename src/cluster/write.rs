//! Writes: one batch of operations becomes one log entry, committed on the leader or
//! forwarded to it; the replicator's [`Commit`].

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use super::forward::Sequenced;
use super::{Cluster, network};
use crate::engine::wall_ms;
use crate::peer::{PeerClient, PeerError};
use crate::replicator::{Attempt, Commit, Committed, InFlight, ProposeError};
use crate::state::{Op, OpResult};
use crate::store::types::{Batch, NodeId, Raft};

/// What `/cluster/propose` carries back.
#[derive(Serialize, Deserialize)]
pub(super) enum Forwarded {
    /// Committed: the results and the log index of the entry.
    Ok(Vec<OpResult>, u64),
    /// Not committed (no leader, or not the leader any more); safe to retry.
    Retry(String),
    /// Outcome unknown.
    Failed(String),
}

impl Commit for Cluster {
    fn commit(
        &self,
        ops: Vec<Op>,
    ) -> impl std::future::Future<Output = Result<Committed, ProposeError>> + Send {
        self.write(ops)
    }

    fn start(
        &self,
        ops: Vec<Op>,
    ) -> impl std::future::Future<Output = Result<InFlight, Vec<Op>>> + Send {
        self.start_entry(ops)
    }
}

/// Waits (bounded) until this node has applied `index`, so that what a caller reads here
/// after its forwarded write includes it.
async fn applied_here(raft: &Raft, index: u64, left: Duration) {
    let applied = raft
        .wait(Some(left.max(Duration::from_secs(1))))
        .applied_index_at_least(Some(index), "forwarded write applied")
        .await;
    if let Err(e) = applied {
        tracing::warn!(index, error = %e, "forwarded write committed but not yet applied here");
    }
}

impl Cluster {
    /// The leader's wall clock for a new entry, never going backwards across entries.
    fn stamp(&self) -> u64 {
        let mut t = self.last_time.lock();
        *t = wall_ms().max(*t);
        *t
    }

    /// Starts an entry without waiting for earlier ones: on the leader into Raft, on a
    /// follower on its forwarding stream; with no known leader the ops are given back (the
    /// replicator then commits them one at a time, waiting for a leader).
    async fn start_entry(&self, ops: Vec<Op>) -> Result<InFlight, Vec<Op>> {
        match self.leader() {
            Some((leader, _)) if leader == self.id => self.start_on_leader(ops).await,
            Some((leader, addr)) => Ok(self.start_forward(leader, &addr, ops)),
            None => Err(ops),
        }
    }

    /// On the leader (`start_entry` checked), hands `ops` to Raft as one entry without waiting
    /// for its commit (`client_write_ff`: queued in the log in call order); gives the ops back
    /// if Raft does not take them. (Leadership lost in between is `ForwardToLeader`: refused.)
    async fn start_on_leader(&self, ops: Vec<Op>) -> Result<InFlight, Vec<Op>> {
        // Shared with the entry: copied back out only if Raft refuses it.
        let ops: std::sync::Arc<[Op]> = ops.into();
        let batch = Batch {
            time_ms: self.stamp(),
            ops: ops.clone(),
        };
        let (responder, outcome) = openraft::impls::ProgressResponder::complete_only();
        if self
            .raft
            .client_write_ff(batch, Some(responder))
            .await
            .is_err()
        {
            return Err(ops.to_vec());
        }
        let timeout = self.propose_timeout;
        Ok(Box::pin(async move {
            // Bounded like `write`: on timeout the entry may still commit, outcome unknown.
            match tokio::time::timeout(timeout, outcome).await {
                Ok(Ok(Ok(resp))) => Attempt::Committed((resp.data, resp.log_id.index)),
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => Attempt::Refused(ops.to_vec()),
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "write failed");
                    Attempt::Failed(ProposeError::Failed)
                }
                Ok(Err(_)) => {
                    tracing::warn!("write dropped by Raft (shutting down?)");
                    Attempt::Failed(ProposeError::Failed)
                }
                Err(_) => {
                    tracing::warn!("write not committed in time (no quorum?)");
                    Attempt::Failed(ProposeError::Failed)
                }
            }
        }))
    }

    /// Commits `ops` as one log entry (through the leader) and returns their results and the
    /// entry's log index once it is applied on this node too (read-your-writes on followers).
    /// Retries only where nothing can have been committed.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(Vec<OpResult>, u64), ProposeError> {
        let deadline = tokio::time::Instant::now() + self.propose_timeout;
        loop {
            let Some((leader, addr)) = self.wait_for_leader(deadline).await else {
                return Err(ProposeError::NoLeader);
            };
            let retry = if leader == self.id {
                let batch = Batch {
                    time_ms: self.stamp(),
                    ops: ops.as_slice().into(),
                };
                // Bounded: a leader cut off from its quorum would otherwise wait forever. On
                // timeout the entry may still commit later, so the outcome is unknown.
                match tokio::time::timeout_at(deadline, self.raft.client_write(batch)).await {
                    Ok(Ok(resp)) => return Ok((resp.data, resp.log_id.index)),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "write failed");
                        return Err(ProposeError::Failed);
                    }
                    Err(_) => {
                        tracing::warn!("write not committed in time (no quorum?)");
                        return Err(ProposeError::Failed);
                    }
                }
            } else {
                let posted = tokio::select! {
                    r = self.forward_to(leader, &addr, &ops, deadline) => r,
                    () = leader_moved(&self.raft, leader) => Err(moved(leader)),
                };
                match posted {
                    Ok(Forwarded::Ok(r, index)) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        applied_here(&self.raft, index, left).await;
                        return Ok((r, index));
                    }
                    Ok(Forwarded::Retry(_)) => true,
                    Ok(Forwarded::Failed(why)) => {
                        tracing::warn!(leader, why, "forwarded write failed");
                        return Err(ProposeError::Failed);
                    }
                    Err(PeerError::Unreachable { .. }) => true,
                    Err(e) => {
                        tracing::warn!(leader, error = %e, "forwarded write failed");
                        return Err(ProposeError::Failed);
                    }
                }
            };
            if retry {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ProposeError::NoLeader);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    async fn forward_to(
        &self,
        leader: NodeId,
        addr: &str,
        ops: &[Op],
        deadline: tokio::time::Instant,
    ) -> Result<Forwarded, PeerError> {
        let client = self.peer(leader, addr, 0);
        metrics::counter!(crate::metrics::FORWARDED_ENTRIES, "path" => "sequential").increment(1);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let body = serde_json::to_vec(ops).expect("ops serialise");
        post_forwarded(&client, body, left.max(Duration::from_millis(100))).await
    }

    /// On a follower, sends `ops` to the leader as the next entry of this node's forwarding
    /// stream without waiting for earlier ones (see `forward`); the entries in flight use
    /// connections of their own. A refused or failed entry ends the stream.
    fn start_forward(&self, leader: NodeId, addr: &str, ops: Vec<Op>) -> InFlight {
        let (stream, seq) = self.outgoing.next(leader);
        metrics::counter!(crate::metrics::FORWARDED_ENTRIES, "path" => "pipelined").increment(1);
        let client = self.peer(leader, addr, 1 + seq as usize % self.forward_slots);
        let body = serde_json::to_vec(&Sequenced {
            stream,
            seq,
            ops: &ops[..],
        })
        .expect("ops serialise");
        let (raft, outgoing, timeout) = (
            self.raft.clone(),
            self.outgoing.clone(),
            self.propose_timeout,
        );
        Box::pin(async move {
            let posted = tokio::select! {
                r = post_forwarded(&client, body, timeout) => r,
                () = leader_moved(&raft, leader) => Err(moved(leader)),
            };
            let attempt = match posted {
                Ok(Forwarded::Ok(r, index)) => {
                    applied_here(&raft, index, timeout).await;
                    return Attempt::Committed((r, index));
                }
                Ok(Forwarded::Retry(_)) | Err(PeerError::Unreachable { .. }) => {
                    Attempt::Refused(ops)
                }
                Ok(Forwarded::Failed(why)) => {
                    tracing::warn!(leader, why, "forwarded write failed");
                    Attempt::Failed(ProposeError::Failed)
                }
                Err(e) => {
                    tracing::warn!(leader, error = %e, "forwarded write failed");
                    Attempt::Failed(ProposeError::Failed)
                }
            };
            outgoing.broken(stream);
            attempt
        })
    }
}

/// Resolves once this node knows a leader other than `from`: a forward still waiting for
/// `from` (paused, or cut off) is then answered at once instead of after the propose timeout.
/// (Server metrics change only with the vote, role, leader or membership; the full metrics
/// change with every append and apply, which would wake every forward in flight each time.)
async fn leader_moved(raft: &Raft, from: NodeId) {
    let mut rx = raft.server_metrics();
    loop {
        if rx
            .borrow_watched()
            .current_leader
            .is_some_and(|l| l != from)
        {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The error for a forward abandoned because the leader changed: it may have reached the old
/// leader, so its outcome is unknown.
fn moved(from: NodeId) -> PeerError {
    PeerError::Failed {
        addr: format!("node {from}"),
        why: "a new leader was elected while the write was forwarded to the old one".into(),
    }
}

/// Posts a forwarded entry to the leader and reads its answer.
async fn post_forwarded(
    client: &PeerClient,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Forwarded, PeerError> {
    let bytes = client.post(network::PROPOSE, body, timeout).await?;
    serde_json::from_slice(&bytes).map_err(|e| PeerError::Failed {
        addr: client.addr().to_string(),
        why: e.to_string(),
    })
}
