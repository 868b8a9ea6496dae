//! `fanout`: S subscribers over C channels, P publishers at a total rate R (server API or
//! client `publish`), payload of P bytes. Publishing is open loop: every publication is due at
//! a fixed time and its latency counts from then, so a server (or publisher) that falls
//! behind shows as latency, not as a longer run; the report says how far the achieved rate
//! fell short of the offered one and how far behind schedule the publishers got. Every
//! publication carries its publisher, a sequence number and its due time; each subscriber
//! tracks every publisher stream of its channel, so the report can say exactly how many
//! deliveries were expected (acknowledged publications × subscribers of their channel),
//! received, lost, duplicated or reordered, with end-to-end latency percentiles. `--step`
//! raises R until p99 passes a bound or loss appears. The `publish` scenario runs the same
//! phases with another [`Layout`].

mod layout;
mod publishers;
mod subscribers;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::stats::{Clock, Percentiles, ServerSample, StreamSeen, Timeline, percentile_curve};
use super::{Ctx, Hooks, Progress, Target, Via, points, spawn_sampler};
use layout::Channels;
pub use layout::Layout;
use publishers::{PubResult, RATE_TOLERANCE, Schedule, kept_up, publish};
use subscribers::{SubResult, open_subscribers};

/// Arguments of `switchyard bench fanout`.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct FanoutArgs {
    /// Nodes, credentials, outputs.
    #[command(flatten)]
    pub target: Target,
    /// Subscribed connections (spread over the nodes).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Channels; subscriber i joins channel i mod C, publisher p publishes to channel p mod C.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Publishers (each one ordered stream on one connection, publishing on schedule without
    /// waiting for acknowledgements).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Publications per second offered, all publishers together (open loop: publication i of
    /// a publisher is due at start + i / its rate).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload, duration, how to publish, drain, sampling.
    #[command(flatten)]
    #[serde(flatten)]
    pub publishing: Publishing,
    /// Test hook for the loss detection: publisher 0 does not send this sequence number but
    /// records it as acknowledged, so every subscriber of its channel must report it lost.
    #[arg(long)]
    pub inject_drop: Option<u64>,
    /// Step mode: run at --rate, then multiply by --step-factor until p99 passes --p99-bound,
    /// a delivery is lost, or --max-steps.
    #[arg(long)]
    pub step: bool,
    /// Step mode: latency bound for p99.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub p99_bound: Duration,
    /// Step mode: rate multiplier per step.
    #[arg(long, default_value_t = 2.0)]
    pub step_factor: f64,
    /// Step mode: most steps.
    #[arg(long, default_value_t = 6)]
    pub max_steps: u32,
    /// Who uses which channel (the `publish` scenario spreads; not a flag).
    #[arg(skip)]
    #[serde(default)]
    pub layout: Layout,
}

/// How the publishers publish and how a run ends and is watched: the same for `fanout` and
/// `publish`.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct Publishing {
    /// Payload size in bytes (the JSON `data`).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Most publications one publisher may have sent and not yet seen acknowledged; at the
    /// limit it waits for a reply (and falls behind schedule, which the report shows).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// How to publish (default: api when --api is given, else client).
    #[arg(long, value_enum)]
    pub via: Option<Via>,
    /// Longest wait for outstanding deliveries after the last publication.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// How often to sample the servers (with --pid / --admin).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
}

