//! `connect`: ramp to N concurrent subscribed connections following k6-like stages (ramp,
//! hold, ramp down), spread over the nodes, over source addresses 127.0.0.2… and, with
//! `--workers`, over child processes (each a share of every stage), so that one box can hold
//! more connections than one process's descriptors or one source address's ports allow.
//! Reports the success rate, connect+subscribe latency percentiles and, with `--pid` or
//! `--admin`, the servers' RSS per connection at the peak.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use super::client::Incoming;
use super::progress::Rate;
use super::report::Report;
use super::stats::{
    Clock, Percentiles, Probe, ServerSample, Timeline, now_micros, percentile_curve,
};
use super::{Ctx, Hooks, Progress, Target, points};

/// Arguments of `switchyard bench connect`.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ConnectArgs {
    /// Nodes, credentials, outputs.
    #[command(flatten)]
    pub target: Target,
    /// Connections to reach (ignored with --stages).
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Connects per second while ramping up (ignored with --stages).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to hold the peak (ignored with --stages).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// k6-like stages `DURATION:TARGET,…` (e.g. `10s:1000,30s:1000,5s:0`): each moves the
    /// number of open connections linearly to TARGET over DURATION.
    #[arg(long)]
    pub stages: Option<String>,
    /// Channels; connection i subscribes to channel i mod C.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Child processes to spread the connections over (0 = this process only). Each holds
    /// its share of every stage; use it past ~19,000 connections (descriptor limit).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Binary to run workers with (default: this executable).
    #[arg(long)]
    pub worker_exe: Option<PathBuf>,
}

/// One stage: move linearly to `target` open connections over `secs`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    /// Duration in seconds.
    pub secs: f64,
    /// Open connections at its end.
    pub target: u64,
}

/// Parses `10s:1000,30s:1000,5s:0`.
pub fn parse_stages(s: &str) -> anyhow::Result<Vec<Stage>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (d, n) = p
                .split_once(':')
                .ok_or_else(|| anyhow!("stage {p:?}: expected DURATION:TARGET"))?;
            Ok(Stage {
                secs: humantime::parse_duration(d.trim())
                    .with_context(|| format!("stage {p:?}"))?
                    .as_secs_f64(),
                target: n.trim().parse().with_context(|| format!("stage {p:?}"))?,
            })
        })
        .collect()
}

impl ConnectArgs {
    /// The stages to run.
    pub fn stages(&self) -> anyhow::Result<Vec<Stage>> {
        if let Some(s) = &self.stages {
            let st = parse_stages(s)?;
            if st.is_empty() {
                bail!("--stages is empty");
            }
            return Ok(st);
        }
        Ok(vec![
            Stage {
                secs: self.connections as f64 / self.rate.max(1e-3),
                target: self.connections,
            },
            Stage {
                secs: self.hold.as_secs_f64(),
                target: self.connections,
            },
            Stage {
                secs: 0.0,
                target: 0,
            },
        ])
    }
}

/// Open connections wanted `t` seconds into `stages`; `None` once they are over.
fn desired(stages: &[Stage], t: f64) -> Option<u64> {
    let (mut from, mut start) = (0u64, 0.0);
    for s in stages {
        if t < start + s.secs {
            let f = (t - start) / s.secs;
            return Some((from as f64 + (s.target as f64 - from as f64) * f).floor() as u64);
        }
        from = s.target;
        start += s.secs;
    }
    (t < start + 0.05).then_some(from)
}

/// One process's part of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    /// Where and how to connect.
    pub target: Target,
    /// The stages, already scaled to this share.
    pub stages: Vec<Stage>,
    /// This share's number and the number of shares (connection ids are `index + k·of`).
    pub index: usize,
    /// Number of shares.
    pub of: usize,
    /// Channels.
    pub channels: usize,
    /// When the stages start (µs since the epoch), so every share keeps the same clock.
    pub start_micros: u64,
}

/// What a share reports while running.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Open, subscribed connections now.
    pub connected: u64,
    /// Connects that succeeded.
    pub ok: u64,
    /// Connects that failed.
    pub failed: u64,
    /// Connections the server closed while held.
    pub closed: u64,
}

/// What a share reports at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShareResult {
    /// Final counts.
    pub counts: Counts,
    /// (completion µs since the epoch, connect+subscribe µs) per successful connection.
    pub samples: Vec<(u64, u32)>,
    /// First error seen.
    pub error: Option<String>,
}

#[derive(Default)]
struct Live {
    connected: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
}

