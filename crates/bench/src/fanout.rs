//! `fanout`: S subscribers over C channels, P publishers at a total rate R (server API or
//! client `publish`), payload of P bytes. Every publication carries its publisher, a sequence
//! number and its send time; each subscriber tracks every publisher stream of its channel, so
//! the report can say exactly how many deliveries were expected (acknowledged publications ×
//! subscribers of their channel), received, lost, duplicated or reordered, with end-to-end
//! latency percentiles. `--step` raises R until p99 passes a bound or loss appears.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::client::{Api, Conn, Incoming, lines};
use super::report::Report;
use super::stats::{
    Clock, Percentiles, SeqSet, ServerSample, StreamSeen, Timeline, histogram, now_micros,
    parse_pub, payload, percentile_curve,
};
use super::{Ctx, Hooks, Progress, Target, Via, points, spawn_sampler};

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

/// What one subscriber saw.
struct SubResult {
    channel: usize,
    streams: HashMap<u32, StreamSeen>,
    closed: Option<String>,
}

/// What one publisher did.
struct PubResult {
    p: u32,
    acked: SeqSet,
    failed: u64,
    ack: Histogram<u64>,
    error: Option<String>,
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
        r.fig("latency_p50_ms", "latency p50", self.latency.p50, "ms");
        r.fig("latency_p90_ms", "latency p90", self.latency.p90, "ms");
        r.fig("latency_p99_ms", "latency p99", self.latency.p99, "ms");
        r.fig("latency_p999_ms", "latency p99.9", self.latency.p999, "ms");
        r.fig("latency_max_ms", "latency max", self.latency.max, "ms");
        r.fig("ack_p50_ms", "publish ack p50", self.ack.p50, "ms");
        r.fig("ack_p99_ms", "publish ack p99", self.ack.p99, "ms");
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
        r.latency_label = "publish→delivery".into();
        r.latency = Some(self.latency);
        r.percentiles = self.curve.clone();
        r.timeline = self.timeline.clone();
        r.server = self.server.clone();
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

/// One fan-out run at `rate` for `duration`.
pub async fn once(
    a: &FanoutArgs,
    ctx: &Arc<Ctx>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let via = ctx.via(a.via)?;
    let channels = a.channels.max(1);
    let publishers = a.publishers.max(1);
    let clock = Clock::start();
    let timeline = Timeline::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let last_delivery = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();

    let progress = {
        let (d, p, s, n) = (
            delivered.clone(),
            published.clone(),
            subscribed.clone(),
            a.subscribers,
        );
        Progress::start(ctx.progress, move || {
            format!(
                "rate {rate:.0}/s · subscribers {}/{n} · published {} · delivered {}",
                s.load(Ordering::Relaxed),
                p.load(Ordering::Relaxed),
                d.load(Ordering::Relaxed)
            )
        })
    };

    // Phase 1: subscribers.
    let sem = Arc::new(tokio::sync::Semaphore::new(ctx.concurrency));
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..a.subscribers {
        let (ctx, sem) = (ctx.clone(), sem.clone());
        connecting.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let ch = ctx.channel(i % channels, channels);
            let res = async {
                let token = ctx.token(&format!("bench-sub-{i}"))?;
                let (conn, _, rest) = ctx.open_subscribed(i, &token, &ch, json!({})).await?;
                anyhow::Ok((conn, rest))
            };
            (i, tokio::time::timeout(ctx.timeout, res).await)
        });
    }
    let mut readers = tokio::task::JoinSet::new();
    let mut subs_per_channel = vec![0u64; channels];
    let mut sub_failed = 0;
    let mut first_error = None;
    while let Some(j) = connecting.join_next().await {
        let (i, res) = j?;
        let (mut conn, early) = match res {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                sub_failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
                continue;
            }
            Err(_) => {
                sub_failed += 1;
                first_error.get_or_insert("subscribe timed out".into());
                continue;
            }
        };
        subscribed.fetch_add(1, Ordering::Relaxed);
        subs_per_channel[i % channels] += 1;
        let (tl, d, last, stop) = (
            timeline.clone(),
            delivered.clone(),
            last_delivery.clone(),
            stop.clone(),
        );
        readers.spawn(async move {
            let mut rec = super::stats::Recorder::new(tl);
            let mut streams: HashMap<u32, StreamSeen> = HashMap::new();
            let mut account = |text: &[u8], now: u64| {
                let mut n = 0;
                for line in lines(text) {
                    if let Some(m) = parse_pub(line) {
                        streams.entry(m.p).or_default().record(m.seq);
                        rec.record(now, now.saturating_sub(m.ts));
                        n += 1;
                    }
                }
                if n > 0 {
                    d.fetch_add(n, Ordering::Relaxed);
                    last.fetch_max(now, Ordering::Relaxed);
                }
            };
            account(&early.join(&b'\n'), now_micros());
            let mut closed = None;
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = conn.recv() => m,
                };
                match msg {
                    Ok(Incoming::Text(t)) => account(&t, now_micros()),
                    Ok(Incoming::Closed(code, reason)) => {
                        closed = Some(format!("closed by the server: {code} {reason}"));
                        break;
                    }
                    Err(e) => {
                        closed = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            rec.flush();
            if closed.is_none() {
                conn.close().await;
            }
            SubResult {
                channel: i % channels,
                streams,
                closed,
            }
        });
    }
    let subs_ok = subscribed.load(Ordering::Relaxed);

    // Phase 2: publishers.
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(
        ctx.probe.clone(),
        clock,
        a.sample_every,
        sampler_stop.clone(),
    );
    let cpu_before = if ctx.probe.pids.is_empty() {
        None
    } else {
        Some(ctx.probe.sample(0.0).await.cpu_secs)
    };
    let per_pub_rate = rate / publishers as f64;
    let per_pub_total = (per_pub_rate * duration.as_secs_f64()).round() as u64;
    let gap = Duration::from_secs_f64(1.0 / per_pub_rate.max(1e-6));
    let publish_start = tokio::time::Instant::now();
    let first_publish = now_micros();
    let mut pubs = tokio::task::JoinSet::new();
    for p in 0..publishers {
        let ctx = ctx.clone();
        let published = published.clone();
        let ch = ctx.channel(p % channels, channels);
        let size = a.payload;
        let inject = if p == 0 { a.inject_drop } else { None };
        pubs.spawn(async move {
            let mut res = PubResult {
                p: p as u32,
                acked: SeqSet::default(),
                failed: 0,
                ack: histogram(),
                error: None,
            };
            enum Sender {
                Api(Api),
                Ws(Conn),
            }
            let mut sender = match via {
                Via::Api => Sender::Api(Api::new(
                    ctx.apis[p % ctx.apis.len()].clone(),
                    ctx.api_key.clone().unwrap_or_default(),
                    ctx.source(p),
                )),
                Via::Client => {
                    let opened = async {
                        // Subscribed too: namespaces commonly allow publishing to subscribers
                        // only. Its own publications come back and are ignored.
                        let token = ctx.token(&format!("bench-pub-{p}"))?;
                        let (c, _, _) = ctx.open_subscribed(p, &token, &ch, json!({})).await?;
                        anyhow::Ok(c)
                    };
                    match opened.await {
                        Ok(c) => Sender::Ws(c),
                        Err(e) => {
                            res.error = Some(format!("publisher {p}: {e:#}"));
                            return res;
                        }
                    }
                }
            };
            for k in 0..per_pub_total {
                tokio::time::sleep_until(publish_start + gap.mul_f64(k as f64)).await;
                if inject == Some(k) {
                    // The injected drop: claimed as acknowledged, never sent.
                    res.acked.insert(k);
                    continue;
                }
                let data = payload(p as u32, k, size);
                let t0 = now_micros();
                let ok = match &mut sender {
                    Sender::Api(api) => {
                        let body = format!("{{\"channel\":{},\"data\":{data}}}", json!(ch));
                        match tokio::time::timeout(
                            ctx.timeout,
                            api.call("publish", body.into_bytes()),
                        )
                        .await
                        {
                            Ok(Ok(v)) if v.get("result").is_some() => Ok(()),
                            Ok(Ok(v)) => Err(format!("publish refused: {v}")),
                            Ok(Err(e)) => Err(format!("{e:#}")),
                            Err(_) => Err("publish timed out".into()),
                        }
                    }
                    Sender::Ws(conn) => {
                        let id = conn.id();
                        let cmd = format!(
                            "{{\"id\":{id},\"publish\":{{\"channel\":{},\"data\":{data}}}}}",
                            json!(ch)
                        );
                        match conn.send(cmd.as_bytes()).await {
                            Err(e) => Err(format!("{e:#}")),
                            Ok(()) => conn
                                .reply(id, ctx.timeout)
                                .await
                                .map(|_| ())
                                .map_err(|e| format!("{e:#}")),
                        }
                    }
                };
                match ok {
                    Ok(()) => {
                        res.acked.insert(k);
                        res.ack
                            .saturating_record(now_micros().saturating_sub(t0).max(1));
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        res.failed += 1;
                        res.error.get_or_insert(format!("publisher {p}: {e}"));
                        if let Sender::Ws(_) = sender {
                            if e.contains("closed") || e.contains("write") || e.contains("read") {
                                break;
                            }
                        }
                    }
                }
            }
            if let Sender::Ws(c) = sender {
                c.close().await;
            }
            res
        });
    }
    let mut pub_results = Vec::new();
    while let Some(j) = pubs.join_next().await {
        pub_results.push(j?);
    }
    let publish_secs = publish_start.elapsed().as_secs_f64();

    // Phase 3: drain: wait until every expected delivery arrived (or --drain passed).
    let injected = u64::from(a.inject_drop.is_some_and(|s| s < per_pub_total));
    let target: u64 = pub_results
        .iter()
        .map(|r| (r.acked.len()) * subs_per_channel[r.p as usize % channels])
        .sum::<u64>()
        .saturating_sub(injected * subs_per_channel[0]);
    let deadline = tokio::time::Instant::now() + a.drain;
    while delivered.load(Ordering::Relaxed) < target && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_after = if cpu_before.is_some() {
        Some(ctx.probe.sample(0.0).await.cpu_secs)
    } else {
        None
    };
    stop.cancel();
    let mut subs = Vec::new();
    while let Some(j) = readers.join_next().await {
        subs.push(j?);
    }
    sampler_stop.cancel();
    let server = sampler.await.unwrap_or_default();
    drop(progress);

    // Phase 4: account.
    let acked: HashMap<u32, &PubResult> = pub_results.iter().map(|r| (r.p, r)).collect();
    let (mut expected, mut received, mut lost, mut unacked, mut dups, mut reord) =
        (0, 0, 0, 0, 0, 0);
    let mut sub_closed = 0;
    for s in &subs {
        if let Some(e) = &s.closed {
            sub_closed += 1;
            first_error.get_or_insert(e.clone());
        }
        for r in pub_results
            .iter()
            .filter(|r| r.p as usize % channels == s.channel)
        {
            let empty = StreamSeen::default();
            let seen = s.streams.get(&r.p).unwrap_or(&empty);
            expected += r.acked.len();
            let got = r.acked.count_common(&seen.seqs);
            received += got;
            lost += r.acked.len() - got;
            unacked += seen.seqs.len() - got;
        }
        for (p, seen) in &s.streams {
            if acked.contains_key(p) {
                dups += seen.duplicates;
                reord += seen.reordered;
            }
        }
    }
    for r in &pub_results {
        if let Some(e) = &r.error {
            first_error.get_or_insert(e.clone());
        }
    }
    let mut ack_all = histogram();
    for r in &pub_results {
        let _ = ack_all.add(&r.ack);
    }
    let total = timeline.total();
    let last = last_delivery.load(Ordering::Relaxed);
    Ok(Outcome {
        rate,
        subscribed: subs_ok,
        sub_failed,
        sub_closed,
        acked: pub_results.iter().map(|r| r.acked.len()).sum::<u64>() - injected,
        pub_failed: pub_results.iter().map(|r| r.failed).sum(),
        expected,
        received,
        lost,
        unacked_received: unacked,
        duplicates: dups,
        reordered: reord,
        publish_secs,
        delivery_secs: if last > first_publish {
            (last - first_publish) as f64 / 1e6
        } else {
            0.0
        },
        latency: Percentiles::of(&total),
        ack: Percentiles::of(&ack_all),
        curve: percentile_curve(&total),
        timeline: points(&timeline.seconds()),
        server,
        cpu_secs: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        first_error,
    })
}
