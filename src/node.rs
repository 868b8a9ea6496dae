//! The node context shared by every connection and request: a plain bundle of what a handler
//! may use. It reacts to nothing itself (reactions to committed events live in
//! `session::reactions`, installed as the engine's hook) and imports nothing above it.
//!
//! Fields are `pub(crate)`: code outside the crate (tests, fuzz targets) goes through the
//! accessors. The two node-wide signals are private: only [`Node::begin_stopping`] and
//! [`Node::close_clients`] fire them, and everyone else gets a child token that can only
//! cancel itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::channels::Channels;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::conn::{Conn, Registry};
use crate::engine::Engine;
use crate::limits::Limits;
use crate::proxy::Proxies;
use crate::replicator::Replicator;
use crate::tls::{ClientTls, ClusterTls};

/// Everything a connection or API call needs from the node.
pub struct Node {
    /// Validated configuration.
    pub(crate) cfg: Arc<Config>,
    /// State machine + hub: reads and hub registration (only `store` applies entries).
    pub(crate) engine: Arc<Engine>,
    /// Where operations are proposed: the only way to change replicated state.
    pub(crate) replicator: Replicator,
    /// The Raft node (status, readiness, inbound RPC, membership).
    pub(crate) cluster: Arc<Cluster>,
    /// Token verification.
    pub(crate) verifier: Verifier,
    /// Channel name → options.
    pub(crate) channels: Channels,
    /// Connected clients by user.
    pub(crate) registry: Registry,
    /// The application's backend hooks (`[proxy]`).
    pub(crate) proxy: Proxies,
    /// When the node started.
    pub(crate) started: Instant,
    /// This process's incarnation (start time in ms): presence it records carries it, so a
    /// restart can clear what an earlier incarnation left.
    pub(crate) incarnation: u64,
    /// Connection and command limits (reloadable).
    pub(crate) limits: Arc<Limits>,
    /// The client listener's TLS, when configured (reloadable).
    pub(crate) client_tls: Option<ClientTls>,
    /// Mutual TLS between nodes, when configured (reloadable).
    pub(crate) cluster_tls: Option<Arc<ClusterTls>>,
    /// Cancelled when the node starts stopping: listeners stop accepting, readiness goes
    /// false (before leadership is handed over and clients are closed). A child of `shutdown`.
    stopping: CancellationToken,
    /// Cancelled when client connections are to be closed (3001): after `stopping`.
    shutdown: CancellationToken,
    /// Next connection number.
    next_conn: AtomicU64,
    /// Told when this node's presence was cleared while it is alive (declared down): the
    /// presence reconciliation (`session::presence_sync`) records its clients again at once.
    pub(crate) presence_lost: tokio::sync::Notify,
}

/// The TLS a node serves with.
#[derive(Default)]
pub struct NodeTls {
    /// `client.tls_*`.
    pub client: Option<ClientTls>,
    /// `cluster.tls_*`.
    pub cluster: Option<Arc<ClusterTls>>,
    /// Trust for `https://` proxy endpoints (`proxy.tls_ca` or the system's CAs).
    pub proxy: Option<Arc<rustls::ClientConfig>>,
}

impl Node {
    /// Assembles the node context.
    pub(crate) fn new(
        cfg: Arc<Config>,
        engine: Arc<Engine>,
        replicator: Replicator,
        cluster: Arc<Cluster>,
        verifier: Verifier,
        tls: NodeTls,
    ) -> Node {
        let channels = Channels::new(&cfg.channel, cfg.client.channel_max_length);
        let shutdown = CancellationToken::new();
        let proxy = Proxies::new(&cfg.proxy, tls.proxy);
        Node {
            limits: Limits::new(&cfg.client),
            client_tls: tls.client,
            cluster_tls: tls.cluster,
            cfg,
            engine,
            replicator,
            cluster,
            verifier,
            channels,
            registry: Registry::default(),
            proxy,
            stopping: shutdown.child_token(),
            shutdown,
            started: Instant::now(),
            incarnation: crate::engine::wall_ms(),
            next_conn: AtomicU64::new(1),
            presence_lost: tokio::sync::Notify::new(),
        }
    }

    /// The node's configuration.
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// Whether the node is a ready member of its cluster (what `/readyz` reports, less the
    /// stopping check).
    pub fn is_ready(&self) -> bool {
        self.cluster.is_ready()
    }

    /// Waits (bounded by `cluster.propose_timeout`) until this node has applied everything
    /// the leader had committed when asked; false if it could not in time.
    pub async fn catch_up(&self) -> bool {
        self.cluster.catch_up().await
    }

    /// Resolves once the node is a ready member of its cluster.
    pub async fn wait_ready(&self) {
        self.cluster.wait_ready().await
    }

    /// This node's connections of `user` (only `client`, when given).
    pub(crate) fn conns_of(&self, user: &str, client: Option<&str>) -> Vec<Arc<Conn>> {
        self.registry
            .of_user(user)
            .into_iter()
            .filter(|c| client.is_none_or(|want| c.state.lock().client == want))
            .collect()
    }

    /// A new node-local connection number.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts stopping: listeners stop accepting and readiness goes false.
    pub(crate) fn begin_stopping(&self) {
        self.stopping.cancel();
    }

    /// Closes every client connection (3001); implies [`Node::begin_stopping`].
    pub fn close_clients(&self) {
        self.shutdown.cancel();
    }

    /// Whether the node has started stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Resolves when client connections are to be closed (no allocation per waiter).
    pub(crate) fn clients_closing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// A token cancelled when the node starts stopping (cancelling it affects only itself).
    pub(crate) fn on_stopping(&self) -> CancellationToken {
        self.stopping.child_token()
    }

    /// A token cancelled when client connections are to be closed (cancelling it affects
    /// only itself).
    pub(crate) fn on_shutdown(&self) -> CancellationToken {
        self.shutdown.child_token()
    }
}