impl Live {
    fn counts(&self) -> Counts {
        Counts {
            connected: self.connected.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }
}

/// Runs one share; `live` is updated as it goes.
async fn run_share(share: Share, live: Arc<Live>, hooks: Hooks) -> anyhow::Result<ShareResult> {
    let ctx = Arc::new(Ctx::new(&share.target, hooks).await?);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let error: Arc<Mutex<Option<String>>> = Arc::default();
    let sem = Arc::new(tokio::sync::Semaphore::new(ctx.concurrency));
    let wait = Duration::from_micros(share.start_micros.saturating_sub(now_micros()));
    tokio::time::sleep(wait).await;
    let clock = Clock::start();
    let mut open: Vec<(CancellationToken, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut spawned = 0usize;
    while let Some(want) = desired(&share.stages, clock.secs()) {
        tick.tick().await;
        while (open.len() as u64) < want {
            let id = share.index + spawned * share.of;
            spawned += 1;
            let stop = CancellationToken::new();
            let (ctx, sem, live, samples, error, s) = (
                ctx.clone(),
                sem.clone(),
                live.clone(),
                samples.clone(),
                error.clone(),
                stop.clone(),
            );
            let ch = ctx.channel(id % share.channels.max(1), share.channels);
            open.push((
                stop,
                tokio::spawn(async move {
                    let permit = tokio::select! {
                        p = sem.acquire_owned() => p,
                        _ = s.cancelled() => return,
                    };
                    let t0 = now_micros();
                    let attempt = async {
                        let token = ctx.token(&format!("bench-{id}"))?;
                        let (c, _, _) = ctx.open_subscribed(id, &token, &[&ch], json!({})).await?;
                        anyhow::Ok(c)
                    };
                    let res = tokio::time::timeout(ctx.timeout, attempt).await;
                    drop(permit);
                    let mut conn = match res {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            live.failed.fetch_add(1, Ordering::Relaxed);
                            error.lock().get_or_insert(format!("{e:#}"));
                            return;
                        }
                        Err(_) => {
                            live.failed.fetch_add(1, Ordering::Relaxed);
                            error.lock().get_or_insert("connect timed out".into());
                            return;
                        }
                    };
                    let done = now_micros();
                    samples.lock().push((done, (done - t0).min(u64::from(u32::MAX)) as u32));
                    live.ok.fetch_add(1, Ordering::Relaxed);
                    live.connected.fetch_add(1, Ordering::Relaxed);
                    // Hold: answer pings, ignore pushes, until told to go or closed.
                    loop {
                        tokio::select! {
                            _ = s.cancelled() => {
                                conn.close().await;
                                break;
                            }
                            m = conn.recv() => match m {
                                Ok(Incoming::Text(_)) => {}
                                Ok(Incoming::Closed(code, reason)) => {
                                    live.closed.fetch_add(1, Ordering::Relaxed);
                                    error.lock().get_or_insert(format!("closed by the server: {code} {reason}"));
                                    break;
                                }
                                Err(e) => {
                                    live.closed.fetch_add(1, Ordering::Relaxed);
                                    error.lock().get_or_insert(format!("{e:#}"));
                                    break;
                                }
                            }
                        }
                    }
                    live.connected.fetch_sub(1, Ordering::Relaxed);
                }),
            ));
        }
        while (open.len() as u64) > want {
            if let Some((stop, _)) = open.pop() {
                stop.cancel();
            }
        }
    }
    for (stop, _) in &open {
        stop.cancel();
    }
    for (_, h) in open {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    let samples = std::mem::take(&mut *samples.lock());
    let error = error.lock().take();
    Ok(ShareResult {
        counts: live.counts(),
        samples,
        error,
    })
}

/// Splits `n` into `of` parts; part `i`.
fn part(n: u64, i: usize, of: usize) -> u64 {
    let (i, of) = (i as u64, of as u64);
    n * (i + 1) / of - n * i / of
}

/// The hidden `bench worker` mode: runs the share in `spec`, writes a JSON counts line to
/// stdout every 200 ms and a final `{"result": …}` line.
pub async fn worker(spec: &str, hooks: Hooks) -> anyhow::Result<()> {
    let share: Share = serde_json::from_str(spec).context("worker spec")?;
    let live = Arc::new(Live::default());
    let task = tokio::spawn(run_share(share, live.clone(), hooks));
    let l = live.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let line = json!({ "counts": l.counts() }).to_string();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    });
    let res = task.await??;
    ticker.abort();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({ "result": res }))?;
    out.flush()?;
    Ok(())
}

