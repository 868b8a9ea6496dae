//! `fanout`: S subscribers over C channels, P publishers at a total rate R (server API or
//! client `publish`), payload of P bytes. Every publication carries its publisher, a sequence
//! number and its send time; each subscriber tracks every publisher stream of its channel, so
//! the report can say exactly how many deliveries were expected (acknowledged publications ×
//! subscribers of their channel), received, lost, duplicated or reordered, with end-to-end
//! latency percentiles. `--step` raises R until p99 passes a bound or loss appears.

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
use super::stats::{
    Clock, Percentiles, ServerSample, StreamSeen, Timeline, histogram, now_micros, percentile_curve,
};
use super::{Ctx, Hooks, Progress, Target, Via, points, spawn_sampler};
use publishers::{PubResult, Schedule, publish};
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
    /// Publishers (each one sequential stream: one publication in flight at a time).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Publications per second, all publishers together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload size in bytes (the JSON `data`).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How to publish (default: api when --api is given, else client).
    #[arg(long, value_enum)]
    pub via: Option<Via>,
    /// Longest wait for outstanding deliveries after the last publication.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
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
    /// Publish→acknowledgement latency.
    pub ack: Percentiles,
    /// Percentile curve of the delivery latency.
    pub curve: Vec<(f64, f64)>,
    /// Per-second timeline.
    pub timeline: Vec<super::report::Point>,
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

    /// Adds the figures and checks to `r`.
    pub fn fill(&self, r: &mut Report) {
        self.count_figures(r);
        self.latency_figures(r);
        self.server_figures(r);
        r.latency_label = "publish→delivery".into();
        r.latency = Some(self.latency);
        r.percentiles = self.curve.clone();
        r.timeline = self.timeline.clone();
        r.server = self.server.clone();
        self.checks(r);
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
            "publications acknowledged/s",
            if self.publish_secs > 0.0 {
                self.acked as f64 / self.publish_secs
            } else {
                0.0
            },
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
        r.fig("ack_p99_ms", "publish ack p99", self.ack.p99, "ms");
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
        let o = once(&a, &ctx, a.rate, a.duration).await?;
        o.fill(&mut r);
        return Ok(r);
    }
    let bound_ms = a.p99_bound.as_secs_f64() * 1000.0;
    let mut rate = a.rate;
    let mut best: Option<Outcome> = None;
    let mut stop_reason = format!("reached --max-steps {}", a.max_steps);
    for _ in 0..a.max_steps.max(1) {
        let o = once(&a, &ctx, rate, a.duration).await?;
        let target = rate * a.duration.as_secs_f64();
        let kept_up = o.acked as f64 >= 0.9 * target;
        r.steps.push(json!({
            "rate": rate,
            "publications_per_sec": o.acked as f64 / o.publish_secs.max(1e-9),
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
                format!("publishers could not keep {rate:.0}/s (acked {})", o.acked)
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
    let via = ctx.via(a.via)?;
    let channels = a.channels.max(1);
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
        a.sample_every,
        sampler_stop.clone(),
    );
    let cpu_before = server_cpu(ctx).await;
    let schedule = Schedule::new(a, via, rate, duration);
    let first_publish = now_micros();
    let pub_results = publish(ctx, &schedule, live).await?;
    let publish_secs = schedule.start.elapsed().as_secs_f64();

    // Drain: wait until every expected delivery arrived (or --drain passed).
    let injected = u64::from(a.inject_drop.is_some_and(|s| s < schedule.per_pub_total));
    let due = deliveries_due(&pub_results, &subscribers.per_channel, injected);
    drain(live, due, a.drain).await;
    let cpu_after = server_cpu(ctx).await;
    shared.stop.cancel();
    let subs = subscribers.results().await?;
    sampler_stop.cancel();
    let server = sampler.await.unwrap_or_default();
    drop(progress);

    let mut first_error = subscribers.first_error;
    let d = account(&subs, &pub_results, channels, &mut first_error);
    let mut ack_all = histogram();
    for r in &pub_results {
        let _ = ack_all.add(&r.ack);
    }
    let total = shared.timeline.total();
    let last = live.last_delivery.load(Ordering::Relaxed);
    Ok(Outcome {
        rate,
        subscribed: subs_ok,
        sub_failed: subscribers.failed,
        sub_closed: d.sub_closed,
        acked: pub_results.iter().map(|r| r.acked.len()).sum::<u64>() - injected,
        pub_failed: pub_results.iter().map(|r| r.failed).sum(),
        expected: d.expected,
        received: d.received,
        lost: d.lost,
        unacked_received: d.unacked,
        duplicates: d.duplicates,
        reordered: d.reordered,
        publish_secs,
        delivery_secs: if last > first_publish {
            (last - first_publish) as f64 / 1e6
        } else {
            0.0
        },
        latency: Percentiles::of(&total),
        ack: Percentiles::of(&ack_all),
        curve: percentile_curve(&total),
        timeline: points(&shared.timeline.seconds()),
        server,
        cpu_secs: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        first_error,
    })
}

/// The live progress line of a run at `rate` with `n` subscribers.
fn progress(ctx: &Ctx, live: Arc<Live>, rate: f64, n: usize) -> Progress {
    Progress::start(ctx.progress, move || {
        format!(
            "rate {rate:.0}/s · subscribers {}/{n} · published {} · delivered {}",
            live.subscribed.load(Ordering::Relaxed),
            live.published.load(Ordering::Relaxed),
            live.delivered.load(Ordering::Relaxed)
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
/// subscriber of its channel, less the `injected` one (never sent) for channel 0.
fn deliveries_due(pub_results: &[PubResult], per_channel: &[u64], injected: u64) -> u64 {
    let channels = per_channel.len();
    pub_results
        .iter()
        .map(|r| (r.acked.len()) * per_channel[r.p as usize % channels])
        .sum::<u64>()
        .saturating_sub(injected * per_channel[0])
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

/// Accounts for every publisher stream at every subscriber of its channel; the first error
/// of a subscriber, then of a publisher, goes to `first_error` unless it holds one.
fn account(
    subs: &[SubResult],
    pub_results: &[PubResult],
    channels: usize,
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
            .filter(|r| r.p as usize % channels == s.channel)
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
