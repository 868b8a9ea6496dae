//! Chaos: three nodes with the shipped Raft timing; keyed publications through the server API to
//! random nodes at a steady rate (open loop); recovering subscribers on every node; and a
//! bounded loop of faults in turn: leader SIGKILL (restarted `CHAOS_DOWN_MS` later), leader
//! SIGSTOP for `CHAOS_PAUSE_MS`, follower SIGKILL.
//!
//! Checks: every acknowledged publication exactly once, at its offset, on every node; identical,
//! contiguous histories; every subscriber gets each channel exactly once in order, except across
//! gaps it was told about (`recovered: false`); after each fault, presence on every node equals
//! the connected subscribers; no ERROR log line. Reports each fault's unavailability (from the
//! fault to the first acknowledgement of a publication first sent after it) and the told gaps
//! by cause.
//!
//! In CI it runs briefly (3 faults, debug build). At length, by hand:
//! ```text
//! cargo build --release
//! CHAOS_FAULTS=100 CHAOS_KINDS=kill,pause CHAOS_RATE=300 CHAOS_CHANNELS=20 \
//!   CHAOS_SUBSCRIBERS=30 SY_TEST_BIN=target/release/switchyard \
//!   cargo test --test chaos -- --nocapture
//! ```
//! Knobs: `CHAOS_FAULTS` (3), `CHAOS_RATE` publications/s (100), `CHAOS_CHANNELS` (5),
//! `CHAOS_SUBSCRIBERS` (6), `CHAOS_PAUSE_MS` (2500), `CHAOS_DOWN_MS` (1500), `CHAOS_KINDS`
//! (`kill,pause,follower`: which faults, in turn).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use common::*;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// Longest any one publication is retried before it counts as never acknowledged.
const PUBLISH_FOR: Duration = Duration::from_secs(30);
/// Longest the cluster may take to settle (all nodes ready, presence converged).
const SETTLE: Duration = Duration::from_secs(40);

/// One node: fixed addresses (a restart keeps them), its data, and the logs of its runs.
struct Node {
    config: tempfile::NamedTempFile,
    data: tempfile::TempDir,
    client: SocketAddr,
    admin: SocketAddr,
    proc: Option<Proc>,
    logs: Vec<String>,
}

struct Nodes(Vec<Node>);

impl Nodes {
    fn start() -> Nodes {
        use std::io::Write;
        let addr = |ip: &str| SocketAddr::new(ip.parse().unwrap(), free_port(ip));
        let addrs: Vec<[SocketAddr; 3]> = IPS
            .iter()
            .map(|ip| [addr(ip), addr(ip), addr(ip)])
            .collect();
        let mut peers = String::new();
        for (i, a) in addrs.iter().enumerate() {
            peers.push_str(&format!(
                "[[cluster.peers]]\nid = {}\naddr = \"{}\"\n",
                i + 1,
                a[2]
            ));
        }
        let mut nodes = Vec::new();
        for (i, [client, admin, cluster]) in addrs.into_iter().enumerate() {
            // The shipped Raft timing: the test config's fast timing is dropped.
            let toml = base_toml()
                .replace("[client]\nlisten = \"127.0.0.1:0\"", &format!("[client]\nlisten = \"{client}\""))
                .replace("[admin]\nlisten = \"127.0.0.1:0\"", &format!("[admin]\nlisten = \"{admin}\""))
                .replace(
                    "[cluster]\nlisten = \"127.0.0.1:0\"\nheartbeat_interval = \"50ms\"\nelection_timeout_min = \"150ms\"\nelection_timeout_max = \"300ms\"",
                    &format!("[cluster]\nlisten = \"{cluster}\""),
                );
            assert!(
                toml.contains(&cluster.to_string()),
                "test config layout changed"
            );
            let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
            write!(
                config,
                "{toml}\n[node]\nid = {}\n{peers}\n[[channel.namespaces]]\nname = \"chaos\"\nhistory_size = 1000000\nhistory_ttl = \"1h\"\npresence = true\nforce_recovery = true\nallow_subscribe_for_client = true\n",
                i + 1
            )
            .unwrap();
            nodes.push(Node {
                config,
                data: tempfile::tempdir().unwrap(),
                client,
                admin,
                proc: None,
                logs: vec![],
            });
        }
        let mut n = Nodes(nodes);
        for i in 0..3 {
            n.spawn(i);
        }
        n
    }

