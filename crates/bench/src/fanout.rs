//! `fanout`: S subscribers over C channels, P publishers at a total rate R (server API or
//! client `publish`), payload of P bytes. Publishing is open loop: every publication is due at
//! a fixed time and its latency counts from then, so a server (or publisher) that falls
//! behind shows as latency, not as a longer run; the report says how far the achieved rate
//! fell short of the offered one and how far behind schedule the publishers got. Every
//! publication carries its publisher, a sequence number and its due time; each subscriber
//! tracks every publisher stream of its channel, so the report can say exactly how many
//! deliveries were expected (acknowledged publications × subscribers of their channel),
//! received, lost, duplicated or reordered, with end-to-end latency percentiles, and whether
//! every subscriber received each stream in one order (the commit order). Over HTTP/2 (the
//! default for `--via api`) a publisher's publications in flight together have no order of
//! their own, so there only that last check holds them to an order. `--step` raises R until
//! p99 passes a bound or loss appears; `--probe-http` adds one sequential HTTP publisher and
//! reports its latency apart (`fanout/probe.rs`). The `publish` scenario runs the same
//! phases with another [`Layout`].

mod layout;
mod outcome;
mod probe;
mod publishers;
mod subscribers;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::client::Http;
use super::progress::Rate;
use super::report::Report;
use super::stats::{Clock, Percentiles, StreamSeen, Timeline, percentile_curve};
use super::{Ctx, Hooks, Progress, Target, Via, points, spawn_sampler};
use layout::Channels;
pub use layout::Layout;
pub use outcome::Outcome;
pub use probe::ProbeResult;
use publishers::{PubResult, Schedule, kept_up, publish};
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
    /// Publishers (each one stream on one connection, publishing on schedule without waiting
    /// for acknowledgements; ordered, except over HTTP/2 where those in flight together are
    /// concurrent).
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
    /// Alongside the load, one sequential HTTP publisher: it publishes to `<channel>-probe`
    /// through the first --api URL, waits for each answer before sending the next, for the
    /// whole run; its acknowledgement latency (send → answer) is reported on its own line.
    /// HTTP/1.1 keep-alive, as typical backends publish (--probe-http2 for HTTP/2).
    #[arg(long)]
    #[serde(default)]
    pub probe_http: bool,
    /// --probe-http over HTTP/2 (h2c with prior knowledge) instead of HTTP/1.1.
    #[arg(long, requires = "probe_http")]
    #[serde(default)]
    pub probe_http2: bool,
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
    /// What fills the payload: `pad` (one repeated byte), `analytics` (a dashboard summary)
    /// or `sensor` (readings); the last two compress like real JSON (`--compression`).
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub payload_kind: super::stats::PayloadKind,
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
    /// --via api: publish over HTTP/1.1 instead of HTTP/2. By default each publisher's
    /// connection is HTTP/2 (h2c with prior knowledge) and carries its publications
    /// concurrently, each answered as it commits; with --http1 they are pipelined on one
    /// kept-alive HTTP/1.1 connection, which the server answers one after the other (one
    /// commit per request: about as many publications/s per connection as commits/s).
    #[arg(long)]
    #[serde(default)]
    pub http1: bool,
    /// Longest wait for outstanding deliveries after the last publication.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// How often to sample the servers (with --pid / --admin).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
}

/// Runs `switchyard bench fanout`.
pub async fn run(a: FanoutArgs, hooks: Hooks) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&a.target, hooks).await?);
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
        if let (Some(p), Some(step)) = (&o.probe, r.steps.last_mut()) {
            let l = p.latency();
            step["probe_ack_p50_ms"] = json!(l.p50);
            step["probe_ack_p99_ms"] = json!(l.p99);
            step["probe_ack_max_ms"] = json!(l.max);
        }
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
    /// Publications sent (the injected drop counts as sent).
    sent: AtomicU64,
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
    if a.probe_http && (ctx.apis.is_empty() || ctx.api_key.is_none()) {
        anyhow::bail!("--probe-http needs --api URL and --api-key");
    }
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
    let bytes_before = server_bytes_out(ctx).await;
    let schedule = Schedule::new(a, channels, via, rate, duration);
    let probe_stop = CancellationToken::new();
    let probe = a.probe_http.then(|| {
        let http = if a.probe_http2 { Http::H2 } else { Http::H1 };
        let size = a.publishing.payload;
        probe::spawn(ctx, http, size, duration, probe_stop.clone())
    });
    let published = publish(ctx, &schedule, live).await;
    probe_stop.cancel();
    let probe = match probe {
        Some(p) => Some(p.await?),
        None => None,
    };
    let published = published?;
    let publish_secs = published.start.elapsed().as_secs_f64();
    let pub_results = &published.results;

    // Drain: wait until every expected delivery arrived (or --drain passed).
    let injected = u64::from(a.inject_drop.is_some_and(|s| s < schedule.per_pub_total));
    let due = deliveries_due(pub_results, &subscribers.per_group, channels, injected);
    drain(live, due, a.publishing.drain).await;
    let cpu_after = server_cpu(ctx).await;
    let bytes_after = server_bytes_out(ctx).await;
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
        ordered_streams: !(via == Via::Api && schedule.http == Http::H2),
        disordered: d.disordered,
        api_http: api_http(pub_results),
        probe,
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
        bytes_out: bytes_before
            .zip(bytes_after)
            .map(|(b, a)| a.saturating_sub(b)),
        first_error,
    })
}