/// The measured outcome of one fan-out run.
pub struct Outcome {
    /// Rate asked for.
    pub rate: f64,
    /// Subscribers connected / asked for.
    pub subscribed: usize,
    /// Subscribers that failed to connect or subscribe.
    pub sub_failed: usize,
    /// Subscribers closed by the server during the run.
    pub sub_closed: usize,
    /// Publications scheduled (all publishers).
    pub scheduled: u64,
    /// Publications sent within their publisher's window.
    pub sent: u64,
    /// Offered publish rate: every scheduled publication over the window.
    pub offered_rate: f64,
    /// Achieved publish rate: the publications sent over the window.
    pub achieved_rate: f64,
    /// How far a publisher fell behind its schedule at most, ms.
    pub lag_max_ms: f64,
    /// Publications acknowledged.
    pub acked: u64,
    /// Publications refused or failed.
    pub pub_failed: u64,
    /// Deliveries expected (acknowledged × subscribers of their channel).
    pub expected: u64,
    /// Expected deliveries received.
    pub received: u64,
    /// Expected deliveries never received.
    pub lost: u64,
    /// Deliveries of publications not acknowledged (their publish failed or timed out).
    pub unacked_received: u64,
    /// Deliveries received more than once.
    pub duplicates: u64,
    /// Deliveries that arrived after a later one of the same stream.
    pub reordered: u64,
    /// Seconds publishing.
    pub publish_secs: f64,
    /// Seconds from the first publication to the last delivery.
    pub delivery_secs: f64,
    /// Publication→delivery latency.
    pub latency: Percentiles,
    /// Publish→acknowledgement latency (from when each publication was due).
    pub ack: Percentiles,
    /// Percentile curve of the delivery latency.
    pub curve: Vec<(f64, f64)>,
    /// Percentile curve of the acknowledgement latency.
    pub ack_curve: Vec<(f64, f64)>,
    /// Per-second timeline of the deliveries.
    pub timeline: Vec<super::report::Point>,
    /// Per-second timeline of the acknowledgements.
    pub ack_timeline: Vec<super::report::Point>,
    /// Server samples.
    pub server: Vec<ServerSample>,
    /// Server CPU seconds during publishing + drain (with --pid).
    pub cpu_secs: Option<f64>,
    /// First error of a publisher or subscriber, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Delivered messages per second.
    pub fn delivered_per_sec(&self) -> f64 {
        let total = self.received + self.unacked_received;
        if self.delivery_secs > 0.0 {
            total as f64 / self.delivery_secs
        } else {
            0.0
        }
    }

    /// Publications acknowledged per second, from the start of the schedule to the last
    /// acknowledgement.
    pub fn committed_per_sec(&self) -> f64 {
        if self.publish_secs > 0.0 {
            self.acked as f64 / self.publish_secs
        } else {
            0.0
        }
    }

    /// Adds the figures and checks to `r`, with the delivery latency as the headline (its
    /// percentiles, curve and timeline).
    pub fn fill(&self, r: &mut Report) {
        self.fill_figures(r);
        r.latency_label = "publish→delivery".into();
        r.latency = Some(self.latency);
        r.percentiles = self.curve.clone();
        r.timeline = self.timeline.clone();
    }

    /// Adds the figures and checks to `r`, with the acknowledgement latency as the headline.
    pub fn fill_acks(&self, r: &mut Report) {
        self.fill_figures(r);
        r.latency_label = "publish→acknowledgement".into();
        r.latency = Some(self.ack);
        r.percentiles = self.ack_curve.clone();
        r.timeline = self.ack_timeline.clone();
    }

    /// Every figure, the server samples and the checks.
    fn fill_figures(&self, r: &mut Report) {
        self.count_figures(r);
        self.schedule_figures(r);
        self.latency_figures(r);
        self.server_figures(r);
        r.server = self.server.clone();
        self.checks(r);
    }

    /// Offered and achieved publish rates, and how far behind schedule the publishers got.
    fn schedule_figures(&self, r: &mut Report) {
        r.fig(
            "offered_rate",
            "publish rate offered",
            self.offered_rate,
            "/s",
        );
        r.fig(
            "achieved_rate",
            "publish rate achieved",
            self.achieved_rate,
            "/s",
        );
        r.fig(
            "publications_unsent",
            "publications not sent (behind schedule)",
            self.scheduled.saturating_sub(self.sent) as f64,
            "",
        );
        r.fig(
            "publish_lag_max_ms",
            "publishers behind schedule, max",
            self.lag_max_ms,
            "ms",
        );
    }

    /// Subscribers, publications and deliveries: counts and rates.
    fn count_figures(&self, r: &mut Report) {
        r.fig(
            "subscribers",
            "subscribers connected",
            self.subscribed as f64,
            "",
        );
        r.fig(
            "subscribers_failed",
            "subscribers failed",
            self.sub_failed as f64,
            "",
        );
        r.fig(
            "subscribers_closed",
            "subscribers closed by server",
            self.sub_closed as f64,
            "",
        );
        r.fig(
            "publications_acked",
            "publications acknowledged",
            self.acked as f64,
            "",
        );
        r.fig(
            "publications_failed",
            "publications failed",
            self.pub_failed as f64,
            "",
        );
        r.fig(
            "publications_per_sec",
            "publications committed/s",
            self.committed_per_sec(),
            "/s",
        );
        r.fig(
            "deliveries_expected",
            "deliveries expected",
            self.expected as f64,
            "",
        );
        r.fig(
            "deliveries_received",
            "deliveries received",
            self.received as f64,
            "",
        );
        r.fig("lost", "lost", self.lost as f64, "");
        r.fig("duplicates", "duplicates", self.duplicates as f64, "");
        r.fig("reordered", "reordered", self.reordered as f64, "");
        r.fig(
            "unacked_received",
            "received but not acknowledged",
            self.unacked_received as f64,
            "",
        );
        r.fig(
            "delivered_per_sec",
            "delivered msgs/s",
            self.delivered_per_sec(),
            "/s",
        );
        r.fig("publish_secs", "publishing time", self.publish_secs, "s");
    }

