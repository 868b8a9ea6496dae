//! The cluster: openraft on sled. This file starts the Raft node (initialising a fresh store
//! with the configured voters) and holds what the concerns below share; each concern has its
//! own file, as openraft's examples split network, management and Raft RPC:
//! - `write`: commits batches of operations (on the leader, or forwarded to it): the
//!   replicator's [`Commit`](crate::replicator::Commit);
//! - `network`: outbound Raft RPC (openraft's network traits over [`crate::peer`]);
//! - `append_stream`: pipelined appends to a follower over one upgraded connection (both
//!   sides);
//! - `rpc`: the inbound side of the cluster listener;
//! - `membership`: operators' membership changes, forwarded to the leader;
//! - `liveness`: the leader's pings, declaring unreachable nodes down;
//! - `status`: readiness and the typed status operators and metrics read;
//! - `query`: questions to every other member at once (cluster-wide figures);
//! - `step_down`: handing leadership over before a leader stops;
//! - `election`: when a follower campaigns (sooner than openraft's own timer).
//!
//! Invariant: with `store`, the only module that names openraft. A single node is simply a
//! one-voter cluster: the same code path.

pub mod append_stream;
mod election;
mod forward;
mod liveness;
mod membership;
pub mod network;
mod peer_health;
mod query;
mod ready;
mod rpc;
mod status;
mod step_down;
mod write;

pub use peer_health::QuietTransientErrors;
pub use query::{MemberReply, Reply};
pub use status::{ClusterStatus, NodeStatus, READY_LAG};

/// Log targets kept out of the default filter: openraft logs its whole state (up to ~2,300
/// characters a line) at info on every start, election and membership change. The binary
/// keeps them at `warn` unless `log.level` names them (`LogConfig::filter`).
pub const QUIET_LOG_TARGETS: &[&str] = &["openraft"];

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use parking_lot::Mutex;

use crate::config::Config;
use crate::engine::Engine;
use crate::peer::{Link, PeerClient};
use crate::store::Store;
use crate::store::types::{NodeId, Raft};
use network::Network;

/// A running Raft node.
pub struct Cluster {
    /// The openraft handle.
    raft: Raft,
    /// This node's id.
    id: NodeId,
    /// The store (for its size on disk).
    store: Store,
    /// Clients to peers, by node id: slot 0 for one-at-a-time calls (pings, membership,
    /// sequential forwarding), then one connection per entry a follower keeps in flight.
    forward: Mutex<HashMap<NodeId, Vec<Arc<PeerClient>>>>,
    /// Pipelined forwarding connections per peer (`cluster.max_inflight_entries`).
    forward_slots: usize,
    /// This node's forwarding stream to the leader (as a follower).
    outgoing: Arc<forward::Outgoing>,
    /// The order of followers' forwarding streams (as the leader).
    gates: forward::Gates,
    /// How outgoing cluster connections are made (source IP, mutual TLS).
    link: Link,
    /// How long a write may wait.
    propose_timeout: Duration,
    /// Followers' leader lease (openraft: `election_timeout_max`): they refuse to vote for
    /// anyone else until this long after they last heard from the leader.
    lease: Duration,
    /// When to campaign (`election`).
    elections: Arc<election::Elections>,
    /// What the readiness probes found (`ready`).
    ready: ready::Readiness,
    /// Leader-side wall clock, never going backwards across batches.
    last_time: Mutex<u64>,
    /// Clients for questions to other members (`query`).
    askers: query::Askers,
    /// Cancelled when Raft has stopped: served append streams close.
    stopped: tokio_util::sync::CancellationToken,
}

