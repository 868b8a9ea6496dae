//! When to campaign: as soon as the leader's lease has run out, and the most up-to-date
//! survivor first.
//!
//! openraft's own election timer is off (`enable_elect: false`): it waits only an election
//! timeout after the last word from the leader, adds more on a node that once saw a greater
//! log (a flag cleared only when that node next campaigns, so one contested election slowed
//! every later failover), and knows none of the rules below. This driver decides alone:
//! - a voter that is the only voter and not leading campaigns at once (a single node, also
//!   after a restart), unless a leader's append arrived within the lease or is being stored:
//!   then its membership is stale (that leader's entries say who the voters are), and
//!   taking over at once would only raise the term against a live leader;
//! - first, once nothing was heard from a leader for the lease plus a random part of
//!   `election_timeout_max - election_timeout_min` (voters refuse any candidate until their own
//!   lease has run out, so campaigning sooner cannot win);
//! - at once (the lease having run out) when a candidate with a shorter log asked for this
//!   node's vote: this node would win, that one cannot;
//! - not for another lease after learning that a peer has a longer log (from its vote request
//!   or its answer to ours), nor after granting a vote: that candidate should win;
//! - after a split vote (both survivors campaigned with equal logs), the lower node id again at
//!   once, the other one holds: the next round is not split again;
//! - never while this node is still storing an append from the leader it follows: openraft
//!   answers an append only once it is on this node's disk, so a slow fsync here (a busy or
//!   throttled disk) is silence this node causes itself, not a dead leader. Campaigning then
//!   would raise the term and depose a healthy leader (its next append is answered with the
//!   higher vote) for nothing. Nor within a lease of this node's own last flush (openraft
//!   may hold the leader's appends and heartbeats behind it, and the leader gives up on
//!   them meanwhile);
//! - silence while this node itself was not running (its runtime's workers stalled: the tick
//!   woke late) does not count: messages from a live leader may be waiting to be read.
//!
//! Each of these only decides *when* to ask; Raft's vote rules decide who wins, so safety does
//! not depend on any of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{VoteRequest, VoteResponse};
use parking_lot::Mutex;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::store::types::{NodeId, TypeConfig};

/// What this node heard that bears on when it should campaign; shared by the inbound and
/// outbound Raft RPC and the driver task.
pub(super) struct Elections {
    /// Last word from a leader (an accepted append) or a vote this node granted.
    heard: Mutex<Instant>,
    /// Last word from another node that this node followed or voted for (not reset while this
    /// node leads or is no voter, unlike `heard`).
    followed: Mutex<Option<Instant>>,
    /// This node's last campaign since then.
    campaigned: Mutex<Option<Instant>>,
    /// Not before this instant: a peer with a longer log should win.
    hold_until: Mutex<Option<Instant>>,
    /// Campaign without the random delay once the lease has run out.
    urgent: AtomicBool,
    /// Appends from the followed leader that this node is still storing.
    storing: AtomicUsize,
    /// Followers' leader lease (`election_timeout_max`).
    lease: Duration,
    /// Random delay added to the lease on a first campaign, and the bound of a retry's.
    spread: Duration,
    /// Least wait between two campaigns.
    retry: Duration,
    /// How often the driver looks.
    tick: Duration,
}

impl Elections {
    pub(super) fn new(heartbeat: Duration, election_min: Duration, election_max: Duration) -> Self {
        Elections {
            heard: Mutex::new(Instant::now()),
            followed: Mutex::new(None),
            campaigned: Mutex::new(None),
            hold_until: Mutex::new(None),
            urgent: AtomicBool::new(false),
            storing: AtomicUsize::new(0),
            lease: election_max,
            spread: election_max
                .saturating_sub(election_min)
                .max(Duration::from_millis(10)),
            retry: heartbeat * 2,
            tick: (heartbeat / 4).clamp(Duration::from_millis(5), Duration::from_millis(50)),
        }
    }

