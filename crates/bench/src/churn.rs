//! `churn`: clients connect, stay a while, disconnect, stay away a while, and reconnect with
//! `recover` from the last offset they saw, while a publisher keeps publishing. Every client
//! must end up with every offset from its first subscription to the stream's top exactly once:
//! what it missed while away must come back in the recovery, with no gap and no duplicate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::client::{Api, Conn, Incoming, lines};
use super::progress::Rate;
use super::report::Report;
use super::stats::{
    Percentiles, Recorder, SeqSet, Timeline, histogram, now_micros, parse_pub, payload,
    percentile_curve,
};
use super::{Ctx, Hooks, Progress, Target, Via, points};

/// Arguments of `switchyard bench churn`.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ChurnArgs {
    /// Nodes, credentials, outputs.
    #[command(flatten)]
    pub target: Target,
    /// Clients cycling (each one connection at a time).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Connects per second, all clients together (each client cycles every clients/rate s).
    #[arg(long, default_value_t = 20.0)]
    pub cycle_rate: f64,
    /// Time a client stays disconnected in each cycle.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub offline: Duration,
    /// How long to churn and publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Publications per second into the channel (keep offline × rate under the node's
    /// recovery limit, client.recovery_max_publications).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// How to publish (default: api when --api is given, else client).
    #[arg(long, value_enum)]
    pub via: Option<Via>,
    /// Longest wait, after publishing ends, for every client to reach the stream's top.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
}

#[derive(Default)]
struct ClientResult {
    cycles: u64,
    recovered: u64,
    not_recovered: u64,
    first: Option<u64>,
    /// Highest offset seen (the stream only grows).
    max: u64,
    seen: SeqSet,
    duplicates: u64,
    errors: u64,
    error: Option<String>,
    epoch_changed: bool,
    reconnect: Option<Histogram<u64>>,
}

impl ClientResult {
    fn record(&mut self, offset: u64) {
        if !self.seen.insert(offset) {
            self.duplicates += 1;
        }
        self.max = self.max.max(offset);
    }
}

/// Runs `switchyard bench churn`: start the clients, publish, wait for the clients to reach
/// the stream's top, then add up and report.
pub async fn run(a: ChurnArgs, hooks: Hooks) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&a.target, hooks).await?);
    let via = ctx.via(a.via)?;
    let timeline = Timeline::new();
    let start = Instant::now();
    let shared = Shared {
        ctx: ctx.clone(),
        timeline,
        top: Arc::default(),
        publishing_done: tokio_util::sync::CancellationToken::new(),
        cycles: Arc::default(),
        published: Arc::default(),
    };
    let progress = {
        let (c, p) = (shared.cycles.clone(), shared.published.clone());
        let (cycle_rate, ack_rate) = (Rate::default(), Rate::default());
        Progress::start(ctx.progress, move || {
            let (cycles, acked) = (c.load(Ordering::Relaxed), p.load(Ordering::Relaxed));
            format!(
                "connects {cycles} ({:.0}/s) · acked {acked} ({:.0}/s)",
                cycle_rate.per_sec(cycles),
                ack_rate.per_sec(acked)
            )
        })
    };
    let timing = Timing::new(&a, start);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..a.clients {
        clients.spawn(client(i, shared.clone(), timing));
    }
    let publisher = publish(&a, via, start, &shared).await?;
    shared.publishing_done.cancel();
    let mut results = Vec::new();
    while let Some(j) = clients.join_next().await {
        results.push(j?);
    }
    drop(progress);
    let acked_top = shared.top.load(Ordering::Relaxed);
    let tally = account(&results, acked_top, publisher.error.clone());
    Ok(report(&a, tally, &publisher, &shared))
}

/// What the clients, the publisher and the progress line of a run share.
#[derive(Clone)]
struct Shared {
    /// Nodes and credentials.
    ctx: Arc<Ctx>,
    /// Live-delivery latencies by second.
    timeline: Arc<Timeline>,
    /// The stream's top offset, from the API's acknowledgements.
    top: Arc<AtomicU64>,
    /// Cancelled once publishing is over.
    publishing_done: tokio_util::sync::CancellationToken,
    /// Connects so far, reconnects included.
    cycles: Arc<AtomicU64>,
    /// Publications acknowledged.
    published: Arc<AtomicU64>,
}