/// Runs `switchyard bench connect`: start the shares, follow them with a progress line and a
/// once-a-second sampler until they end, then add up and report.
pub async fn run(a: ConnectArgs, hooks: Hooks) -> anyhow::Result<Report> {
    let ctx = Ctx::new(&a.target, hooks).await?;
    let stages = a.stages()?;
    let peak = stages.iter().map(|s| s.target).max().unwrap_or(0);
    let start_micros = now_micros() + 300_000;
    let baseline = if ctx.probe.is_empty() {
        None
    } else {
        Some(ctx.probe.sample(0.0).await)
    };
    let running = start_shares(&a, &stages, start_micros, hooks)?;
    let progress = {
        let lives = running.lives.clone();
        let ok_rate = Rate::default();
        Progress::start(ctx.progress, move || {
            let c = total(&lives);
            format!(
                "open {} / peak {peak} · ok {} ({:.0}/s) · failed {} · closed {}",
                c.connected,
                c.ok,
                ok_rate.per_sec(c.ok),
                c.failed,
                c.closed
            )
        })
    };
    // Sample open connections (and the servers) every second while the shares run.
    let stop = CancellationToken::new();
    let sampler = spawn_open_sampler(
        stop.clone(),
        ctx.probe.clone(),
        running.lives.clone(),
        start_micros,
    );
    let (results, error) = running.finish().await?;
    stop.cancel();
    let samples = sampler.await.unwrap_or_default();
    drop(progress);
    let finished = Finished {
        args: &a,
        peak,
        start_micros,
        baseline,
        samples,
        tally: account(&results, error, start_micros),
    };
    Ok(finished.report())
}

/// The shares of a run in flight.
struct Running {
    /// Live counts, one per share.
    lives: Vec<Arc<Live>>,
    /// One task per share, ending with its result.
    tasks: tokio::task::JoinSet<anyhow::Result<ShareResult>>,
    /// Worker processes (none when the shares run in this process).
    children: Vec<tokio::process::Child>,
}

/// Starts every share: as tasks of this process, or with `--workers` each in a child process.
fn start_shares(
    a: &ConnectArgs,
    stages: &[Stage],
    start_micros: u64,
    hooks: Hooks,
) -> anyhow::Result<Running> {
    let shares = a.workers.max(1);
    let lives: Vec<Arc<Live>> = (0..shares).map(|_| Arc::new(Live::default())).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut children = Vec::new();
    for (i, live) in lives.iter().enumerate() {
        let share = share_of(a, stages, i, start_micros);
        let live = live.clone();
        if a.workers == 0 {
            tasks.spawn(run_share(share, live, hooks));
            continue;
        }
        let mut child = spawn_worker(a, &share)?;
        let stdout = child.stdout.take().expect("piped stdout");
        children.push(child);
        tasks.spawn(follow_worker(stdout, live));
    }
    Ok(Running {
        lives,
        tasks,
        children,
    })
}

/// Share `i` of `a.workers.max(1)`: its part of every stage and of the concurrency.
fn share_of(a: &ConnectArgs, stages: &[Stage], i: usize, start_micros: u64) -> Share {
    let shares = a.workers.max(1);
    let mut target = a.target.clone();
    target.quiet = true;
    target.concurrency = (a.target.concurrency / shares).max(1);
    Share {
        target,
        stages: stages
            .iter()
            .map(|s| Stage {
                secs: s.secs,
                target: part(s.target, i, shares),
            })
            .collect(),
        index: i,
        of: shares,
        channels: a.channels.max(1),
        start_micros,
    }
}

/// Starts `share` in a child process (`bench worker`, this executable unless
/// `--worker-exe`), its stdout piped.
fn spawn_worker(a: &ConnectArgs, share: &Share) -> anyhow::Result<tokio::process::Child> {
    let exe = match &a.worker_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating this executable for workers")?,
    };
    tokio::process::Command::new(exe)
        .arg("bench")
        .arg("worker")
        .arg("--spec")
        .arg(serde_json::to_string(share)?)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting a bench worker")
}

/// Reads a worker's stdout: mirrors its counts lines into `live`, returns its result line.
async fn follow_worker(
    stdout: tokio::process::ChildStdout,
    live: Arc<Live>,
) -> anyhow::Result<ShareResult> {
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Ok(c) = serde_json::from_value::<Counts>(v["counts"].clone()) {
            live.connected.store(c.connected, Ordering::Relaxed);
            live.ok.store(c.ok, Ordering::Relaxed);
            live.failed.store(c.failed, Ordering::Relaxed);
            live.closed.store(c.closed, Ordering::Relaxed);
        }
        if v.get("result").is_some() {
            return Ok(serde_json::from_value::<ShareResult>(v["result"].clone())?);
        }
    }
    bail!("a bench worker exited without a result")
}

