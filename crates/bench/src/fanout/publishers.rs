//! The publishers of a run, open loop: publication k of publisher p is due at a fixed time
//! from the start, whatever the server does, and its latency (acknowledgement, and delivery
//! through its payload's `ts`) counts from then. A publisher writes what is due, reads the
//! replies concurrently and never waits for one acknowledgement before sending the next: a
//! connection's publishes are pipelined over WebSocket (replies matched by command id) and
//! over HTTP/1.1 (in request order; the server answers them one after the other), and
//! concurrent over HTTP/2 (one stream each, answered as each commits, so they have no order
//! among themselves). A publisher that falls behind sends late publications as soon as it can
//! (their lateness counts as latency) until its window ends; what it has not sent by then
//! makes its achieved rate fall short of the offered one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::layout::Channels;
use super::{FanoutArgs, Live};
use crate::client::{
    ApiH2, ApiPipe, ApiReplies, ApiResponse, H2Driver, Http, Incoming, Reader, Writer, api_h2,
    api_pipe, lines,
};
use crate::stats::{PayloadKind, Recorder, SeqSet, Timeline, now_micros, parse_reply, payload_of};
use crate::{Ctx, Via};

/// The achieved rate may fall at most this far short of the offered one (1 %).
pub(super) const RATE_TOLERANCE: f64 = 0.01;

/// Writes of at most about this many bytes: the publications due at once share one write
/// (one WebSocket message of newline-separated commands, or back-to-back API requests).
const BATCH_BYTES: usize = 16 * 1024;

/// What one publisher did.
pub(super) struct PubResult {
    /// Its number.
    pub(super) p: u32,
    /// The sequence numbers acknowledged.
    pub(super) acked: SeqSet,
    /// Publications refused, failed or not acknowledged in time.
    pub(super) failed: u64,
    /// Publications sent within its window (the injected drop counts as sent).
    pub(super) sent: u64,
    /// Publications due that it had not sent when its window ended.
    pub(super) unsent: u64,
    /// How far it fell behind its schedule at most, µs.
    pub(super) lag_max: u64,
    /// Server API replies that came over HTTP/1.1 and over HTTP/2.
    pub(super) replies_by_http: [u64; 2],
    /// Its first error.
    pub(super) error: Option<String>,
}

impl PubResult {
    pub(super) fn new(p: usize) -> PubResult {
        PubResult {
            p: p as u32,
            acked: SeqSet::default(),
            failed: 0,
            sent: 0,
            unsent: 0,
            lag_max: 0,
            replies_by_http: [0; 2],
            error: None,
        }
    }
}

/// When and how the publishers publish.
#[derive(Clone)]
pub(super) struct Schedule {
    /// Server API or client `publish`.
    pub(super) via: Via,
    /// The server API's HTTP version (with `via` API).
    pub(super) http: Http,
    /// Publishers.
    pub(super) publishers: usize,
    /// The channels and who publishes where.
    pub(super) channels: Channels,
    /// Publications per publisher.
    pub(super) per_pub_total: u64,
    /// Publications per second of one publisher.
    per_pub_rate: f64,
    /// Payload size in bytes.
    size: usize,
    /// What fills the payload.
    kind: PayloadKind,
    /// The sequence number publisher 0 claims without sending (`--inject-drop`).
    inject_drop: Option<u64>,
    /// Most publications one publisher has sent and not yet seen answered.
    max_in_flight: usize,
}

impl Schedule {
    /// `rate` publications per second over every publisher for `duration`.
    pub(super) fn new(
        a: &FanoutArgs,
        channels: Channels,
        via: Via,
        rate: f64,
        duration: Duration,
    ) -> Schedule {
        let publishers = a.publishers.max(1);
        let per_pub_rate = (rate / publishers as f64).max(1e-6);
        Schedule {
            via,
            http: if a.publishing.http1 {
                Http::H1
            } else {
                Http::H2
            },
            publishers,
            channels,
            per_pub_total: (per_pub_rate * duration.as_secs_f64()).round() as u64,
            per_pub_rate,
            size: a.publishing.payload,
            kind: a.publishing.payload_kind,
            inject_drop: a.inject_drop,
            max_in_flight: a.publishing.max_in_flight.max(1),
        }
    }

