//! The `switchyard` binary: parses the command line, sets up logging and signals, and hands
//! over to the library (`Server::start`). No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use figment::value::Value;
use switchyard::auth::{MintRequest, mint};
use switchyard::config::{Config, LogFormat, duration_str};
use switchyard::server::Server;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Real-time messaging backplane in one binary"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    Serve(ServeArgs),
    /// Print a token signed with the configured HMAC secret (for testing).
    Token(TokenArgs),
    /// Inspect or change cluster membership through a node's admin listener.
    Cluster(ClusterArgs),
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct ClusterArgs {
    #[command(subcommand)]
    op: ClusterOp,
    /// The admin listener of any node (changes are forwarded to the leader).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8001")]
    admin: String,
}

#[derive(Subcommand)]
enum ClusterOp {
    /// Print Raft status: state, term, leader, indexes, nodes, follower lag.
    Status,
    /// Add a node as a learner (receives the log, serves clients, does not vote).
    AddLearner {
        /// Its node.id.
        #[arg(long)]
        id: u64,
        /// Its cluster address (cluster.advertise).
        #[arg(long)]
        addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// Its node.id.
        #[arg(long)]
        id: u64,
    },
    /// Remove a voter or learner from the cluster.
    Remove {
        /// Its node.id.
        #[arg(long)]
        id: u64,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file (default: ./config.toml when present).
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (0 = valid).
    #[arg(long)]
    check_config: bool,
    /// Override client.listen.
    #[arg(long)]
    client_listen: Option<String>,
    /// Override admin.listen.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Override node.id.
    #[arg(long)]
    node_id: Option<u64>,
    /// Override node.data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override log.level.
    #[arg(long)]
    log_level: Option<String>,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Config file holding auth.token_hmac_secret (default: ./config.toml when present).
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// User id (`sub`); "" for an anonymous token.
    #[arg(long)]
    user: String,
    /// Lifetime such as 30s, 10m, 1h; 0 = no expiry.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Make a subscription token for this channel instead of a connection token.
    #[arg(long)]
    channel: Option<String>,
    /// JSON for the `info` claim.
    #[arg(long)]
    info: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Version => {
            println!("switchyard {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Cmd::Token(args) => match token(args) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard token: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Serve(args) => serve(args),
        Cmd::Cluster(args) => cluster(args),
    }
}

fn cluster(args: ClusterArgs) -> ExitCode {
    let (path, body) = match args.op {
        ClusterOp::Status => ("/cluster/status", serde_json::json!({})),
        ClusterOp::AddLearner { id, addr } => (
            "/cluster/add-learner",
            serde_json::json!({"id": id, "addr": addr}),
        ),
        ClusterOp::Promote { id } => ("/cluster/promote", serde_json::json!({"id": id})),
        ClusterOp::Remove { id } => ("/cluster/remove", serde_json::json!({"id": id})),
    };
    let addr = args
        .admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = switchyard::transport::peer::PeerClient::new(addr);
    let body = serde_json::to_vec(&body).expect("json");
    match rt.block_on(client.post(path, body, Duration::from_secs(60))) {
        Ok(b) => {
            match serde_json::from_slice::<serde_json::Value>(&b) {
                Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
                Err(_) => println!("{}", String::from_utf8_lossy(&b)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard cluster: {e}");
            ExitCode::from(1)
        }
    }
}

fn token(args: TokenArgs) -> anyhow::Result<String> {
    let cfg = Config::load(args.config.as_deref())?;
    let ttl = duration_str::parse(&args.ttl).map_err(anyhow::Error::msg)?;
    let info = match args.info {
        Some(s) => Some(
            serde_json::value::RawValue::from_string(s)
                .map_err(|e| anyhow::anyhow!("--info is not JSON: {e}"))?,
        ),
        None => None,
    };
    mint(
        &cfg.auth.token_hmac_secret,
        MintRequest {
            user: args.user,
            ttl: (!ttl.is_zero()).then_some(ttl),
            channel: args.channel,
            info,
        },
    )
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut overrides: Vec<(&'static str, Value)> = Vec::new();
    if let Some(v) = args.client_listen {
        overrides.push(("client.listen", v.into()));
    }
    if let Some(v) = args.admin_listen {
        overrides.push(("admin.listen", v.into()));
    }
    if let Some(v) = args.node_id {
        overrides.push(("node.id", v.into()));
    }
    if let Some(v) = args.data_dir {
        overrides.push(("node.data_dir", v.display().to_string().into()));
    }
    if let Some(v) = args.log_level {
        overrides.push(("log.level", v.into()));
    }
    let cfg = match Config::load_with(args.config.as_deref(), overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg);
    log_nofile_limit();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let drain = cfg.node.drain_timeout;
        let server = match Server::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "start failed");
                return ExitCode::FAILURE;
            }
        };
        // Handlers first: once READY=1 is out, a stop request must drain, not kill.
        let signals = Signals::install();
        let notifier = systemd_notifier(&server);
        let signal = signals.wait().await;
        tracing::info!(signal, "shutting down");
        if let Some(n) = &notifier {
            let _ = n.stopping("draining client connections");
        }
        server.shutdown();
        let clean = server.wait(drain + Duration::from_millis(500)).await;
        if clean {
            tracing::info!("stopped");
        } else {
            tracing::warn!("drain timeout: some connections did not close in time");
        }
        ExitCode::SUCCESS
    })
}

