//! The inbound side of the cluster listener: Raft RPC from peers, forwarded proposals, the
//! leader's pings and a stepping-down leader's request to campaign.

use serde::Serialize;

use super::write::Forwarded;
use super::{Cluster, network};
use crate::replicator::{Committed, ProposeError};
use crate::state::Op;

impl Cluster {
    /// Handles an inbound cluster request; returns HTTP status and body. `propose` commits
    /// forwarded operations through this node's own write path (its batcher).
    pub async fn handle_rpc<F, Fut>(&self, path: &str, body: &[u8], propose: F) -> (u16, Vec<u8>)
    where
        F: FnOnce(Vec<Op>) -> Fut,
        Fut: std::future::Future<Output = Result<Committed, ProposeError>>,
    {
        fn reply<T: Serialize>(v: &T) -> (u16, Vec<u8>) {
            (200, serde_json::to_vec(v).expect("serialise"))
        }
        match path {
            network::APPEND => match serde_json::from_slice(body) {
                Ok(req) => reply(&self.raft.append_entries(req).await),
                Err(_) => (400, Vec::new()),
            },
            network::VOTE => match serde_json::from_slice(body) {
                Ok(req) => reply(&self.raft.vote(req).await),
                Err(_) => (400, Vec::new()),
            },
            network::SNAPSHOT => match serde_json::from_slice(body) {
                Ok(req) => reply(&self.raft.install_snapshot(req).await),
                Err(_) => (400, Vec::new()),
            },
            network::PROPOSE => {
                let Ok(ops) = serde_json::from_slice::<Vec<Op>>(body) else {
                    return (400, Vec::new());
                };
                if self.raft.metrics().borrow().current_leader != Some(self.id) {
                    return reply(&Forwarded::Retry("not the leader".into()));
                }
                match propose(ops).await {
                    Ok((r, index)) => reply(&Forwarded::Ok(r, index)),
                    Err(ProposeError::NoLeader) => reply(&Forwarded::Retry("no leader".into())),
                    Err(e) => reply(&Forwarded::Failed(e.to_string())),
                }
            }
            network::PING => (200, b"{}".to_vec()),
            network::ELECT => {
                tracing::info!("asked to campaign by a leader stepping down");
                match self.raft.trigger().elect().await {
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
}