    /// When publication `k` of publisher `p` is due, from the start: k / (rate per
    /// publisher), the publishers staggered evenly so that together they publish at the
    /// offered rate rather than in bursts.
    pub(super) fn due(&self, p: usize, k: u64) -> Duration {
        let stagger = p as f64 / self.publishers as f64;
        secs((k as f64 + stagger) / self.per_pub_rate)
    }

    /// When publisher `p`'s window ends: when a publication after its last would be due.
    /// It sends nothing after that.
    pub(super) fn end(&self, p: usize) -> Duration {
        self.due(p, self.per_pub_total)
    }

    /// How long each publisher's window lasts.
    pub(super) fn window(&self) -> Duration {
        secs(self.per_pub_total as f64 / self.per_pub_rate)
    }

    /// Publications scheduled, all publishers together.
    pub(super) fn total(&self) -> u64 {
        self.per_pub_total * self.publishers as u64
    }

    /// Publications per second over `window` when `count` of them went out in it.
    pub(super) fn rate_of(&self, count: u64) -> f64 {
        let w = self.window().as_secs_f64();
        if w > 0.0 { count as f64 / w } else { 0.0 }
    }

    /// The offered rate: every scheduled publication over the window.
    pub(super) fn offered(&self) -> f64 {
        self.rate_of(self.total())
    }
}

/// `x` seconds, rounded to the nanosecond (so that whole milliseconds stay whole).
fn secs(x: f64) -> Duration {
    Duration::from_nanos((x * 1e9).round() as u64)
}

/// Whether `achieved` publications/s is within [`RATE_TOLERANCE`] of `offered`.
pub(super) fn kept_up(offered: f64, achieved: f64) -> bool {
    achieved >= offered * (1.0 - RATE_TOLERANCE)
}

/// What the publishers of a run did, and when their schedule started.
pub(super) struct Published {
    /// One result per publisher.
    pub(super) results: Vec<PubResult>,
    /// When publication 0 of publisher 0 was due.
    pub(super) start: Instant,
    /// The same instant, µs since the epoch (what payloads' `ts` count from).
    pub(super) start_micros: u64,
    /// Acknowledgement latencies by second since the start.
    pub(super) acks: Arc<Timeline>,
}

/// Opens every publisher's connection, then starts the schedule and runs the publishers on
/// it; their results once all are done.
pub(super) async fn publish(
    ctx: &Arc<Ctx>,
    schedule: &Schedule,
    live: &Arc<Live>,
) -> anyhow::Result<Published> {
    // Connections first, so that setting them up is not counted as falling behind.
    let mut opening = tokio::task::JoinSet::new();
    for p in 0..schedule.publishers {
        let (ctx, s) = (ctx.clone(), schedule.clone());
        opening.spawn(async move { (p, Link::open(&s, &ctx, p).await) });
    }
    let mut links = Vec::new();
    while let Some(j) = opening.join_next().await {
        links.push(j?);
    }
    let start = Instant::now();
    let start_micros = now_micros();
    let acks = Timeline::starting_at(start_micros);
    let clock = Clock {
        start,
        start_micros,
    };
    let mut pubs = tokio::task::JoinSet::new();
    for (p, link) in links {
        let mut pb = Publisher {
            p,
            res: PubResult::new(p),
            inject: if p == 0 { schedule.inject_drop } else { None },
            ctx: ctx.clone(),
            schedule: schedule.clone(),
            clock,
            live: live.clone(),
            acks: Recorder::new(acks.clone()),
            in_flight: InFlight::default(),
        };
        pubs.spawn(async move {
            match link {
                Ok(link) => pb.run(link).await,
                Err(e) => {
                    pb.res.unsent = pb.schedule.per_pub_total;
                    pb.res.error = Some(format!("publisher {}: {e:#}", pb.p));
                }
            }
            pb.acks.flush();
            pb.res
        });
    }
    let mut results = Vec::new();
    while let Some(j) = pubs.join_next().await {
        results.push(j?);
    }
    Ok(Published {
        results,
        start,
        start_micros,
        acks,
    })
}

/// The start of the schedule on both clocks.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    start_micros: u64,
}

