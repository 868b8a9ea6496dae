//! Handing leadership over before a leader stops (SIGTERM).

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::{Cluster, network};
use crate::store::types::{NodeId, TypeConfig};

/// How often a stepping-down leader asks its successor to campaign until it leads: about one
/// election round, so a campaign under way is not restarted.
const ELECT_EVERY: Duration = Duration::from_millis(250);

impl Cluster {
    /// When this node leads a cluster of several voters, hands leadership to the most
    /// caught-up other voter before the node goes away (SIGTERM), so writes have a leader
    /// again before this node's clients reconnect elsewhere: heartbeats and this node's own
    /// elections stop, and once followers' leader lease has run out the successor is asked
    /// to campaign. Returns the new leader; `None` when this node was not leading, is the only
    /// voter, or no successor took over within `within` (the node then stops as leader, and
    /// the others elect one by timeout).
    pub async fn step_down(&self, within: Duration) -> Option<NodeId> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.id) {
            return None;
        }
        let matched = |id: &NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
        };
        let successor = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .max_by_key(|v| matched(v))?;
        let addr = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == successor)
            .map(|(_, n)| n.addr.clone())?;
        tracing::info!(successor, "stepping down: handing leadership over");
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let deadline = tokio::time::Instant::now() + within;
        let client = self.peer(successor, &addr, 0);
        let mut rx = self.raft.metrics();
        let other_leader =
            |rx: &openraft::type_config::alias::WatchReceiverOf<
                TypeConfig,
                openraft::RaftMetrics<TypeConfig>,
            >| { rx.borrow_watched().current_leader.filter(|l| *l != self.id) };
        // Followers refuse votes while their lease from our last heartbeat lasts. The
        // successor is asked again only every `ELECT_EVERY`, not at every change of this
        // node's metrics: its own vote request changes them, and each new request restarted
        // its campaign with a higher term (dozens of terms burnt per hand-over).
        // This node refuses the first campaign while its own lease lasts (the readiness
        // probes' read-index rounds and the appends of writes keep it, and the followers'
        // leases, fresh); the successor's higher term then deposes it, and the successor is
        // asked again at once: this node now grants its vote.
        let mut next_ask = tokio::time::Instant::now() + self.lease;
        let mut deposed = false;
        loop {
            if let Some(l) = other_leader(&rx) {
                tracing::info!(leader = l, "leadership handed over");
                return Some(l);
            }
            if !deposed && rx.borrow_watched().state != openraft::ServerState::Leader {
                deposed = true;
                next_ask = tokio::time::Instant::now();
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!("no successor took over in time; stopping as leader");
                return None;
            }
            if now >= next_ask {
                let _ = client
                    .post(network::ELECT, Vec::new(), Duration::from_millis(500))
                    .await;
                next_ask = tokio::time::Instant::now() + ELECT_EVERY;
                continue;
            }
            let wait = (next_ask - now).min(deadline - now);
            let _ = tokio::time::timeout(wait, rx.changed()).await;
        }
    }
}