/// The HTTP version the server API answered the publishers over: the one all their answers
/// came over (none without answers over HTTP).
fn api_http(pub_results: &[PubResult]) -> Option<Http> {
    let [h1, h2] = pub_results.iter().fold([0, 0], |[a, b], r| {
        [a + r.replies_by_http[0], b + r.replies_by_http[1]]
    });
    match (h1, h2) {
        (0, 0) => None,
        (_, 0) => Some(Http::H1),
        (0, _) => Some(Http::H2),
        // Not expected: a publisher's connection speaks one version.
        _ => None,
    }
}

/// The live progress of a run offering `rate` with `n` subscribers: counts, and the rates
/// acknowledgements and deliveries come at.
fn progress(ctx: &Ctx, live: Arc<Live>, rate: f64, n: usize) -> Progress {
    let (acks, deliveries) = (Rate::default(), Rate::default());
    Progress::start(ctx.progress, move || {
        let acked = live.published.load(Ordering::Relaxed);
        let delivered = live.delivered.load(Ordering::Relaxed);
        format!(
            "offered {rate:.0}/s · subscribers {}/{n} · sent {} · acked {acked} ({:.0}/s) · \
             delivered {delivered} ({:.0}/s) · behind schedule {:.1} ms at most",
            live.subscribed.load(Ordering::Relaxed),
            live.sent.load(Ordering::Relaxed),
            acks.per_sec(acked),
            deliveries.per_sec(delivered),
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

/// Payload bytes the servers wrote to clients so far (with `--admin`).
async fn server_bytes_out(ctx: &Ctx) -> Option<u64> {
    if ctx.probe.admins.is_empty() {
        None
    } else {
        Some(ctx.probe.sample(0.0).await.bytes_out)
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
    /// Subscriber streams in another order than the others of their group that received the
    /// same publications.
    disordered: u64,
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
    // The orders each stream arrived in at the subscribers of a group that received exactly
    // the same publications of it, with how many had each: they must all have one order
    // (those not in the most common one are counted).
    let mut orders: HashMap<_, HashMap<u64, u64>> = HashMap::new();
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
                let key = (s.group, *p, seen.seqs.len(), seen.set);
                *orders
                    .entry(key)
                    .or_default()
                    .entry(seen.order)
                    .or_default() += 1;
            }
        }
    }
    d.disordered = orders
        .values()
        .map(|seen| seen.values().sum::<u64>() - seen.values().max().copied().unwrap_or(0))
        .sum();
    for r in pub_results {
        if let Some(e) = &r.error {
            first_error.get_or_insert(e.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscriber of group 0 that received publisher 0's `seqs` in this order.
    fn sub(seqs: &[u64]) -> SubResult {
        let mut seen = StreamSeen::default();
        for &q in seqs {
            seen.record(q);
        }
        SubResult {
            group: 0,
            streams: HashMap::from([(0, seen)]),
            closed: None,
        }
    }

    #[test]
    fn subscribers_must_agree_on_the_order_not_on_sequence_order() {
        let mut acked = PubResult::new(0);
        for q in 0..4 {
            acked.acked.insert(q);
        }
        let pubs = [acked];
        let channels = Channels::new(1, Layout::Fanout);
        let account = |subs: &[SubResult]| account(subs, &pubs, channels, &mut None);
        // Out of sequence order (as over HTTP/2), but the same order everywhere.
        let d = account(&[sub(&[1, 0, 3, 2]), sub(&[1, 0, 3, 2]), sub(&[1, 0, 3, 2])]);
        assert_eq!((d.reordered, d.disordered, d.lost), (6, 0, 0));
        // One subscriber in another order: it is the one counted.
        let d = account(&[sub(&[1, 0, 3, 2]), sub(&[1, 0, 2, 3]), sub(&[1, 0, 3, 2])]);
        assert_eq!(d.disordered, 1);
        // One that lost a publication is counted as lost, not as disordered.
        let d = account(&[sub(&[1, 0, 3, 2]), sub(&[1, 3, 2]), sub(&[1, 0, 3, 2])]);
        assert_eq!((d.disordered, d.lost), (0, 1));
    }
}
