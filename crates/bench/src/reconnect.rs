//! `reconnect`: clients that lose their connection and come back as the SDKs do, while the
//! server API publishes with idempotency keys and retries; every client must end up with every
//! acknowledged publication made after its first subscription exactly once (recovered with
//! epoch and offset after each loss: no loss, no duplicate). Losses come from the bench
//! (`--drop-every`: sockets closed without a close frame, or the server API's `disconnect`
//! with a reconnect code) and from `--restart-cmd` (commands run mid-run that restart a node:
//! its clients are closed, reconnect with back-off, and are timed from the command's start
//! until each is subscribed again: "every client back within N s").
//!
//! [`client`] is one client, [`backoff`] the SDKs' back-off, [`publisher`] the keyed,
//! retrying publisher, [`restart`] the restart commands; this file runs them and adds up.

pub mod backoff;
mod client;
pub mod publisher;
pub mod restart;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::Api;
use super::progress::Rate;
use super::report::Report;
use super::stats::{Percentiles, Timeline, histogram, percentile_curve};
use super::{Ctx, Hooks, Progress, Target, points};
use backoff::{Backoff, Jitter};

/// Arguments of `switchyard bench reconnect`.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ReconnectArgs {
    /// Nodes, credentials, outputs.
    #[command(flatten)]
    pub target: Target,
    /// Clients (one connection each, spread over the --url nodes).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// First connects spread over this long.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// Publications per second, through the server API (--api, --api-key), each with an
    /// idempotency key.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long to publish (longer while restart commands run and their clients come back).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Retry a publication (same idempotency key, next --api node) this long before giving up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_for: Duration,
    /// Drop clients this often while publishing (0 = never).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub drop_every: Duration,
    /// Clients dropped each time (picked at random among those connected).
    #[arg(long, default_value_t = 1)]
    pub drop_clients: usize,
    /// How clients are dropped.
    #[arg(long, value_enum, default_value = "close")]
    pub drop_how: DropHow,
    /// Reconnect back-off: the first delay's floor (centrifuge-js `minReconnectDelay`).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub backoff_min: Duration,
    /// Reconnect back-off: the longest delay (centrifuge-js `maxReconnectDelay`).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,
    /// Reconnect back-off: `full` (centrifuge-js: min + random up to min·2^attempt) or
    /// `none` (min·2^attempt: 1, 2, 4 … s).
    #[arg(long, value_enum, default_value = "full")]
    pub jitter: Jitter,
    /// A shell command (`sh -c`) to run mid-run, e.g. one that restarts a cluster node
    /// (repeat for a rolling restart: each runs after the previous one's clients are back).
    #[arg(long = "restart-cmd")]
    pub restart_cmds: Vec<String>,
    /// When the first restart command starts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub restart_at: Duration,
    /// Pause between one restart's end (every client back) and the next command.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub restart_gap: Duration,
    /// Longest a restart command may run, and longest wait for every client after it.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub restart_timeout: Duration,
    /// Longest wait, after publishing ends, for every client to be back with the stream's top.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
}

/// How `--drop-every` drops a client.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropHow {
    /// The bench closes the socket without a close frame (a lost network).
    Close,
    /// The server API's `disconnect` for the client's user, code 3011 (reconnect allowed).
    Api,
}

/// One client's slot: whether it is connected, and the bench's order to drop it.
#[derive(Default)]
struct Slot {
    online: AtomicBool,
    drop_me: AtomicBool,
}

/// What the clients, the publisher, the dropper and the restarts share.
#[derive(Clone)]
pub struct Shared {
    ctx: Arc<Ctx>,
    timeline: Arc<Timeline>,
    /// The stream's top offset, from the API's acknowledgements.
    top: Arc<AtomicU64>,
    /// Publications acknowledged.
    published: Arc<AtomicU64>,
    /// Cancelled once publishing is over (after `drain_end` is set).
    publishing_done: CancellationToken,
    /// When the clients stop waiting for the top.
    drain_end: Arc<Mutex<Option<Instant>>>,
    /// Set while restart commands are pending: publishing goes on.
    restarting: Arc<AtomicBool>,
    /// When each restart command started.
    restarts: Arc<Mutex<Vec<Instant>>>,
    /// Clients connected and subscribed now.
    online: Arc<AtomicUsize>,
    /// Clients stopped for good (a terminal close, no token).
    stopped: Arc<AtomicUsize>,
    /// Connects so far, reconnects included.
    connects: Arc<AtomicU64>,
    /// Drops the bench made.
    drops: Arc<AtomicU64>,
    slots: Arc<Vec<Slot>>,
}