/// The counts of every share together.
fn total(lives: &[Arc<Live>]) -> Counts {
    lives.iter().fold(Counts::default(), |a, l| {
        let c = l.counts();
        Counts {
            connected: a.connected + c.connected,
            ok: a.ok + c.ok,
            failed: a.failed + c.failed,
            closed: a.closed + c.closed,
        }
    })
}

/// One reading of the sampler: seconds since the stages started, open connections, the
/// servers (when probed).
type OpenSample = (f64, u64, Option<ServerSample>);

/// From the start of the stages until `stop`: every second, the open connections of all
/// shares and a reading of the servers.
fn spawn_open_sampler(
    stop: CancellationToken,
    probe: Probe,
    lives: Vec<Arc<Live>>,
    start_micros: u64,
) -> tokio::task::JoinHandle<Vec<OpenSample>> {
    tokio::spawn(async move {
        let mut out: Vec<OpenSample> = Vec::new();
        let wait = Duration::from_micros(start_micros.saturating_sub(now_micros()));
        tokio::time::sleep(wait).await;
        let clock = Clock::start();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let t = clock.secs();
                    let open = total(&lives).connected;
                    let s = if probe.is_empty() { None } else { Some(probe.sample(t).await) };
                    out.push((t, open, s));
                }
            }
        }
        out
    })
}

impl Running {
    /// Waits for every share to end, then for the worker processes to exit: the shares'
    /// results and the first error of a share that failed.
    async fn finish(mut self) -> anyhow::Result<(Vec<ShareResult>, Option<String>)> {
        let mut results = Vec::new();
        let mut error = None;
        while let Some(j) = self.tasks.join_next().await {
            match j? {
                Ok(r) => results.push(r),
                Err(e) => {
                    error.get_or_insert(format!("{e:#}"));
                }
            }
        }
        for mut c in self.children {
            let _ = c.wait().await;
        }
        Ok((results, error))
    }
}

/// The shares' results added up.
struct Tally {
    /// Connects that succeeded, failed, and were closed by the server (`connected` unused).
    counts: Counts,
    /// When the last connect completed (µs since the epoch).
    last_done: u64,
    /// Connect+subscribe latencies, by the second they completed in.
    timeline: Arc<Timeline>,
    /// The first error of the run or of any share.
    error: Option<String>,
}

/// Adds up the shares' counts and latency samples; `error` is the run's first error so far.
fn account(results: &[ShareResult], mut error: Option<String>, start_micros: u64) -> Tally {
    let timeline = Timeline::starting_at(start_micros);
    let mut c = Counts::default();
    let mut last_done = 0u64;
    for r in results {
        c.ok += r.counts.ok;
        c.failed += r.counts.failed;
        c.closed += r.counts.closed;
        if let Some(e) = &r.error {
            error.get_or_insert(e.clone());
        }
        let mut rec = super::stats::Recorder::new(timeline.clone());
        for &(done, lat) in &r.samples {
            rec.record(done, u64::from(lat));
            last_done = last_done.max(done);
        }
    }
    Tally {
        counts: c,
        last_done,
        timeline,
        error,
    }
}

/// A finished run, ready to report.
struct Finished<'a> {
    /// What it ran with.
    args: &'a ConnectArgs,
    /// Peak connections asked for.
    peak: u64,
    /// When the stages started (µs since the epoch).
    start_micros: u64,
    /// The servers before the run (when probed).
    baseline: Option<ServerSample>,
    /// The sampler's readings.
    samples: Vec<OpenSample>,
    /// The shares' results added up.
    tally: Tally,
}

