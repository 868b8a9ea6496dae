//! `switchyard bench`: load generation and measurement against any Switchyard node or cluster
//! over the real client protocol and server API.
//!
//! Scenarios, one file each: [`connect`] (ramp to N subscribed connections, spread over
//! nodes, source addresses and worker processes), [`fanout`] (open-loop publishers →
//! subscribers with per-stream loss/duplicate/reorder accounting and end-to-end latency, plus
//! a step mode), [`publish`] (the fan-out's phases with few subscribers over many channels,
//! reporting committed publications/s and acknowledgement latency), [`churn`]
//! (connect/disconnect cycles with recovery checks), [`reconnect`] (clients dropped, or a node
//! restarted under them by `--restart-cmd`, reconnecting with the SDKs' back-off: exactly once
//! after, time until every client is back) and [`soak`] (a long fan-out that samples
//! server RSS/FDs/store size and reports their slope). [`report`] turns a run into a
//! table, JSON and a self-contained HTML page, the arguments shown with their secrets redacted
//! ([`redact`]). Loopback targets only unless `--allow-remote` ([`loopback`]): this is a tool
//! for nodes you run, not for other people's servers. [`progress`] shows a run as it goes.
//!
//! A client of the server's public interfaces only (client protocol, server API, `/metrics`):
//! it does not depend on the `switchyard` crate. What it needs from there, token minting, the
//! binary passes in as [`Hooks`].

pub mod churn;
pub mod client;
pub mod connect;
pub mod deflate;
pub mod fanout;
pub mod loopback;
pub mod plan;
pub mod progress;
pub mod publish;
pub mod reconnect;
pub mod redact;
pub mod report;
pub mod soak;
pub mod stats;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use client::Endpoint;
pub use progress::Progress;
pub use report::Report;
use stats::Probe;

/// Signs an HS256 connection token for `user` with `secret`, valid for `ttl`.
pub type Mint = fn(secret: &str, user: &str, ttl: Duration) -> anyhow::Result<String>;

/// What the bench takes from the server crate without depending on it. The binary passes them
/// in, and passes the same ones to the `connect` worker processes it re-executes itself as.
#[derive(Clone, Copy)]
pub struct Hooks {
    /// Mints the per-connection tokens for `--token-secret`.
    pub mint: Mint,
}

/// What to run.
#[derive(clap::Subcommand, Debug, Clone, Serialize, Deserialize)]
pub enum Scenario {
    /// Ramp to N concurrent subscribed connections (k6-like stages), hold, ramp down.
    Connect(connect::ConnectArgs),
    /// S subscribers over C channels, publishers at rate R: loss, duplicates, order, latency.
    Fanout(fanout::FanoutArgs),
    /// Few subscribers over many channels, publishers at rate R: committed publications/s, ack latency.
    Publish(publish::PublishArgs),
    /// Connect/disconnect cycles under publishing; every reconnect must recover exactly what it missed.
    Churn(churn::ChurnArgs),
    /// Clients dropped or restarted away, reconnecting with the SDKs' back-off; exactly once after.
    Reconnect(reconnect::ReconnectArgs),
    /// A long steady fan-out sampling server RSS, FDs, store size and latency; reports slopes.
    Soak(soak::SoakArgs),
    /// Run a plan (TOML): scenarios one after another, with thresholds that decide the exit code.
    Run(plan::RunArgs),
    /// Internal: one share of a `connect` run in a child process (JSON spec in, JSON lines out).
    #[command(hide = true)]
    Worker {
        /// The share to run, as JSON.
        #[arg(long)]
        spec: String,
    },
}

