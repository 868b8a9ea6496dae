//! The `switchyard` binary: parses the command line, sets up logging and signals, and hands
//! over to the library (`Server::start`). No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use figment::value::Value;
use switchyard::auth::{MintRequest, mint};
use switchyard::cluster::QUIET_LOG_TARGETS;
use switchyard::config::{Config, LogFormat, duration_str};
use switchyard::server::Server;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The version with the commit it was built from.
const VERSION: &str = switchyard::sys::VERSION;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version = VERSION,
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
    /// Make TLS certificates: a cluster CA, and node certificates signed by it.
    Cert(CertArgs),
    /// Load-test a node or cluster (connect, fanout, publish, churn, reconnect, soak; `run PLAN.toml`); see README "Load testing".
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        scenario: Box<switchyard_bench::Scenario>,
    },
    /// Print a new config.toml: the shipped one with random secrets (auth.token_hmac_secret,
    /// auth.api_key, admin.api_key).
    Genconfig(GenconfigArgs),
    /// Print a completion script for a shell (e.g. `switchyard completions bash`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page switchyard.1 (roff); with --dir, write it and one page per
    /// subcommand (switchyard-serve.1, ...) there. What the .deb ships.
    #[command(hide = true)]
    Manpage {
        /// Directory to write every page into.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct GenconfigArgs {
    /// Write to this file (mode 0600) instead of stdout; an existing file is kept unless --force.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Replace an existing --output file.
    #[arg(long, requires = "output")]
    force: bool,
    /// Set node.data_dir (e.g. /var/lib/switchyard) instead of the shipped ./data.
    #[arg(long)]
    data_dir: Option<String>,
}