/// When the clients come and go.
#[derive(Clone, Copy)]
struct Timing {
    /// Clients cycling (their starts are staggered over one period).
    clients: usize,
    /// One cycle of one client.
    period: Duration,
    /// Time online in a cycle.
    online: Duration,
    /// Time offline in a cycle.
    offline: Duration,
    /// Longest wait, after publishing ends, for a client to reach the stream's top.
    drain: Duration,
    /// When publishing ends: each client's next cycle is its last.
    publish_end: Instant,
}

impl Timing {
    /// The timing of `a` for a run started at `start`.
    fn new(a: &ChurnArgs, start: Instant) -> Timing {
        let period = Duration::from_secs_f64(a.clients as f64 / a.cycle_rate.max(1e-3));
        Timing {
            clients: a.clients,
            period,
            online: period
                .saturating_sub(a.offline)
                .max(Duration::from_millis(50)),
            offline: a.offline,
            drain: a.drain,
            publish_end: start + a.duration,
        }
    }
}

/// One client's state across its cycles.
struct Client {
    /// Its number.
    i: usize,
    /// Its connection token.
    token: String,
    /// What it saw so far.
    res: ClientResult,
    /// Live-delivery latencies.
    rec: Recorder,
    /// The stream's epoch, from its first subscription.
    epoch: Option<String>,
}

/// Why a cycle's connect failed (counted as an error either way).
enum ConnectFailed {
    /// Refused or broken: wait the offline time before trying again.
    Error,
    /// Timed out: try again at once.
    TimedOut,
}

/// Client `i`: connects, stays online, goes away, reconnects recovering from the last offset
/// it saw, until publishing ends; its last cycle stays until it has the stream's top or the
/// drain passed.
async fn client(i: usize, shared: Shared, timing: Timing) -> ClientResult {
    let mut res = ClientResult {
        reconnect: Some(histogram()),
        ..Default::default()
    };
    let rec = Recorder::new(shared.timeline.clone());
    // Stagger the clients over one period.
    let stagger = i as f64 / timing.clients.max(1) as f64;
    tokio::time::sleep(timing.period.mul_f64(stagger)).await;
    let token = match shared.ctx.token(&format!("bench-churn-{i}")) {
        Ok(t) => t,
        Err(e) => {
            res.error = Some(format!("{e:#}"));
            return res;
        }
    };
    let mut c = Client {
        i,
        token,
        res,
        rec,
        epoch: None,
    };
    let mut last_cycle = false;
    loop {
        last_cycle = last_cycle || Instant::now() >= timing.publish_end;
        let last = c.res.first.map(|_| c.res.max);
        let sub = c.subscribe_options(last);
        let t0 = now_micros();
        let (mut conn, reply, rest) = match c.connect(&shared.ctx, sub).await {
            Ok(x) => x,
            Err(failed) => {
                if last_cycle {
                    return c.res;
                }
                if let ConnectFailed::Error = failed {
                    tokio::time::sleep(timing.offline).await;
                }
                continue;
            }
        };
        c.subscribed(&reply["subscribe"], last, t0);
        shared.cycles.fetch_add(1, Ordering::Relaxed);
        c.account(&rest.join(&b'\n'));
        // Stay online: until the end of this cycle, or (last cycle) until this client
        // has everything up to the top or the drain passed.
        let until = if last_cycle {
            Instant::now().max(timing.publish_end) + timing.drain
        } else {
            Instant::now() + timing.online
        };
        c.stay_online(&mut conn, until, last_cycle, &shared).await;
        conn.close().await;
        if last_cycle {
            c.rec.flush();
            return c.res;
        }
        tokio::time::sleep(timing.offline).await;
    }
}