/// Where the nodes are and how to talk to them; common to every scenario.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Client WebSocket URLs (repeat or comma-separate); connections are spread over them.
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8000/connection/websocket"
    )]
    pub urls: Vec<String>,
    /// Server API base URLs (`http://host:port`, repeat or comma-separate) for `--via api`.
    #[arg(long = "api", value_delimiter = ',')]
    pub apis: Vec<String>,
    /// Server API key (`X-API-Key`). Also read from `SY_BENCH_API_KEY`, which other users'
    /// `ps` cannot show.
    #[arg(long, env = "SY_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// HMAC secret to mint connection tokens in-process (one user per connection). Also read
    /// from `SY_BENCH_TOKEN_SECRET`.
    #[arg(long, env = "SY_BENCH_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// A ready connection token used by every connection (instead of --token-secret). Also
    /// read from `SY_BENCH_TOKEN`.
    #[arg(long, env = "SY_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Channel name (prefix when several channels are used: `<channel>-<n>`).
    #[arg(long, default_value = "chat:bench")]
    pub channel: String,
    /// Spread outgoing connections over this many source addresses 127.0.0.2, .3, … (0 = let
    /// the kernel choose): each source address has its own range of ephemeral ports.
    #[arg(long, default_value_t = 0)]
    pub source_addrs: u8,
    /// Server process ids to sample (RSS, FDs, CPU) from /proc (repeat or comma-separate).
    #[arg(long = "pid", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Admin listeners (`http://host:port`) to scrape /metrics from (RSS, FDs, store size).
    #[arg(long = "admin", value_delimiter = ',')]
    pub admins: Vec<String>,
    /// Connection attempts in flight at once (per process).
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// How long one connect or command may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HTML report (latency over time, percentile plot) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// When stderr is not a terminal (CI, nohup, a pipe), print a plain progress line there
    /// this often (0 = none); on a terminal the live line is shown instead.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(default = "progress::default_every")]
    pub progress_every: Duration,
    /// Allow targets off this machine: without it every --url, --api and --admin must
    /// resolve to loopback addresses only (127.0.0.0/8, ::1).
    #[arg(long)]
    #[serde(default)]
    pub allow_remote: bool,
    /// Offer permessage-deflate on every WebSocket connection (the node agrees when its
    /// `client.websocket_compression` is on); compressed messages are inflated. With
    /// --admin, the report gives the bytes the node wrote per delivery.
    #[arg(long)]
    #[serde(default)]
    pub compression: bool,
}

/// [`Target`] resolved: endpoints parsed, secrets checked.
#[derive(Clone)]
pub struct Ctx {
    /// Client WebSocket endpoints.
    pub urls: Vec<Endpoint>,
    /// Server API endpoints.
    pub apis: Vec<Endpoint>,
    /// API key.
    pub api_key: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    mint: Mint,
    /// Channel (prefix).
    pub channel: String,
    sources: Vec<IpAddr>,
    /// Server probes.
    pub probe: Probe,
    /// Connects in flight at once.
    pub concurrency: usize,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// How to show progress.
    pub progress: progress::Mode,
    /// Offer permessage-deflate on WebSocket connections.
    pub compression: bool,
}

impl Ctx {
    /// Resolves a [`Target`]; tokens are minted with `hooks.mint`. Every URL must resolve to
    /// loopback addresses only unless `--allow-remote` ([`loopback::endpoint`]): checked here,
    /// before anything is sent.
    pub async fn new(t: &Target, hooks: Hooks) -> anyhow::Result<Ctx> {
        let urls = loopback::endpoints(&t.urls, t.allow_remote).await?;
        let apis = loopback::endpoints(&t.apis, t.allow_remote).await?;
        let admins = loopback::endpoints(&t.admins, t.allow_remote).await?;
        if urls.is_empty() {
            bail!("give at least one --url");
        }
        if t.token.is_none() && t.token_secret.is_none() {
            bail!("give --token-secret (tokens are minted per connection) or --token");
        }
        let sources = (0..t.source_addrs)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(i))))
            .collect();
        Ok(Ctx {
            urls,
            apis,
            api_key: t.api_key.clone(),
            secret: t.token_secret.clone(),
            token: t.token.clone(),
            mint: hooks.mint,
            channel: t.channel.clone(),
            sources,
            probe: Probe {
                pids: t.pids.clone(),
                admins,
            },
            concurrency: t.concurrency.max(1),
            timeout: t.timeout,
            progress: progress::Mode::of(t),
            compression: t.compression,
        })
    }

    /// A connection token for `user`.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        (self.mint)(
            self.secret.as_deref().unwrap_or_default(),
            user,
            Duration::from_secs(24 * 3600),
        )
    }

    /// The node connection `i` goes to (round robin).
    pub fn url(&self, i: usize) -> &Endpoint {
        &self.urls[i % self.urls.len()]
    }

    /// The source address connection `i` leaves from (round robin), if any.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }

    /// Opens connection `i` (its node and source address), connects with `token` and
    /// subscribes to each of `channels` with the subscribe options `sub`, all within the
    /// timeout. Returns the connection, the last subscribe reply and any messages that came
    /// with the replies.
    pub async fn open_subscribed(
        &self,
        i: usize,
        token: &str,
        channels: &[&str],
        sub: serde_json::Value,
    ) -> anyhow::Result<(client::Conn, serde_json::Value, Vec<Vec<u8>>)> {
        let mut c = client::Conn::open_with(self.url(i), self.source(i), self.compression).await?;
        let (reply, rest) = c
            .connect_subscribe(token, channels, sub, self.timeout)
            .await?;
        Ok((c, reply, rest))
    }

    /// How to publish: as asked, else through the API when one is given, else as a client.
    pub fn via(&self, asked: Option<Via>) -> anyhow::Result<Via> {
        let via = match asked {
            Some(v) => v,
            None if !self.apis.is_empty() => Via::Api,
            None => Via::Client,
        };
        if via == Via::Api && (self.apis.is_empty() || self.api_key.is_none()) {
            bail!("--via api needs --api URL and --api-key");
        }
        Ok(via)
    }

    /// Channel `n` of `count` (the bare name when there is only one).
    pub fn channel(&self, n: usize, count: usize) -> String {
        if count <= 1 {
            self.channel.clone()
        } else {
            format!("{}-{n}", self.channel)
        }
    }
}

