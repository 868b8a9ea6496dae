//! Questions to every other member over the cluster listener, asked at once, each bounded by
//! a timeout: what the cluster-wide `info` and `channels` and the status page are made of.
//! Every member is in the answer, with what it said or why it said nothing, so a caller can
//! report a silent node instead of leaving it out. A caller that polls (`/cluster/status`,
//! the status page) waits a short time for fresh replies and otherwise takes the last ones,
//! so it never waits long for a member that does not answer (only the very first time).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;

use super::Cluster;
use crate::peer::PeerClient;
use crate::store::types::NodeId;

/// One other member's reply to a question.
#[derive(Debug, Clone)]
pub struct MemberReply {
    /// Its node id.
    pub id: NodeId,
    /// Its cluster address.
    pub addr: String,
    /// What it answered.
    pub reply: Reply,
}

/// What a member answered.
#[derive(Debug, Clone)]
pub enum Reply {
    /// HTTP 200 with this body.
    Ok(Bytes),
    /// Another HTTP status (e.g. 404 from a version that does not know the question): the
    /// member is reachable but gave no answer.
    Refused(String),
    /// Nothing within the timeout: not reachable (or too busy to answer).
    NoAnswer(String),
}

/// Clients kept for questions, one per member, apart from the connections Raft RPC and
/// forwarding use (a slow question never delays a heartbeat or a forwarded write); and the
/// last replies to each question asked through [`Cluster::ask_members_recent`].
#[derive(Default)]
pub(super) struct Askers {
    clients: Mutex<HashMap<NodeId, Arc<PeerClient>>>,
    recent: Mutex<HashMap<&'static str, Recent>>,
}

/// The last replies to one question.
#[derive(Default)]
struct Recent {
    /// When the last asking ended, and its replies.
    last: Option<(Instant, Vec<MemberReply>)>,
    /// An asking is under way.
    asking: bool,
}

impl Cluster {
    /// The members other than this node (voters and learners), by id.
    fn other_members(&self) -> Vec<(NodeId, String)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let mut members: Vec<(NodeId, String)> = m
            .membership_config
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        members.sort_by_key(|(id, _)| *id);
        members
    }

    fn asker(&self, id: NodeId, addr: &str) -> Arc<PeerClient> {
        let mut askers = self.askers.clients.lock();
        let c = askers
            .entry(id)
            .or_insert_with(|| Arc::new(PeerClient::with_link(addr, self.link.clone())));
        if c.addr() != addr {
            *c = Arc::new(PeerClient::with_link(addr, self.link.clone()));
        }
        c.clone()
    }

    /// POSTs `body` to `path` on member `id` (not this node) and returns its status and body;
    /// `Ok(None)` when `id` is no member, `Err` when it did not answer within `timeout`.
    pub async fn ask_member(
        &self,
        id: NodeId,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<(u16, Bytes)>, String> {
        let Some((_, addr)) = self.other_members().into_iter().find(|(m, _)| *m == id) else {
            return Ok(None);
        };
        let client = self.asker(id, &addr);
        match tokio::time::timeout(timeout, client.post_answer(path, body, timeout)).await {
            Ok(Ok((status, bytes))) => Ok(Some((status.as_u16(), bytes))),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// POSTs `body` to `path` on every other member at once; each reply within `timeout`
    /// (the whole call, waiting for the connection included). Ordered by node id.
    pub async fn ask_members(
        &self,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Vec<MemberReply> {
        let mut asked = tokio::task::JoinSet::new();
        for (i, (id, addr)) in self.other_members().into_iter().enumerate() {
            let client = self.asker(id, &addr);
            let (path, body) = (path.to_string(), body.to_vec());
            asked.spawn(async move {
                let call = client.post_answer(&path, body, timeout);
                let reply = match tokio::time::timeout(timeout, call).await {
                    Ok(Ok((status, bytes))) if status.is_success() => Reply::Ok(bytes),
                    Ok(Ok((status, _))) => Reply::Refused(format!("answered HTTP {status}")),
                    Ok(Err(e)) => Reply::NoAnswer(e.to_string()),
                    Err(_) => Reply::NoAnswer(format!("no answer within {timeout:?}")),
                };
                (i, MemberReply { id, addr, reply })
            });
        }
        let mut replies: Vec<(usize, MemberReply)> = asked.join_all().await;
        replies.sort_by_key(|(i, _)| *i);
        replies.into_iter().map(|(_, r)| r).collect()
    }

    /// The replies to `path` (an empty question), with their age. When the last ones are
    /// older than `patience` a new asking starts, and its replies are awaited for at most
    /// `patience`: a member that answers late (or never) is then shown from the last asking,
    /// and the asking goes on in the background. The very first time waits for the asking
    /// (at most `timeout`).
    pub async fn ask_members_recent(
        self: &Arc<Self>,
        path: &'static str,
        timeout: Duration,
        patience: Duration,
    ) -> (Vec<MemberReply>, Duration) {
        let (last, start) = {
            let mut recent = self.askers.recent.lock();
            let r = recent.entry(path).or_default();
            let stale = r
                .last
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() > patience);
            let start = stale && !r.asking;
            r.asking |= start;
            (r.last.clone(), start)
        };
        if start {
            let this = self.clone();
            let mut asking = tokio::spawn(async move {
                let replies = this.ask_members(path, b"{}", timeout).await;
                this.keep_replies(path, replies.clone());
                replies
            });
            let wait = if last.is_some() { patience } else { timeout };
            if let Ok(Ok(replies)) = tokio::time::timeout(wait, &mut asking).await {
                return (replies, Duration::ZERO);
            }
        }
        match last {
            Some((at, replies)) => (replies, at.elapsed()),
            // Another caller's first asking is under way, or this one ran out of time.
            None => (Vec::new(), Duration::ZERO),
        }
    }

    fn keep_replies(&self, path: &'static str, replies: Vec<MemberReply>) {
        let mut recent = self.askers.recent.lock();
        let r = recent.entry(path).or_default();
        r.last = Some((Instant::now(), replies));
        r.asking = false;
    }
}
