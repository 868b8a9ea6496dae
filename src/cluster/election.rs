//! When to campaign: as soon as the leader's lease has run out, and the most up-to-date
//! survivor first.
//!
//! openraft 0.9's own election timer waits the leader lease (`election_timeout_max`) *plus* an
//! election timeout after the last word from the leader, and adds twice the maximum again on a
//! node that once saw a greater log, a flag cleared only when that node next campaigns (so one
//! contested election slows every later failover). That timer stays on as a fallback; this
//! driver campaigns earlier:
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
//!   higher vote) for nothing;
//! - a leader whose own flush is slow (openraft's core awaits it and sends no heartbeats
//!   meanwhile) tells its followers every heartbeat that it still leads, for at most
//!   [`KEEP_LEADING`] leases of one flush. A follower hands that word to openraft as an empty
//!   append from the leader (it checks only the vote), so it resets openraft's election timer
//!   as well as this driver's: a disk that stalls for a moment does not cost a leader change,
//!   a dead one still does, a lease after the leader stops saying it;
//! - silence while this node itself was not running (its runtime's workers stalled: the tick
//!   woke late) does not count: messages from a live leader may be waiting to be read.
//!
//! Each of these only decides *when* to ask; Raft's vote rules decide who wins, so safety does
//! not depend on any of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use openraft::ServerState;
use openraft::raft::{VoteRequest, VoteResponse};
use parking_lot::Mutex;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::store::types::NodeId;

/// What this node heard that bears on when it should campaign; shared by the inbound and
/// outbound Raft RPC and the driver task.
pub(super) struct Elections {
    /// Last word from a leader (an accepted append) or a vote this node granted.
    heard: Mutex<Instant>,
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
    /// The leader's heartbeat interval.
    heartbeat: Duration,
}

/// A leader keeps saying it leads through one slow flush for at most this many leases.
const KEEP_LEADING: u32 = 2;

impl Elections {
    pub(super) fn new(heartbeat: Duration, election_min: Duration, election_max: Duration) -> Self {
        Elections {
            heard: Mutex::new(Instant::now()),
            campaigned: Mutex::new(None),
            hold_until: Mutex::new(None),
            urgent: AtomicBool::new(false),
            storing: AtomicUsize::new(0),
            lease: election_max,
            spread: election_max
                .saturating_sub(election_min)
                .max(Duration::from_millis(10)),
            retry: heartbeat * 2,
            heartbeat,
            tick: (heartbeat / 4).clamp(Duration::from_millis(5), Duration::from_millis(50)),
        }
    }

