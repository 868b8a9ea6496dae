//! The node context shared by every connection and request: config, state, log, auth.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::channels::Channels;
use crate::cluster::Cluster;
use crate::config::{ChannelOptions, Config};
use crate::engine::Engine;
use crate::log::Replicator;
use crate::session::conn::{Conn, Registry};
use crate::session::subscribe::{server_subscribe, server_unsubscribe};
use crate::state::{Event, HistoryPolicy, Op, UserAction};

/// Everything a connection or API call needs from the node.
pub struct Node {
    /// Validated configuration.
    pub cfg: Arc<Config>,
    /// State machine + hub.
    pub engine: Arc<Engine>,
    /// Where operations are proposed.
    pub log: Replicator,
    /// The Raft node (status, readiness, inbound RPC).
    pub cluster: Arc<Cluster>,
    /// Token verification.
    pub verifier: Verifier,
    /// Channel name → options.
    pub channels: Channels,
    /// Connected clients by user.
    pub registry: Registry,
    /// Cancelled when the node starts stopping: listeners stop accepting, readiness goes
    /// false (before leadership is handed over and clients are closed).
    pub stopping: CancellationToken,
    /// Cancelled when client connections are to be closed (3001): after `stopping`.
    pub shutdown: CancellationToken,
    /// When the node started.
    pub started: Instant,
    /// This process's incarnation (start time in ms): presence it records carries it, so a
    /// restart can clear what an earlier incarnation left.
    pub incarnation: u64,
    /// Connection and command limits (reloadable).
    pub limits: Arc<crate::limits::Limits>,
    /// The client listener's TLS, when configured (reloadable).
    pub client_tls: Option<crate::tls::ClientTls>,
    /// Mutual TLS between nodes, when configured (reloadable).
    pub cluster_tls: Option<Arc<crate::tls::ClusterTls>>,
    /// Next connection number.
    next_conn: AtomicU64,
}

/// The TLS a node serves with.
#[derive(Default)]
pub struct NodeTls {
    /// `client.tls_*`.
    pub client: Option<crate::tls::ClientTls>,
    /// `cluster.tls_*`.
    pub cluster: Option<Arc<crate::tls::ClusterTls>>,
}

impl Node {
    /// Assembles the node context.
    pub fn new(
        cfg: Arc<Config>,
        engine: Arc<Engine>,
        log: Replicator,
        cluster: Arc<Cluster>,
        verifier: Verifier,
        shutdown: CancellationToken,
        tls: NodeTls,
    ) -> Node {
        let channels = Channels::new(&cfg.channel, cfg.client.channel_max_length);
        Node {
            limits: crate::limits::Limits::new(&cfg.client),
            client_tls: tls.client,
            cluster_tls: tls.cluster,
            cfg,
            engine,
            log,
            cluster,
            verifier,
            channels,
            registry: Registry::default(),
            stopping: shutdown.child_token(),
            shutdown,
            started: Instant::now(),
            incarnation: crate::engine::wall_ms(),
            next_conn: AtomicU64::new(1),
        }
    }

    /// This node's connections of `user` (only `client`, when given).
    pub fn conns_of(&self, user: &str, client: Option<&str>) -> Vec<Arc<Conn>> {
        self.registry
            .of_user(user)
            .into_iter()
            .filter(|c| client.is_none_or(|want| c.state.lock().client == want))
            .collect()
    }

    /// Reacts to committed events that are not deliveries (called while the engine applies,
    /// so anything that proposes in turn runs in its own task).
    pub fn on_event(self: &Arc<Self>, event: &Event) {
        match event {
            Event::User { action, .. } => self.user_action(action),
            Event::NodeDown { node } if *node == self.cfg.node.id => self.reannounce(),
            _ => {}
        }
    }

    /// This node was declared down while alive (e.g. cut off for longer than the lease):
    /// record the presence of its clients again, without join pushes.
    fn reannounce(self: &Arc<Self>) {
        let mut ops = Vec::new();
        for conn in self.registry.all() {
            let st = conn.state.lock();
            for (channel, sub) in &st.subs {
                if sub.presence {
                    ops.push(Op::Join {
                        channel: channel.clone(),
                        info: st.client_info(channel),
                        node: self.cfg.node.id,
                        incarnation: self.incarnation,
                        presence: true,
                        join_leave: false,
                    });
                }
            }
        }
        if ops.is_empty() {
            return;
        }
        tracing::warn!(
            entries = ops.len(),
            "this node was declared down while alive: re-announcing its presence"
        );
        let node = self.clone();
        tokio::spawn(async move {
            if let Err(e) = node.log.propose(ops).await {
                tracing::warn!(error = %e, "presence re-announce not committed");
            }
        });
    }

    /// Carries out a committed user action on this node's connections.
    fn user_action(self: &Arc<Self>, action: &UserAction) {
        match action.clone() {
            UserAction::Disconnect {
                user,
                client,
                code,
                reason,
            } => {
                for conn in self.conns_of(&user, client.as_deref()) {
                    conn.out.close_with(code, &reason);
                }
            }
            UserAction::Subscribe {
                user,
                client,
                channel,
            } => {
                let conns = self.conns_of(&user, client.as_deref());
                let Ok(opts) = self.channels.resolve(&channel).cloned() else {
                    return;
                };
                if conns.is_empty() {
                    return;
                }
                let node = self.clone();
                tokio::spawn(async move {
                    for conn in conns {
                        if let Err(e) = server_subscribe(&node, &conn, &channel, &opts).await {
                            tracing::info!(user = %user, channel = %channel, code = e.code, "server-side subscribe refused");
                        }
                    }
                });
            }
            UserAction::Unsubscribe {
                user,
                client,
                channel,
            } => {
                let conns = self.conns_of(&user, client.as_deref());
                if conns.is_empty() {
                    return;
                }
                let node = self.clone();
                tokio::spawn(async move {
                    for conn in conns {
                        server_unsubscribe(&node, &conn, &channel).await;
                    }
                });
            }
        }
    }

    /// A new node-local connection number.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// The history policy a channel's options give.
pub fn history_policy(opts: &ChannelOptions) -> HistoryPolicy {
    if opts.history_enabled() {
        HistoryPolicy {
            size: opts.history_size,
            ttl_ms: opts.history_ttl.as_millis() as u64,
        }
    } else {
        HistoryPolicy::NONE
    }
}

/// A fresh random epoch for a stream that a proposal may create.
pub fn new_epoch() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