/// How publications are sent.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    /// `POST /api/publish` with `X-API-Key` (needs --api and --api-key).
    Api,
    /// The client protocol's `publish` command over WebSocket.
    Client,
}

/// Runs a scenario and returns its report (the library entry point; tests call this).
pub async fn run(s: Scenario, hooks: Hooks) -> anyhow::Result<Report> {
    match s {
        Scenario::Connect(a) => connect::run(a, hooks).await,
        Scenario::Fanout(a) => fanout::run(a, hooks).await,
        Scenario::Publish(a) => publish::run(a, hooks).await,
        Scenario::Churn(a) => churn::run(a, hooks).await,
        Scenario::Reconnect(a) => reconnect::run(a, hooks).await,
        Scenario::Soak(a) => soak::run(a, hooks).await,
        Scenario::Run(_) => bail!("a plan runs through plan::run, not as one scenario"),
        Scenario::Worker { spec } => {
            connect::worker(&spec, hooks).await?;
            Ok(Report::default())
        }
    }
}

/// The `switchyard bench` command: runs the scenario, prints the summary table, writes the
/// JSON and HTML files. Exit code 0 when every check passed, 1 when one failed, 2 on error.
/// The caller raises the open-file limit first (each connection is a descriptor).
pub fn main(s: Scenario, hooks: Hooks) -> std::process::ExitCode {
    use std::process::ExitCode;
    if let Scenario::Run(a) = s {
        return plan::main(a, hooks);
    }
    let worker = matches!(s, Scenario::Worker { .. });
    let outputs = target_of(&s);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match rt.block_on(run(s, hooks)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if worker {
        return ExitCode::SUCCESS;
    }
    print!("{}", report.table());
    if let Some(t) = outputs {
        if let Err(e) = write_outputs(&report, &t) {
            eprintln!("switchyard bench: {e:#}");
            return ExitCode::from(2);
        }
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The [`Target`] of a scenario (where its `--json` and `--html` go); none for internal ones.
pub fn target_of(s: &Scenario) -> Option<Target> {
    match s {
        Scenario::Connect(a) => Some(a.target.clone()),
        Scenario::Fanout(a) => Some(a.target.clone()),
        Scenario::Publish(a) => Some(a.target.clone()),
        Scenario::Churn(a) => Some(a.target.clone()),
        Scenario::Reconnect(a) => Some(a.target.clone()),
        Scenario::Soak(a) => Some(a.fanout.target.clone()),
        Scenario::Run(_) | Scenario::Worker { .. } => None,
    }
}

/// Writes `--json` and `--html` when asked for.
pub fn write_outputs(report: &Report, t: &Target) -> anyhow::Result<()> {
    if let Some(p) = &t.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report.to_json())?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &t.html {
        std::fs::write(p, report.html()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Samples the servers every `every` until `stop`; returns the readings.
pub fn spawn_sampler(
    probe: Probe,
    clock: stats::Clock,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<stats::ServerSample>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        if probe.is_empty() {
            return out;
        }
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => out.push(probe.sample(clock.secs()).await),
            }
        }
        out.push(probe.sample(clock.secs()).await);
        out
    })
}

/// Turns a timeline's seconds into report points.
pub fn points(seconds: &[stats::Second]) -> Vec<report::Point> {
    seconds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = stats::Percentiles::of(&s.hist);
            report::Point {
                t: i as f64,
                rate: s.deliveries as f64,
                p50: p.p50,
                p99: p.p99,
                max: p.max,
                connections: 0.0,
            }
        })
        .collect()
}

/// Parses a scenario from command-line words (`["fanout", "--url", …]`), as
/// `switchyard bench` would.
pub fn parse<I, T>(words: I) -> Result<Scenario, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    #[derive(clap::Parser)]
    struct Words {
        #[command(subcommand)]
        scenario: Scenario,
    }
    let all =
        std::iter::once(std::ffi::OsString::from("bench")).chain(words.into_iter().map(Into::into));
    <Words as clap::Parser>::try_parse_from(all).map(|w| w.scenario)
}
