//! One client of a `reconnect` run, as an SDK behaves: it connects, subscribes with
//! `recoverable`, and after losing its connection (dropped by the bench, closed by the server
//! with a reconnect code, or cut) waits the SDK's back-off and reconnects, subscribing with
//! `recover`, the stream's epoch and the last offset it saw. A connect that fails sends the
//! next attempt to the next `--url` (what a load balancer in front of the nodes does for a
//! node that is down). A terminal close code (3500–3999, 4500–4999) stops it, as it stops the
//! SDKs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Shared;
use super::backoff::Backoff;
use crate::client::{Incoming, lines};
use crate::stats::{Recorder, SeqSet, histogram, now_micros, parse_pub};

/// What one client saw over the run.
pub struct Outcome {
    /// First offset it must receive (after its first subscription's top); none if it never
    /// subscribed.
    pub first: Option<u64>,
    /// Highest offset seen.
    pub max: u64,
    /// Publication sequence numbers received.
    pub seqs: SeqSet,
    /// Offsets received.
    offsets: SeqSet,
    /// Messages whose offset or sequence number it had already received.
    pub duplicates: u64,
    /// Successful reconnects (subscribed again after a loss).
    pub reconnects: u64,
    /// Of those, recovered.
    pub recovered: u64,
    /// Of those, not recovered (`recovered: false`).
    pub not_recovered: u64,
    /// Whether a reconnect found another epoch.
    pub epoch_changed: bool,
    /// Connections the bench dropped (`--drop-how close`).
    pub dropped: u64,
    /// Connections the server closed with a reconnect code.
    pub server_closes: u64,
    /// A terminal close, which stopped the client.
    pub terminal: Option<String>,
    /// Failed connects and broken connections.
    pub errors: u64,
    /// The first of those.
    pub first_error: Option<String>,
    /// Loss → subscribed again, µs.
    pub reconnect: Histogram<u64>,
    /// Each loss and when the client was back (none: never).
    pub episodes: Vec<(Instant, Option<Instant>)>,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            first: None,
            max: 0,
            seqs: SeqSet::default(),
            offsets: SeqSet::default(),
            duplicates: 0,
            reconnects: 0,
            recovered: 0,
            not_recovered: 0,
            epoch_changed: false,
            dropped: 0,
            server_closes: 0,
            terminal: None,
            errors: 0,
            first_error: None,
            reconnect: histogram(),
            episodes: Vec::new(),
        }
    }

    /// One publication received (offset, sequence number).
    fn record(&mut self, offset: u64, seq: u64) {
        let new_offset = self.offsets.insert(offset);
        let new_seq = self.seqs.insert(seq);
        if !(new_offset && new_seq) {
            self.duplicates += 1;
        }
        self.max = self.max.max(offset);
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// How a connection ended.
enum End {
    /// Publishing is over and the client has the stream's top (or the drain passed).
    Done,
    /// The bench dropped it.
    Dropped,
    /// The server closed it.
    Closed(u16, String),
    /// Read error or EOF.
    Broken(String),
}

/// What every client runs with.
#[derive(Clone, Copy)]
pub struct Setup {
    /// The clients.
    pub clients: usize,
    /// First connects spread over this long.
    pub ramp: Duration,
    /// The reconnect back-off.
    pub backoff: Backoff,
}

/// Client `i`: connect, stay, reconnect after every loss, until publishing is over and it
/// has the stream's top, or the drain passed.
pub async fn run(i: usize, shared: Shared, setup: Setup) -> Outcome {
    let mut o = Outcome::new();
    let mut rng = fastrand::Rng::new();
    let ramp = setup.ramp.mul_f64(i as f64 / setup.clients.max(1) as f64);
    tokio::time::sleep(ramp).await;
    let ctx = shared.ctx.clone();
    let token = match ctx.token(&user(i)) {
        Ok(t) => t,
        Err(e) => {
            o.error(format!("{e:#}"));
            o.terminal = Some(format!("no token: {e:#}"));
            shared.stopped.fetch_add(1, Ordering::Relaxed);
            return o;
        }
    };
    let mut rec = Recorder::new(shared.timeline.clone());
    let (mut node, mut step, mut epoch) = (i % ctx.urls.len(), 0u32, None::<String>);
    while !shared.drained() {
        let sub = match (&epoch, o.first) {
            (Some(e), Some(_)) => {
                json!({"recoverable": true, "recover": true, "epoch": e, "offset": o.max})
            }
            _ => json!({"recoverable": true}),
        };
        let ch = [ctx.channel.as_str()];
        // Index `i·n + node`: node `node`, a source address that varies with the client.
        let at = i * ctx.urls.len() + node;
        let attempt = ctx.open_subscribed(at, &token, &ch, sub);
        let (conn, reply, rest) = match tokio::time::timeout(ctx.timeout, attempt).await {
            Ok(Ok(x)) => x,
            failed => {
                let e = match failed {
                    Ok(Err(e)) => format!("connect to {}: {e:#}", ctx.urls[node].authority),
                    _ => format!("connect to {} timed out", ctx.urls[node].authority),
                };
                if closed_for_good(&e) {
                    o.terminal = Some(e);
                    shared.stopped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                o.error(e);
                node = (node + 1) % ctx.urls.len();
                shared.pause(setup.backoff.delay(step, &mut rng)).await;
                step += 1;
                continue;
            }
        };
        step = 0;
        subscribed(&mut o, &reply["subscribe"], &mut epoch);
        account(&mut o, &mut rec, &rest.join(&b'\n'));
        let slot = &shared.slots[i];
        slot.drop_me.store(false, Ordering::Relaxed);
        slot.online.store(true, Ordering::Relaxed);
        shared.online.fetch_add(1, Ordering::Relaxed);
        shared.connects.fetch_add(1, Ordering::Relaxed);
        let end = stay(&mut o, &mut rec, conn, i, &shared).await;
        slot.online.store(false, Ordering::Relaxed);
        shared.online.fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Done => break,
            End::Dropped => o.dropped += 1,
            End::Closed(code, reason) if terminal(code) => {
                o.terminal = Some(format!("closed by the server: {code} {reason}"));
                shared.stopped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            End::Closed(..) => o.server_closes += 1,
            End::Broken(e) => o.error(e),
        }
        o.episodes.push((Instant::now(), None));
        shared.pause(setup.backoff.delay(step, &mut rng)).await;
        step += 1;
    }
    rec.flush();
    o
}

/// The user of client `i` (one per client: `disconnect` by user reaches only it).
pub fn user(i: usize) -> String {
    format!("bench-reconnect-{i}")
}

/// Close codes after which the SDKs do not reconnect.
fn terminal(code: u16) -> bool {
    matches!(code, 3500..=3999 | 4500..=4999 | 1009)
}

/// Whether a failed connect's error is a terminal close (an invalid token: 3500).
fn closed_for_good(e: &str) -> bool {
    const CLOSED: &str = "closed by the server: ";
    e.find(CLOSED).is_some_and(|at| {
        let rest = &e[at + CLOSED.len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..digits].parse().is_ok_and(terminal)
    })
}

/// Takes in a subscribe reply: the first time, the epoch and the offset to start after; after
/// a loss, the reconnect time, whether it recovered and what it recovered.
fn subscribed(o: &mut Outcome, r: &Value, epoch: &mut Option<String>) {
    let now = Instant::now();
    let new_epoch = r["epoch"].as_str().map(str::to_string);
    if o.first.is_none() {
        *epoch = new_epoch;
        let top = r["offset"].as_u64().unwrap_or(0);
        o.first = Some(top + 1);
        o.max = top;
        return;
    }
    if let Some((lost, back)) = o.episodes.last_mut().filter(|e| e.1.is_none()) {
        *back = Some(now);
        let us = now.duration_since(*lost).as_micros();
        o.reconnect
            .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
    }
    o.reconnects += 1;
    if new_epoch.is_some() && new_epoch != *epoch {
        o.epoch_changed = true;
    }
    if r["recovered"].as_bool() == Some(true) {
        o.recovered += 1;
        for p in r["publications"].as_array().into_iter().flatten() {
            if let (Some(off), Some(seq)) = (p["offset"].as_u64(), p["data"]["seq"].as_u64()) {
                o.record(off, seq);
            }
        }
    } else {
        o.not_recovered += 1;
        // The SDK goes on from the stream's position now; what it missed is lost.
        o.max = o.max.max(r["offset"].as_u64().unwrap_or(0));
    }
}

/// Takes in a text message: its publications' offsets, sequence numbers and live latency.
fn account(o: &mut Outcome, rec: &mut Recorder, text: &[u8]) {
    let now = now_micros();
    for line in lines(text) {
        if let Some(m) = parse_pub(line) {
            rec.record(now, now.saturating_sub(m.ts));
            if let Some(off) = m.offset {
                o.record(off, m.seq);
            }
        }
    }
}

/// Reads `conn` until the bench drops it, the server closes it, it breaks, or publishing is
/// over and the client has the stream's top (or the drain passed). The reads run in their own
/// task (a read cut halfway by a timer could lose a message); dropping closes the socket
/// without a close frame.
async fn stay(
    o: &mut Outcome,
    rec: &mut Recorder,
    conn: crate::client::Conn,
    i: usize,
    shared: &Shared,
) -> End {
    let (mut reader, writer) = conn.split();
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<Incoming>>(64);
    let reading = tokio::spawn(async move {
        loop {
            let m = reader.recv().await;
            let last = !matches!(m, Ok(Incoming::Text(_)));
            if tx.send(m).await.is_err() || last {
                break;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let end = loop {
        if shared.publishing_done.is_cancelled()
            && (o.max >= shared.top.load(Ordering::Relaxed) || shared.drained())
        {
            writer.close().await;
            break End::Done;
        }
        let m = tokio::select! {
            _ = tick.tick() => {
                if shared.slots[i].drop_me.swap(false, Ordering::Relaxed) {
                    break End::Dropped;
                }
                continue;
            }
            m = rx.recv() => m,
        };
        match m {
            Some(Ok(Incoming::Text(t))) => account(o, rec, &t),
            Some(Ok(Incoming::Closed(code, reason))) => break End::Closed(code, reason),
            Some(Err(e)) => break End::Broken(format!("{e:#}")),
            None => break End::Broken("reader ended".into()),
        }
    };
    reading.abort();
    end
}