impl Client {
    /// Subscribe options: recover from `last` (the highest offset seen) after the first time.
    fn subscribe_options(&self, last: Option<u64>) -> serde_json::Value {
        match (&self.epoch, last) {
            (Some(e), Some(o)) => {
                json!({"recover": true, "epoch": e, "offset": o, "recoverable": true})
            }
            _ => json!({"recoverable": true}),
        }
    }

    /// Connects and subscribes with `sub` within the timeout.
    async fn connect(
        &mut self,
        ctx: &Ctx,
        sub: serde_json::Value,
    ) -> Result<(Conn, serde_json::Value, Vec<Vec<u8>>), ConnectFailed> {
        let ch = [ctx.channel.as_str()];
        let attempt = ctx.open_subscribed(self.i, &self.token, &ch, sub);
        match tokio::time::timeout(ctx.timeout, attempt).await {
            Ok(Ok(x)) => Ok(x),
            Ok(Err(e)) => {
                self.res.errors += 1;
                self.res.error.get_or_insert(format!("{e:#}"));
                Err(ConnectFailed::Error)
            }
            Err(_) => {
                self.res.errors += 1;
                self.res.error.get_or_insert("connect timed out".into());
                Err(ConnectFailed::TimedOut)
            }
        }
    }

    /// Takes in a subscribe reply `r`: the reconnect latency since `t0`; on a reconnect,
    /// whether it recovered and the publications it recovered; the first time, the stream's
    /// epoch and the offset the client starts after.
    fn subscribed(&mut self, r: &serde_json::Value, last: Option<u64>, t0: u64) {
        let res = &mut self.res;
        if let Some(h) = res.reconnect.as_mut() {
            h.saturating_record(now_micros().saturating_sub(t0).max(1));
        }
        let new_epoch = r["epoch"].as_str().map(str::to_string);
        match (&self.epoch, last) {
            (Some(e), Some(_)) => {
                if new_epoch.as_ref().is_some_and(|n| n != e) {
                    res.epoch_changed = true;
                }
                if r["recovered"].as_bool() == Some(true) {
                    res.recovered += 1;
                    for p in r["publications"].as_array().into_iter().flatten() {
                        if let Some(o) = p["offset"].as_u64() {
                            res.record(o);
                        }
                    }
                } else {
                    res.not_recovered += 1;
                }
            }
            _ => {
                self.epoch = new_epoch;
                let top = r["offset"].as_u64().unwrap_or(0);
                res.first = Some(top + 1);
                res.max = top;
            }
        }
        res.cycles += 1;
    }

    /// Records the publications in a text message: their offsets and live latency.
    fn account(&mut self, text: &[u8]) {
        let now = now_micros();
        for line in lines(text) {
            if let Some(m) = parse_pub(line) {
                self.rec.record(now, now.saturating_sub(m.ts));
                if let Some(o) = m.offset {
                    self.res.record(o);
                }
            }
        }
    }

    /// Reads `conn` until `until`, the server closes it or (last cycle, once publishing is
    /// over) the client has the stream's top.
    async fn stay_online(
        &mut self,
        conn: &mut Conn,
        until: Instant,
        last_cycle: bool,
        shared: &Shared,
    ) {
        loop {
            if last_cycle && shared.publishing_done.is_cancelled() {
                let t = shared.top.load(Ordering::Relaxed);
                if t > 0 && self.res.max >= t {
                    break;
                }
            }
            let m = tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = tokio::time::sleep(Duration::from_millis(50)), if last_cycle => continue,
                m = conn.recv() => m,
            };
            match m {
                Ok(Incoming::Text(t)) => self.account(&t),
                Ok(Incoming::Closed(code, reason)) => {
                    self.res.errors += 1;
                    self.res
                        .error
                        .get_or_insert(format!("closed by the server: {code} {reason}"));
                    break;
                }
                Err(e) => {
                    self.res.errors += 1;
                    self.res.error.get_or_insert(format!("{e:#}"));
                    break;
                }
            }
        }
    }
}

