//! Readiness: "this node can serve current data and commit" (`/readyz`, systemd's READY=1).
//!
//! A node is ready when it is a member, knows a leader, that leader confirmed its leadership
//! with a quorum recently (a read index, openraft's `get_read_log_id`), and this node has
//! applied everything the leader had committed when it first confirmed after the node (re)
//! joined. So a node restarted behind a leader that kept committing is not ready until it has
//! caught up (its own log head says nothing about what it missed), and a node that loses its
//! leader or the leader its quorum stops being ready once the last confirmation is older than
//! the election timeout.
//!
//! A task probes every heartbeat interval: the leader asks openraft for a read index (which
//! heartbeats a quorum), a follower asks the leader for one over `/cluster/read-index`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Cluster, network};

/// What the probes found.
pub(super) struct Readiness {
    /// Applied up to the leader's read index since the leader was last (re)confirmed.
    synced: AtomicBool,
    /// When a leader last confirmed its leadership with a quorum (as seen by this node).
    confirmed: Mutex<Option<Instant>>,
    /// How old a confirmation may be.
    fresh: Duration,
    /// How often to probe.
    every: Duration,
    /// Told after every probe.
    changed: Notify,
}

impl Readiness {
    /// Probing every `heartbeat`; a confirmation is fresh for the election timeout less one
    /// probe period (at least `election_min`), so readiness ends within an election timeout.
    pub(super) fn new(heartbeat: Duration, election_min: Duration, election_max: Duration) -> Self {
        Readiness {
            synced: AtomicBool::new(false),
            confirmed: Mutex::new(None),
            fresh: election_max.saturating_sub(heartbeat).max(election_min),
            every: heartbeat,
            changed: Notify::new(),
        }
    }

    /// A leader confirmed recently and this node has applied what it had committed then.
    pub(super) fn holds(&self) -> bool {
        self.confirmed_recently() && self.synced.load(Ordering::Acquire)
    }

    /// A leader confirmed its leadership with a quorum within the election timeout (as this
    /// node last saw): the cluster has a working majority.
    pub(super) fn confirmed_recently(&self) -> bool {
        self.confirmed
            .lock()
            .is_some_and(|t| t.elapsed() <= self.fresh)
    }

    /// Waits for the next probe.
    pub(super) async fn changed(&self) {
        let _ = tokio::time::timeout(self.every * 4, self.changed.notified()).await;
    }
}

impl Cluster {
    /// On the leader: the read index, once a quorum confirmed the leadership (bounded).
    pub(super) async fn read_index(&self) -> Option<u64> {
        let read = self.raft.get_read_log_id(openraft::ReadPolicy::ReadIndex);
        match tokio::time::timeout(self.ready.fresh, read).await {
            Ok(Ok((read, _))) => Some(read.index()),
            _ => None,
        }
    }

    /// The current leader's confirmed read index: asked of openraft on the leader, of the
    /// leader over the cluster listener elsewhere.
    async fn leader_read_index(&self) -> Option<u64> {
        let (leader, addr) = self.leader()?;
        if leader == self.id {
            return self.read_index().await;
        }
        let client = self.peer(leader, &addr, 0);
        let body = client
            .post(network::READ_INDEX, Vec::new(), self.ready.fresh)
            .await
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()?
            .get("index")?
            .as_u64()
    }

    /// Waits, at most `cluster.propose_timeout`, until this node has applied everything the
    /// leader had committed when asked (a read index confirmed by a quorum), waiting for a
    /// leader if there is none yet. False if that could not be done in time.
    pub async fn catch_up(&self) -> bool {
        let deadline = tokio::time::Instant::now() + self.propose_timeout;
        let index = loop {
            if self.wait_for_leader(deadline).await.is_none() {
                return false;
            }
            if let Some(index) = self.leader_read_index().await {
                break index;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(self.ready.every).await;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "caught up with the leader")
            .await
            .is_ok()
    }

    /// One probe: refreshes the confirmation, and marks the node synced once it has applied
    /// the read index; a stale confirmation (leader or quorum lost) unsyncs it.
    async fn probe_readiness(&self) {
        let r = &self.ready;
        match self.leader_read_index().await {
            Some(index) => {
                *r.confirmed.lock() = Some(Instant::now());
                let applied = self
                    .raft
                    .metrics()
                    .borrow_watched()
                    .last_applied
                    .map_or(0, |l| l.index);
                if applied >= index {
                    r.synced.store(true, Ordering::Release);
                }
            }
            None => {
                let stale = r.confirmed.lock().is_none_or(|t| t.elapsed() > r.fresh);
                if stale {
                    r.synced.store(false, Ordering::Release);
                }
            }
        }
        r.changed.notify_waiters();
    }

    /// Probes readiness every heartbeat interval until `stop`.
    pub fn spawn_readiness(self: &Arc<Self>, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.probe_readiness().await;
                tokio::select! {
                    _ = tokio::time::sleep(this.ready.every) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmation_is_fresh_for_the_election_timeout_less_one_probe() {
        let r = Readiness::new(
            Duration::from_millis(250),
            Duration::from_millis(1000),
            Duration::from_millis(2000),
        );
        assert_eq!(r.fresh, Duration::from_millis(1750));
        assert!(!r.holds(), "nothing confirmed yet");
        *r.confirmed.lock() = Some(Instant::now());
        assert!(!r.holds(), "confirmed but not synced");
        r.synced.store(true, Ordering::Release);
        assert!(r.holds());
        *r.confirmed.lock() = Some(Instant::now() - Duration::from_millis(1800));
        assert!(!r.holds(), "a stale confirmation");
        let tight = Readiness::new(
            Duration::from_millis(500),
            Duration::from_millis(150),
            Duration::from_millis(300),
        );
        assert_eq!(tight.fresh, Duration::from_millis(150));
    }
}