impl Shared {
    /// Publishing is over and the drain passed.
    fn drained(&self) -> bool {
        self.publishing_done.is_cancelled()
            && self.drain_end.lock().is_some_and(|e| Instant::now() >= e)
    }

    /// Sleeps `d`, or until the drain's end if that comes first.
    async fn pause(&self, d: Duration) {
        let mut until = Instant::now() + d;
        if let Some(e) = *self.drain_end.lock() {
            until = until.min(e);
        }
        tokio::time::sleep_until(until).await;
    }
}

/// Runs `switchyard bench reconnect`.
pub async fn run(a: ReconnectArgs, hooks: Hooks) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&a.target, hooks).await?);
    if ctx.apis.is_empty() || ctx.api_key.is_none() {
        anyhow::bail!("reconnect publishes through the server API: give --api and --api-key");
    }
    let start = Instant::now();
    let shared = Shared {
        ctx: ctx.clone(),
        timeline: Timeline::new(),
        top: Arc::default(),
        published: Arc::default(),
        publishing_done: CancellationToken::new(),
        drain_end: Arc::default(),
        restarting: Arc::new(AtomicBool::new(!a.restart_cmds.is_empty())),
        restarts: Arc::default(),
        online: Arc::default(),
        stopped: Arc::default(),
        connects: Arc::default(),
        drops: Arc::default(),
        slots: Arc::new((0..a.clients).map(|_| Slot::default()).collect()),
    };
    let _progress = progress(&shared, a.clients);
    let setup = client::Setup {
        clients: a.clients,
        ramp: a.ramp,
        backoff: Backoff {
            min: a.backoff_min,
            max: a.backoff_max,
            jitter: a.jitter,
        },
    };
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..a.clients {
        clients.spawn(client::run(i, shared.clone(), setup));
    }
    let restarts = tokio::spawn(restart::run(
        a.restart_cmds.clone(),
        restart::Timing {
            at: start + a.restart_at,
            gap: a.restart_gap,
            timeout: a.restart_timeout,
        },
        a.clients,
        shared.clone(),
    ));
    let dropper = tokio::spawn(dropper(a.clone(), shared.clone()));
    let plan = publisher::Plan {
        rate: a.rate,
        until: start + a.duration,
        payload: a.payload,
        retry_for: a.retry_for,
    };
    let published = publisher::publish(plan, start, &shared).await;
    *shared.drain_end.lock() = Some(Instant::now() + a.drain);
    shared.publishing_done.cancel();
    dropper.abort();
    let mut outcomes = Vec::new();
    while let Some(j) = clients.join_next().await {
        outcomes.push(j?);
    }
    let restarts = restarts.await?;
    let tally = tally(&outcomes, &published, &restarts);
    Ok(report(&a, &tally, &published, &restarts, &shared))
}

fn progress(shared: &Shared, clients: usize) -> Progress {
    let s = shared.clone();
    let (connect_rate, ack_rate) = (Rate::default(), Rate::default());
    Progress::start(s.ctx.progress, move || {
        let (c, p) = (
            s.connects.load(Ordering::Relaxed),
            s.published.load(Ordering::Relaxed),
        );
        format!(
            "online {}/{clients} · connects {c} ({:.0}/s) · acked {p} ({:.0}/s)",
            s.online.load(Ordering::Relaxed),
            connect_rate.per_sec(c),
            ack_rate.per_sec(p)
        )
    })
}