    /// Delivery and acknowledgement latency percentiles.
    fn latency_figures(&self, r: &mut Report) {
        r.fig("latency_p50_ms", "latency p50", self.latency.p50, "ms");
        r.fig("latency_p90_ms", "latency p90", self.latency.p90, "ms");
        r.fig("latency_p99_ms", "latency p99", self.latency.p99, "ms");
        r.fig("latency_p999_ms", "latency p99.9", self.latency.p999, "ms");
        r.fig("latency_max_ms", "latency max", self.latency.max, "ms");
        r.fig("ack_p50_ms", "publish ack p50", self.ack.p50, "ms");
        r.fig("ack_p90_ms", "publish ack p90", self.ack.p90, "ms");
        r.fig("ack_p99_ms", "publish ack p99", self.ack.p99, "ms");
        r.fig("ack_max_ms", "publish ack max", self.ack.max, "ms");
    }

    /// Server CPU (with `--pid`) and RSS at the end.
    fn server_figures(&self, r: &mut Report) {
        if let Some(cpu) = self.cpu_secs {
            r.fig("server_cpu_secs", "server CPU", cpu, "s");
            let m = (self.received + self.unacked_received) as f64 / 1e6;
            if m > 0.0 {
                r.fig(
                    "server_cpu_secs_per_million",
                    "server CPU per million deliveries",
                    cpu / m,
                    "s",
                );
            }
        }
        if let Some(last) = self.server.last() {
            r.fig(
                "server_rss_bytes",
                "server RSS (end)",
                last.rss_bytes as f64,
                "B",
            );
        }
    }

    /// Deliveries add up; nothing failed, lost, duplicated or reordered.
    fn checks(&self, r: &mut Report) {
        r.check(
            "deliveries add up",
            self.expected == self.received + self.lost,
            format!(
                "expected {} = received {} + lost {}",
                self.expected, self.received, self.lost
            ),
        );
        r.check(
            "something was delivered",
            self.expected > 0,
            format!("{} deliveries expected", self.expected),
        );
        r.check(
            "every publication acknowledged",
            self.pub_failed == 0,
            format!(
                "{} failed{}",
                self.pub_failed,
                self.first_error
                    .as_deref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            ),
        );
        let pct = if self.offered_rate > 0.0 {
            100.0 * self.achieved_rate / self.offered_rate
        } else {
            0.0
        };
        r.check(
            "publishers kept to the offered rate",
            kept_up(self.offered_rate, self.achieved_rate),
            format!(
                "achieved {:.1}/s of {:.1}/s offered ({pct:.1} %, at least {:.0} % needed); {} not sent; at most {:.1} ms behind schedule",
                self.achieved_rate,
                self.offered_rate,
                100.0 * (1.0 - RATE_TOLERANCE),
                self.scheduled.saturating_sub(self.sent),
                self.lag_max_ms
            ),
        );
        r.check("no loss", self.lost == 0, format!("{} lost", self.lost));
        r.check(
            "no duplicates",
            self.duplicates == 0,
            format!("{} duplicates", self.duplicates),
        );
        r.check(
            "in order",
            self.reordered == 0,
            format!("{} reordered", self.reordered),
        );
        r.check(
            "every subscriber connected and stayed",
            self.sub_failed == 0 && self.sub_closed == 0,
            format!(
                "{} failed, {} closed{}",
                self.sub_failed,
                self.sub_closed,
                self.first_error
                    .as_deref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            ),
        );
    }
}