/// What the publisher did.
struct Published {
    /// Publications refused or failed.
    failed: u64,
    /// The first error.
    error: Option<String>,
}

/// Publishes `a.rate` per second for `a.duration` from `start`, through the API (which
/// tells the offset, kept in `shared.top`) or a client connection.
async fn publish(
    a: &ChurnArgs,
    via: Via,
    start: Instant,
    shared: &Shared,
) -> anyhow::Result<Published> {
    let ctx = &shared.ctx;
    let total = (a.rate * a.duration.as_secs_f64()).round() as u64;
    let gap = Duration::from_secs_f64(1.0 / a.rate.max(1e-6));
    let mut out = Published {
        failed: 0,
        error: None,
    };
    let mut api = (via == Via::Api).then(|| {
        Api::new(
            ctx.apis[0].clone(),
            ctx.api_key.clone().unwrap_or_default(),
            None,
        )
    });
    let mut pconn = None;
    if via == Via::Client {
        let mut c = Conn::open(ctx.url(0), None).await?;
        let ch = ctx.channel.clone();
        c.connect_subscribe(
            &ctx.token("bench-churn-pub")?,
            &[&ch],
            json!({}),
            ctx.timeout,
        )
        .await?;
        pconn = Some(c);
    }
    let ch = json!(ctx.channel).to_string();
    for k in 0..total {
        tokio::time::sleep_until(start + gap.mul_f64(k as f64)).await;
        let data = payload(0, k, now_micros(), a.payload);
        match publish_one(api.as_mut(), pconn.as_mut(), ctx, &ch, &data).await {
            Ok(off) => {
                shared.published.fetch_add(1, Ordering::Relaxed);
                if let Some(o) = off {
                    shared.top.fetch_max(o, Ordering::Relaxed);
                }
            }
            Err(e) => {
                out.failed += 1;
                out.error.get_or_insert(e);
            }
        }
    }
    if let Some(c) = pconn {
        c.close().await;
    }
    Ok(out)
}

/// One publication of `data` to `ch` (a JSON string) through `api` or else `pconn`: its
/// offset when the API tells it.
async fn publish_one(
    api: Option<&mut Api>,
    pconn: Option<&mut Conn>,
    ctx: &Ctx,
    ch: &str,
    data: &str,
) -> Result<Option<u64>, String> {
    if let Some(api) = api {
        match api
            .call(
                "publish",
                format!("{{\"channel\":{ch},\"data\":{data}}}").into_bytes(),
            )
            .await
        {
            Ok(v) if v.get("result").is_some() => Ok(v["result"]["offset"].as_u64()),
            Ok(v) => Err(format!("publish refused: {v}")),
            Err(e) => Err(format!("{e:#}")),
        }
    } else if let Some(c) = pconn {
        let id = c.id();
        let cmd = format!("{{\"id\":{id},\"publish\":{{\"channel\":{ch},\"data\":{data}}}}}");
        match c.send(cmd.as_bytes()).await {
            Ok(()) => c
                .reply(id, ctx.timeout)
                .await
                .map(|_| None)
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("{e:#}")),
        }
    } else {
        Ok(None)
    }
}

/// Every client's offsets checked against the stream's top, added up.
struct Tally {
    /// The stream's top offset.
    top: u64,
    /// Offsets every client should have (from its first subscription to the top).
    expected: u64,
    /// Of those, received.
    received: u64,
    /// Of those, missing.
    missing: u64,
    /// Offsets received more than once.
    dups: u64,
    /// Reconnects that recovered.
    recovered: u64,
    /// Reconnects that did not.
    not_recovered: u64,
    /// Connects, reconnects included.
    cycles: u64,
    /// Connection errors.
    errors: u64,
    /// Clients that saw the stream's epoch change.
    epoch_changes: u64,
    /// The first error, the publisher's first.
    first_error: Option<String>,
    /// Reconnect+recover latency.
    reconnect: Histogram<u64>,
}