#[derive(clap::Args)]
struct ClusterArgs {
    #[command(subcommand)]
    op: ClusterOp,
    /// The admin listener of any node (changes are forwarded to the leader).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8001")]
    admin: String,
    /// Config file whose admin.api_key is sent (default: ./config.toml when present).
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CertArgs {
    #[command(subcommand)]
    op: CertOp,
}

#[derive(Subcommand)]
enum CertOp {
    /// Make a self-signed CA: <out>/ca.pem and <out>/ca.key.
    Ca {
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Switchyard cluster CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Make a certificate signed by the CA, for a node's cluster listener (server and client
    /// authentication) or its client listener: <out>/<name>.pem and <out>/<name>.key.
    Node {
        /// Name (common name and file name), e.g. node1.
        #[arg(long)]
        name: String,
        /// An address or DNS name the node is reached at (repeat): what peers dial, e.g. the
        /// host part of its cluster.advertise.
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// The CA certificate.
        #[arg(long, default_value = "ca.pem")]
        ca_cert: PathBuf,
        /// The CA private key.
        #[arg(long, default_value = "ca.key")]
        ca_key: PathBuf,
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
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
    /// Connection tokens: channels the connection is subscribed to server-side at connect
    /// (the `channels` claim; repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    channels: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Version => {
            say(format_args!("switchyard {VERSION}"));
            ExitCode::SUCCESS
        }
        Cmd::Token(args) => match token(args) {
            Ok(t) => {
                say(t);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard token: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Serve(args) => serve(args),
        Cmd::Cluster(args) => cluster(args),
        Cmd::Cert(args) => match cert(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard cert: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Genconfig(args) => match genconfig(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard genconfig: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "switchyard", &mut out);
            say(String::from_utf8_lossy(&out).trim_end());
            ExitCode::SUCCESS
        }
        Cmd::Manpage { dir } => match manpage(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard manpage: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "bench")]
        Cmd::Bench { scenario } => bench(*scenario),
    }
}

/// `switchyard manpage`: generated from the command-line definition itself, so the pages
/// always match the binary they ship with.
fn manpage(dir: Option<PathBuf>) -> std::io::Result<()> {
    // No `help` subcommand in the pages (generate_to leaves it out too).
    let cmd = Cli::command().disable_help_subcommand(true);
    if let Some(dir) = dir {
        return clap_mangen::generate_to(cmd, dir);
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    say(String::from_utf8_lossy(&out).trim_end());
    Ok(())
}

/// `switchyard genconfig`: to stdout, or to a new file (mode 0600: it holds the secrets).
fn genconfig(args: GenconfigArgs) -> anyhow::Result<()> {
    let text = switchyard::config::generate::generate(args.data_dir.as_deref())?;
    let Some(path) = args.output else {
        say(text.trim_end());
        return Ok(());
    };
    if path.exists() && !args.force {
        anyhow::bail!(
            "{} exists: not overwritten (--force replaces it)",
            path.display()
        );
    }
    if args.force {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                anyhow::bail!("{}: {e}", path.display())
            }
            _ => {}
        }
    }
    write_new(&path, &text, true)
}

/// The exit status after stdout closed under a command that could not finish without it: what
/// a shell reports for a process killed by SIGPIPE (128 + 13).
#[cfg(feature = "bench")]
const EXIT_BROKEN_PIPE: i32 = 141;

/// Prints `text` and a newline on stdout. A reader that went away (`switchyard cluster status
/// | head -1`) is not an error: the rest of the output is dropped, and the command finishes
/// its work and exits as it would have (Rust ignores SIGPIPE, so `println!` would panic
/// instead). Any other write error (a full disk) ends the process with status 1.
fn say(text: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("switchyard: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// `switchyard bench` (its own crate) prints its report with `print!`, which panics when
/// stdout is closed. That panic, and only that one, ends the process quietly with
/// [`EXIT_BROKEN_PIPE`] instead of a panic message; any other panic is reported as usual.
#[cfg(feature = "bench")]
fn exit_quietly_when_stdout_closes() {
    let report = std::panic::take_hook();
    let epipe = format!("(os error {})", libc::EPIPE);
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains(&epipe) {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        report(info)
    }));
}

/// What the load generator takes from the server crate (it does not depend on it). Worker
/// processes of `bench connect` re-execute this binary, so they get the same hooks.
#[cfg(feature = "bench")]
const BENCH_HOOKS: switchyard_bench::Hooks = switchyard_bench::Hooks { mint: bench_mint };

/// `switchyard bench`: raises the open-file limit (each connection is a descriptor), then runs
/// the scenario.
#[cfg(feature = "bench")]
fn bench(scenario: switchyard_bench::Scenario) -> ExitCode {
    exit_quietly_when_stdout_closes();
    let _ = switchyard::sys::raise_nofile_limit();
    switchyard_bench::main(scenario, BENCH_HOOKS)
}

/// [`switchyard_bench::Mint`]: a connection token for `user`, from `switchyard::auth::mint`.
#[cfg(feature = "bench")]
fn bench_mint(secret: &str, user: &str, ttl: Duration) -> anyhow::Result<String> {
    mint(
        secret,
        MintRequest {
            user: user.into(),
            ttl: Some(ttl),
            ..Default::default()
        },
    )
}

/// Writes `text` to `path`, refusing to overwrite; `private` files are mode 0600.
fn write_new(path: &std::path::Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    say(format_args!("wrote {}", path.display()));
    Ok(())
}

fn cert(args: CertArgs) -> anyhow::Result<()> {
    use switchyard::tls::certs;
    match args.op {
        CertOp::Ca { out, name, days } => {
            let p = certs::ca(&name, days)?;
            std::fs::create_dir_all(&out)?;
            write_new(&out.join("ca.pem"), &p.cert_pem, false)?;
            write_new(&out.join("ca.key"), &p.key_pem, true)?;
        }
        CertOp::Node {
            name,
            sans,
            ca_cert,
            ca_key,
            out,
            days,
        } => {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                anyhow::bail!("--name {name:?} must be a plain file name");
            }
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            };
            let p = certs::node(&name, &sans, &read(&ca_cert)?, &read(&ca_key)?, days)?;
            std::fs::create_dir_all(&out)?;
            write_new(&out.join(format!("{name}.pem")), &p.cert_pem, false)?;
            write_new(&out.join(format!("{name}.key")), &p.key_pem, true)?;
        }
    }
    Ok(())
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
    let mut client = switchyard::peer::PeerClient::new(addr);
    // The admin key, when the config sets one (a missing default config.toml is fine).
    let mut sent_key = false;
    match Config::load(args.config.as_deref()) {
        Ok(cfg) if !cfg.admin.api_key.is_empty() => {
            client = client.with_header("x-api-key", cfg.admin.api_key);
            sent_key = true;
        }
        Ok(_) => {}
        Err(e) if args.config.is_some() => {
            eprintln!("switchyard cluster: {e}");
            return ExitCode::from(2);
        }
        Err(_) => {}
    }
    let body = serde_json::to_vec(&body).expect("json");
    match rt.block_on(client.post_answer(path, body, Duration::from_secs(60))) {
        Ok((status, b)) if status.is_success() => {
            match serde_json::from_slice::<serde_json::Value>(&b) {
                Ok(v) => say(serde_json::to_string_pretty(&v).unwrap_or_default()),
                Err(_) => say(String::from_utf8_lossy(&b)),
            }
            ExitCode::SUCCESS
        }
        Ok((status, b)) => {
            eprintln!(
                "switchyard cluster: {}",
                refusal(status.as_u16(), &b, sent_key)
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("switchyard cluster: {e}");
            ExitCode::from(1)
        }
    }
}

