//! The inbound side of the cluster listener: Raft RPC from peers, forwarded proposals, the
//! leader's pings and a stepping-down leader's request to campaign.

use serde::Serialize;

use openraft::async_runtime::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};

use super::forward::{Proposed, Sequenced};
use super::write::Forwarded;
use super::{Cluster, network};
use crate::replicator::{Pending, ProposeError};
use crate::state::Op;
use crate::store::types::{Snapshot, TypeConfig, Vote};

/// A [`network::SNAPSHOT`] request's vote and snapshot: its JSON head, a newline, the bytes.
fn parse_snapshot(body: &[u8]) -> Option<(Vote, Snapshot)> {
    let split = body.iter().position(|b| *b == b'\n')?;
    let head: network::SnapshotHead = serde_json::from_slice(&body[..split]).ok()?;
    let snapshot = Snapshot {
        meta: head.meta,
        snapshot: std::io::Cursor::new(body[split + 1..].to_vec()),
    };
    Some((head.vote, snapshot))
}

impl Cluster {
    /// Handles an inbound cluster request; returns HTTP status and body. `submit` hands
    /// forwarded operations to this node's own write path (its batcher).
    pub async fn handle_rpc<F, Fut>(&self, path: &str, body: &[u8], submit: F) -> (u16, Vec<u8>)
    where
        F: FnOnce(Vec<Op>) -> Fut,
        Fut: std::future::Future<Output = Result<Pending, ProposeError>>,
    {
        fn reply<T: Serialize>(v: &T) -> (u16, Vec<u8>) {
            (200, serde_json::to_vec(v).expect("serialise"))
        }
        match path {
            network::APPEND => match serde_json::from_slice(body) {
                Ok(req) => {
                    let req: AppendEntriesRequest<TypeConfig> = req;
                    let followed = self.raft.metrics().borrow_watched().vote;
                    let _storing = (req.vote.is_committed() && req.vote >= followed)
                        .then(|| self.elections.storing());
                    let resp = self.raft.append_entries(req).await;
                    if resp
                        .as_ref()
                        .is_ok_and(|r| !matches!(r, AppendEntriesResponse::HigherVote(_)))
                    {
                        self.elections.heard_from_leader();
                    }
                    reply(&resp)
                }
                Err(_) => (400, Vec::new()),
            },
            network::VOTE => match serde_json::from_slice::<VoteRequest<TypeConfig>>(body) {
                Ok(req) => {
                    let resp = self.raft.vote(req.clone()).await;
                    if let Ok(r) = &resp {
                        self.elections.saw_vote_request(self.id, &req, r);
                    }
                    reply(&resp)
                }
                Err(_) => (400, Vec::new()),
            },
            network::PRE_VOTE => match serde_json::from_slice::<VoteRequest<TypeConfig>>(body) {
                Ok(req) => reply(&self.raft.pre_vote(req).await),
                Err(_) => (400, Vec::new()),
            },
            network::SNAPSHOT => match parse_snapshot(body) {
                Some((vote, snapshot)) => {
                    let resp = self.raft.install_full_snapshot(vote, snapshot).await;
                    if resp.is_ok() {
                        self.elections.heard_from_leader();
                    }
                    reply(&resp)
                }
                None => (400, Vec::new()),
            },
            network::PROPOSE => match Proposed::parse(body) {
                Some(p) => reply(&self.take_forwarded(p, submit).await),
                None => (400, Vec::new()),
            },
            network::PING => (200, b"{}".to_vec()),
            network::READ_INDEX => match self.read_index().await {
                Some(index) => reply(&serde_json::json!({ "index": index })),
                None => (503, Vec::new()),
            },
            network::ELECT => {
                tracing::info!("asked to campaign by a leader stepping down");
                match self.raft.trigger().elect(false).await {
                    Ok(()) => (200, b"{}".to_vec()),
                    Err(_) => (503, Vec::new()),
                }
            }
            p if p.starts_with(network::ADMIN_PREFIX) => {
                let op = &p[network::ADMIN_PREFIX.len()..];
                self.admin(op, body, false).await
            }
            _ => (404, Vec::new()),
        }
    }

    /// A forwarded entry: a sequenced one waits for its turn in its stream, so entries a
    /// follower pipelines are submitted (and so appended) in the order it started them.
    async fn take_forwarded<F, Fut>(&self, p: Proposed, submit: F) -> Forwarded
    where
        F: FnOnce(Vec<Op>) -> Fut,
        Fut: std::future::Future<Output = Result<Pending, ProposeError>>,
    {
        let (ops, turn) = match p {
            Proposed::Plain(ops) => (ops, None),
            Proposed::Sequenced(Sequenced { stream, seq, ops }) => {
                match self.gates.turn(stream, seq).await {
                    Ok(turn) => (ops, Some(turn)),
                    Err(why) => return Forwarded::Retry(format!("stream refused: {why:?}")),
                }
            }
        };
        if self.raft.metrics().borrow_watched().current_leader != Some(self.id) {
            if let Some(t) = turn {
                t.refused();
            }
            return Forwarded::Retry("not the leader".into());
        }
        let pending = match submit(ops).await {
            Ok(pending) => {
                if let Some(t) = turn {
                    t.done();
                }
                pending
            }
            Err(e) => {
                // Not submitted (the batcher is gone: shutting down): safe to retry.
                if let Some(t) = turn {
                    t.refused();
                }
                return Forwarded::Retry(e.to_string());
            }
        };
        match pending.await {
            Ok((r, index)) => Forwarded::Ok(r, index),
            Err(ProposeError::NoLeader) => Forwarded::Retry("no leader".into()),
            Err(e) => Forwarded::Failed(e.to_string()),
        }
    }
}