impl Finished<'_> {
    /// The report: figures, server readings, latency, timeline, checks.
    fn report(self) -> Report {
        let hist = self.tally.timeline.total();
        let lat = Percentiles::of(&hist);
        let mut r = Report::new("connect", self.args);
        self.figures(&mut r, &lat);
        if let Some(base) = self.baseline {
            self.server_figures(&mut r, base);
        }
        r.latency_label = "connect+subscribe".into();
        r.latency = Some(lat);
        r.percentiles = percentile_curve(&hist);
        r.timeline = self.timeline_points();
        self.checks(&mut r);
        r
    }

    /// Connect counts, success rate, time to the peak, latency, workers.
    fn figures(&self, r: &mut Report, lat: &Percentiles) {
        let (c, peak, start_micros) = (&self.tally.counts, self.peak, self.start_micros);
        let attempts = c.ok + c.failed;
        let max_open = self.samples.iter().map(|s| s.1).max().unwrap_or(0);
        r.fig(
            "connections_target",
            "peak connections asked for",
            peak as f64,
            "",
        );
        r.fig("attempts", "connect attempts", attempts as f64, "");
        r.fig("connected", "connected + subscribed", c.ok as f64, "");
        r.fig("failed", "failed", c.failed as f64, "");
        r.fig(
            "closed_by_server",
            "closed by the server while held",
            c.closed as f64,
            "",
        );
        r.fig(
            "success_rate",
            "success rate",
            if attempts > 0 {
                100.0 * c.ok as f64 / attempts as f64
            } else {
                0.0
            },
            "%",
        );
        r.fig(
            "max_open",
            "most open at once (1 s samples)",
            max_open as f64,
            "",
        );
        let last_done = self.tally.last_done;
        if c.ok == peak && peak > 0 && last_done > start_micros {
            r.fig(
                "time_to_all_connected_secs",
                "time until all connected",
                (last_done - start_micros) as f64 / 1e6,
                "s",
            );
        }
        r.fig("connect_p50_ms", "connect+subscribe p50", lat.p50, "ms");
        r.fig("connect_p95_ms", "connect+subscribe p95", lat.p95, "ms");
        r.fig("connect_p99_ms", "connect+subscribe p99", lat.p99, "ms");
        r.fig("connect_max_ms", "connect+subscribe max", lat.max, "ms");
        r.fig("workers", "worker processes", self.args.workers as f64, "");
    }

    /// Server RSS and FDs at the peak against `base`, and the server readings.
    fn server_figures(&self, r: &mut Report, base: ServerSample) {
        // The reading with the most connections open (the latest such, after settling).
        if let Some((_, open, Some(s))) = self
            .samples
            .iter()
            .filter(|s| s.2.is_some())
            .max_by_key(|s| (s.1, (s.0 * 1000.0) as u64))
        {
            r.fig(
                "server_rss_baseline_bytes",
                "server RSS before",
                base.rss_bytes as f64,
                "B",
            );
            r.fig(
                "server_rss_peak_bytes",
                "server RSS at peak",
                s.rss_bytes as f64,
                "B",
            );
            r.fig("server_fds_peak", "server FDs at peak", s.fds as f64, "");
            if *open > 0 {
                r.fig(
                    "server_rss_per_connection_bytes",
                    "server RSS per connection (peak - before)",
                    s.rss_bytes.saturating_sub(base.rss_bytes) as f64 / *open as f64,
                    "B",
                );
                r.fig(
                    "server_rss_per_connection_total_bytes",
                    "server RSS per connection (peak / open)",
                    s.rss_bytes as f64 / *open as f64,
                    "B",
                );
            }
        }
        r.server = self.samples.iter().filter_map(|s| s.2).collect();
    }

    /// The per-second timeline with the open connections of each second.
    fn timeline_points(&self) -> Vec<super::report::Point> {
        let mut pts = points(&self.tally.timeline.seconds());
        for (t, open, _) in &self.samples {
            let i = *t as usize;
            while pts.len() <= i {
                pts.push(super::report::Point {
                    t: pts.len() as f64,
                    ..Default::default()
                });
            }
            pts[i].connections = *open as f64;
        }
        pts
    }

    /// Every connect succeeded, the peak was reached, none was closed by the server.
    fn checks(&self, r: &mut Report) {
        let (c, peak) = (&self.tally.counts, self.peak);
        let attempts = c.ok + c.failed;
        r.check(
            "every connect succeeded",
            c.failed == 0 && self.tally.error.is_none() && c.ok == attempts,
            format!(
                "{} of {attempts} ok{}",
                c.ok,
                self.tally
                    .error
                    .as_ref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            ),
        );
        r.check(
            "reached the peak",
            c.ok >= peak,
            format!("{} connected of {peak}", c.ok),
        );
        r.check(
            "no connection closed by the server",
            c.closed == 0,
            format!("{} closed", c.closed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_and_interpolate() {
        let st = parse_stages("10s:100, 5s:100,2s:0").unwrap();
        assert_eq!(st.len(), 3);
        assert_eq!(desired(&st, 0.0), Some(0));
        assert_eq!(desired(&st, 5.0), Some(50));
        assert_eq!(desired(&st, 12.0), Some(100));
        assert_eq!(desired(&st, 16.0), Some(50));
        assert_eq!(desired(&st, 17.0), Some(0));
        assert_eq!(desired(&st, 18.0), None);
        assert_eq!((0..3).map(|i| part(10, i, 3)).sum::<u64>(), 10);
    }
}
