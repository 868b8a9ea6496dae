//! Starting and stopping a node: the one place that assembles the layers. It has the
//! transport bind the listeners, starts the cluster and the replicator, builds the `Node`
//! context, installs the session layer's reactions as the engine's hook, serves, and drains
//! on shutdown.
//!
//! `main` and the in-process tests start nodes the same way: [`Server::start`] with a config,
//! then [`Server::shutdown`] and [`Server::wait`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::engine::Engine;
use crate::node::{Node, NodeTls};
use crate::replicator::{Batching, Replicator};
use crate::transport::Listeners;

/// The runtime of the write path and the backplane: Raft (its core and state machine
/// worker), the store, the replicator's batcher, the leader's liveness pings and the cluster
/// listener. Client connections run on the caller's runtime, so under heavy fan-out a commit
/// does not wait for CPU in a queue behind thousands of connection tasks. Shut down in the
/// background when dropped (dropping a runtime from async code would block).
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    /// `name` names its threads (`raft`, `api`). Every thread of the runtime (workers and
    /// blocking threads) gets, as it starts, `realtime_priority` (see
    /// `cluster.realtime_priority`), or else the fair scheduler's time slice `slice` (see
    /// `cluster.raft_slice`; zero: the kernel's default). Either refused: one warning per
    /// process, and the threads keep the kernel's defaults.
    fn new(
        name: &str,
        threads: usize,
        realtime_priority: u8,
        slice: Duration,
    ) -> std::io::Result<RaftRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .on_thread_start(move || {
                if realtime_priority > 0 {
                    match crate::sys::set_thread_realtime(realtime_priority) {
                        Ok(()) => return,
                        Err(e) => {
                            static WARNED: std::sync::Once = std::sync::Once::new();
                            WARNED.call_once(|| {
                                tracing::warn!(error = %e, priority = realtime_priority,
                                    "cluster.realtime_priority: could not raise the Raft and API threads' \
                                     priority (grant CAP_SYS_NICE or LimitRTPRIO=); running at normal \
                                     priority");
                            });
                        }
                    }
                }
                if !slice.is_zero()
                    && let Err(e) = crate::sys::set_thread_slice(slice)
                {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!(error = %e, slice = ?slice,
                            "cluster.raft_slice: the kernel refused the Raft and API threads' \
                             time slice; they keep its default");
                    });
                }
            })
            .enable_all()
            .build()?;
        rt.spawn(watch_stalls(name.to_string()));
        Ok(RaftRuntime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle()
    }
}

/// How often [`watch_stalls`] looks, and how late it may wake before that is a stall.
const STALL_TICK: Duration = Duration::from_millis(50);
const STALL_LATE: Duration = Duration::from_millis(250);

