//! The cluster: openraft on sled. Starts the Raft node (initialising a fresh store with the
//! configured voters), commits batches of operations (on the leader, or by forwarding them
//! to it), serves the inbound Raft RPC, and reports status and readiness.
//!
//! Invariant: with `store`, the only module that names openraft. A single node is simply a
//! one-voter cluster: the same code path.

pub mod network;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Config;
use crate::engine::{Engine, wall_ms};
use crate::log::ProposeError;
use crate::state::{Op, OpResult};
use crate::store::Store;
use crate::transport::peer::{Link, PeerClient, PeerError};
use network::Network;
use types::{Batch, NodeId, TypeConfig};

/// Most log entries a node may have yet to apply and still call itself ready.
pub const READY_LAG: u64 = 1000;

/// A running Raft node.
pub struct Cluster {
    /// The openraft handle.
    raft: Raft<TypeConfig>,
    /// This node's id.
    id: NodeId,
    /// The store (for its size on disk).
    store: Store,
    /// Clients for forwarding proposals to the leader, by node id.
    forward: Mutex<HashMap<NodeId, Arc<PeerClient>>>,
    /// How outgoing cluster connections are made (source IP, mutual TLS).
    link: Link,
    /// How long a write may wait.
    propose_timeout: Duration,
    /// Followers' leader lease (openraft: `election_timeout_max`): they refuse to vote for
    /// anyone else until this long after they last heard from the leader.
    lease: Duration,
    /// Leader-side wall clock, never going backwards across batches.
    last_time: Mutex<u64>,
}