/// Every `--drop-every` while publishing, drops `--drop-clients` connected clients.
async fn dropper(a: ReconnectArgs, shared: Shared) {
    if a.drop_every.is_zero() {
        return;
    }
    let ctx = &shared.ctx;
    let mut api = Api::new(
        ctx.apis[0].clone(),
        ctx.api_key.clone().unwrap_or_default(),
        None,
    );
    let mut rng = fastrand::Rng::new();
    let mut tick = tokio::time::interval(a.drop_every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut online: Vec<usize> = (0..shared.slots.len())
            .filter(|i| shared.slots[*i].online.load(Ordering::Relaxed))
            .collect();
        rng.shuffle(&mut online);
        for &i in online.iter().take(a.drop_clients) {
            match a.drop_how {
                DropHow::Close => shared.slots[i].drop_me.store(true, Ordering::Relaxed),
                DropHow::Api => {
                    let body = serde_json::json!({
                        "user": client::user(i),
                        "disconnect": {"code": 3011, "reason": "bench drop"},
                    });
                    if api
                        .call("disconnect", body.to_string().into_bytes())
                        .await
                        .is_err()
                    {
                        continue;
                    }
                }
            }
            shared.drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every client's outcome checked against the acknowledged publications, added up.
#[derive(Default)]
struct Tally {
    top: u64,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    reconnects: u64,
    recovered: u64,
    not_recovered: u64,
    epoch_changes: u64,
    dropped: u64,
    server_closes: u64,
    terminal: u64,
    errors: u64,
    first_error: Option<String>,
    /// Clients whose last loss was never followed by a resubscribe.
    not_back: u64,
    /// Loss → resubscribed, µs.
    reconnect: Option<Histogram<u64>>,
    /// Clients lost after a restart command started: count, and command start → back, µs.
    restart_dropped: u64,
    back: Option<Histogram<u64>>,
}

fn tally(outcomes: &[client::Outcome], p: &publisher::Published, runs: &[restart::Run]) -> Tally {
    let mut t = Tally {
        reconnect: Some(histogram()),
        back: Some(histogram()),
        ..Default::default()
    };
    t.top = p.acked.iter().map(|x| x.1).max().unwrap_or(0);
    let (reconnect, back) = (t.reconnect.as_mut().unwrap(), t.back.as_mut().unwrap());
    for o in outcomes {
        t.duplicates += o.duplicates;
        t.reconnects += o.reconnects;
        t.recovered += o.recovered;
        t.not_recovered += o.not_recovered;
        t.epoch_changes += u64::from(o.epoch_changed);
        t.dropped += o.dropped;
        t.server_closes += o.server_closes;
        t.terminal += u64::from(o.terminal.is_some());
        t.errors += o.errors;
        if let Some(e) = o.terminal.as_ref().or(o.first_error.as_ref()) {
            t.first_error.get_or_insert(e.clone());
        }
        let _ = reconnect.add(&o.reconnect);
        if o.first.is_none() || o.episodes.last().is_some_and(|e| e.1.is_none()) {
            t.not_back += 1;
        }
        if let Some(first) = o.first {
            for &(seq, _) in p.acked.iter().filter(|x| x.1 >= first) {
                t.expected += 1;
                if o.seqs.contains(seq) {
                    t.received += 1;
                } else {
                    t.lost += 1;
                }
            }
        }
        // Each restart's clients: those lost after it started (before the next one did),
        // timed from its start to their last resubscribe in that window.
        for (k, r) in runs.iter().enumerate() {
            let next = runs.get(k + 1).map(|n| n.started);
            let mut window = o
                .episodes
                .iter()
                .filter(|e| e.0 >= r.started && next.is_none_or(|n| e.0 < n));
            let Some(last) = window.next_back() else {
                continue;
            };
            t.restart_dropped += 1;
            if let Some(b) = last.1 {
                let us = b.duration_since(r.started).as_micros();
                back.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
            }
        }
    }
    t
}

/// The report: figures, live-delivery latency, timeline, checks.
fn report(
    a: &ReconnectArgs,
    t: &Tally,
    p: &publisher::Published,
    runs: &[restart::Run],
    shared: &Shared,
) -> Report {
    let mut r = Report::new("reconnect", a);
    let n = |v: u64| v as f64;
    r.fig("clients", "clients", a.clients as f64, "");
    r.fig(
        "reconnects",
        "reconnects (subscribed again)",
        n(t.reconnects),
        "",
    );
    r.fig("recovered", "reconnects recovered", n(t.recovered), "");
    r.fig(
        "not_recovered",
        "reconnects not recovered",
        n(t.not_recovered),
        "",
    );
    // The drops that happened, not those asked for: a client picked at the last tick may
    // finish (everything received) before it looks at its flag, or before the node's
    // disconnect reaches it. Closing the socket: the drops clients carried out; through the
    // API: the disconnects accepted that clients saw as closes by the server.
    let drops = match a.drop_how {
        DropHow::Close => t.dropped,
        DropHow::Api => t.server_closes.min(shared.drops.load(Ordering::Relaxed)),
    };
    r.fig("drops", "clients dropped by the bench", n(drops), "");
    r.fig(
        "server_closes",
        "connections closed by the server",
        n(t.server_closes),
        "",
    );
    r.fig(
        "terminal_closes",
        "terminal closes (no reconnect)",
        n(t.terminal),
        "",
    );
    r.fig(
        "connect_errors",
        "failed connects, broken connections",
        n(t.errors),
        "",
    );
    r.fig(
        "clients_not_back",
        "clients not back at the end",
        n(t.not_back),
        "",
    );
    r.fig(
        "publications",
        "publications acknowledged",
        n(p.acked.len() as u64),
        "",
    );
    r.fig(
        "publications_retried",
        "publish attempts retried",
        n(p.retried),
        "",
    );
    r.fig(
        "publications_failed",
        "publications given up",
        n(p.failed),
        "",
    );
    r.fig("stream_top", "stream top offset", n(t.top), "");
    r.fig(
        "deliveries_expected",
        "publications expected (all clients)",
        n(t.expected),
        "",
    );
    r.fig(
        "deliveries_received",
        "publications received",
        n(t.received),
        "",
    );
    r.fig("lost", "lost", n(t.lost), "");
    r.fig("duplicates", "duplicates", n(t.duplicates), "");
    if let Some(h) = t.reconnect.as_ref().filter(|h| !h.is_empty()) {
        let pc = Percentiles::of(h);
        r.fig("reconnect_p50_ms", "loss → resubscribed p50", pc.p50, "ms");
        r.fig("reconnect_p95_ms", "loss → resubscribed p95", pc.p95, "ms");
        r.fig("reconnect_p99_ms", "loss → resubscribed p99", pc.p99, "ms");
        r.fig("reconnect_max_ms", "loss → resubscribed max", pc.max, "ms");
    }
    restart_figures(&mut r, t, runs);
    let hist = shared.timeline.total();
    r.latency_label = "publish→live delivery".into();
    r.latency = Some(Percentiles::of(&hist));
    r.percentiles = percentile_curve(&hist);
    r.timeline = points(&shared.timeline.seconds());
    checks(&mut r, t, p, runs);
    r
}

/// The restarts' figures: commands run and failed, clients dropped, how soon they were back.
fn restart_figures(r: &mut Report, t: &Tally, runs: &[restart::Run]) {
    let n = |v: u64| v as f64;
    if !runs.is_empty() {
        let failed = runs.iter().filter(|x| x.error.is_some()).count();
        let longest = runs.iter().map(|x| x.secs).fold(0.0, f64::max);
        r.fig("restarts", "restart commands run", runs.len() as f64, "");
        r.fig(
            "restarts_failed",
            "restart commands failed",
            failed as f64,
            "",
        );
        r.fig(
            "restart_cmd_max_secs",
            "longest restart command",
            longest,
            "s",
        );
        r.fig(
            "restart_clients_dropped",
            "clients dropped by the restarts",
            n(t.restart_dropped),
            "",
        );
    }
    if let Some(h) = t.back.as_ref().filter(|h| !h.is_empty()) {
        let pc = Percentiles::of(h);
        r.fig("back_p50_ms", "restart → client back p50", pc.p50, "ms");
        r.fig("back_p95_ms", "restart → client back p95", pc.p95, "ms");
        r.fig("back_max_ms", "restart → every client back", pc.max, "ms");
    }
}

/// Deliveries add up; exactly once after every reconnect; every client back; every
/// publication acknowledged; every restart command ran and dropped clients.
fn checks(r: &mut Report, t: &Tally, p: &publisher::Published, runs: &[restart::Run]) {
    r.check(
        "deliveries add up",
        t.expected == t.received + t.lost,
        format!(
            "expected {} = received {} + lost {}",
            t.expected, t.received, t.lost
        ),
    );
    r.check(
        "exactly once after every reconnect",
        t.lost == 0 && t.duplicates == 0 && t.not_recovered == 0 && t.epoch_changes == 0,
        format!(
            "{} lost, {} duplicates, {} not recovered, {} epoch changes",
            t.lost, t.duplicates, t.not_recovered, t.epoch_changes
        ),
    );
    let why = t
        .first_error
        .as_ref()
        .map(|e| format!("; first error: {e}"))
        .unwrap_or_default();
    r.check(
        "every client back",
        t.not_back == 0 && t.terminal == 0,
        format!(
            "{} not back, {} closed for good{why}",
            t.not_back, t.terminal
        ),
    );
    r.check(
        "every publication acknowledged",
        p.failed == 0,
        format!(
            "{} given up, {} attempts retried{}",
            p.failed,
            p.retried,
            p.first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        ),
    );
    if !runs.is_empty() {
        let errors: Vec<&str> = runs.iter().filter_map(|x| x.error.as_deref()).collect();
        r.check(
            "every restart command ran and dropped clients",
            errors.is_empty() && t.restart_dropped > 0,
            format!(
                "{} of {} failed{}; {} clients dropped",
                errors.len(),
                runs.len(),
                errors.first().map(|e| format!(": {e}")).unwrap_or_default(),
                t.restart_dropped
            ),
        );
    }
}