    /// A leader's append (or snapshot) was accepted: it is alive.
    pub(super) fn heard_from_leader(&self) {
        *self.heard.lock() = Instant::now();
        *self.campaigned.lock() = None;
        self.urgent.store(false, Ordering::Relaxed);
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

    /// Whether a leader whose flush has run for `flushing` (none running: `None`) should tell
    /// its followers now that it still leads, having last done so at `last_said`: once a
    /// heartbeat, from a heartbeat into the flush until [`KEEP_LEADING`] leases into it.
    fn say_leading(
        &self,
        flushing: Option<Duration>,
        last_said: Option<Instant>,
        now: Instant,
    ) -> bool {
        flushing.is_some_and(|f| f >= self.heartbeat && f <= self.lease * KEEP_LEADING)
            && last_said.is_none_or(|t| now.duration_since(t) >= self.heartbeat)
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
        req: &VoteRequest<NodeId>,
        resp: &VoteResponse<NodeId>,
    ) {
        if resp.vote_granted {
            self.heard_from_leader();
            return;
        }
        let candidate = req.vote.leader_id().voted_for();
        match req.last_log_id.cmp(&resp.last_log_id) {
            std::cmp::Ordering::Greater => self.behind(),
            std::cmp::Ordering::Less => self.urgent.store(true, Ordering::Relaxed),
            std::cmp::Ordering::Equal if candidate.is_some_and(|c| me < c) => {
                self.urgent.store(true, Ordering::Relaxed)
            }
            std::cmp::Ordering::Equal => self.behind(),
        }
    }

    /// A peer's answer to this node's vote request.
    pub(super) fn saw_vote_response(&self, req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>) {
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
            let mut last_said: Option<Instant> = None;
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
                let m = this.raft.server_metrics().borrow().clone();
                let membership = m.membership_config.membership();
                let voter = membership.voter_ids().any(|v| v == this.id);
                let voters = membership.voter_ids().count();
                if m.state == ServerState::Leader {
                    this.keep_leading(&m, &mut last_said);
                }
                if m.state == ServerState::Leader || !voter || voters < 2 {
                    e.heard_from_leader();
                    continue;
                }
                let now = Instant::now();
                if !e.due(extra, now) {
                    continue;
                }
                tracing::info!(
                    silent_ms = now.duration_since(*e.heard.lock()).as_millis() as u64,
                    term = m.vote.leader_id().term,
                    "no word from a leader: campaigning"
                );
                e.urgent.store(false, Ordering::Relaxed);
                *e.campaigned.lock() = Some(now);
                extra = e.random_extra();
                if this.raft.trigger().elect().await.is_err() {
                    return;
                }
            }
        });
    }
}

impl Cluster {
    /// As the leader, while its own flush has run longer than a heartbeat (and less than
    /// [`KEEP_LEADING`] leases): tells every other member it still leads, once a heartbeat.
    fn keep_leading(
        self: &Arc<Self>,
        m: &openraft::metrics::RaftServerMetrics<NodeId, openraft::BasicNode>,
        last_said: &mut Option<Instant>,
    ) {
        let e = &self.elections;
        let now = Instant::now();
        if !e.say_leading(self.store.flushing_for(), *last_said, now) {
            return;
        }
        *last_said = Some(now);
        let body = serde_json::to_vec(&super::rpc::Leading {
            term: m.vote.leader_id().term,
            leader: self.id,
        })
        .expect("serialise");
        for (id, node) in m.membership_config.nodes() {
            if *id == self.id {
                continue;
            }
            let client = self.peer(*id, &node.addr, 0);
            let (body, timeout) = (body.clone(), e.heartbeat);
            tokio::spawn(async move {
                let _ = client.post(super::network::LEADING, body, timeout).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{LeaderId, LogId, Vote};

    use super::*;

    const HB: Duration = Duration::from_millis(100);
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_millis(800);

    fn vote_req(candidate: NodeId, last: Option<u64>) -> VoteRequest<NodeId> {
        VoteRequest::new(
            Vote::new(2, candidate),
            last.map(|i| LogId::new(LeaderId::new(1, 1), i)),
        )
    }

    fn answer(granted: bool, last: Option<u64>) -> VoteResponse<NodeId> {
        VoteResponse::new(
            Vote::new(2, 1),
            last.map(|i| LogId::new(LeaderId::new(1, 1), i)),
            granted,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_flush_is_announced_once_a_heartbeat_for_at_most_two_leases() {
        let e = Elections::new(HB, MIN, MAX);
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert!(!e.say_leading(None, None, now), "no flush running");
        assert!(
            !e.say_leading(Some(ms(50)), None, now),
            "a flush within a heartbeat"
        );
        assert!(e.say_leading(Some(ms(150)), None, now));
        assert!(e.say_leading(Some(ms(1600)), None, now), "up to two leases");
        assert!(
            !e.say_leading(Some(ms(1700)), None, now),
            "a disk stuck past two leases is left to an election"
        );
        assert!(
            !e.say_leading(Some(ms(400)), Some(now - ms(60)), now),
            "said less than a heartbeat ago"
        );
        assert!(e.say_leading(Some(ms(400)), Some(now - ms(100)), now));
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
