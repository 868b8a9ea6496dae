//! The publisher of a `reconnect` run: through the server API, each publication with its own
//! idempotency key, retried with the same key (through the next `--api` node) after a
//! temporary error (100: no leader, or the outcome unknown; 111: too many requests), a refused or cut connection
//! or a timeout, until acknowledged or `--retry-for` passed. What a backend that must not lose
//! or double a publication does across a node's restart.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Shared;
use crate::client::Api;
use crate::stats::{now_micros, payload};

/// What the publisher did.
#[derive(Debug, Default)]
pub struct Published {
    /// `(seq, offset)` of every acknowledged publication.
    pub acked: Vec<(u64, u64)>,
    /// Attempts after the first (all publications together).
    pub retried: u64,
    /// Publications given up after `--retry-for`, or refused for good.
    pub failed: u64,
    /// Stream epochs the acknowledgements named (one unless the stream was reset).
    pub epochs: Vec<String>,
    /// The first error seen (retried or not).
    pub first_error: Option<String>,
}

/// How to publish.
pub struct Plan {
    /// Publications per second.
    pub rate: f64,
    /// Publish at least until then (and on while `shared.restarting`).
    pub until: Instant,
    /// Payload size in bytes.
    pub payload: usize,
    /// Give a publication up after retrying it this long.
    pub retry_for: Duration,
}

/// Publishes from `start` as `plan` says; marks `shared.publishing_done` at the end.
pub async fn publish(plan: Plan, start: Instant, shared: &Shared) -> Published {
    let ctx = &shared.ctx;
    let key = ctx.api_key.clone().unwrap_or_default();
    let mut apis: Vec<Api> = ctx
        .apis
        .iter()
        .map(|ep| Api::new(ep.clone(), key.clone(), None))
        .collect();
    let gap = Duration::from_secs_f64(1.0 / plan.rate.max(1e-6));
    let run = now_micros();
    let ch = serde_json::json!(ctx.channel).to_string();
    let mut out = Published::default();
    let mut node = 0;
    let mut k = 0u64;
    while Instant::now() < plan.until || shared.restarting.load(Ordering::Relaxed) {
        tokio::time::sleep_until(start + gap.mul_f64(k as f64)).await;
        let data = payload(0, k, now_micros(), plan.payload);
        let body =
            format!("{{\"channel\":{ch},\"data\":{data},\"idempotency_key\":\"bench-{run}-{k}\"}}");
        let given_up = Instant::now() + plan.retry_for;
        let mut pause = Duration::from_millis(50);
        loop {
            match attempt(&mut apis[node], &body, ctx.timeout).await {
                Ok((offset, epoch)) => {
                    out.acked.push((k, offset));
                    if !out.epochs.contains(&epoch) {
                        out.epochs.push(epoch);
                    }
                    shared.top.fetch_max(offset, Ordering::Relaxed);
                    shared.published.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err((e, temporary)) => {
                    out.first_error.get_or_insert(e);
                    if !temporary || Instant::now() >= given_up {
                        out.failed += 1;
                        break;
                    }
                    out.retried += 1;
                    // A fresh connection: the old one may be cut or hold a request that timed out.
                    apis[node] = Api::new(ctx.apis[node].clone(), key.clone(), None);
                    node = (node + 1) % apis.len();
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
        k += 1;
    }
    shared.publishing_done.cancel();
    out
}

/// One attempt: the offset and epoch, or the error and whether retrying may help (a cut or
/// refused connection, a timeout, error 100 or 111 may; an HTTP error such as 401 may not).
async fn attempt(
    api: &mut Api,
    body: &str,
    within: Duration,
) -> Result<(u64, String), (String, bool)> {
    let call = api.post("publish", body.as_bytes().to_vec());
    let resp = match tokio::time::timeout(within, call).await {
        Err(_) => return Err(("publish timed out".into(), true)),
        Ok(Err(e)) => return Err((format!("{e:#}"), true)),
        Ok(Ok(r)) => r,
    };
    if resp.status != 200 {
        return Err((format!("publish: HTTP {}", resp.status), false));
    }
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    match (v["result"]["offset"].as_u64(), v["error"]["code"].as_u64()) {
        (Some(o), _) => Ok((o, v["result"]["epoch"].as_str().unwrap_or("").to_string())),
        (None, Some(100 | 111)) => Err((format!("publish: {}", v["error"]), true)),
        _ => Err((format!("publish refused: {v}"), false)),
    }
}
