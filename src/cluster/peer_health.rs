//! Routine peer failures are not errors: a follower down for a rolling restart, a vote request
//! to a node still starting. openraft logs each failed RPC at WARN or ERROR (every heartbeat
//! while a peer is down); [`QuietTransientErrors`] drops those lines, and [`PeerHealth`] logs
//! instead one WARN when a peer becomes unreachable, a WARN summary a minute while it stays so,
//! and one INFO when it is back. openraft's other WARN and ERROR lines (storage, its own task
//! failures) stay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::store::types::NodeId;

/// Parts of openraft's messages for a failed RPC to one peer (heartbeat, append, vote or
/// pre-vote, leader transfer).
const TRANSIENT: &[&str] = &[
    "failed to send a heartbeat",
    "heartbeat stream returned no response",
    "ReplicationCore recv RPCError",
    "update progress error",
    "while requesting vote",
    "while requesting pre-vote",
    "timeout sending transfer_leader",
];

/// How often a peer that stays unreachable is reported again.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// A tracing layer that disables openraft's WARN and ERROR lines about failed RPCs to peers.
pub struct QuietTransientErrors;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QuietTransientErrors {
    fn event_enabled(&self, event: &tracing::Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::WARN || !meta.target().starts_with("openraft") {
            return true;
        }
        let mut message = Message(None);
        event.record(&mut message);
        !message
            .0
            .is_some_and(|m| TRANSIENT.iter().any(|t| m.contains(t)))
    }
}

struct Message(Option<String>);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// Reachability of each peer, from this node's Raft RPC outcomes.
#[derive(Clone, Default)]
pub struct PeerHealth(Arc<Mutex<HashMap<NodeId, Down>>>);

/// A peer that is unreachable: since when, how many calls failed, when it was last reported.
struct Down {
    since: Instant,
    failures: u64,
    reported: Instant,
}

impl PeerHealth {
    /// Records one RPC to `peer`: `Err(why)` when it failed to reach it.
    pub fn record(&self, peer: NodeId, outcome: Result<(), &dyn std::fmt::Display>) {
        let mut down = self.0.lock();
        match outcome {
            Ok(()) => {
                if let Some(d) = down.remove(&peer) {
                    tracing::info!(
                        node = peer,
                        after_ms = d.since.elapsed().as_millis() as u64,
                        failures = d.failures,
                        "peer reachable again"
                    );
                }
            }
            Err(why) => {
                let now = Instant::now();
                match down.get_mut(&peer) {
                    None => {
                        tracing::warn!(node = peer, error = %why, "peer unreachable");
                        down.insert(
                            peer,
                            Down {
                                since: now,
                                failures: 1,
                                reported: now,
                            },
                        );
                    }
                    Some(d) => {
                        d.failures += 1;
                        if now.duration_since(d.reported) >= SUMMARY_EVERY {
                            d.reported = now;
                            tracing::warn!(
                                node = peer,
                                for_s = d.since.elapsed().as_secs(),
                                failures = d.failures,
                                error = %why,
                                "peer still unreachable"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Whether `peer` is currently unreachable.
    #[cfg(test)]
    fn is_down(&self, peer: NodeId) -> bool {
        self.0.lock().contains_key(&peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_goes_down_once_and_comes_back_once() {
        let h = PeerHealth::default();
        let why = "connection refused";
        h.record(2, Ok(()));
        assert!(!h.is_down(2));
        for _ in 0..5 {
            h.record(2, Err(&why));
        }
        assert!(h.is_down(2));
        assert_eq!(h.0.lock()[&2].failures, 5);
        assert!(!h.is_down(3));
        h.record(2, Ok(()));
        assert!(!h.is_down(2));
    }
}
