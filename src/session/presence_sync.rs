//! Presence reconciliation: this node's own clients against the replicated presence.
//!
//! Failed joins and leaves are retried where they were proposed (`subscribe`), but presence
//! can also be lost with no failed proposal to retry: a node the leader could not reach for
//! the presence lease is declared down (its clients' presence is cleared) while its clients
//! stay connected; a join can commit after its connection already left. So every node
//! compares, every quarter of the presence lease, the presence-keeping subscriptions of its
//! connected clients with the replicated entries recorded for it, and proposes what differs in
//! two sweeps in a row (a join or leave still in flight differs in one): joins for its clients
//! that are missing, leaves for entries whose client is no longer here. Presence then equals
//! the connected, subscribed clients within the lease of any fault healing. When this node
//! learns it was declared down, its missing joins are proposed at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::state::Op;

/// (channel, client id).
type Key = (String, String);

/// Runs the sweeps every `every` until `stop`.
pub fn spawn_presence_sync(node: Arc<Node>, every: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut seen_before: HashSet<Key> = HashSet::new();
        loop {
            let lost = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = node.presence_lost.notified() => true,
                _ = stop.cancelled() => return,
            };
            if node.is_stopping() {
                return;
            }
            let diff = differences(&node);
            let ops: Vec<Op> = diff
                .iter()
                .filter(|(k, op)| {
                    seen_before.contains(*k) || (lost && matches!(op, Op::Join { .. }))
                })
                .map(|(_, op)| op.clone())
                .collect();
            seen_before = diff.into_keys().collect();
            if ops.is_empty() {
                continue;
            }
            let joins = ops.iter().filter(|o| matches!(o, Op::Join { .. })).count();
            match node.replicator.propose(ops.clone()).await {
                Ok(_) => tracing::info!(
                    joins,
                    leaves = ops.len() - joins,
                    "presence reconciled with this node's clients"
                ),
                Err(e) => tracing::debug!(error = %e, "presence reconciliation not committed"),
            }
        }
    });
}

/// What differs now between this node's clients and the replicated presence, as the
/// operations that would fix it.
fn differences(node: &Node) -> HashMap<Key, Op> {
    let id = node.cfg.node.id;
    let mut local: HashMap<Key, Op> = HashMap::new();
    for conn in node.registry.all() {
        if !conn.connected.load(std::sync::atomic::Ordering::Acquire) || conn.out.is_closing() {
            continue;
        }
        let st = conn.state.lock();
        for (channel, sub) in st.subs.iter().filter(|(_, s)| s.presence) {
            let op = Op::Join {
                channel: channel.clone(),
                info: st.client_info(channel),
                node: id,
                incarnation: node.incarnation,
                presence: true,
                join_leave: sub.join_leave,
            };
            local.insert((channel.clone(), st.client.clone()), op);
        }
    }
    // What is left of `local` once the recorded entries are taken out is missing; what is
    // recorded but not local is gone.
    let mut diff = HashMap::new();
    for (channel, e) in node.engine.read(|sm| sm.presence_of_node(id)) {
        let key = (channel.clone(), e.info.client.clone());
        if local.remove(&key).is_none() {
            let op = Op::Leave {
                channel,
                info: e.info,
                presence: true,
                join_leave: e.join_leave,
            };
            diff.insert(key, op);
        }
    }
    diff.extend(local);
    diff
}