    /// A leader's append (or snapshot) was accepted, or this node granted a vote: another
    /// node leads or is about to.
    pub(super) fn heard_from_leader(&self) {
        *self.followed.lock() = Some(Instant::now());
        self.quiet();
    }

    /// Nothing to campaign for (this node leads, or is no voter): the silence counts from now.
    fn quiet(&self) {
        *self.heard.lock() = Instant::now();
        *self.campaigned.lock() = None;
        self.urgent.store(false, Ordering::Relaxed);
    }

    /// Whether this node, as the only voter, should take over now: not while it stores a
    /// leader's append, nor within the lease after the last word from another node.
    fn alone(&self, now: Instant) -> bool {
        self.storing.load(Ordering::Relaxed) == 0
            && self
                .followed
                .lock()
                .is_none_or(|t| now.duration_since(t) >= self.lease)
    }

    /// An append from a leader at least as new as the one this node follows arrived; until
    /// the guard is dropped (answered), this node does not campaign.
    pub(super) fn storing(&self) -> Storing<'_> {
        self.storing.fetch_add(1, Ordering::Relaxed);
        Storing(self)
    }

    /// This node's driver woke `lost` later than it asked (its own runtime was stalled):
    /// that much of the silence since the last word is this node's, not the leader's.
    fn lost_time(&self, lost: Duration) {
        let mut heard = self.heard.lock();
        *heard = (*heard + lost).min(Instant::now());
    }

    /// This node's own store is flushing: the silence so far is this node's (see the module
    /// documentation); it counts again from now.
    fn own_flush(&self) {
        *self.heard.lock() = Instant::now();
    }

    /// A peer has a longer log than this node: let it win.
    fn behind(&self) {
        *self.hold_until.lock() = Some(Instant::now() + self.lease);
        self.urgent.store(false, Ordering::Relaxed);
    }

    /// What a vote request to this node says about when it should campaign. `resp` is this
    /// node's answer; its `last_log_id` is this node's log head.
    pub(super) fn saw_vote_request(
        &self,
        me: NodeId,
        req: &VoteRequest<TypeConfig>,
        resp: &VoteResponse<TypeConfig>,
    ) {
        if resp.vote_granted {
            self.heard_from_leader();
            return;
        }
        let candidate = req.vote.leader_id().node_id;
        match req.last_log_id.cmp(&resp.last_log_id) {
            std::cmp::Ordering::Greater => self.behind(),
            std::cmp::Ordering::Less => self.urgent.store(true, Ordering::Relaxed),
            std::cmp::Ordering::Equal if me < candidate => {
                self.urgent.store(true, Ordering::Relaxed)
            }
            std::cmp::Ordering::Equal => self.behind(),
        }
    }

    /// A peer's answer to this node's vote request.
    pub(super) fn saw_vote_response(
        &self,
        req: &VoteRequest<TypeConfig>,
        resp: &VoteResponse<TypeConfig>,
    ) {
        if !resp.vote_granted && resp.last_log_id > req.last_log_id {
            self.behind();
        }
    }

    /// Whether to campaign now, with this round's random part of the wait (`extra`): never
    /// before the lease has run out since the last word, then at once when urgent, else a
    /// first campaign after the lease plus `extra`, a retry `retry + extra` after the last.
    fn due(&self, extra: Duration, now: Instant) -> bool {
        if self.hold_until.lock().is_some_and(|t| now < t) {
            return false;
        }
        if self.storing.load(Ordering::Relaxed) > 0 {
            return false;
        }
        if now.duration_since(*self.heard.lock()) < self.lease {
            return false;
        }
        if self.urgent.load(Ordering::Relaxed) {
            return true;
        }
        match *self.campaigned.lock() {
            None => now.duration_since(*self.heard.lock()) >= self.lease + extra,
            Some(t) => now.duration_since(t) >= self.retry + extra,
        }
    }

    fn random_extra(&self) -> Duration {
        let ms = self.spread.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(0..ms))
    }
}

