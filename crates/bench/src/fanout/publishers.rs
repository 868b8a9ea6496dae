//! The publishers of a fan-out run: each one sequential stream on a schedule, through the
//! server API or a client connection, recording what was acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use super::{FanoutArgs, Live};
use crate::client::{Api, Conn};
use crate::stats::{SeqSet, histogram, now_micros, payload};
use crate::{Ctx, Via};

/// What one publisher did.
pub(super) struct PubResult {
    /// Its number.
    pub(super) p: u32,
    /// The sequence numbers acknowledged.
    pub(super) acked: SeqSet,
    /// Publications refused or failed.
    pub(super) failed: u64,
    /// Publish→acknowledgement latency.
    pub(super) ack: Histogram<u64>,
    /// Its first error.
    pub(super) error: Option<String>,
}

/// When and how the publishers publish.
#[derive(Clone)]
pub(super) struct Schedule {
    /// Server API or client `publish`.
    via: Via,
    /// Publishers.
    publishers: usize,
    /// Channels; publisher p publishes to channel p mod C.
    channels: usize,
    /// Publications per publisher.
    pub(super) per_pub_total: u64,
    /// Time between two publications of one publisher.
    gap: Duration,
    /// Payload size in bytes.
    size: usize,
    /// The sequence number publisher 0 claims without sending (`--inject-drop`).
    inject_drop: Option<u64>,
    /// When publication 0 of every publisher is due.
    pub(super) start: tokio::time::Instant,
}

impl Schedule {
    /// `rate` publications per second over every publisher for `duration`, starting now.
    pub(super) fn new(a: &FanoutArgs, via: Via, rate: f64, duration: Duration) -> Schedule {
        let publishers = a.publishers.max(1);
        let per_pub_rate = rate / publishers as f64;
        Schedule {
            via,
            publishers,
            channels: a.channels.max(1),
            per_pub_total: (per_pub_rate * duration.as_secs_f64()).round() as u64,
            gap: Duration::from_secs_f64(1.0 / per_pub_rate.max(1e-6)),
            size: a.payload,
            inject_drop: a.inject_drop,
            start: tokio::time::Instant::now(),
        }
    }
}

/// Runs every publisher on `schedule`; their results once all are done.
pub(super) async fn publish(
    ctx: &Arc<Ctx>,
    schedule: &Schedule,
    live: &Arc<Live>,
) -> anyhow::Result<Vec<PubResult>> {
    let mut pubs = tokio::task::JoinSet::new();
    for p in 0..schedule.publishers {
        let inject = if p == 0 { schedule.inject_drop } else { None };
        pubs.spawn(publisher(
            p,
            inject,
            ctx.clone(),
            schedule.clone(),
            live.clone(),
        ));
    }
    let mut pub_results = Vec::new();
    while let Some(j) = pubs.join_next().await {
        pub_results.push(j?);
    }
    Ok(pub_results)
}

/// How a publisher sends.
enum Sender {
    Api(Api),
    Ws(Conn),
}

impl Sender {
    /// Publisher `p`'s sender: an API client, or a connection subscribed to `ch`.
    async fn open(via: Via, ctx: &Ctx, p: usize, ch: &str) -> anyhow::Result<Sender> {
        Ok(match via {
            Via::Api => Sender::Api(Api::new(
                ctx.apis[p % ctx.apis.len()].clone(),
                ctx.api_key.clone().unwrap_or_default(),
                ctx.source(p),
            )),
            Via::Client => {
                // Subscribed too: namespaces commonly allow publishing to subscribers
                // only. Its own publications come back and are ignored.
                let token = ctx.token(&format!("bench-pub-{p}"))?;
                let (c, _, _) = ctx.open_subscribed(p, &token, &[ch], json!({})).await?;
                Sender::Ws(c)
            }
        })
    }

    /// Publishes `data` to `ch` and waits for the acknowledgement.
    async fn publish(&mut self, ctx: &Ctx, ch: &str, data: &str) -> Result<(), String> {
        match self {
            Sender::Api(api) => {
                let body = format!("{{\"channel\":{},\"data\":{data}}}", json!(ch));
                match tokio::time::timeout(ctx.timeout, api.call("publish", body.into_bytes()))
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
        }
    }
}

/// Publisher `p`: one sequential stream on `schedule` (one publication in flight at a time);
/// `inject` is the sequence number it claims as acknowledged without sending it.
async fn publisher(
    p: usize,
    inject: Option<u64>,
    ctx: Arc<Ctx>,
    schedule: Schedule,
    live: Arc<Live>,
) -> PubResult {
    let ch = ctx.channel(p % schedule.channels, schedule.channels);
    let mut res = PubResult {
        p: p as u32,
        acked: SeqSet::default(),
        failed: 0,
        ack: histogram(),
        error: None,
    };
    let mut sender = match Sender::open(schedule.via, &ctx, p, &ch).await {
        Ok(s) => s,
        Err(e) => {
            res.error = Some(format!("publisher {p}: {e:#}"));
            return res;
        }
    };
    for k in 0..schedule.per_pub_total {
        tokio::time::sleep_until(schedule.start + schedule.gap.mul_f64(k as f64)).await;
        if inject == Some(k) {
            // The injected drop: claimed as acknowledged, never sent.
            res.acked.insert(k);
            continue;
        }
        let data = payload(p as u32, k, schedule.size);
        let t0 = now_micros();
        match sender.publish(&ctx, &ch, &data).await {
            Ok(()) => {
                res.acked.insert(k);
                res.ack
                    .saturating_record(now_micros().saturating_sub(t0).max(1));
                live.published.fetch_add(1, Ordering::Relaxed);
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
}
