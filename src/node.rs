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
use crate::session::conn::Registry;
use crate::state::HistoryPolicy;

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
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// When the node started.
    pub started: Instant,
    /// Next connection number.
    next_conn: AtomicU64,
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
    ) -> Node {
        let channels = Channels::new(&cfg.channel, cfg.client.channel_max_length);
        Node {
            cfg,
            engine,
            log,
            cluster,
            verifier,
            channels,
            registry: Registry::default(),
            shutdown,
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
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