/// An append being stored (see [`Elections::storing`]).
pub(super) struct Storing<'a>(&'a Elections);

impl Drop for Storing<'_> {
    fn drop(&mut self) {
        self.0.storing.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cluster {
    /// Runs the election driver until `stop` (see the module documentation).
    pub fn spawn_elections(self: &Arc<Self>, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let e = &this.elections;
            let mut extra = e.random_extra();
            loop {
                let asked = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(e.tick) => {}
                    _ = stop.cancelled() => return,
                }
                let slept = asked.elapsed();
                if slept > e.tick * 2 {
                    e.lost_time(slept - e.tick);
                }
                let m = this.raft.server_metrics().borrow_watched().clone();
                let membership = m.membership_config.membership();
                let voter = membership.voter_ids().any(|v| v == this.id);
                let voters = membership.voter_ids().count();
                if m.state == ServerState::Leader || !voter {
                    e.quiet();
                    continue;
                }
                if this.store.flushing() {
                    e.own_flush();
                }
                let now = Instant::now();
                if voters == 1 {
                    // Nobody else to ask: this node leads at once (again after `retry` if
                    // that did not take), unless another node leads it (see the module
                    // documentation).
                    if !e.alone(now)
                        || e.campaigned
                            .lock()
                            .is_some_and(|t| now.duration_since(t) < e.retry)
                    {
                        continue;
                    }
                    tracing::info!(term = m.vote.leader_id().term, "the only voter: leading");
                } else {
                    if !e.due(extra, now) {
                        continue;
                    }
                    tracing::info!(
                        silent_ms = now.duration_since(*e.heard.lock()).as_millis() as u64,
                        term = m.vote.leader_id().term,
                        "no word from a leader: campaigning"
                    );
                    e.urgent.store(false, Ordering::Relaxed);
                    extra = e.random_extra();
                }
                *e.campaigned.lock() = Some(now);
                if this.raft.trigger().elect(false).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderIdExt;

    use super::*;
    use crate::store::types::{LogId, Vote};

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    const HB: Duration = Duration::from_millis(100);
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_millis(800);

    fn vote_req(candidate: NodeId, last: Option<u64>) -> VoteRequest<TypeConfig> {
        VoteRequest::new(
            Vote::new(2, candidate),
            last.map(|i| LogId::new(LeaderId::new_committed(1, 1), i)),
        )
    }

    fn answer(granted: bool, last: Option<u64>) -> VoteResponse<TypeConfig> {
        VoteResponse::new(
            Vote::new(2, 1),
            last.map(|i| LogId::new(LeaderId::new_committed(1, 1), i)),
            granted,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_campaign_waits_the_lease_plus_its_random_part() {
        let e = Elections::new(HB, MIN, MAX);
        let extra = Duration::from_millis(120);
        tokio::time::advance(MAX - Duration::from_millis(1)).await;
        assert!(
            !e.due(extra, Instant::now()),
            "not before the lease has run out"
        );
        tokio::time::advance(extra).await;
        assert!(!e.due(extra, Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(e.due(extra, Instant::now()));
        e.heard_from_leader();
        assert!(
            !e.due(extra, Instant::now()),
            "a leader's append restarts the wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_only_voter_takes_over_at_once_unless_another_node_leads_it() {
        let e = Elections::new(HB, MIN, MAX);
        assert!(
            e.alone(Instant::now()),
            "a fresh or restarted node leads at once"
        );
        e.quiet();
        assert!(
            e.alone(Instant::now()),
            "having led itself is no word from another node"
        );
        e.heard_from_leader();
        assert!(!e.alone(Instant::now()), "a leader's append: follow it");
        tokio::time::advance(MAX - Duration::from_millis(1)).await;
        assert!(!e.alone(Instant::now()), "for the whole lease");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(e.alone(Instant::now()), "then that leader is gone");
        let storing = e.storing();
        assert!(
            !e.alone(Instant::now()),
            "not while storing a leader's append"
        );
        drop(storing);
        assert!(e.alone(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_counts_from_this_nodes_own_last_flush() {
        let e = Elections::new(HB, MIN, MAX);
        tokio::time::advance(MAX * 3).await;
        assert!(e.due(Duration::ZERO, Instant::now()), "a lease of silence");
        e.own_flush();
        assert!(
            !e.due(Duration::ZERO, Instant::now()),
            "the silence was this node's flush"
        );
        tokio::time::advance(MAX).await;
        assert!(
            e.due(Duration::ZERO, Instant::now()),
            "a lease after the flush"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_campaign_while_an_append_from_the_leader_is_being_stored() {
        let e = Elections::new(HB, MIN, MAX);
        let storing = e.storing();
        tokio::time::advance(MAX * 3).await;
        assert!(
            !e.due(Duration::ZERO, Instant::now()),
            "a slow disk here is not a dead leader"
        );
        let second = e.storing();
        drop(storing);
        assert!(!e.due(Duration::ZERO, Instant::now()), "one still storing");
        drop(second);
        assert!(
            e.due(Duration::ZERO, Instant::now()),
            "a failed append leaves the silence counted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn time_this_node_was_stalled_is_not_the_leaders_silence() {
        let e = Elections::new(HB, MIN, MAX);
        tokio::time::advance(MAX + Duration::from_millis(300)).await;
        assert!(e.due(Duration::ZERO, Instant::now()));
        // All of it (more than there was) was this node's own stall.
        e.lost_time(Duration::from_secs(5));
        assert!(!e.due(Duration::ZERO, Instant::now()), "a fresh lease");
        tokio::time::advance(MAX).await;
        assert!(
            e.due(Duration::ZERO, Instant::now()),
            "silence after waking counts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_log_asking_makes_it_urgent_a_longer_one_holds() {
        let e = Elections::new(HB, MIN, MAX);
        let extra = Duration::from_millis(250);
        // This node (2) has log up to 10; node 3 asks with 9: this node should win, at once
        // once its own lease has run out.
        e.saw_vote_request(2, &vote_req(3, Some(9)), &answer(false, Some(10)));
        assert!(
            !e.due(extra, Instant::now()),
            "urgent never overrides the lease"
        );
        tokio::time::advance(MAX).await;
        assert!(e.due(extra, Instant::now()), "urgent: no random part");
        // Node 3 asks with 11: it should win; this node holds for a lease.
        e.saw_vote_request(2, &vote_req(3, Some(11)), &answer(false, Some(10)));
        assert!(!e.due(Duration::ZERO, Instant::now()));
        tokio::time::advance(MAX).await;
        assert!(e.due(Duration::ZERO, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_vote_is_broken_by_the_lower_id_and_a_grant_waits() {
        let lower = Elections::new(HB, MIN, MAX);
        let higher = Elections::new(HB, MIN, MAX);
        tokio::time::advance(MAX).await;
        lower.saw_vote_request(1, &vote_req(2, Some(5)), &answer(false, Some(5)));
        higher.saw_vote_request(2, &vote_req(1, Some(5)), &answer(false, Some(5)));
        let far = Duration::from_secs(10);
        assert!(
            lower.due(far, Instant::now()),
            "the lower id retries at once"
        );
        assert!(
            !higher.due(Duration::ZERO, Instant::now()),
            "the higher id holds"
        );
        // Granting a vote counts as word from a leader.
        lower.saw_vote_request(1, &vote_req(2, Some(6)), &answer(true, Some(5)));
        assert!(!lower.due(Duration::ZERO, Instant::now()));
        // A peer answering one of our requests with a longer log makes this node hold.
        let e = Elections::new(HB, MIN, MAX);
        tokio::time::advance(MAX).await;
        e.saw_vote_response(&vote_req(1, Some(5)), &answer(false, Some(6)));
        assert!(!e.due(Duration::ZERO, Instant::now()));
    }
}
