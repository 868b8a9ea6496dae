//! `--probe-http`: one sequential HTTP publisher alongside the open-loop load. It is a
//! closed loop on purpose, the way a typical backend publishes: send one `publish` to the
//! first --api URL, wait for its answer, send the next, for as long as the run publishes.
//! Its latency is each request's send → answer, which is what such a backend waits per
//! publication while the server carries the background load. It publishes to a channel of
//! its own (`<channel>-probe`) that no subscriber of the run joins, so the subscribers'
//! accounting (every acknowledged publication of every stream delivered once) stays exact;
//! its publications still go through the same log as the load's.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::client::{Api, Http};
use crate::stats::{Percentiles, histogram, now_micros, payload};

/// The publisher id in the probe's payloads (no subscriber tracks it).
const PROBE_STREAM: u32 = u32::MAX;

/// How long the probe waits after a failed request before the next, so that a node that
/// refuses connections is not hammered in a tight loop.
const BACKOFF: Duration = Duration::from_millis(10);

/// What the probe measured.
pub struct ProbeResult {
    /// The HTTP version it asked for.
    pub http: Http,
    /// The version the server answered over (none when nothing was answered).
    pub answered_over: Option<Http>,
    /// Publishes acknowledged.
    pub acked: u64,
    /// Publishes refused, failed or not answered within --timeout.
    pub failed: u64,
    /// Send → answer of each acknowledged publish, µs.
    acks: Histogram<u64>,
    /// The first failure.
    pub error: Option<String>,
}

impl ProbeResult {
    fn new(http: Http) -> ProbeResult {
        ProbeResult {
            http,
            answered_over: None,
            acked: 0,
            failed: 0,
            acks: histogram(),
            error: None,
        }
    }

    fn failed(http: Http, error: &str) -> ProbeResult {
        ProbeResult {
            error: Some(error.to_string()),
            ..ProbeResult::new(http)
        }
    }

    /// Acknowledgement latency percentiles (ms).
    pub fn latency(&self) -> Percentiles {
        Percentiles::of(&self.acks)
    }
}

/// Starts the probe: it publishes over `http` until `duration` has passed or `stop` fires,
/// then returns what it measured.
pub(super) fn spawn(
    ctx: &Arc<Ctx>,
    http: Http,
    size: usize,
    duration: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<ProbeResult> {
    let ctx = ctx.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread and runtime of its own, like a backend process of its own: on the generator's
    // runtime the probe's requests and answers would wait in line behind the tasks of a
    // thousand subscribers, and it would measure the generator, not the server.
    let thread = std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the probe's runtime");
            let _ = tx.send(rt.block_on(run(&ctx, http, size, Instant::now() + duration, stop)));
        });
    tokio::spawn(async move {
        match thread {
            Ok(_) => rx
                .await
                .unwrap_or_else(|_| ProbeResult::failed(http, "the probe thread ended")),
            Err(e) => ProbeResult::failed(http, &format!("starting the probe thread: {e}")),
        }
    })
}

async fn run(
    ctx: &Ctx,
    http: Http,
    size: usize,
    until: Instant,
    stop: CancellationToken,
) -> ProbeResult {
    let mut out = ProbeResult::new(http);
    let key = ctx.api_key.clone().unwrap_or_default();
    let mut api = Api::with(ctx.apis[0].clone(), key, None, http);
    let channel = json!(format!("{}-probe", ctx.channel)).to_string();
    let mut seq = 0u64;
    while Instant::now() < until && !stop.is_cancelled() {
        let data = payload(PROBE_STREAM, seq, now_micros(), size);
        let body = format!("{{\"channel\":{channel},\"data\":{data}}}").into_bytes();
        seq += 1;
        let sent = Instant::now();
        let answer = tokio::time::timeout(ctx.timeout, api.post("publish", body)).await;
        let took = sent.elapsed();
        let failure = match answer {
            Ok(Ok(resp)) if resp.status == 200 && resp.body.starts_with(b"{\"result\"") => {
                out.acked += 1;
                out.answered_over = resp.http.or(out.answered_over);
                out.acks.saturating_record((took.as_micros() as u64).max(1));
                continue;
            }
            Ok(Ok(resp)) => format!(
                "probe publish refused: HTTP {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ),
            Ok(Err(e)) => format!("probe publish: {e:#}"),
            Err(_) => {
                // The connection may hold a late answer: start afresh.
                api = Api::with(
                    ctx.apis[0].clone(),
                    ctx.api_key.clone().unwrap_or_default(),
                    None,
                    http,
                );
                format!("probe publish not answered within {:?}", ctx.timeout)
            }
        };
        out.failed += 1;
        out.error.get_or_insert(failure);
        tokio::time::sleep(BACKOFF).await;
    }
    out
}
