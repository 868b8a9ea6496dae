//! Outbound Raft RPC: openraft's network traits over HTTP to each peer's cluster listener.
//! Requests and responses are JSON; a remote Raft error travels back as the `Err` of the
//! serialised `Result`.

use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Serialize, de::DeserializeOwned};

use super::election::Elections;
use super::peer_health::PeerHealth;
use crate::peer::{Link, PeerClient, PeerError};
use crate::store::types::{NodeId, TypeConfig};

/// Paths of the inbound handlers (`cluster::rpc`).
pub const APPEND: &str = "/raft/append";
/// Vote path.
pub const VOTE: &str = "/raft/vote";
/// Snapshot chunk path.
pub const SNAPSHOT: &str = "/raft/snapshot";
/// Proposal forwarding path.
pub const PROPOSE: &str = "/cluster/propose";
/// Liveness check by the leader.
pub const PING: &str = "/cluster/ping";
/// A follower asks the leader for a read index confirmed by a quorum (readiness).
pub const READ_INDEX: &str = "/cluster/read-index";
/// A leader whose own flush is slow tells its followers it still leads (`election`).
pub const LEADING: &str = "/cluster/leading";
/// A leader stepping down asks its successor to campaign now.
pub const ELECT: &str = "/cluster/elect";
/// Membership changes forwarded to the leader: `/cluster/admin/<op>`.
pub const ADMIN_PREFIX: &str = "/cluster/admin/";

/// Makes one network client per target node.
#[derive(Clone)]
pub struct Network {
    /// How outgoing connections are made (source IP, mutual TLS).
    pub link: Link,
    /// Peers' reachability, logged on changes.
    pub health: PeerHealth,
    /// When to campaign: told what peers answer to this node's vote requests.
    pub(super) elections: Arc<Elections>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            client: Arc::new(PeerClient::with_link(node.addr.clone(), self.link.clone())),
            health: self.health.clone(),
            elections: self.elections.clone(),
        }
    }
}

/// Raft RPC to one peer.
pub struct Peer {
    target: NodeId,
    client: Arc<PeerClient>,
    health: PeerHealth,
    elections: Arc<Elections>,
}

type Rpc<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl Peer {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, ttl: Duration) -> Rpc<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let posted = self.client.post(path, body, ttl).await;
        match &posted {
            Ok(_) => self.health.record(self.target, Ok(())),
            Err(e) => self.health.record(self.target, Err(e)),
        }
        let bytes = posted.map_err(|e| match e {
            PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            PeerError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        let res: Result<Resp, E> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.call(APPEND, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(SNAPSHOT, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<NodeId>, RaftError<NodeId>> {
        let resp = self.call(VOTE, &rpc, option.hard_ttl()).await;
        if let Ok(r) = &resp {
            self.elections.saw_vote_response(&rpc, r);
        }
        resp
    }
}