/// Runs `switchyard bench fanout`.
pub async fn run(a: FanoutArgs, hooks: Hooks) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&a.target, hooks)?);
    let mut r = Report::new("fanout", &a);
    if !a.step {
        let o = once(&a, &ctx, a.rate, a.publishing.duration).await?;
        o.fill(&mut r);
        return Ok(r);
    }
    let bound_ms = a.p99_bound.as_secs_f64() * 1000.0;
    let mut rate = a.rate;
    let mut best: Option<Outcome> = None;
    let mut stop_reason = format!("reached --max-steps {}", a.max_steps);
    for _ in 0..a.max_steps.max(1) {
        let o = once(&a, &ctx, rate, a.publishing.duration).await?;
        let kept_up = kept_up(o.offered_rate, o.achieved_rate);
        r.steps.push(json!({
            "rate": rate,
            "offered_rate": o.offered_rate,
            "achieved_rate": o.achieved_rate,
            "publish_lag_max_ms": o.lag_max_ms,
            "publications_per_sec": o.committed_per_sec(),
            "delivered_per_sec": o.delivered_per_sec(),
            "latency_p50_ms": o.latency.p50,
            "latency_p99_ms": o.latency.p99,
            "latency_max_ms": o.latency.max,
            "lost": o.lost,
            "duplicates": o.duplicates,
            "cpu_secs": o.cpu_secs,
        }));
        let over = o.latency.p99 > bound_ms;
        let lossy = o.lost > 0 || o.duplicates > 0;
        if over || lossy || !kept_up {
            stop_reason = if lossy {
                format!(
                    "loss at {rate:.0}/s ({} lost, {} dup)",
                    o.lost, o.duplicates
                )
            } else if over {
                format!(
                    "p99 {:.1} ms > {bound_ms:.0} ms at {rate:.0}/s",
                    o.latency.p99
                )
            } else {
                format!(
                    "publishers could not keep {rate:.0}/s (achieved {:.0}/s)",
                    o.achieved_rate
                )
            };
            if best.is_none() {
                best = Some(o);
            }
            break;
        }
        best = Some(o);
        rate *= a.step_factor.max(1.01);
    }
    let best = best.expect("at least one step");
    r.fig(
        "step_best_rate",
        "highest rate within bounds",
        best.rate,
        "/s",
    );
    best.fill(&mut r);
    r.check("step mode ended", true, stop_reason);
    Ok(r)
}

/// Counters of one run, shared by its subscribers, publishers and progress line.
#[derive(Default)]
struct Live {
    /// Deliveries received.
    delivered: AtomicU64,
    /// When the latest delivery arrived (µs since the epoch).
    last_delivery: AtomicU64,
    /// Publications acknowledged.
    published: AtomicU64,
    /// Subscribers connected and subscribed.
    subscribed: AtomicUsize,
    /// How far a publisher fell behind its schedule at most, µs.
    lag_max: AtomicU64,
}

/// What the subscribers of one run share.
#[derive(Clone)]
struct Shared {
    /// Delivery latencies by second.
    timeline: Arc<Timeline>,
    /// The run's counters.
    live: Arc<Live>,
    /// Ends the subscribers' reading (after the drain).
    stop: CancellationToken,
}

/// One fan-out run at `rate` for `duration`: open the subscribers, publish on schedule, drain
/// the outstanding deliveries, account for every stream.
pub async fn once(
    a: &FanoutArgs,
    ctx: &Arc<Ctx>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let via = ctx.via(a.publishing.via)?;
    let channels = Channels::new(a.channels, a.layout);
    let clock = Clock::start();
    let shared = Shared {
        timeline: Timeline::new(),
        live: Arc::default(),
        stop: CancellationToken::new(),
    };
    let live = &shared.live;
    let progress = progress(ctx, live.clone(), rate, a.subscribers);

    let mut subscribers = open_subscribers(a, ctx, channels, &shared).await?;
    let subs_ok = live.subscribed.load(Ordering::Relaxed);

    // Publish, sampling the servers meanwhile.
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(
        ctx.probe.clone(),
        clock,
        a.publishing.sample_every,
        sampler_stop.clone(),
    );
    let cpu_before = server_cpu(ctx).await;
    let schedule = Schedule::new(a, channels, via, rate, duration);
    let published = publish(ctx, &schedule, live).await?;
    let publish_secs = published.start.elapsed().as_secs_f64();
    let pub_results = &published.results;

    // Drain: wait until every expected delivery arrived (or --drain passed).
    let injected = u64::from(a.inject_drop.is_some_and(|s| s < schedule.per_pub_total));
    let due = deliveries_due(pub_results, &subscribers.per_group, channels, injected);
    drain(live, due, a.publishing.drain).await;
    let cpu_after = server_cpu(ctx).await;
    shared.stop.cancel();
    let subs = subscribers.results().await?;
    sampler_stop.cancel();
    let server = sampler.await.unwrap_or_default();
    drop(progress);

    let mut first_error = subscribers.first_error;
    let d = account(&subs, pub_results, channels, &mut first_error);
    let total = shared.timeline.total();
    let acks = published.acks.total();
    let last = live.last_delivery.load(Ordering::Relaxed);
    let sent = pub_results.iter().map(|r| r.sent).sum();
    Ok(Outcome {
        rate,
        subscribed: subs_ok,
        sub_failed: subscribers.failed,
        sub_closed: d.sub_closed,
        scheduled: schedule.total(),
        sent,
        offered_rate: schedule.offered(),
        achieved_rate: schedule.rate_of(sent),
        lag_max_ms: pub_results.iter().map(|r| r.lag_max).max().unwrap_or(0) as f64 / 1e3,
        acked: pub_results.iter().map(|r| r.acked.len()).sum::<u64>() - injected,
        pub_failed: pub_results.iter().map(|r| r.failed).sum(),
        expected: d.expected,
        received: d.received,
        lost: d.lost,
        unacked_received: d.unacked,
        duplicates: d.duplicates,
        reordered: d.reordered,
        publish_secs,
        delivery_secs: last.saturating_sub(published.start_micros) as f64 / 1e6,
        latency: Percentiles::of(&total),
        ack: Percentiles::of(&acks),
        curve: percentile_curve(&total),
        ack_curve: percentile_curve(&acks),
        timeline: points(&shared.timeline.seconds()),
        ack_timeline: points(&published.acks.seconds()),
        server,
        cpu_secs: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        first_error,
    })
}