/// The writing half of a publisher's connection.
enum Tx {
    /// A pipelined server API connection (HTTP/1.1).
    Api(ApiPipe),
    /// A server API connection over HTTP/2, and where its requests report their answers
    /// (each request waits for its answer in a task of its own).
    H2(ApiH2, mpsc::UnboundedSender<Event>),
    /// A WebSocket (replies matched by command id).
    Ws(Writer),
}

/// What the reading half of a publisher's connection reports.
enum Event {
    /// A reply arrived at `at` (µs since the epoch): to command or request `id` (WebSocket,
    /// HTTP/2) or to the oldest request outstanding (HTTP/1.1, `None`), over `http` (the
    /// server API); `Err` when the publish was refused or failed.
    Reply {
        at: u64,
        id: Option<u32>,
        http: Option<Http>,
        outcome: Result<(), String>,
    },
    /// The connection ended.
    Ended(String),
}

/// A publisher's connection: its writing half, the replies its reading half (a task of its
/// own, which stamps each reply's arrival; over HTTP/2 the task driving the connection, and
/// a task per request) reports, and the first command id to use.
struct Link {
    tx: Tx,
    events: mpsc::UnboundedReceiver<Event>,
    reader: tokio::task::JoinHandle<()>,
    next_id: u32,
}

impl Link {
    /// Publisher `p`'s connection: a pipelined HTTP/1.1 or a concurrent HTTP/2 API
    /// connection, or a WebSocket subscribed to the channels it publishes to (namespaces
    /// commonly allow publishing to subscribers only; its own publications come back and are
    /// ignored).
    async fn open(s: &Schedule, ctx: &Ctx, p: usize) -> anyhow::Result<Link> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let channels = s.channels;
        let (tx, reader, next_id) = match s.via {
            Via::Api => {
                let ep = &ctx.apis[p % ctx.apis.len()];
                let key = ctx.api_key.clone().unwrap_or_default();
                match s.http {
                    Http::H1 => {
                        let (pipe, replies) = api_pipe(ep, &key, ctx.source(p)).await?;
                        (Tx::Api(pipe), tokio::spawn(read_api(replies, events_tx)), 1)
                    }
                    Http::H2 => {
                        let (api, conn) = api_h2(ep, &key, ctx.source(p)).await?;
                        let driver = tokio::spawn(drive_h2(conn, events_tx.clone()));
                        (Tx::H2(api, events_tx), driver, 1)
                    }
                }
            }
            Via::Client => {
                let token = ctx.token(&format!("bench-pub-{p}"))?;
                let names: Vec<String> = channels
                    .of_publisher(p)
                    .into_iter()
                    .map(|c| ctx.channel(c, channels.count))
                    .collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let (mut conn, _, _) = ctx.open_subscribed(p, &token, &names, json!({})).await?;
                let next_id = conn.id();
                let (reader, writer) = conn.split();
                (
                    Tx::Ws(writer),
                    tokio::spawn(read_ws(reader, events_tx)),
                    next_id,
                )
            }
        };
        Ok(Link {
            tx,
            events,
            reader,
            next_id,
        })
    }
}