/// Descriptors kept for listeners, peer links, the store and logs, beside client connections.
const NOFILE_RESERVE: u64 = 256;
/// Below this many descriptors a node cannot hold a production load of connections.
const NOFILE_WARN_BELOW: u64 = 65_536;

/// Raises the soft open-file limit to the hard one (one descriptor per connection) and logs it.
fn log_nofile_limit() {
    match switchyard::sys::raise_nofile_limit() {
        Ok((soft, hard)) if soft < NOFILE_WARN_BELOW => tracing::warn!(
            soft,
            hard,
            max_connections = soft.saturating_sub(NOFILE_RESERVE),
            "open-file limit is low: raise LimitNOFILE= (systemd) or the hard `ulimit -n`"
        ),
        Ok((soft, hard)) => tracing::info!(
            soft,
            hard,
            max_connections = soft.saturating_sub(NOFILE_RESERVE),
            "open-file limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Under systemd (`Type=notify`): tells it the node is ready and, when the unit sets
/// `WatchdogSec=`, keeps sending `WATCHDOG=1` at half that interval from a runtime task (so a
/// wedged runtime gets the node restarted). `None` when not started by systemd.
fn systemd_notifier(server: &Server) -> Option<std::sync::Arc<switchyard::sys::Notifier>> {
    use switchyard::sys;
    let notifier = match sys::Notifier::from_env() {
        Ok(Some(n)) => std::sync::Arc::new(n),
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a socket for NOTIFY_SOCKET");
            return None;
        }
    };
    let status = format!(
        "serving clients on {}, admin on {}",
        server.client_addr, server.admin_addr
    );
    let watchdog = sys::watchdog_interval();
    if let Some(timeout) = watchdog {
        tracing::info!(timeout = ?timeout, "systemd watchdog enabled");
    }
    // READY=1 once the node has joined its cluster (member, known leader, caught up), not
    // merely when it listens: `systemctl start` then means "serving with current state".
    let (n, node) = (notifier.clone(), server.node.clone());
    tokio::spawn(async move {
        node.cluster.wait_ready().await;
        tracing::info!("node ready: member of the cluster with a known leader");
        if let Err(e) = n.ready(&status) {
            tracing::warn!(error = %e, "cannot notify systemd (READY=1)");
        }
        // The watchdog applies once start-up is complete: ping from then on.
        if let Some(timeout) = watchdog {
            let mut tick = tokio::time::interval(timeout / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = n.watchdog() {
                    tracing::warn!(error = %e, "cannot notify systemd (WATCHDOG=1)");
                }
            }
        }
    });
    Some(notifier)
}

/// SIGTERM and SIGINT stop the node. SIGHUP (`systemctl reload`) must not kill it (its default
/// action would): it is logged until live reload lands.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            hup: signal(SignalKind::hangup()).expect("SIGHUP handler"),
        }
    }

    async fn wait(mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => tracing::warn!(
                    "SIGHUP: live configuration reload is not supported yet; restart the node to apply changes"
                ),
            }
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&cfg.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