/// The live progress line of a run at `rate` with `n` subscribers.
fn progress(ctx: &Ctx, live: Arc<Live>, rate: f64, n: usize) -> Progress {
    Progress::start(ctx.progress, move || {
        format!(
            "rate {rate:.0}/s · subscribers {}/{n} · published {} · delivered {} · behind schedule {:.1} ms at most",
            live.subscribed.load(Ordering::Relaxed),
            live.published.load(Ordering::Relaxed),
            live.delivered.load(Ordering::Relaxed),
            live.lag_max.load(Ordering::Relaxed) as f64 / 1e3
        )
    })
}

/// Server CPU seconds so far (with `--pid`).
async fn server_cpu(ctx: &Ctx) -> Option<f64> {
    if ctx.probe.pids.is_empty() {
        None
    } else {
        Some(ctx.probe.sample(0.0).await.cpu_secs)
    }
}

/// Deliveries the subscribers should receive: every acknowledged publication once per
/// subscriber of its publisher's group, less the `injected` one (never sent) of publisher 0.
fn deliveries_due(
    pub_results: &[PubResult],
    per_group: &[u64],
    channels: Channels,
    injected: u64,
) -> u64 {
    let subscribers_of = |p: u32| per_group[channels.group_of_publisher(p as usize)];
    pub_results
        .iter()
        .map(|r| r.acked.len() * subscribers_of(r.p))
        .sum::<u64>()
        .saturating_sub(injected * subscribers_of(0))
}

/// Waits until `due` deliveries arrived or `wait` passed.
async fn drain(live: &Live, due: u64, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while live.delivered.load(Ordering::Relaxed) < due && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deliveries compared with the acknowledged publications, over every subscriber.
#[derive(Default)]
struct Deliveries {
    /// Acknowledged × subscribers of their channel.
    expected: u64,
    /// Expected deliveries received.
    received: u64,
    /// Expected deliveries not received.
    lost: u64,
    /// Deliveries of publications not acknowledged.
    unacked: u64,
    /// Received more than once.
    duplicates: u64,
    /// Arrived after a later one of the same stream.
    reordered: u64,
    /// Subscribers closed by the server.
    sub_closed: usize,
}

/// Accounts for every publisher stream at every subscriber of its group; the first error
/// of a subscriber, then of a publisher, goes to `first_error` unless it holds one.
fn account(
    subs: &[SubResult],
    pub_results: &[PubResult],
    channels: Channels,
    first_error: &mut Option<String>,
) -> Deliveries {
    let acked: HashMap<u32, &PubResult> = pub_results.iter().map(|r| (r.p, r)).collect();
    let mut d = Deliveries::default();
    for s in subs {
        if let Some(e) = &s.closed {
            d.sub_closed += 1;
            first_error.get_or_insert(e.clone());
        }
        for r in pub_results
            .iter()
            .filter(|r| channels.group_of_publisher(r.p as usize) == s.group)
        {
            let empty = StreamSeen::default();
            let seen = s.streams.get(&r.p).unwrap_or(&empty);
            d.expected += r.acked.len();
            let got = r.acked.count_common(&seen.seqs);
            d.received += got;
            d.lost += r.acked.len() - got;
            d.unacked += seen.seqs.len() - got;
        }
        for (p, seen) in &s.streams {
            if acked.contains_key(p) {
                d.duplicates += seen.duplicates;
                d.reordered += seen.reordered;
            }
        }
    }
    for r in pub_results {
        if let Some(e) = &r.error {
            first_error.get_or_insert(e.clone());
        }
    }
    d
}
