//! The subscribers of a fan-out run: connecting them, and each one's reader, which tracks
//! every publisher stream of its channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::layout::Channels;
use super::{FanoutArgs, Shared};
use crate::Ctx;
use crate::client::{Conn, Incoming, lines};
use crate::stats::{Recorder, StreamSeen, now_micros, parse_pub};

/// What one subscriber saw.
pub(super) struct SubResult {
    /// Its group (see [`Channels::groups`]).
    pub(super) group: usize,
    /// What it saw of each publisher's stream, by publisher.
    pub(super) streams: HashMap<u32, StreamSeen>,
    /// Why the server closed it, when it did.
    pub(super) closed: Option<String>,
}

/// The subscribers of a run, reading.
pub(super) struct Subscribers {
    /// One reader per subscribed connection.
    readers: tokio::task::JoinSet<SubResult>,
    /// Subscribed connections per group.
    pub(super) per_group: Vec<u64>,
    /// Subscribers that failed to connect or subscribe.
    pub(super) failed: usize,
    /// The first of their errors.
    pub(super) first_error: Option<String>,
}

impl Subscribers {
    /// What every reader saw (once `stop` ended them).
    pub(super) async fn results(&mut self) -> anyhow::Result<Vec<SubResult>> {
        let mut subs = Vec::new();
        while let Some(j) = self.readers.join_next().await {
            subs.push(j?);
        }
        Ok(subs)
    }
}

/// Connects and subscribes `a.subscribers` connections (each to its channels,
/// `ctx.concurrency` at a time), and starts a reader for each that succeeded.
pub(super) async fn open_subscribers(
    a: &FanoutArgs,
    ctx: &Arc<Ctx>,
    channels: Channels,
    shared: &Shared,
) -> anyhow::Result<Subscribers> {
    let sem = Arc::new(tokio::sync::Semaphore::new(ctx.concurrency));
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..a.subscribers {
        let (ctx, sem) = (ctx.clone(), sem.clone());
        connecting.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let names: Vec<String> = channels
                .of_subscriber(i)
                .into_iter()
                .map(|c| ctx.channel(c, channels.count))
                .collect();
            let res = async {
                let token = ctx.token(&format!("bench-sub-{i}"))?;
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let (conn, _, rest) = ctx.open_subscribed(i, &token, &names, json!({})).await?;
                anyhow::Ok((conn, rest))
            };
            (i, tokio::time::timeout(ctx.timeout, res).await)
        });
    }
    let mut subs = Subscribers {
        readers: tokio::task::JoinSet::new(),
        per_group: vec![0u64; channels.groups()],
        failed: 0,
        first_error: None,
    };
    while let Some(j) = connecting.join_next().await {
        let (i, res) = j?;
        let (conn, early) = match res {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                subs.failed += 1;
                subs.first_error.get_or_insert(format!("{e:#}"));
                continue;
            }
            Err(_) => {
                subs.failed += 1;
                subs.first_error.get_or_insert("subscribe timed out".into());
                continue;
            }
        };
        shared.live.subscribed.fetch_add(1, Ordering::Relaxed);
        let group = channels.group_of_subscriber(i);
        subs.per_group[group] += 1;
        subs.readers
            .spawn(read_deliveries(conn, early, group, shared.clone()));
    }
    Ok(subs)
}

/// One subscriber's reader: records every publication (its stream's sequence and its latency),
/// first those that came with the subscribe reply (`early`), until `stop` or the server closes.
async fn read_deliveries(
    mut conn: Conn,
    early: Vec<Vec<u8>>,
    group: usize,
    shared: Shared,
) -> SubResult {
    let (live, stop) = (shared.live, shared.stop);
    let mut rec = Recorder::new(shared.timeline);
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
            live.delivered.fetch_add(n, Ordering::Relaxed);
            live.last_delivery.fetch_max(now, Ordering::Relaxed);
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
        group,
        streams,
        closed,
    }
}