/// Warns when the runtime's workers (Raft's or the API's) were blocked, i.e. a tick woke much
/// later than asked: while Raft's are, the core sends no heartbeats and commits nothing, so a
/// stall near the leader lease costs an election. Slow fsyncs do not show here (they run on blocking
/// threads; the store warns about those), blocking work on a worker thread does.
async fn watch_stalls(runtime: String) {
    loop {
        let asked = tokio::time::Instant::now();
        tokio::time::sleep(STALL_TICK).await;
        let late = asked.elapsed().saturating_sub(STALL_TICK);
        if late > STALL_LATE {
            tracing::warn!(
                runtime = %runtime,
                stalled_ms = late.as_millis() as u64,
                "a runtime of the write path was stalled: its workers were busy or blocked"
            );
        }
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A running node.
pub struct Server {
    /// Where the client listener is bound (the real port when configured with port 0).
    pub client_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// Where the cluster listener is bound.
    pub cluster_addr: SocketAddr,
    /// The node context.
    pub node: Arc<Node>,
    tracker: TaskTracker,
    /// Stops the cluster listener (after Raft).
    cluster_stop: CancellationToken,
    /// Where plain server API connections run.
    _api: RaftRuntime,
    /// Where Raft runs; dropped last.
    _raft: RaftRuntime,
}

/// Announces this process's incarnation once the cluster can commit, clearing presence that
/// an earlier run of this node left (its clients are gone). Retried until committed.
async fn announce_incarnation(node: Arc<Node>, stop: CancellationToken) {
    let op = crate::state::Op::NodeUp {
        node: node.cfg.node.id,
        incarnation: node.incarnation,
    };
    loop {
        match node.replicator.propose_one(op.clone()).await {
            Ok(_) => return,
            Err(e) => tracing::info!(error = %e, "incarnation not announced yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

impl Server {
    /// Binds the listeners and starts serving.
    pub async fn start(cfg: Config) -> anyhow::Result<Server> {
        let cfg = Arc::new(cfg);
        crate::metrics::install();
        let verifier = Verifier::new(&cfg.auth)?;
        let tls = NodeTls {
            client: crate::tls::ClientTls::from_config(&cfg)?,
            cluster: crate::tls::ClusterTls::from_config(&cfg)?,
            proxy: crate::tls::backend_client_config(&cfg)?,
        };
        let listeners = Listeners::bind(&cfg).await?;
        let (client_addr, admin_addr, cluster_addr) = listeners.addrs()?;
        let engine = Arc::new(Engine::default());
        let raft = RaftRuntime::new(
            "raft",
            cfg.cluster.raft_threads,
            cfg.cluster.realtime_priority,
            cfg.cluster.raft_slice,
        )
        .context("starting the Raft runtime")?;
        // Plain server API connections (see `transport::handoff`): one thread, with
        // the Raft threads' priority and time slice, since a backend's publish is the write path too.
        let api = RaftRuntime::new(
            "api",
            1,
            cfg.cluster.realtime_priority,
            cfg.cluster.raft_slice,
        )
        .context("starting the API runtime")?;
        // Started from inside the Raft runtime, so every task openraft spawns runs there.
        let cluster = raft
            .handle()
            .spawn({
                let (cfg, engine, tls) = (cfg.clone(), engine.clone(), tls.cluster.clone());
                async move {
                    let advertise = cfg.cluster_advertise(cluster_addr);
                    Cluster::start(&cfg, engine, advertise, tls).await
                }
            })
            .await
            .context("starting the cluster")?
            .context("starting the cluster")?;
        let replicator = {
            let _raft = raft.handle().enter();
            let c = &cfg.cluster;
            let batching = Batching {
                max_ops: c.max_batch_ops,
                linger: c.batch_linger,
                max_inflight: c.max_inflight_entries,
            };
            Replicator::start(cluster.clone(), batching)
        };
        let node: Arc<Node> = Arc::new(Node::new(
            cfg.clone(),
            engine,
            replicator,
            cluster,
            verifier,
            tls,
        ));
        crate::session::reactions::install(&node);
        if cfg.auth.api_key.contains("example") || cfg.auth.token_hmac_secret.contains("example") {
            tracing::warn!(
                "using the example secrets of the shipped config.toml: change auth.api_key and auth.token_hmac_secret before exposing this node"
            );
        }
        if cfg.auth.api_key.is_empty() {
            tracing::warn!("auth.api_key is empty: the server API refuses every call");
        }
        if cfg.auth.token_hmac_secret.is_empty()
            && cfg.auth.token_rsa_public_key.is_none()
            && cfg.auth.token_ecdsa_public_key.is_none()
            && !cfg.auth.allow_anonymous
        {
            tracing::warn!(
                "no token key is configured and anonymous access is off: no client can connect"
            );
        }
        let tracker = TaskTracker::new();
        // Raft traffic must outlive client draining (leaves are committed while clients
        // close), so the cluster listener has its own stop signal, given after Raft stops.
        let cluster_stop = CancellationToken::new();
        listeners.serve(
            node.clone(),
            tracker.clone(),
            cluster_stop.clone(),
            raft.handle(),
            api.handle(),
        );
        {
            let _raft = raft.handle().enter();
            node.cluster
                .spawn_liveness(cfg.cluster.presence_lease, cluster_stop.clone());
            node.cluster.spawn_readiness(cluster_stop.clone());
            node.cluster.spawn_elections(cluster_stop.clone());
        }
        tokio::spawn(announce_incarnation(node.clone(), cluster_stop.clone()));
        crate::session::presence_sync::spawn_presence_sync(
            node.clone(),
            cfg.cluster.presence_lease / 4,
            cluster_stop.clone(),
        );
        tracing::info!(listener = "client", addr = %client_addr, tls = node.client_tls.is_some(), "listening");
        tracing::info!(listener = "admin", addr = %admin_addr, "listening");
        tracing::info!(listener = "cluster", addr = %cluster_addr, mutual_tls = node.cluster_tls.is_some(), "listening");
        tracing::info!(node = cfg.node.id, name = %cfg.node_name(), version = crate::session::VERSION, "node started");
        Ok(Server {
            client_addr,
            admin_addr,
            cluster_addr,
            node,
            tracker,
            cluster_stop,
            _api: api,
            _raft: raft,
        })
    }

    /// Applies what can change while running (SIGHUP): re-reads the TLS certificates and keys,
    /// applies `[client]` limits and origins. Returns the sections of `new` that differ and
    /// need a restart. On a TLS error nothing of that TLS changes and the error is returned.
    pub fn reload(&self, new: &Config) -> anyhow::Result<Vec<String>> {
        if let Some(t) = &self.node.client_tls {
            t.reload()?;
            tracing::info!("client TLS certificate reloaded");
        }
        if let Some(t) = &self.node.cluster_tls {
            t.reload()?;
            tracing::info!("cluster TLS certificates reloaded");
        }
        if self.node.limits.reload(&new.client) {
            tracing::info!(
                max_connections = new.client.max_connections,
                max_connections_per_ip = new.client.max_connections_per_ip,
                connection_rate_per_ip = new.client.connection_rate_per_ip,
                command_rate = new.client.command_rate,
                "limits reloaded"
            );
        }
        Ok(self.node.cfg.restart_needed(new))
    }

    /// Starts the shutdown: listeners stop accepting and readiness goes false. [`Server::wait`]
    /// does the rest.
    pub fn shutdown(&self) {
        self.node.begin_stopping();
    }

    /// The rest of the shutdown, in order: a leader hands leadership over (bounded by twice
    /// the followers' lease plus a second), clients are closed with 3001, their connections
    /// finish (at most `drain`; their leaves are committed meanwhile), then Raft and the
    /// cluster listener stop and the store is flushed. Returns whether all client connections
    /// finished in time.
    pub async fn wait(self, drain: Duration) -> bool {
        self.node.begin_stopping();
        let lease = self.node.cfg.cluster.election_timeout_max;
        self.node
            .cluster
            .step_down(lease * 2 + Duration::from_secs(1))
            .await;
        self.node.close_clients();
        self.tracker.close();
        let clean = tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_ok();
        self.node.cluster.shutdown().await;
        self.cluster_stop.cancel();
        clean
    }
}