impl Cluster {
    /// Opens the store under `node.data_dir`, restores the engine from its snapshot and starts
    /// Raft; a fresh store is initialised with the configured voters (the same set on every
    /// node is safe). `advertise` is this node's cluster address.
    pub async fn start(
        cfg: &Config,
        engine: Arc<Engine>,
        advertise: String,
        tls: Option<Arc<crate::tls::ClusterTls>>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let c = &cfg.cluster;
        let store =
            Store::open(&cfg.node.data_dir.join("raft"), cfg.node.store_cache_bytes).await?;
        let fresh = store.is_empty();
        let sm = store.state_machine(engine)?;
        let raft_config = openraft::Config {
            cluster_name: "switchyard".into(),
            heartbeat_interval: c.heartbeat_interval.as_millis() as u64,
            election_timeout_min: c.election_timeout_min.as_millis() as u64,
            election_timeout_max: c.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: (c.election_timeout_max.as_millis() as u64).max(2000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(c.snapshot_every),
            max_in_snapshot_log_to_keep: c.snapshot_every.min(1000),
            // openraft's own election timer is off: `election`'s driver is the only one that
            // decides when to campaign. The timer fires an election timeout after the last
            // word from the leader (before the driver's lease has run out) and knows none of
            // the driver's rules (a follower storing an append or flushing its own disk, or
            // whose runtime was stalled, does not campaign), so with it a follower whose disk
            // stalled could still depose a healthy leader.
            enable_elect: false,
            ..Default::default()
        }
        .validate()?;
        let id = cfg.node.id;
        // Outgoing cluster connections leave from the cluster listener's IP when it names one,
        // so peers (and firewalls) see a node's traffic come from its own address.
        let listen_ip = cfg.cluster_addr().ip();
        let bind = (!listen_ip.is_unspecified()).then_some(listen_ip);
        let link = Link { bind, tls };
        let elections = Arc::new(election::Elections::new(
            c.heartbeat_interval,
            c.election_timeout_min,
            c.election_timeout_max,
        ));
        let network = Network {
            link: link.clone(),
            health: Default::default(),
            elections: elections.clone(),
            pipeline: c.append_pipeline,
        };
        let raft = Raft::new(id, Arc::new(raft_config), network, store.log_store(), sm).await?;
        let listed = c.peers.is_empty() || c.peers.iter().any(|p| p.id == id);
        if fresh && !listed {
            tracing::warn!(
                node = id,
                "not in cluster.peers and no state yet: waiting to be added (switchyard cluster add-learner)"
            );
        }
        if fresh && listed {
            let members: BTreeMap<NodeId, BasicNode> = if c.peers.is_empty() {
                BTreeMap::from([(id, BasicNode { addr: advertise })])
            } else {
                c.peers
                    .iter()
                    .map(|p| {
                        (
                            p.id,
                            BasicNode {
                                addr: p.addr.clone(),
                            },
                        )
                    })
                    .collect()
            };
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node = id, "initialised a new cluster"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    tracing::info!(node = id, "cluster already initialised by a peer")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Arc::new(Cluster {
            raft,
            id,
            store,
            forward: Mutex::new(HashMap::new()),
            forward_slots: c.max_inflight_entries.max(1),
            outgoing: Arc::default(),
            gates: forward::Gates::new(c.propose_timeout.min(Duration::from_secs(2))),
            link,
            propose_timeout: c.propose_timeout,
            lease: c.election_timeout_max,
            elections,
            ready: ready::Readiness::new(
                c.heartbeat_interval,
                c.election_timeout_min,
                c.election_timeout_max,
            ),
            last_time: Mutex::new(0),
            askers: Default::default(),
            stopped: Default::default(),
        }))
    }

    fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, n)| n.addr.clone())?;
        Some((leader, addr))
    }

    async fn wait_for_leader(&self, deadline: tokio::time::Instant) -> Option<(NodeId, String)> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.leader(),
            }
        }
    }

    /// Client `slot` (0 ..= forward_slots) for node `id` at `addr`.
    fn peer(&self, id: NodeId, addr: &str, slot: usize) -> Arc<PeerClient> {
        let mut f = self.forward.lock();
        let clients = f.entry(id).or_default();
        if clients.first().is_some_and(|c| c.addr() != addr) {
            clients.clear();
        }
        let slot = slot.min(self.forward_slots);
        while clients.len() <= slot {
            clients.push(Arc::new(PeerClient::with_link(addr, self.link.clone())));
        }
        clients[slot].clone()
    }

    /// Stops Raft (after clients are gone); the store flushes when dropped.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.stopped.cancel();
        self.store.close().await;
    }
}
