//! Outbound Raft RPC: openraft's network traits over HTTP to each peer's cluster listener.
//! Requests and responses are JSON; a remote Raft error travels back as the `Err` of the
//! serialised `Result`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream};
use openraft::BasicNode;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2, stream_append_sequential};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::append_stream::{self, Conn, Session};
use super::election::Elections;
use super::peer_health::PeerHealth;
use crate::peer::{Link, PeerClient, PeerError};
use crate::store::types::{NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// Paths of the inbound handlers (`cluster::rpc`).
pub const APPEND: &str = "/raft/append";
/// Pipelined appends: upgraded to an append stream (`cluster::append_stream`).
pub const APPEND_STREAM: &str = "/raft/append-stream";
/// Vote path.
pub const VOTE: &str = "/raft/vote";
/// Pre-vote path: would the peer grant this vote (nothing is stored, no term changes)?
pub const PRE_VOTE: &str = "/raft/pre-vote";
/// Whole-snapshot path: a JSON [`SnapshotHead`], a newline, then the snapshot's bytes.
pub const SNAPSHOT: &str = "/raft/full-snapshot";
/// Proposal forwarding path.
pub const PROPOSE: &str = "/cluster/propose";
/// Liveness check by the leader.
pub const PING: &str = "/cluster/ping";
/// A follower asks the leader for a read index confirmed by a quorum (readiness).
pub const READ_INDEX: &str = "/cluster/read-index";
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
    /// Appends kept in flight to each follower (`cluster.append_pipeline`); 1 sends each
    /// after the previous one was answered, as plain requests.
    pub(super) pipeline: usize,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            client: Arc::new(PeerClient::with_link(node.addr.clone(), self.link.clone())),
            health: self.health.clone(),
            elections: self.elections.clone(),
            pipeline: self.pipeline,
            idle: Default::default(),
            sequential: self.pipeline <= 1,
        }
    }
}

/// Raft RPC to one peer.
pub struct Peer {
    target: NodeId,
    client: Arc<PeerClient>,
    health: PeerHealth,
    elections: Arc<Elections>,
    pipeline: usize,
    /// The append stream kept open between sessions.
    idle: parking_lot::Mutex<Option<Conn>>,
    /// Appends go one at a time as plain requests: pipelining is off, or the peer does not
    /// serve append streams (an older version, during a rolling upgrade).
    sequential: bool,
}

type Rpc<T> = Result<T, RPCError<TypeConfig>>;

/// The slowest transfer a snapshot is given time for: 1 MiB/s (8 Mbit/s) on top of the
/// install timeout.
const SNAPSHOT_BYTES_PER_S: u64 = 1 << 20;

/// What precedes a snapshot's bytes in a [`SNAPSHOT`] request.
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotHead {
    pub(super) vote: Vote,
    pub(super) meta: SnapshotMeta,
}

/// A peer's failure to answer as openraft's error: unreachable peers are backed off from,
/// others retried at once.
fn rpc_err(e: PeerError) -> RPCError<TypeConfig> {
    match e {
        PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        PeerError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

/// An error the remote Raft returned (it is shutting down or stopped on a fatal error):
/// the peer is, for now, unreachable.
#[derive(Debug, thiserror::Error)]
#[error("peer's raft refused: {0}")]
struct Remote(String);

impl Peer {
    /// Posts `body` to `path`; the answer is a serialised `Result<Resp, _>`.
    async fn post<Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Rpc<Resp> {
        let posted = self.client.post(path, body, ttl).await;
        match &posted {
            Ok(_) => self.health.record(self.target, Ok(())),
            Err(e) => self.health.record(self.target, Err(e)),
        }
        let bytes = posted.map_err(rpc_err)?;
        let res: Result<Resp, serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::Unreachable(Unreachable::new(&Remote(e.to_string()))))
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        ttl: Duration,
    ) -> Rpc<Resp> {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.post(path, body, ttl).await
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = crate::store::types::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<TypeConfig>> {
        metrics::counter!(crate::metrics::RAFT_APPENDS, "path" => "sequential").increment(1);
        self.call(APPEND, &rpc, option.hard_ttl()).await
    }

    /// Pipelined over an append stream (see `append_stream`), or one request at a time.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Rpc<BoxStream<'s, Rpc<StreamAppendResult<TypeConfig>>>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>>
            + openraft::OptionalSend
            + Unpin
            + 'static,
    {
        Box::pin(async move {
            if self.sequential {
                return stream_append_sequential(self, input, option).await;
            }
            let ttl = option.hard_ttl();
            let idle = self
                .idle
                .lock()
                .take()
                .and_then(|mut c| c.alive().then_some(c));
            let conn = match idle {
                Some(conn) => conn,
                None => {
                    let up = self
                        .client
                        .upgrade(APPEND_STREAM, append_stream::PROTOCOL, ttl)
                        .await;
                    match up {
                        Ok(Some(io)) => Conn::new(io),
                        Ok(None) => {
                            tracing::info!(
                                peer = self.target,
                                "peer serves no append streams (an older version): appending one request at a time"
                            );
                            self.sequential = true;
                            return stream_append_sequential(self, input, option).await;
                        }
                        Err(e) => {
                            self.health.record(self.target, Err(&e));
                            return Err(rpc_err(e));
                        }
                    }
                }
            };
            let session = Session::new(
                conn,
                &self.idle,
                input,
                self.pipeline,
                ttl,
                self.target,
                self.client.addr().to_string(),
                self.health.clone(),
            );
            Ok(session.answers())
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<TypeConfig>> {
        let resp = self.call(VOTE, &rpc, option.hard_ttl()).await;
        if let Ok(r) = &resp {
            self.elections.saw_vote_response(&rpc, r);
        }
        resp
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<TypeConfig>> {
        self.call(PRE_VOTE, &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let head = SnapshotHead {
            vote,
            meta: snapshot.meta,
        };
        let mut body = serde_json::to_vec(&head).expect("snapshot head serialises");
        body.push(b'\n');
        body.extend_from_slice(snapshot.snapshot.get_ref());
        // One request for the whole snapshot: its time grows with its size (installing it is
        // what `install_snapshot_timeout` bounds), so a large state over a slow link is not cut
        // off and resent forever.
        let ttl = option.hard_ttl() + Duration::from_secs(body.len() as u64 / SNAPSHOT_BYTES_PER_S);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.post(SNAPSHOT, body, ttl) => res.map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
            }),
        }
    }
}
