//! Readiness and the typed status that operators (`/cluster/status`), the metrics and the
//! status page read.

use std::collections::BTreeMap;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::store::types::NodeId;

/// Most log entries a node may have yet to apply and still call itself ready.
pub const READY_LAG: u64 = 1000;

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: NodeId,
    /// Its cluster address.
    pub addr: String,
    /// A voter (not a learner).
    pub voter: bool,
    /// Whether this node reached it when it last asked (itself: always); absent when the
    /// status was made without asking (the metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// Why it gave no answer, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What this node knows of the cluster (`GET /cluster/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub id: NodeId,
    /// Raft role: `Leader`, `Follower`, `Candidate`, `Learner`, `Shutdown`.
    pub state: String,
    /// Raft term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Last applied index on this node.
    pub applied_index: Option<u64>,
    /// Index of the last snapshot.
    pub snapshot_index: Option<u64>,
    /// Members.
    pub nodes: Vec<NodeStatus>,
    /// Entries each follower is behind (on the leader; node id → lag, `None` = unknown).
    pub follower_lag: BTreeMap<String, Option<u64>>,
    /// The store's size on disk.
    pub store_bytes: u64,
    /// A leader confirmed its leadership with a quorum within the election timeout, as this
    /// node last saw: false means no majority is at work (nothing can commit).
    #[serde(default)]
    pub quorum: bool,
}

impl ClusterStatus {
    /// This node leads.
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.id)
    }

    /// Records what this node found when it asked member `id` just now: whether it reached
    /// it and, when it got no answer, why.
    pub fn mark(&mut self, id: NodeId, reachable: bool, error: Option<String>) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.id == id) {
            n.reachable = Some(reachable);
            n.error = error;
        }
    }
}

impl Cluster {
    /// Ready: a member, with a known leader that confirmed its leadership with a quorum
    /// within the election timeout, having applied what that leader had committed when it
    /// (re)joined (see `ready`), and within [`READY_LAG`] entries of its log head.
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let member = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some();
        let applied = m.last_applied.map_or(0, |l| l.index);
        let head = m.last_log_index.unwrap_or(0);
        let caught_up = m.state == ServerState::Leader || head.saturating_sub(applied) <= READY_LAG;
        member && m.current_leader.is_some() && caught_up && self.ready.holds()
    }

    /// Resolves once [`Cluster::is_ready`] holds.
    pub async fn wait_ready(&self) {
        while !self.is_ready() {
            if self.raft.metrics().borrow_watched().running_state.is_err() {
                return;
            }
            self.ready.changed().await;
        }
    }

    /// Cluster status for operators.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let nodes = m
            .membership_config
            .nodes()
            .map(|(id, n)| NodeStatus {
                id: *id,
                addr: n.addr.clone(),
                voter: membership.voter_ids().any(|v| v == *id),
                reachable: None,
                error: None,
            })
            .collect();
        let last = m.last_log_index.unwrap_or(0);
        let follower_lag = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, matched)| {
                        let idx = matched.map(|l| l.index);
                        (id.to_string(), idx.map(|i| last.saturating_sub(i)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClusterStatus {
            id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            nodes,
            follower_lag,
            store_bytes: self.store.size_on_disk(),
            quorum: self.ready.confirmed_recently(),
        }
    }
}