/// Whether an API answer acknowledges the publish.
fn api_outcome(resp: &ApiResponse) -> Result<(), String> {
    if resp.status == 200 && resp.body.starts_with(b"{\"result\"") {
        Ok(())
    } else {
        Err(format!(
            "publish refused: HTTP {} {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ))
    }
}

/// Reads a pipelined API connection's responses, in order, until it ends.
async fn read_api(mut replies: ApiReplies, events: mpsc::UnboundedSender<Event>) {
    loop {
        let ev = match replies.next().await {
            Ok(resp) => Event::Reply {
                at: now_micros(),
                id: None,
                http: resp.http,
                outcome: api_outcome(&resp),
            },
            Err(e) => Event::Ended(format!("{e:#}")),
        };
        let ended = matches!(ev, Event::Ended(_));
        if events.send(ev).is_err() || ended {
            return;
        }
    }
}

/// Drives an HTTP/2 API connection until it ends, then reports that it did.
async fn drive_h2(conn: H2Driver, events: mpsc::UnboundedSender<Event>) {
    let why = match conn.await {
        Ok(()) => "HTTP/2 connection closed by the server".to_string(),
        Err(e) => format!("HTTP/2 connection: {e}"),
    };
    let _ = events.send(Event::Ended(why));
}

/// Waits for the answer to HTTP/2 request `id` and reports it (in a task of its own, so
/// that a connection's requests are answered concurrently).
fn await_h2(
    id: u32,
    answer: impl std::future::Future<Output = anyhow::Result<ApiResponse>> + Send + 'static,
    events: mpsc::UnboundedSender<Event>,
) {
    tokio::spawn(async move {
        let ev = match answer.await {
            Ok(resp) => Event::Reply {
                at: now_micros(),
                id: Some(id),
                http: resp.http,
                outcome: api_outcome(&resp),
            },
            Err(e) => Event::Reply {
                at: now_micros(),
                id: Some(id),
                http: None,
                outcome: Err(format!("publish failed: {e:#}")),
            },
        };
        let _ = events.send(ev);
    });
}

/// Reads a WebSocket's command replies until it ends (pushes are ignored).
async fn read_ws(mut reader: Reader, events: mpsc::UnboundedSender<Event>) {
    loop {
        let text = match reader.recv().await {
            Ok(Incoming::Text(t)) => t,
            Ok(Incoming::Closed(code, reason)) => {
                let _ = events.send(Event::Ended(format!(
                    "closed by the server: {code} {reason}"
                )));
                return;
            }
            Err(e) => {
                let _ = events.send(Event::Ended(format!("{e:#}")));
                return;
            }
        };
        let at = now_micros();
        for line in lines(&text) {
            if let Some((id, error)) = parse_reply(line) {
                let outcome = if error {
                    Err(format!(
                        "publish refused: {}",
                        String::from_utf8_lossy(line)
                    ))
                } else {
                    Ok(())
                };
                let ev = Event::Reply {
                    at,
                    id: Some(id),
                    http: None,
                    outcome,
                };
                if events.send(ev).is_err() {
                    return;
                }
            }
        }
    }
}

/// Publications sent and not yet answered: sequence number and due time (µs since the
/// epoch), by command or request id (WebSocket, HTTP/2) or in request order (HTTP/1.1).
#[derive(Default)]
struct InFlight {
    by_id: HashMap<u32, (u64, u64)>,
    in_order: VecDeque<(u64, u64)>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.by_id.len() + self.in_order.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The publication a reply answers.
    fn take(&mut self, id: Option<u32>) -> Option<(u64, u64)> {
        match id {
            Some(id) => self.by_id.remove(&id),
            None => self.in_order.pop_front(),
        }
    }
}

/// One publisher while it runs.
struct Publisher {
    p: usize,
    res: PubResult,
    /// The sequence number it claims as acknowledged without sending it.
    inject: Option<u64>,
    ctx: Arc<Ctx>,
    schedule: Schedule,
    clock: Clock,
    live: Arc<Live>,
    /// Acknowledgement latencies.
    acks: Recorder,
    in_flight: InFlight,
}

impl Publisher {
    /// Sends on schedule and accounts for the replies as they come, until everything sent
    /// is answered (or the connection ends, or the replies take longer than the timeout).
    /// With `max_in_flight` publications unanswered it sends nothing more until a reply
    /// comes, and so falls behind.
    async fn run(&mut self, mut link: Link) {
        let total = self.schedule.per_pub_total;
        let end = self.clock.start + self.schedule.end(self.p);
        let mut next = 0u64;
        let mut sending = true;
        let mut deadline = Instant::now();
        loop {
            if sending && (next >= total || Instant::now() >= end) {
                sending = false;
                self.res.unsent = total - next;
                if next < total {
                    // How far behind it was when its window closed.
                    self.lagging(Instant::now(), next);
                }
                deadline = Instant::now() + self.ctx.timeout;
            }
            if !sending && self.in_flight.is_empty() {
                break;
            }
            let due = self.clock.start + self.schedule.due(self.p, next);
            let room = self.in_flight.len() < self.schedule.max_in_flight;
            tokio::select! {
                ev = link.events.recv() => match ev {
                    Some(Event::Reply { at, id, http, outcome }) => {
                        self.answered(at, id, http, outcome)
                    }
                    Some(Event::Ended(e)) => {
                        self.lost_connection(&e, total - next);
                        break;
                    }
                    None => {
                        self.lost_connection("the reader ended", total - next);
                        break;
                    }
                },
                _ = tokio::time::sleep_until(due), if sending && room => {
                    if let Err(e) = self.send_due(&mut link, &mut next, end).await {
                        self.lost_connection(&e, total - next);
                        break;
                    }
                }
                _ = tokio::time::sleep_until(end), if sending && !room => {}
                _ = tokio::time::sleep_until(deadline), if !sending => {
                    let n = self.in_flight.len() as u64;
                    self.res.failed += n;
                    self.res.error.get_or_insert(format!(
                        "publisher {}: {n} publications not acknowledged within {:?}",
                        self.p, self.ctx.timeout
                    ));
                    break;
                }
            }
        }
        link.reader.abort();
        if let Tx::Ws(w) = &link.tx {
            w.close().await;
        }
    }

    /// Writes every publication that is due (and inside the window) in one write, up to
    /// [`BATCH_BYTES`] (over HTTP/2: queues one request each); `next` moves past them.
    async fn send_due(
        &mut self,
        link: &mut Link,
        next: &mut u64,
        end: Instant,
    ) -> Result<(), String> {
        let now = Instant::now();
        let ch_count = self.schedule.channels.count;
        let mut buf = Vec::new();
        let mut queued = 0;
        let room = self.schedule.max_in_flight;
        while *next < self.schedule.per_pub_total
            && now < end
            && queued < BATCH_BYTES
            && self.in_flight.len() < room
        {
            let k = *next;
            let due = self.schedule.due(self.p, k);
            if self.clock.start + due > now {
                break;
            }
            self.lagging(now, k);
            *next += 1;
            self.res.sent += 1;
            self.live.sent.fetch_add(1, Ordering::Relaxed);
            if self.inject == Some(k) {
                // The injected drop: claimed as acknowledged, never sent.
                self.res.acked.insert(k);
                continue;
            }
            let due_micros = self.clock.start_micros + due.as_micros() as u64;
            let data = payload_of(
                self.schedule.kind,
                self.p as u32,
                k,
                due_micros,
                self.schedule.size,
            );
            let ch = self
                .ctx
                .channel(self.schedule.channels.of_publication(self.p, k), ch_count);
            let body = format!("{{\"channel\":{},\"data\":{data}}}", json!(ch));
            queued += body.len();
            self.queue(link, &mut buf, body, (k, due_micros))?;
        }
        if buf.is_empty() {
            return Ok(());
        }
        let written = match &mut link.tx {
            Tx::Api(pipe) => pipe.write(&buf).await,
            Tx::Ws(w) => w.send(&buf).await,
            Tx::H2(..) => Ok(()),
        };
        written.map_err(|e| format!("{e:#}"))
    }

    /// Publishes `body`, publication `pubn` (sequence number, due time): appended to `buf`
    /// (HTTP/1.1, WebSocket: written with the others due at once) or queued on the HTTP/2
    /// connection at once.
    fn queue(
        &mut self,
        link: &mut Link,
        buf: &mut Vec<u8>,
        body: String,
        pubn: (u64, u64),
    ) -> Result<(), String> {
        match &mut link.tx {
            Tx::Api(pipe) => {
                pipe.request(buf, "publish", body.as_bytes());
                self.in_flight.in_order.push_back(pubn);
            }
            Tx::H2(api, events) => {
                let id = link.next_id;
                link.next_id = link.next_id.wrapping_add(1).max(1);
                let answer = api
                    .request("publish", body.into_bytes())
                    .map_err(|e| format!("{e:#}"))?;
                self.in_flight.by_id.insert(id, pubn);
                await_h2(id, answer, events.clone());
            }
            Tx::Ws(_) => {
                let id = link.next_id;
                link.next_id = link.next_id.wrapping_add(1).max(1);
                if !buf.is_empty() {
                    buf.push(b'\n');
                }
                buf.extend_from_slice(format!("{{\"id\":{id},\"publish\":{body}}}").as_bytes());
                self.in_flight.by_id.insert(id, pubn);
            }
        }
        Ok(())
    }

    /// At `now` publication `k` is due and not sent yet: how far behind schedule that is.
    fn lagging(&mut self, now: Instant, k: u64) {
        let due_at = self.clock.start + self.schedule.due(self.p, k);
        let lag = now.saturating_duration_since(due_at).as_micros() as u64;
        self.res.lag_max = self.res.lag_max.max(lag);
        self.live.lag_max.fetch_max(lag, Ordering::Relaxed);
    }

    /// A reply arrived at `at` (over `http`): the publication it answers is acknowledged
    /// (its latency counted from when it was due) or failed.
    fn answered(
        &mut self,
        at: u64,
        id: Option<u32>,
        http: Option<Http>,
        outcome: Result<(), String>,
    ) {
        let Some((k, due_micros)) = self.in_flight.take(id) else {
            return;
        };
        match http {
            Some(Http::H1) => self.res.replies_by_http[0] += 1,
            Some(Http::H2) => self.res.replies_by_http[1] += 1,
            None => {}
        }
        match outcome {
            Ok(()) => {
                self.res.acked.insert(k);
                self.acks.record(at, at.saturating_sub(due_micros));
                self.live.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.res.failed += 1;
                self.res
                    .error
                    .get_or_insert(format!("publisher {}: {e}", self.p));
            }
        }
    }

    /// The connection ended with `e`: what is in flight failed, and the `unsent` ones are
    /// not sent.
    fn lost_connection(&mut self, e: &str, unsent: u64) {
        self.res.failed += self.in_flight.len() as u64;
        self.res.unsent = unsent;
        self.in_flight = InFlight::default();
        self.res
            .error
            .get_or_insert(format!("publisher {}: {e}", self.p));
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::Layout;
    use super::*;

    fn schedule(publishers: usize, rate: f64, duration: Duration) -> Schedule {
        let Ok(crate::Scenario::Fanout(mut a)) = crate::parse(["fanout", "--token", "t"]) else {
            unreachable!("fanout parses")
        };
        a.publishers = publishers;
        Schedule::new(
            &a,
            Channels::new(1, Layout::Fanout),
            Via::Client,
            rate,
            duration,
        )
    }

    #[test]
    fn publications_are_due_at_the_offered_rate() {
        // 1000/s over 4 publishers for 2 s: 250/s each, 4 ms apart, staggered by 1 ms.
        let s = schedule(4, 1000.0, Duration::from_secs(2));
        assert_eq!(s.per_pub_total, 500);
        assert_eq!(s.total(), 2000);
        assert_eq!(s.due(0, 0), Duration::ZERO);
        assert_eq!(s.due(0, 1), Duration::from_millis(4));
        assert_eq!(s.due(1, 0), Duration::from_millis(1));
        assert_eq!(s.due(3, 10), Duration::from_millis(43));
        // Publication i of a publisher is due at start + i / rate, without drift.
        assert_eq!(s.due(0, 499), Duration::from_millis(1996));
        assert_eq!(s.window(), Duration::from_secs(2));
        // Each window ends when a publication after the last would be due.
        assert_eq!(s.end(0), Duration::from_secs(2));
        assert_eq!(s.end(2), Duration::from_millis(2002));
        assert!((s.offered() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn one_publisher_and_uneven_rates() {
        let s = schedule(1, 3.0, Duration::from_secs(1));
        assert_eq!(s.total(), 3);
        assert_eq!(s.due(0, 2).as_millis(), 666);
        assert!((s.offered() - 3.0).abs() < 1e-9);
        // 100/s over 3 publishers for 1 s: 33 each, 99 in all, still 99/s offered.
        let s = schedule(3, 100.0, Duration::from_secs(1));
        assert_eq!(s.total(), 99);
        assert!((s.offered() - 100.0).abs() < 1e-9, "{}", s.offered());
    }

    #[test]
    fn the_achieved_rate_may_fall_one_percent_short() {
        let s = schedule(2, 1000.0, Duration::from_secs(1));
        assert!((s.rate_of(990) - 990.0).abs() < 1e-9);
        assert!(kept_up(s.offered(), s.rate_of(1000)));
        assert!(kept_up(s.offered(), s.rate_of(990)));
        assert!(!kept_up(s.offered(), s.rate_of(989)));
        assert!(!kept_up(200_000.0, 30_000.0));
    }
}