/// Adds up the clients' results. The stream's top is `acked_top` (from the API's
/// acknowledgements) or else the highest offset any client saw.
fn account(results: &[ClientResult], acked_top: u64, first_error: Option<String>) -> Tally {
    let mut top = acked_top;
    for r in results {
        top = top.max(r.max);
    }
    let mut t = Tally {
        top,
        expected: 0,
        received: 0,
        missing: 0,
        dups: 0,
        recovered: 0,
        not_recovered: 0,
        cycles: 0,
        errors: 0,
        epoch_changes: 0,
        first_error,
        reconnect: histogram(),
    };
    for r in results {
        t.cycles += r.cycles;
        t.recovered += r.recovered;
        t.not_recovered += r.not_recovered;
        t.errors += r.errors;
        t.dups += r.duplicates;
        t.epoch_changes += u64::from(r.epoch_changed);
        if let Some(e) = &r.error {
            t.first_error.get_or_insert(e.clone());
        }
        if let Some(h) = &r.reconnect {
            let _ = t.reconnect.add(h);
        }
        if let Some(f) = r.first {
            for o in f..=top {
                t.expected += 1;
                if r.seen.contains(o) {
                    t.received += 1;
                } else {
                    t.missing += 1;
                }
            }
        }
    }
    t
}

/// The report: figures, latency, timeline, checks.
fn report(a: &ChurnArgs, t: Tally, p: &Published, shared: &Shared) -> Report {
    let hist = shared.timeline.total();
    let mut r = Report::new("churn", a);
    r.fig("clients", "clients", a.clients as f64, "");
    r.fig("cycles", "connects (incl. reconnects)", t.cycles as f64, "");
    r.fig("recovered", "reconnects recovered", t.recovered as f64, "");
    r.fig(
        "not_recovered",
        "reconnects not recovered",
        t.not_recovered as f64,
        "",
    );
    r.fig("connect_errors", "connection errors", t.errors as f64, "");
    r.fig(
        "publications",
        "publications acknowledged",
        shared.published.load(Ordering::Relaxed) as f64,
        "",
    );
    r.fig(
        "publications_failed",
        "publications failed",
        p.failed as f64,
        "",
    );
    r.fig("stream_top", "stream top offset", t.top as f64, "");
    r.fig(
        "deliveries_expected",
        "offsets expected (all clients)",
        t.expected as f64,
        "",
    );
    r.fig(
        "deliveries_received",
        "offsets received",
        t.received as f64,
        "",
    );
    r.fig("lost", "lost", t.missing as f64, "");
    r.fig("duplicates", "duplicates", t.dups as f64, "");
    let rc = Percentiles::of(&t.reconnect);
    r.fig("reconnect_p50_ms", "reconnect+recover p50", rc.p50, "ms");
    r.fig("reconnect_p99_ms", "reconnect+recover p99", rc.p99, "ms");
    r.latency_label = "publish→live delivery".into();
    r.latency = Some(Percentiles::of(&hist));
    r.percentiles = percentile_curve(&hist);
    r.timeline = points(&shared.timeline.seconds());
    checks(&mut r, t, p);
    r
}

/// Deliveries add up; every reconnect recovered exactly what it missed; no errors.
fn checks(r: &mut Report, t: Tally, p: &Published) {
    let (expected, received, missing, dups) = (t.expected, t.received, t.missing, t.dups);
    let (rec_fail, epoch_changes) = (t.not_recovered, t.epoch_changes);
    let (errors, pub_failed) = (t.errors, p.failed);
    r.check(
        "deliveries add up",
        expected == received + missing,
        format!("expected {expected} = received {received} + lost {missing}"),
    );
    r.check(
        "every reconnect recovered exactly what it missed",
        missing == 0 && dups == 0 && rec_fail == 0 && epoch_changes == 0,
        format!("{missing} lost, {dups} duplicates, {rec_fail} not recovered, {epoch_changes} epoch changes"),
    );
    r.check(
        "no errors",
        errors == 0 && pub_failed == 0,
        format!(
            "{errors} connection errors, {pub_failed} failed publications{}",
            t.first_error
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        ),
    );
}
