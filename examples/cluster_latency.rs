//! Publish→delivery latency and committed publications per second across a cluster, over
//! real WebSockets. A stopgap until `switchyard bench` lands.
//!
//! ```sh
//! scripts/cluster-local.sh start          # or any nodes
//! cargo run --release --example cluster_latency -- \
//!   --ws ws://127.0.0.1:8000/connection/websocket --ws ws://127.0.0.2:8000/connection/websocket \
//!   --ws ws://127.0.0.3:8000/connection/websocket \
//!   --secret switchyard-example-secret-change-me --subscribers 300 --publishers 6 --rate 1000 --seconds 20
//! ```
//! Subscribers and publishers are spread over the given nodes. Each publication carries its
//! send time and a sequence number; every subscriber checks it gets each acknowledged one
//! exactly once. Loopback only: point it at nodes you run.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchyard::auth::{MintRequest, mint};
use tokio_tungstenite::tungstenite::Message;

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct Args {
    ws: Vec<String>,
    secret: String,
    channel: String,
    subscribers: usize,
    publishers: usize,
    rate: u64,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        ws: vec![],
        secret: "switchyard-example-secret-change-me".into(),
        channel: "chat:latency".into(),
        subscribers: 100,
        publishers: 3,
        rate: 500,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--ws" => a.ws.push(v),
            "--secret" => a.secret = v,
            "--channel" => a.channel = v,
            "--subscribers" => a.subscribers = v.parse().unwrap(),
            "--publishers" => a.publishers = v.parse().unwrap(),
            "--rate" => a.rate = v.parse().unwrap(),
            "--seconds" => a.seconds = v.parse().unwrap(),
            _ => panic!("unknown argument {k}"),
        }
    }
    assert!(!a.ws.is_empty(), "give at least one --ws URL");
    a
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, secret: &str, user: &str, channel: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let token = mint(
        secret,
        MintRequest {
            user: user.into(),
            ttl: Some(Duration::from_secs(3600)),
            ..Default::default()
        },
    )
    .unwrap();
    let frame = format!(
        "{}\n{}",
        json!({"id": 1, "connect": {"token": token}}),
        json!({"id": 2, "subscribe": {"channel": channel}})
    );
    ws.send(Message::text(frame)).await.unwrap();
    // Wait for the subscribe reply.
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("closed during subscribe")
        };
        if t.as_str().split('\n').any(|l| l.contains("\"id\":2")) {
            assert!(!t.contains("\"error\""), "subscribe failed: {t}");
            return ws;
        }
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let latencies = Arc::new(Mutex::new(Vec::<u32>::with_capacity(1 << 20)));
    let seen: Arc<Vec<Mutex<HashSet<u64>>>> = Arc::new(
        (0..a.subscribers)
            .map(|_| Mutex::new(HashSet::new()))
            .collect(),
    );
    let dups = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();

    eprintln!("connecting {} subscribers…", a.subscribers);
    let mut readers = vec![];
    for i in 0..a.subscribers {
        let mut ws = open(
            &a.ws[i % a.ws.len()],
            &a.secret,
            &format!("sub{i}"),
            &a.channel,
        )
        .await;
        let (lat, seen, dups, stop) = (latencies.clone(), seen.clone(), dups.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let msg = tokio::select! { m = ws.next() => m, _ = stop.cancelled() => return };
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(t) = msg else { continue };
                let now = micros();
                for line in t.as_str().split('\n') {
                    if line == "{}" {
                        let _ = ws.send(Message::text("{}")).await;
                        continue;
                    }
                    let Ok(v) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    let d = &v["push"]["pub"]["data"];
                    if let (Some(sent), Some(seq)) = (d["t"].as_u64(), d["seq"].as_u64()) {
                        lat.lock()
                            .push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
                        if !seen[i].lock().insert(seq) {
                            dups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }

    eprintln!(
        "publishing at {}/s for {} s through {} publishers…",
        a.rate, a.seconds, a.publishers
    );
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let ack_lat = Arc::new(Mutex::new(Vec::<u32>::new()));
    let started = Instant::now();
    let mut pubs = vec![];
    for p in 0..a.publishers {
        let mut ws = open(
            &a.ws[p % a.ws.len()],
            &a.secret,
            &format!("pub{p}"),
            &a.channel,
        )
        .await;
        let (acked, ack_lat) = (acked.clone(), ack_lat.clone());
        let (rate, secs, n, channel) = (a.rate, a.seconds, a.publishers as u64, a.channel.clone());
        pubs.push(tokio::spawn(async move {
            let total = rate * secs / n;
            let gap = Duration::from_secs_f64(n as f64 / rate as f64);
            let begin = tokio::time::Instant::now();
            for k in 0..total {
                tokio::time::sleep_until(begin + gap * k as u32).await;
                let seq = k * n + p as u64;
                let id = (k + 10) as u32;
                let cmd = json!({"id": id, "publish": {"channel": channel, "data": {"t": micros(), "seq": seq}}});
                let t0 = micros();
                ws.send(Message::text(cmd.to_string())).await.unwrap();
                // Sequential per publisher: wait for this command's reply.
                let want = format!("\"id\":{id},");
                'reply: loop {
                    let Some(Ok(Message::Text(t))) = ws.next().await else { return };
                    for line in t.as_str().split('\n') {
                        if line == "{}" {
                            let _ = ws.send(Message::text("{}")).await;
                        } else if line.starts_with(&format!("{{{want}")) {
                            if line.contains("\"publish\":{}") {
                                acked.lock().push(seq);
                                ack_lat.lock().push((micros() - t0) as u32);
                            }
                            break 'reply;
                        }
                    }
                }
            }
        }));
    }
    for p in pubs {
        let _ = p.await;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }

    let acked = acked.lock().clone();
    let acked_set: HashSet<u64> = acked.iter().copied().collect();
    let expected = acked.len() as u64 * a.subscribers as u64;
    let received: u64 = seen.iter().map(|s| s.lock().len() as u64).sum();
    let lost: u64 = seen
        .iter()
        .map(|s| {
            let s = s.lock();
            acked_set.iter().filter(|q| !s.contains(q)).count() as u64
        })
        .sum();
    let pct = |v: &mut Vec<u32>, p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_unstable();
        v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
    };
    let mut l = latencies.lock().clone();
    let mut al = ack_lat.lock().clone();
    println!(
        "publications acknowledged : {} in {:.1} s = {:.0}/s",
        acked.len(),
        publish_secs,
        acked.len() as f64 / publish_secs
    );
    println!(
        "deliveries expected/recvd : {expected} / {received}  lost {lost}  duplicates {}",
        dups.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "delivered per second      : {:.0}",
        received as f64 / publish_secs
    );
    println!(
        "publish→delivery ms       : p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        pct(&mut l, 0.5),
        pct(&mut l, 0.9),
        pct(&mut l, 0.99),
        pct(&mut l, 0.999),
        pct(&mut l, 1.0)
    );
    println!(
        "publish ack (commit) ms   : p50 {:.2}  p99 {:.2}  max {:.2}",
        pct(&mut al, 0.5),
        pct(&mut al, 0.99),
        pct(&mut al, 1.0)
    );
}
