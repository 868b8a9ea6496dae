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

/// Runs `switchyard bench churn`.
pub async fn run(a: ChurnArgs, hooks: Hooks) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&a.target, hooks)?);
    let via = ctx.via(a.via)?;
    let timeline = Timeline::new();
    let start = Instant::now();
    let publish_end = start + a.duration;
    let top = Arc::new(AtomicU64::new(0));
    let publishing_done = tokio_util::sync::CancellationToken::new();
    let cycles = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let progress = {
        let (c, p) = (cycles.clone(), published.clone());
        Progress::start(ctx.progress, move || {
            format!(
                "reconnects {} · published {}",
                c.load(Ordering::Relaxed),
                p.load(Ordering::Relaxed)
            )
        })
    };
    let period = Duration::from_secs_f64(a.clients as f64 / a.cycle_rate.max(1e-3));
    let online = period
        .saturating_sub(a.offline)
        .max(Duration::from_millis(50));

    let mut clients = tokio::task::JoinSet::new();
    for i in 0..a.clients {
        let (ctx, tl, top, done, cycles) = (
            ctx.clone(),
            timeline.clone(),
            top.clone(),
            publishing_done.clone(),
            cycles.clone(),
        );
        let (offline, drain) = (a.offline, a.drain);
        clients.spawn(async move {
            let mut res = ClientResult {
                reconnect: Some(histogram()),
                ..Default::default()
            };
            let mut rec = Recorder::new(tl);
            let mut epoch: Option<String> = None;
            // Stagger the clients over one period.
            tokio::time::sleep(period.mul_f64(i as f64 / a.clients.max(1) as f64)).await;
            let token = match ctx.token(&format!("bench-churn-{i}")) {
                Ok(t) => t,
                Err(e) => {
                    res.error = Some(format!("{e:#}"));
                    return res;
                }
            };
            let mut last_cycle = false;
            loop {
                last_cycle = last_cycle || Instant::now() >= publish_end;
                let last = res.first.map(|_| res.max);
                let sub = match (&epoch, last) {
                    (Some(e), Some(o)) => json!({"recover": true, "epoch": e, "offset": o, "recoverable": true}),
                    _ => json!({"recoverable": true}),
                };
                let t0 = now_micros();
                let ch = ctx.channel.clone();
                let attempt = ctx.open_subscribed(i, &token, &ch, sub);
                let (mut conn, reply, rest) = match tokio::time::timeout(ctx.timeout, attempt).await {
                    Ok(Ok(x)) => x,
                    Ok(Err(e)) => {
                        res.errors += 1;
                        res.error.get_or_insert(format!("{e:#}"));
                        if last_cycle {
                            return res;
                        }
                        tokio::time::sleep(offline).await;
                        continue;
                    }
                    Err(_) => {
                        res.errors += 1;
                        res.error.get_or_insert("connect timed out".into());
                        if last_cycle {
                            return res;
                        }
                        continue;
                    }
                };
                let r = &reply["subscribe"];
                if let Some(h) = res.reconnect.as_mut() {
                    h.saturating_record(now_micros().saturating_sub(t0).max(1));
                }
                let new_epoch = r["epoch"].as_str().map(str::to_string);
                match (&epoch, last) {
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
                        epoch = new_epoch;
                        let top = r["offset"].as_u64().unwrap_or(0);
                        res.first = Some(top + 1);
                        res.max = top;
                    }
                }
                res.cycles += 1;
                cycles.fetch_add(1, Ordering::Relaxed);
                let mut account = |text: &[u8], res: &mut ClientResult| {
                    let now = now_micros();
                    for line in lines(text) {
                        if let Some(m) = parse_pub(line) {
                            rec.record(now, now.saturating_sub(m.ts));
                            if let Some(o) = m.offset {
                                res.record(o);
                            }
                        }
                    }
                };
                account(&rest.join(&b'\n'), &mut res);
                // Stay online: until the end of this cycle, or (last cycle) until this client
                // has everything up to the top or the drain passed.
                let until = if last_cycle {
                    Instant::now().max(publish_end) + drain
                } else {
                    Instant::now() + online
                };
                loop {
                    if last_cycle && done.is_cancelled() {
                        let t = top.load(Ordering::Relaxed);
                        if t > 0 && res.max >= t {
                            break;
                        }
                    }
                    let m = tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)), if last_cycle => continue,
                        m = conn.recv() => m,
                    };
                    match m {
                        Ok(Incoming::Text(t)) => account(&t, &mut res),
                        Ok(Incoming::Closed(code, reason)) => {
                            res.errors += 1;
                            res.error.get_or_insert(format!("closed by the server: {code} {reason}"));
                            break;
                        }
                        Err(e) => {
                            res.errors += 1;
                            res.error.get_or_insert(format!("{e:#}"));
                            break;
                        }
                    }
                }
                conn.close().await;
                if last_cycle {
                    rec.flush();
                    return res;
                }
                tokio::time::sleep(offline).await;
            }
        });
    }

    // The publisher.
    let total = (a.rate * a.duration.as_secs_f64()).round() as u64;
    let gap = Duration::from_secs_f64(1.0 / a.rate.max(1e-6));
    let mut pub_error = None;
    let mut pub_failed = 0u64;
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
            Some((&ch, json!({}))),
            ctx.timeout,
        )
        .await?;
        pconn = Some(c);
    }
    let ch = json!(ctx.channel).to_string();
    for k in 0..total {
        tokio::time::sleep_until(start + gap.mul_f64(k as f64)).await;
        let data = payload(0, k, a.payload);
        let ok: Result<Option<u64>, String> = if let Some(api) = api.as_mut() {
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
        } else if let Some(c) = pconn.as_mut() {
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
        };
        match ok {
            Ok(off) => {
                published.fetch_add(1, Ordering::Relaxed);
                if let Some(o) = off {
                    top.fetch_max(o, Ordering::Relaxed);
                }
            }
            Err(e) => {
                pub_failed += 1;
                pub_error.get_or_insert(e);
            }
        }
    }
    if let Some(c) = pconn {
        c.close().await;
    }
    publishing_done.cancel();
    let mut results = Vec::new();
    while let Some(j) = clients.join_next().await {
        results.push(j?);
    }
    drop(progress);

    // The stream's top: from the API's acknowledgements, else the highest offset any client saw.
    let mut top = top.load(Ordering::Relaxed);
    for r in &results {
        top = top.max(r.max);
    }
    let (mut expected, mut received, mut missing, mut dups) = (0u64, 0u64, 0u64, 0u64);
    let (mut rec_ok, mut rec_fail, mut cycles_n, mut errors, mut epoch_changes) = (0, 0, 0, 0, 0);
    let mut first_error = pub_error.clone();
    let mut reconnect = histogram();
    for r in &results {
        cycles_n += r.cycles;
        rec_ok += r.recovered;
        rec_fail += r.not_recovered;
        errors += r.errors;
        dups += r.duplicates;
        epoch_changes += u64::from(r.epoch_changed);
        if let Some(e) = &r.error {
            first_error.get_or_insert(e.clone());
        }
        if let Some(h) = &r.reconnect {
            let _ = reconnect.add(h);
        }
        if let Some(f) = r.first {
            for o in f..=top {
                expected += 1;
                if r.seen.contains(o) {
                    received += 1;
                } else {
                    missing += 1;
                }
            }
        }
    }
    let hist = timeline.total();
    let mut r = Report::new("churn", &a);
    r.fig("clients", "clients", a.clients as f64, "");
    r.fig("cycles", "connects (incl. reconnects)", cycles_n as f64, "");
    r.fig("recovered", "reconnects recovered", rec_ok as f64, "");
    r.fig(
        "not_recovered",
        "reconnects not recovered",
        rec_fail as f64,
        "",
    );
    r.fig("connect_errors", "connection errors", errors as f64, "");
    r.fig(
        "publications",
        "publications acknowledged",
        published.load(Ordering::Relaxed) as f64,
        "",
    );
    r.fig(
        "publications_failed",
        "publications failed",
        pub_failed as f64,
        "",
    );
    r.fig("stream_top", "stream top offset", top as f64, "");
    r.fig(
        "deliveries_expected",
        "offsets expected (all clients)",
        expected as f64,
        "",
    );
    r.fig(
        "deliveries_received",
        "offsets received",
        received as f64,
        "",
    );
    r.fig("lost", "lost", missing as f64, "");
    r.fig("duplicates", "duplicates", dups as f64, "");
    let rc = Percentiles::of(&reconnect);
    r.fig("reconnect_p50_ms", "reconnect+recover p50", rc.p50, "ms");
    r.fig("reconnect_p99_ms", "reconnect+recover p99", rc.p99, "ms");
    r.latency_label = "publish→live delivery".into();
    r.latency = Some(Percentiles::of(&hist));
    r.percentiles = percentile_curve(&hist);
    r.timeline = points(&timeline.seconds());
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
            first_error
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        ),
    );
    Ok(r)
}