/// What `/cluster/propose` carries back.
#[derive(Serialize, Deserialize)]
enum Forwarded {
    /// Committed: the results and the log index of the entry.
    Ok(Vec<OpResult>, u64),
    /// Not committed (no leader, or not the leader any more); safe to retry.
    Retry(String),
    /// Outcome unknown.
    Failed(String),
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
            ..Default::default()
        }
        .validate()?;
        let id = cfg.node.id;
        // Outgoing cluster connections leave from the cluster listener's IP when it names one,
        // so peers (and firewalls) see a node's traffic come from its own address.
        let listen_ip = cfg.cluster_addr().ip();
        let bind = (!listen_ip.is_unspecified()).then_some(listen_ip);
        let link = Link { bind, tls };
        let network = Network { link: link.clone() };
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
            link,
            propose_timeout: c.propose_timeout,
            lease: c.election_timeout_max,
            last_time: Mutex::new(0),
        }))
    }

    fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
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

    /// Commits `ops` as one log entry (through the leader) and returns their results and the
    /// entry's log index once it is applied on this node too (read-your-writes on followers).
    /// Retries only where nothing can have been committed.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(Vec<OpResult>, u64), ProposeError> {
        let deadline = tokio::time::Instant::now() + self.propose_timeout;
        loop {
            let Some((leader, addr)) = self.wait_for_leader(deadline).await else {
                return Err(ProposeError::NoLeader);
            };
            let retry = if leader == self.id {
                let time_ms = {
                    let mut t = self.last_time.lock();
                    *t = wall_ms().max(*t);
                    *t
                };
                let batch = Batch {
                    time_ms,
                    ops: ops.clone(),
                };
                // Bounded: a leader cut off from its quorum would otherwise wait forever. On
                // timeout the entry may still commit later, so the outcome is unknown.
                match tokio::time::timeout_at(deadline, self.raft.client_write(batch)).await {
                    Ok(Ok(resp)) => return Ok((resp.data, resp.log_id.index)),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "write failed");
                        return Err(ProposeError::Failed);
                    }
                    Err(_) => {
                        tracing::warn!("write not committed in time (no quorum?)");
                        return Err(ProposeError::Failed);
                    }
                }
            } else {
                match self.forward_to(leader, &addr, &ops, deadline).await {
                    Ok(Forwarded::Ok(r, index)) => {
                        // The leader applied it; wait until this node has too, so that what
                        // the caller reads next here includes its own write.
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        let applied = self
                            .raft
                            .wait(Some(left.max(Duration::from_secs(1))))
                            .applied_index_at_least(Some(index), "forwarded write applied")
                            .await;
                        if let Err(e) = applied {
                            tracing::warn!(index, error = %e, "forwarded write committed but not yet applied here");
                        }
                        return Ok((r, index));
                    }
                    Ok(Forwarded::Retry(_)) => true,
                    Ok(Forwarded::Failed(why)) => {
                        tracing::warn!(leader, why, "forwarded write failed");
                        return Err(ProposeError::Failed);
                    }
                    Err(PeerError::Unreachable { .. }) => true,
                    Err(e) => {
                        tracing::warn!(leader, error = %e, "forwarded write failed");
                        return Err(ProposeError::Failed);
                    }
                }
            };
            if retry {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ProposeError::NoLeader);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    async fn forward_to(
        &self,
        leader: NodeId,
        addr: &str,
        ops: &[Op],
        deadline: tokio::time::Instant,
    ) -> Result<Forwarded, PeerError> {
        let client = self.peer(leader, addr);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let body = serde_json::to_vec(ops).expect("ops serialise");
        let bytes = client
            .post(network::PROPOSE, body, left.max(Duration::from_millis(100)))
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| PeerError::Failed {
            addr: addr.to_string(),
            why: e.to_string(),
        })
    }

    /// Handles an inbound cluster request; returns HTTP status and body. `propose` commits
    /// forwarded operations through this node's own write path (its batcher).
    pub async fn handle_rpc<F, Fut>(&self, path: &str, body: &[u8], propose: F) -> (u16, Vec<u8>)
    where
        F: FnOnce(Vec<Op>) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<OpResult>, u64), ProposeError>>,
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

    /// A membership change requested by an operator (`add-learner {id, addr}`,
    /// `promote {id}`, `remove {id}`): run on the leader, forwarded there when this node is
    /// not it (`forward`). Answers 200 with the new status, or an error object.
    pub async fn admin(&self, op: &str, body: &[u8], forward: bool) -> (u16, Vec<u8>) {
        #[derive(Deserialize)]
        struct Req {
            id: NodeId,
            #[serde(default)]
            addr: String,
        }
        let err = |status: u16, msg: String| {
            (
                status,
                serde_json::to_vec(&json!({ "error": msg })).expect("json"),
            )
        };
        let Ok(req) = serde_json::from_slice::<Req>(body) else {
            return err(
                400,
                "body must be {\"id\": N, \"addr\": \"host:port\"}".into(),
            );
        };
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            if !forward {
                return err(409, "not the leader".into());
            }
            let Some((leader, addr)) = self.leader() else {
                return err(503, "no leader".into());
            };
            let path = format!("{}{op}", network::ADMIN_PREFIX);
            return match self
                .peer(leader, &addr)
                .post(&path, body.to_vec(), Duration::from_secs(30))
                .await
            {
                Ok(b) => (200, b.to_vec()),
                Err(e) => err(502, e.to_string()),
            };
        }
        let voters: std::collections::BTreeSet<NodeId> =
            m.membership_config.membership().voter_ids().collect();
        let res = match op {
            "add-learner" => {
                if req.addr.is_empty() {
                    return err(400, "add-learner needs addr".into());
                }
                self.raft
                    .add_learner(req.id, BasicNode { addr: req.addr }, true)
                    .await
            }
            "promote" => {
                self.raft
                    .change_membership(openraft::ChangeMembers::AddVoterIds([req.id].into()), false)
                    .await
            }
            "remove" if voters.contains(&req.id) => {
                self.raft
                    .change_membership(
                        openraft::ChangeMembers::RemoveVoters([req.id].into()),
                        false,
                    )
                    .await
            }
            "remove" => {
                self.raft
                    .change_membership(openraft::ChangeMembers::RemoveNodes([req.id].into()), false)
                    .await
            }
            _ => return err(404, format!("unknown operation {op}")),
        };
        match res {
            Ok(_) => (200, serde_json::to_vec(&self.status()).expect("json")),
            Err(e) => err(409, e.to_string()),
        }
    }

    /// While this node leads, pings every other member; one unreachable for longer than
    /// `lease` is declared down once (`Op::NodeDown`), which clears its presence. Runs until
    /// `stop`.
    pub fn spawn_liveness(
        self: &Arc<Self>,
        lease: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let every = (lease / 4).max(Duration::from_millis(100));
            let mut last_ok: HashMap<NodeId, tokio::time::Instant> = HashMap::new();
            let mut down: std::collections::HashSet<NodeId> = Default::default();
            let mut was_leader = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
                let m = this.raft.metrics().borrow().clone();
                let leader = m.current_leader == Some(this.id);
                let now = tokio::time::Instant::now();
                if leader && !was_leader {
                    // New leader: everyone gets a full lease before being judged.
                    last_ok.clear();
                    down.clear();
                }
                was_leader = leader;
                if !leader {
                    continue;
                }
                let members: Vec<(NodeId, String)> = m
                    .membership_config
                    .nodes()
                    .filter(|(id, _)| **id != this.id)
                    .map(|(id, n)| (*id, n.addr.clone()))
                    .collect();
                for (id, addr) in members {
                    let client = this.peer(id, &addr);
                    let seen = last_ok.entry(id).or_insert(now);
                    if client.post(network::PING, Vec::new(), every).await.is_ok() {
                        *seen = tokio::time::Instant::now();
                        down.remove(&id);
                    } else if now.duration_since(*seen) > lease && !down.contains(&id) {
                        tracing::warn!(
                            node = id,
                            "node unreachable past the presence lease: declaring it down"
                        );
                        if this.write(vec![Op::NodeDown { node: id }]).await.is_ok() {
                            down.insert(id);
                        }
                    }
                }
            }
        });
    }

    fn peer(&self, id: NodeId, addr: &str) -> Arc<PeerClient> {
        let mut f = self.forward.lock();
        let c = f
            .entry(id)
            .or_insert_with(|| Arc::new(PeerClient::with_link(addr, self.link.clone())));
        if c.addr() != addr {
            *c = Arc::new(PeerClient::with_link(addr, self.link.clone()));
        }
        c.clone()
    }

    /// Ready: a member, with a known leader, whose applied index is within
    /// [`READY_LAG`] entries of its log head (so it serves clients with current state).
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let member = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some();
        let applied = m.last_applied.map_or(0, |l| l.index);
        let head = m.last_log_index.unwrap_or(0);
        let caught_up = m.state == ServerState::Leader || head.saturating_sub(applied) <= READY_LAG;
        member && m.current_leader.is_some() && caught_up
    }

    /// Resolves once [`Cluster::is_ready`] holds.
    pub async fn wait_ready(&self) {
        let mut rx = self.raft.metrics();
        while !self.is_ready() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Cluster status for operators.
    pub fn status(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let nodes: Vec<_> = m
            .membership_config
            .nodes()
            .map(|(id, n)| {
                let voter = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == *id);
                json!({"id": id, "addr": n.addr, "voter": voter})
            })
            .collect();
        let lag: BTreeMap<String, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, matched)| {
                        let idx = matched.map(|l| l.index);
                        let last = m.last_log_index.unwrap_or(0);
                        (id.to_string(), idx.map(|i| last.saturating_sub(i)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "id": self.id,
            "state": format!("{:?}", m.state),
            "term": m.current_term,
            "leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "applied_index": m.last_applied.map(|l| l.index),
            "snapshot_index": m.snapshot.map(|l| l.index),
            "nodes": nodes,
            "follower_lag": lag,
            "store_bytes": self.store.size_on_disk(),
        })
    }

    /// When this node leads a cluster of several voters, hands leadership to the most
    /// caught-up other voter before the node goes away (SIGTERM), so writes have a leader
    /// again before this node's clients reconnect elsewhere: heartbeats and this node's own
    /// elections stop, and once followers' leader lease has run out the successor is asked
    /// to campaign. Returns the new leader; `None` when this node was not leading, is the only
    /// voter, or no successor took over within `within` (the node then stops as leader, and
    /// the others elect one by timeout).
    pub async fn step_down(&self, within: Duration) -> Option<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            return None;
        }
        let matched = |id: &NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
        };
        let successor = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .max_by_key(|v| matched(v))?;
        let addr = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == successor)
            .map(|(_, n)| n.addr.clone())?;
        tracing::info!(successor, "stepping down: handing leadership over");
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let deadline = tokio::time::Instant::now() + within;
        let client = self.peer(successor, &addr);
        let mut rx = self.raft.metrics();
        let other_leader = |rx: &tokio::sync::watch::Receiver<
            openraft::RaftMetrics<NodeId, BasicNode>,
        >| { rx.borrow().current_leader.filter(|l| *l != self.id) };
        // Followers refuse votes while their lease from our last heartbeat lasts.
        let lease_over = tokio::time::Instant::now() + self.lease;
        loop {
            if let Some(l) = other_leader(&rx) {
                tracing::info!(leader = l, "leadership handed over");
                return Some(l);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!("no successor took over in time; stopping as leader");
                return None;
            }
            if now >= lease_over {
                let _ = client
                    .post(network::ELECT, Vec::new(), Duration::from_millis(500))
                    .await;
            }
            let wait = if now >= lease_over {
                Duration::from_millis(250)
            } else {
                lease_over - now
            };
            let _ = tokio::time::timeout(wait.min(deadline - now), rx.changed()).await;
        }
    }

    /// Stops Raft (after clients are gone); the store flushes when dropped.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.store.close().await;
    }
}
