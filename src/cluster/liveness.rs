//! The leader's liveness pings: a member unreachable for longer than the presence lease is
//! declared down once, which clears its presence.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::{Cluster, network};
use crate::state::Op;
use crate::store::types::NodeId;

impl Cluster {
    /// While this node leads, pings every other member; one unreachable for longer than
    /// `lease` is declared down once (`Op::NodeDown`), which clears its presence. Runs until
    /// `stop`.
    pub fn spawn_liveness(
        self: &Arc<Self>,
        lease: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let every = (lease / 4).max(Duration::from_millis(100));
            let mut last_ok: HashMap<NodeId, tokio::time::Instant> = HashMap::new();
            let mut down: std::collections::HashSet<NodeId> = Default::default();
            let mut was_leader = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
                let m = this.raft.metrics().borrow_watched().clone();
                let leader = m.current_leader == Some(this.id);
                let now = tokio::time::Instant::now();
                if leader && !was_leader {
                    // New leader: everyone gets a full lease before being judged.
                    last_ok.clear();
                    down.clear();
                }
                was_leader = leader;
                if !leader {
                    continue;
                }
                let members: Vec<(NodeId, String)> = m
                    .membership_config
                    .nodes()
                    .filter(|(id, _)| **id != this.id)
                    .map(|(id, n)| (*id, n.addr.clone()))
                    .collect();
                for (id, addr) in members {
                    let client = this.peer(id, &addr, 0);
                    let seen = last_ok.entry(id).or_insert(now);
                    if client.post(network::PING, Vec::new(), every).await.is_ok() {
                        *seen = tokio::time::Instant::now();
                        down.remove(&id);
                    } else if now.duration_since(*seen) > lease && !down.contains(&id) {
                        tracing::warn!(
                            node = id,
                            "node unreachable past the presence lease: declaring it down"
                        );
                        if this.write(vec![Op::NodeDown { node: id }]).await.is_ok() {
                            down.insert(id);
                        }
                    }
                }
            }
        });
    }
}