/// What to tell the operator about an admin request the node refused with `status`: for 401,
/// which key is wanted and where it comes from; otherwise the node's `{"error": …}`.
fn refusal(status: u16, body: &[u8], sent_key: bool) -> String {
    if status == 401 {
        let fix = "set admin.api_key to the node's key in the config file (--config, \
                   SWITCHYARD_CONFIG, or ./config.toml) or in SWITCHYARD_ADMIN__API_KEY; \
                   it is sent as the X-API-Key header";
        return if sent_key {
            format!("the node refused the admin.api_key sent (HTTP 401): {fix}")
        } else {
            format!("the node wants its admin.api_key and none was sent (HTTP 401): {fix}")
        };
    }
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    format!("{msg} (HTTP {status})")
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
            channels: args.channels,
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
    let reload_overrides = overrides.clone();
    let cfg = match Config::load_with(args.config.as_deref(), overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        say("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let log_reload = init_logging(&cfg);
    log_nofile_limit(cfg.client.max_connections as u64);
    let rt = match client_runtime(cfg.cluster.client_nice) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let drain = cfg.node.drain_timeout;
        // Handlers before the listeners: a SIGHUP or SIGTERM that arrives once the node logs
        // "listening" (or systemd has READY=1) is handled after the start, never by the
        // default action, which would kill the process.
        let mut signals = Signals::install();
        let server = match Server::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "start failed");
                return ExitCode::FAILURE;
            }
        };
        let notifier = systemd_notifier(&server);
        let signal = loop {
            match signals.next().await {
                Sig::Stop(name) => break name,
                Sig::Reload => reload(
                    &server,
                    args.config.as_deref(),
                    &reload_overrides,
                    &log_reload,
                ),
            }
        };
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
/// Raises the soft open-file limit to the hard one (one descriptor per connection) and logs
/// it, warning when it cannot hold `client.max_connections` (`cap`; 0 = no cap, then below
/// 65,536 descriptors).
fn log_nofile_limit(cap: u64) {
    let want = if cap == 0 {
        65_536
    } else {
        cap + NOFILE_RESERVE
    };
    match switchyard::sys::raise_nofile_limit() {
        Ok((soft, hard)) if soft < want => tracing::warn!(
            soft,
            hard,
            max_connections = soft.saturating_sub(NOFILE_RESERVE),
            configured_max_connections = cap,
            "open-file limit is below client.max_connections: raise LimitNOFILE= (systemd) or the hard `ulimit -n`, or lower client.max_connections"
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

/// The runtime of client connections (and of the node's start): its threads, workers and
/// blocking ones, run `nice` nicer than the process (`cluster.client_nice`), so that under
/// fan-out the write path's threads, which keep the process's priority, get the CPU first.
/// The Raft and API runtimes are built from the main thread, which keeps it too.
fn client_runtime(nice: u8) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if nice > 0
                && let Err(e) = switchyard::sys::lower_thread_priority(nice)
            {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(error = %e, nice,
                        "cluster.client_nice: could not lower the client threads' priority");
                });
            }
        })
        .build()
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
        node.wait_ready().await;
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

/// SIGHUP (`systemctl reload`): re-reads the configuration the node started with and applies
/// what can change live (TLS certificates, limits, origins, log level); a bad file changes
/// nothing. Sections that changed and need a restart are named in a warning.
fn reload(
    server: &Server,
    path: Option<&std::path::Path>,
    overrides: &[(&'static str, Value)],
    log_reload: &LogReload,
) {
    tracing::info!("SIGHUP: reloading the configuration");
    let new = match Config::load_with(path, overrides.to_vec()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the configuration is invalid; nothing changed");
            return;
        }
    };
    match server.reload(&new) {
        Ok(restart) if !restart.is_empty() => tracing::warn!(
            sections = ?restart,
            "reload applied; these sections changed and take effect only after a restart"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload failed; the previous certificates stay in use");
            return;
        }
    }
    match log_reload(&new.log.filter(QUIET_LOG_TARGETS)) {
        Ok(()) => tracing::info!(level = %new.log.level, "reload done"),
        Err(e) => tracing::error!(error = %e, "log.level not applied"),
    }
}

enum Sig {
    Stop(&'static str),
    Reload,
}

/// SIGTERM and SIGINT stop the node; SIGHUP reloads (its default action would kill).
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

    async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Stop("SIGTERM"),
            _ = self.int.recv() => Sig::Stop("SIGINT"),
            _ = self.hup.recv() => Sig::Reload,
        }
    }
}

/// Installs a new filter (`LogConfig::filter` of a validated config).
type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Logging to stderr with the filter of `log.level` (validated, so it parses; openraft kept
/// at `warn` unless the level names it: `cluster::QUIET_LOG_TARGETS`).
fn init_logging(cfg: &Config) -> LogReload {
    use switchyard::cluster::QuietTransientErrors;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_new(cfg.log.filter(QUIET_LOG_TARGETS))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let parse = |level: &str| EnvFilter::try_new(level).map_err(|e| e.to_string());
    match cfg.log.format {
        LogFormat::Json => {
            let b = builder.json().with_filter_reloading();
            let h = b.reload_handle();
            b.finish().with(QuietTransientErrors).init();
            Box::new(move |level| h.reload(parse(level)?).map_err(|e| e.to_string()))
        }
        LogFormat::Text => {
            let b = builder.with_filter_reloading();
            let h = b.reload_handle();
            b.finish().with(QuietTransientErrors).init();
            Box::new(move |level| h.reload(parse(level)?).map_err(|e| e.to_string()))
        }
    }
}