    fn spawn(&mut self, i: usize) {
        let n = &mut self.0[i];
        let dir = n.data.path().display().to_string();
        n.proc = Some(Proc::start(
            n.config.path(),
            &[("SWITCHYARD_NODE__DATA_DIR", dir.as_str())],
        ));
    }

    fn kill(&mut self, i: usize) {
        let n = &mut self.0[i];
        let mut p = n.proc.take().expect("running");
        p.signal("KILL");
        p.wait_exit(Duration::from_secs(10));
        n.logs.extend(p.log.lock().unwrap().drain(..));
    }

    fn signal(&self, i: usize, sig: &str) {
        self.0[i].proc.as_ref().expect("running").signal(sig);
    }

    fn clients(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|n| n.client).collect()
    }

    /// The leader every node agrees on, once all three are ready.
    async fn stable(&self) -> usize {
        let deadline = Instant::now() + SETTLE;
        loop {
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle in {SETTLE:?}"
            );
            let mut leaders = BTreeSet::new();
            for n in &self.0 {
                let ready = try_http_get(n.admin, "/readyz", Duration::from_secs(1)).await;
                let status = try_http_get(n.admin, "/cluster/status", Duration::from_secs(1)).await;
                match (ready, status) {
                    (Some((200, _)), Some((200, b))) => {
                        let v: Value = serde_json::from_slice(&b).unwrap();
                        leaders.insert(v["leader"].as_u64())
                    }
                    _ => leaders.insert(None),
                };
            }
            if let [Some(l)] = leaders.iter().collect::<Vec<_>>()[..] {
                return *l as usize - 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn error_lines(&self) -> Vec<String> {
        let mut out = vec![];
        for n in &self.0 {
            let live = n
                .proc
                .as_ref()
                .map(|p| p.log.lock().unwrap().clone())
                .unwrap_or_default();
            for line in n.logs.iter().chain(live.iter()) {
                if line.contains("\"level\":\"ERROR\"") {
                    out.push(line.clone());
                }
            }
        }
        out
    }
}

/// An acknowledged publication.
#[derive(Clone)]
struct Ack {
    n: u64,
    channel: String,
    offset: u64,
    first_sent: Instant,
    acked: Instant,
}

/// What the run saw; shared by its tasks.
#[derive(Default)]
struct Seen {
    acks: Vec<Ack>,
    unacked: Vec<String>,
    violations: Vec<String>,
    /// Told gaps (`recovered: false`) by cause.
    gaps: BTreeMap<&'static str, u64>,
    resubscribes: u64,
    /// Subscriber index → (node, client id) while connected and subscribed.
    connected: HashMap<usize, (usize, String)>,
    /// Subscriber → channel → (offset, n) received, in order.
    received: HashMap<usize, BTreeMap<String, Vec<(u64, u64)>>>,
}

type Shared = Arc<Mutex<Seen>>;

/// Publishes `n` with an idempotency key, retrying on other nodes until acknowledged.
async fn publish(
    seen: Shared,
    clients: Arc<Vec<SocketAddr>>,
    n: u64,
    channel: String,
    run: String,
) {
    let body =
        json!({"channel": channel, "data": {"n": n}, "idempotency_key": format!("{run}-{n}")})
            .to_string();
    let first_sent = Instant::now();
    while first_sent.elapsed() < PUBLISH_FOR {
        let addr = clients[rand::rng().random_range(0..clients.len())];
        match try_api_call(addr, "publish", &body, Duration::from_secs(2)).await {
            Some((200, v)) if v["result"]["offset"].is_u64() => {
                let offset = v["result"]["offset"].as_u64().unwrap();
                seen.lock().unwrap().acks.push(Ack {
                    n,
                    channel,
                    offset,
                    first_sent,
                    acked: Instant::now(),
                });
                return;
            }
            // Temporary: no leader yet, a leader change, a write that may have committed.
            Some((200, v)) if v["error"]["code"] == 100 => {}
            Some((st, v)) if st != 200 => seen
                .lock()
                .unwrap()
                .violations
                .push(format!("publish {n}: HTTP {st} {v}")),
            Some((_, v)) => {
                seen.lock()
                    .unwrap()
                    .violations
                    .push(format!("publish {n}: {v}"));
                return;
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen.lock()
        .unwrap()
        .unacked
        .push(format!("{n} on {channel}"));
}

/// Per channel: the last offset and epoch a subscriber saw.
type Positions = BTreeMap<String, (u64, String)>;

/// A subscriber: connects to node `k % 3` first, then to random nodes whenever its connection
/// ends; resubscribes recovering from its positions; checks order on every publication.
async fn subscriber(
    k: usize,
    seen: Shared,
    clients: Arc<Vec<SocketAddr>>,
    channels: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut pos: Positions = BTreeMap::new();
    let mut node = k % clients.len();
    while !*stop.borrow() {
        let _ = session(k, node, &seen, &clients, &channels, &mut pos, stop.clone()).await;
        seen.lock().unwrap().connected.remove(&k);
        node = rand::rng().random_range(0..clients.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One connection's life; returns when it ends (or at `stop`).
async fn session(
    k: usize,
    node: usize,
    seen: &Shared,
    clients: &[SocketAddr],
    channels: &[String],
    pos: &mut Positions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<()> {
    let url = format!("ws://{}/connection/websocket", clients[node]);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .ok()?
    .ok()?;
    let mut cmds = vec![json!({"id": 1, "connect": {"token": token(&format!("sub{k}"))}})];
    for (i, ch) in channels.iter().enumerate() {
        let mut sub = json!({"channel": ch});
        if let Some((offset, epoch)) = pos.get(ch) {
            sub = json!({"channel": ch, "recover": true, "offset": offset, "epoch": epoch});
        }
        cmds.push(json!({"id": i + 2, "subscribe": sub}));
    }
    let batch: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    ws.send(Message::text(batch.join("\n"))).await.ok()?;
    let mut client_id = String::new();
    let mut pending = channels.len();
    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(Duration::from_secs(10), ws.next()) => m.ok()??.ok()?,
            _ = stop.changed() => return None,
        };
        let Message::Text(t) = msg else {
            if msg.is_close() {
                return None;
            }
            continue;
        };
        for line in t.as_str().split('\n').filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("JSON from the server");
            if v.as_object().is_some_and(|o| o.is_empty()) {
                ws.send(Message::text("{}")).await.ok()?;
            } else if v["id"] == 1 {
                client_id = v["connect"]["client"].as_str()?.to_string();
            } else if let Some(id) = v["id"].as_u64() {
                let ch = &channels[id as usize - 2];
                if v.get("error").is_some() {
                    return None; // e.g. temporary during a failover: reconnect
                }
                subscribed(k, seen, ch, &v["subscribe"], pos);
                pending -= 1;
                if pending == 0 {
                    seen.lock()
                        .unwrap()
                        .connected
                        .insert(k, (node, client_id.clone()));
                }
            } else if let Some(p) = v["push"]["pub"].as_object() {
                let ch = v["push"]["channel"].as_str().unwrap_or_default();
                received(k, seen, ch, &Value::Object(p.clone()), pos);
            }
        }
    }
}

/// A subscribe reply: recovered publications, or a told gap, or a first position.
fn subscribed(k: usize, seen: &Shared, ch: &str, r: &Value, pos: &mut Positions) {
    let top = r["offset"].as_u64().unwrap_or(0);
    let epoch = r["epoch"].as_str().unwrap_or_default().to_string();
    match pos.get(ch).cloned() {
        None => {
            pos.insert(ch.to_string(), (top, epoch));
        }
        Some(_) if r["recovered"] == true => {
            for p in r["publications"].as_array().into_iter().flatten() {
                received(k, seen, ch, p, pos);
            }
        }
        Some((offset, old_epoch)) => {
            let cause = if old_epoch != epoch {
                "epoch changed"
            } else if offset > top {
                "node behind the client"
            } else {
                "history trimmed or other"
            };
            let mut s = seen.lock().unwrap();
            s.resubscribes += 1;
            *s.gaps.entry(cause).or_default() += 1;
            pos.insert(ch.to_string(), (top, epoch));
            return;
        }
    }
    seen.lock().unwrap().resubscribes += u64::from(r["was_recovering"] == true);
}

/// A publication: it must be the next offset.
fn received(k: usize, seen: &Shared, ch: &str, p: &Value, pos: &mut Positions) {
    let offset = p["offset"].as_u64().unwrap_or(0);
    let n = p["data"]["n"].as_u64().unwrap_or(u64::MAX);
    let entry = pos.entry(ch.to_string()).or_default();
    let mut s = seen.lock().unwrap();
    if offset != entry.0 + 1 {
        s.violations.push(format!(
            "subscriber {k} on {ch}: offset {offset} after {}",
            entry.0
        ));
    }
    entry.0 = entry.0.max(offset);
    s.received
        .entry(k)
        .or_default()
        .entry(ch.to_string())
        .or_default()
        .push((offset, n));
}

/// The kinds of fault, in the order they take turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    LeaderKill,
    LeaderPause,
    FollowerKill,
}

fn kinds() -> Vec<Fault> {
    let spec = std::env::var("CHAOS_KINDS").unwrap_or_else(|_| "kill,pause,follower".into());
    spec.split(',')
        .map(|k| match k.trim() {
            "kill" => Fault::LeaderKill,
            "pause" => Fault::LeaderPause,
            "follower" => Fault::FollowerKill,
            other => panic!("CHAOS_KINDS: unknown fault {other:?}"),
        })
        .collect()
}

/// From `t0` to the first acknowledgement of a publication first sent at or after it.
async fn unavailability(seen: &Shared, t0: Instant) -> Duration {
    let deadline = t0 + PUBLISH_FOR;
    loop {
        let first = seen
            .lock()
            .unwrap()
            .acks
            .iter()
            .filter(|a| a.first_sent >= t0)
            .map(|a| a.acked)
            .min();
        if let Some(t) = first {
            return t - t0;
        }
        if Instant::now() > deadline {
            return PUBLISH_FOR;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Injects one fault on a settled cluster led by `leader`; returns the unavailability.
async fn inject(nodes: &mut Nodes, seen: &Shared, kind: Fault, leader: usize) -> Duration {
    let down = Duration::from_millis(knob("CHAOS_DOWN_MS", 1500));
    let pause = Duration::from_millis(knob("CHAOS_PAUSE_MS", 2500));
    let t0 = Instant::now();
    let victim = match kind {
        Fault::FollowerKill => (leader + 1) % 3,
        _ => leader,
    };
    let measure = {
        let seen = seen.clone();
        tokio::spawn(async move { unavailability(&seen, t0).await })
    };
    match kind {
        Fault::LeaderKill | Fault::FollowerKill => {
            nodes.kill(victim);
            // The fault's length, not a synchronisation.
            tokio::time::sleep_until(t0 + down).await;
            nodes.spawn(victim);
        }
        Fault::LeaderPause => {
            nodes.signal(victim, "STOP");
            tokio::time::sleep_until(t0 + pause).await;
            nodes.signal(victim, "CONT");
        }
    }
    measure.await.unwrap()
}

/// Presence of the first channel on every node equals the connected subscribers (polled until
/// the deadline; a violation is recorded otherwise).
async fn presence_converges(
    nodes: &Nodes,
    seen: &Shared,
    channel: &str,
    subscribers: usize,
    after: &str,
) {
    let deadline = Instant::now() + SETTLE;
    let mut last = String::new();
    while Instant::now() < deadline {
        let want: BTreeSet<String> = {
            let s = seen.lock().unwrap();
            s.connected.values().map(|(_, id)| id.clone()).collect()
        };
        let mut ok = want.len() == subscribers;
        last = format!("want {} connected clients {want:?}", subscribers);
        for (i, n) in nodes.0.iter().enumerate() {
            let body = json!({"channel": channel}).to_string();
            let got: Option<BTreeSet<String>> =
                try_api_call(n.client, "presence", &body, Duration::from_secs(2))
                    .await
                    .and_then(|(_, v)| {
                        v["result"]["presence"]
                            .as_object()
                            .map(|m| m.keys().cloned().collect())
                    });
            if got.as_ref() != Some(&want) {
                ok = false;
                last.push_str(&format!("; node {} has {got:?}", i + 1));
            }
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.lock()
        .unwrap()
        .violations
        .push(format!("presence after {after}: {last}"));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_fails_over_quickly() {
    let faults = knob("CHAOS_FAULTS", 3);
    let rate = knob("CHAOS_RATE", 100).max(1);
    let channels: Vec<String> = (0..knob("CHAOS_CHANNELS", 5))
        .map(|c| format!("chaos:c{c}"))
        .collect();
    let subscribers = knob("CHAOS_SUBSCRIBERS", 6) as usize;
    let mut nodes = Nodes::start();
    nodes.stable().await;
    let clients = Arc::new(nodes.clients());
    let seen: Shared = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let subs: Vec<_> = (0..subscribers)
        .map(|k| {
            tokio::spawn(subscriber(
                k,
                seen.clone(),
                clients.clone(),
                channels.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    presence_converges(&nodes, &seen, &channels[0], subscribers, "start").await;

    // Open loop: publication n is due at n / rate.
    let publisher = {
        let (seen, clients, channels, mut stop) = (
            seen.clone(),
            clients.clone(),
            channels.clone(),
            stop_rx.clone(),
        );
        let run = uuid::Uuid::new_v4().to_string();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0u64.. {
                let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stop.changed() => break,
                }
                let ch = channels[(n % channels.len() as u64) as usize].clone();
                tasks.spawn(publish(seen.clone(), clients.clone(), n, ch, run.clone()));
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    let mut outages: BTreeMap<Fault, Vec<Duration>> = BTreeMap::new();
    let kinds = kinds();
    for i in 0..faults {
        let leader = nodes.stable().await;
        let kind = kinds[i as usize % kinds.len()];
        let took = inject(&mut nodes, &seen, kind, leader).await;
        println!(
            "fault {i}: {kind:?} of node {}: writes resumed after {took:?}",
            leader + 1
        );
        outages.entry(kind).or_default().push(took);
        nodes.stable().await;
        presence_converges(
            &nodes,
            &seen,
            &channels[0],
            subscribers,
            &format!("fault {i} ({kind:?})"),
        )
        .await;
    }

    stop_tx.send(true).unwrap();
    publisher.await.unwrap();
    for s in subs {
        s.await.unwrap();
    }
    nodes.stable().await;
    let report = check_histories(&nodes, &seen, &channels).await;

    let s = seen.lock().unwrap();
    println!(
        "publications acknowledged: {}, never acknowledged: {}",
        s.acks.len(),
        s.unacked.len()
    );
    for (kind, mut v) in outages {
        v.sort();
        println!(
            "{kind:?} x{}: unavailability p50 {:?} p99 {:?} max {:?}",
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.last().unwrap()
        );
        assert!(
            *v.last().unwrap() < PUBLISH_FOR,
            "{kind:?}: writes never resumed"
        );
    }
    println!(
        "resubscribes: {}, told gaps (recovered: false) by cause: {:?}",
        s.resubscribes, s.gaps
    );
    println!("{report}");
    let errors = nodes.error_lines();
    println!("ERROR log lines: {}", errors.len());
    assert!(
        s.violations.is_empty(),
        "violations:\n{}",
        s.violations.join("\n")
    );
    assert!(s.unacked.is_empty(), "never acknowledged: {:?}", s.unacked);
    assert!(errors.is_empty(), "ERROR lines:\n{}", errors.join("\n"));
}

/// History on every node: identical, contiguous from 1, every acknowledged publication exactly
/// once at its offset; every subscriber's publications match it. Violations go to `seen`.
async fn check_histories(nodes: &Nodes, seen: &Shared, channels: &[String]) -> String {
    let mut total = 0;
    for ch in channels {
        let mut histories = vec![];
        for n in &nodes.0 {
            histories.push(history(n.client, ch).await);
        }
        let mut s = seen.lock().unwrap();
        let (h, _) = &histories[0];
        total += h.len();
        if histories.iter().any(|x| x != &histories[0]) {
            s.violations
                .push(format!("{ch}: histories differ between nodes"));
        }
        if h.iter().enumerate().any(|(i, (o, _))| *o != i as u64 + 1) {
            s.violations
                .push(format!("{ch}: offsets not contiguous from 1"));
        }
        let mut ns = BTreeSet::new();
        for (o, n) in h {
            if !ns.insert(*n) {
                s.violations
                    .push(format!("{ch}: publication {n} twice (again at {o})"));
            }
        }
        let at: BTreeMap<u64, u64> = h.iter().copied().collect();
        let bad: Vec<String> = s
            .acks
            .iter()
            .filter(|a| &a.channel == ch && at.get(&a.offset) != Some(&a.n))
            .map(|a| {
                format!(
                    "{} acknowledged at {} but history has {:?}",
                    a.n,
                    a.offset,
                    at.get(&a.offset)
                )
            })
            .collect();
        s.violations.extend(bad);
        let mut wrong = vec![];
        for (k, per) in &s.received {
            for (o, n) in per.get(ch).into_iter().flatten() {
                if at.get(o) != Some(n) {
                    wrong.push(format!(
                        "subscriber {k} got {n} at {ch}:{o}, history has {:?}",
                        at.get(o)
                    ));
                }
            }
        }
        s.violations.extend(wrong);
    }
    format!(
        "history: {total} publications over {} channels, identical on 3 nodes",
        channels.len()
    )
}

/// A channel's whole history on one node, (offset, n) in order, and its epoch: read in pages
/// (the API returns at most `client.history_max_publications` at a time).
async fn history(addr: SocketAddr, ch: &str) -> (Vec<(u64, u64)>, Value) {
    let mut pubs: Vec<(u64, u64)> = vec![];
    let mut epoch = Value::Null;
    loop {
        let mut req = json!({"channel": ch, "limit": 1000});
        if let Some((last, _)) = pubs.last() {
            req["since"] = json!({"offset": last, "epoch": epoch});
        }
        let (st, v) = try_api_call(addr, "history", &req.to_string(), Duration::from_secs(10))
            .await
            .expect("history");
        assert_eq!(st, 200, "{v}");
        let page: Vec<(u64, u64)> = v["result"]["publications"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["offset"].as_u64().unwrap(),
                    p["data"]["n"].as_u64().unwrap(),
                )
            })
            .collect();
        epoch = v["result"]["epoch"].clone();
        if page.is_empty() {
            return (pubs, epoch);
        }
        pubs.extend(page);
    }
}
