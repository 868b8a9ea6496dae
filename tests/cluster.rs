//! The replicated backplane: durability across restarts of a node, and (multi-process) a
//! three-node cluster on 127.0.0.x.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// What was acknowledged survives a restart of a one-voter cluster: the same publications,
/// offsets and epoch, and recovery across the restart works.
#[tokio::test]
async fn acknowledged_publications_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let toml = format!("{}\n[node]\ndata_dir = {:?}\n", base_toml(), data.path());
    let start = || async {
        let cfg = switchyard::Config::from_toml(&toml).unwrap();
        switchyard::Server::start(cfg).await.unwrap()
    };

    let server = start().await;
    let addr = server.client_addr;
    let mut offsets = vec![];
    let mut epoch = String::new();
    for i in 0..5 {
        let (_, b) = api_call(
            addr,
            "publish",
            Some(API_KEY),
            &json!({"channel": "chat:d", "data": i}).to_string(),
        )
        .await;
        offsets.push(b["result"]["offset"].as_u64().unwrap());
        epoch = b["result"]["epoch"].as_str().unwrap().to_string();
    }
    assert_eq!(offsets, vec![1, 2, 3, 4, 5]);
    server.shutdown();
    assert!(server.wait(Duration::from_secs(10)).await);

    let server = start().await;
    let addr = server.client_addr;
    let (_, b) = api_call(
        addr,
        "history",
        Some(API_KEY),
        &json!({"channel": "chat:d", "limit": -1}).to_string(),
    )
    .await;
    let got: Vec<u64> = b["result"]["publications"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, offsets, "history after restart: {b}");
    assert_eq!(b["result"]["epoch"], json!(epoch), "epoch survives");

    // A client that saw offset 2 before the restart recovers 3..=5 and then live ones.
    let mut c = Client::open(&format!("ws://{addr}/connection/websocket")).await;
    c.connect(&token("alice")).await;
    let r = c
        .call("subscribe", json!({"channel": "chat:d", "recoverable": true, "recover": true, "offset": 2, "epoch": epoch}))
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let (_, b) = api_call(
        addr,
        "publish",
        Some(API_KEY),
        &json!({"channel": "chat:d", "data": "new"}).to_string(),
    )
    .await;
    assert_eq!(
        b["result"]["offset"], 6,
        "offsets continue after the restart"
    );
    assert_eq!(c.publication("chat:d").await["offset"], 6);
    server.shutdown();
    assert!(server.wait(Duration::from_secs(10)).await);
}

/// A three-node cluster of real processes on 127.0.0.1–3.
struct Trio {
    /// `[[cluster.peers]]` tables of the three voters.
    peers: String,
    nodes: Vec<Option<Proc>>,
    configs: Vec<tempfile::NamedTempFile>,
    data: Vec<tempfile::TempDir>,
    /// Environment every node starts with, beside its data directory.
    env: Vec<(&'static str, &'static str)>,
}

impl Trio {
    fn start() -> Trio {
        Self::start_with("")
    }

    /// Starts three nodes; `cluster_extra` is added to each node's `[cluster]` table.
    fn start_with(cluster_extra: &str) -> Trio {
        Self::start_via(cluster_extra, None)
    }

    /// Like [`Trio::start_with`]; with `proxies`, the voter list points at them (proxy i
    /// forwards to node i), so links can be cut.
    fn start_via(cluster_extra: &str, proxies: Option<&[Proxy]>) -> Trio {
        Self::start_env(cluster_extra, proxies, &[])
    }

    /// Like [`Trio::start_via`], each node also started with `env`.
    fn start_env(
        cluster_extra: &str,
        proxies: Option<&[Proxy]>,
        env: &[(&'static str, &'static str)],
    ) -> Trio {
        let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
        let cluster: Vec<String> = match proxies {
            None => ips
                .iter()
                .map(|ip| format!("{ip}:{}", free_port(ip)))
                .collect(),
            Some(p) => p.iter().map(|p| p.target.to_string()).collect(),
        };
        let advertised: Vec<String> = match proxies {
            None => cluster.clone(),
            Some(p) => p.iter().map(|p| p.addr.to_string()).collect(),
        };
        let mut peers = String::new();
        for (i, addr) in advertised.iter().enumerate() {
            peers.push_str(&format!(
                "[[cluster.peers]]\nid = {}\naddr = \"{addr}\"\n",
                i + 1
            ));
        }
        let mut configs = Vec::new();
        let mut data = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            use std::io::Write;
            let toml = base_toml()
                .replace(
                    "[client]\nlisten = \"127.0.0.1:0\"",
                    &format!("[client]\nlisten = \"{ip}:0\""),
                )
                .replace(
                    "[admin]\nlisten = \"127.0.0.1:0\"",
                    &format!("[admin]\nlisten = \"{ip}:0\""),
                )
                .replace(
                    "[cluster]\nlisten = \"127.0.0.1:0\"",
                    &format!(
                        "[cluster]\nlisten = \"{}\"\npropose_timeout = \"3s\"\n{cluster_extra}",
                        cluster[i]
                    ),
                );
            let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
            write!(f, "{toml}\n[node]\nid = {}\n{peers}", i + 1).unwrap();
            configs.push(f);
            data.push(tempfile::tempdir().unwrap());
        }
        let mut t = Trio {
            peers,
            nodes: vec![],
            configs,
            data,
            env: env.to_vec(),
        };
        for i in 0..3 {
            let p = t.spawn(i);
            t.nodes.push(Some(p));
        }
        t
    }

    /// Three nodes with a 1 s leader lease (heartbeat 100 ms, election timeout 800–1000 ms),
    /// and `extra` environment: our driver (the only campaigner) campaigns 1.0–1.2 s after
    /// the last word from a leader.
    fn start_lease_1s(extra: &[(&'static str, &'static str)]) -> Trio {
        let mut env = vec![
            ("SWITCHYARD_CLUSTER__HEARTBEAT_INTERVAL", "100ms"),
            ("SWITCHYARD_CLUSTER__ELECTION_TIMEOUT_MIN", "800ms"),
            ("SWITCHYARD_CLUSTER__ELECTION_TIMEOUT_MAX", "1000ms"),
        ];
        env.extend_from_slice(extra);
        Self::start_env("", None, &env)
    }

    fn spawn(&self, i: usize) -> Proc {
        let dir = self.data[i].path().display().to_string();
        let mut env = vec![("SWITCHYARD_NODE__DATA_DIR", dir.as_str())];
        env.extend(self.env.iter().copied());
        Proc::start(self.configs[i].path(), &env)
    }

    fn node(&self, i: usize) -> &Proc {
        self.nodes[i].as_ref().expect("node running")
    }

    async fn status(&self, i: usize) -> serde_json::Value {
        let (st, b) = http_get(self.node(i).admin_addr, "/cluster/status").await;
        assert_eq!(st, 200);
        serde_json::from_slice(&b).unwrap()
    }

    /// Index (0-based) of the leader that every running node agrees on.
    async fn wait_leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        'poll: loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut seen = std::collections::BTreeSet::new();
            for i in 0..3 {
                if self.nodes[i].is_none() {
                    continue;
                }
                let (st, _) = http_get(self.node(i).admin_addr, "/readyz").await;
                if st != 200 {
                    continue 'poll;
                }
                seen.insert(self.status(i).await["leader"].as_u64().unwrap_or(0));
            }
            if seen.len() == 1 {
                return seen.into_iter().next().unwrap() as usize - 1;
            }
        }
    }

    fn kill(&mut self, i: usize) {
        let mut p = self.nodes[i].take().unwrap();
        p.signal("KILL");
        p.wait_exit(Duration::from_secs(10));
    }

    async fn history(&self, i: usize, channel: &str) -> (Vec<(u64, serde_json::Value)>, String) {
        let (_, b) = api_call(
            self.node(i).client_addr,
            "history",
            Some(API_KEY),
            &json!({"channel": channel, "limit": -1}).to_string(),
        )
        .await;
        let pubs = b["result"]["publications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p["offset"].as_u64().unwrap(), p["data"].clone()))
            .collect();
        (
            pubs,
            b["result"]["epoch"].as_str().unwrap_or("").to_string(),
        )
    }
}

async fn publish_via(
    p: &Proc,
    channel: &str,
    data: serde_json::Value,
) -> Result<u64, serde_json::Value> {
    let (st, b) = api_call(
        p.client_addr,
        "publish",
        Some(API_KEY),
        &json!({"channel": channel, "data": data}).to_string(),
    )
    .await;
    assert_eq!(st, 200);
    b["result"]["offset"].as_u64().ok_or(b)
}

/// Subscribers on every node receive what is published through one node, in the same order
/// with the same offsets and epoch; history is identical everywhere.
///
/// At the default `cluster.append_pipeline` (16) the leader replicates on append streams: no
/// append goes as a plain request.
#[tokio::test]
async fn three_nodes_replicate_in_order() {
    let t = Trio::start();
    let leader = t.wait_leader().await;
    replicate_in_order(&t).await;
    let appends = |path: &'static str| appends_sent(&t, leader, path);
    assert!(appends("alone").await + appends("pipelined").await >= 30.0);
    assert_eq!(appends("sequential").await, 0.0);
}

/// The same with `cluster.append_pipeline = 1`: every append is a plain request, one at a
/// time (as a peer of an older version is served).
#[tokio::test]
async fn three_nodes_replicate_in_order_one_append_at_a_time() {
    let t = Trio::start_with("append_pipeline = 1");
    let leader = t.wait_leader().await;
    replicate_in_order(&t).await;
    let appends = |path: &'static str| appends_sent(&t, leader, path);
    assert!(appends("sequential").await >= 30.0);
    assert_eq!(appends("alone").await + appends("pipelined").await, 0.0);
}

/// Appends node `i` sent as the leader by `path` (`switchyard_raft_appends_total`).
async fn appends_sent(t: &Trio, i: usize, path: &str) -> f64 {
    let series = format!("switchyard_raft_appends_total{{path=\"{path}\"}}");
    metric(t.node(i).admin_addr, &series).await
}

async fn replicate_in_order(t: &Trio) {
    let mut subs = vec![];
    for i in 0..3 {
        let mut c = Client::open(&t.node(i).ws_url()).await;
        c.connect(&token(&format!("u{i}"))).await;
        let r = c
            .call(
                "subscribe",
                json!({"channel": "chat:rep", "recoverable": true}),
            )
            .await;
        subs.push((c, r["subscribe"]["epoch"].as_str().unwrap().to_string()));
    }
    let epoch = subs[0].1.clone();
    assert!(
        subs.iter().all(|(_, e)| *e == epoch),
        "one epoch everywhere"
    );
    // Publish through a follower (forwarded) and the leader alike.
    for n in 0..30u64 {
        let off = publish_via(t.node((n % 3) as usize), "chat:rep", json!(n))
            .await
            .unwrap();
        assert_eq!(off, n + 1);
    }
    for (c, _) in subs.iter_mut() {
        for n in 0..30u64 {
            let p = c.publication("chat:rep").await;
            assert_eq!(
                (p["offset"].as_u64().unwrap(), p["data"].clone()),
                (n + 1, json!(n))
            );
        }
    }
    let h0 = t.history(0, "chat:rep").await;
    assert_eq!(h0.0.len(), 30);
    assert_eq!(h0.1, epoch);
    for i in 1..3 {
        assert_eq!(
            t.history(i, "chat:rep").await,
            h0,
            "history of node {}",
            i + 1
        );
    }
}

/// 150 publishes (within the default command burst) in one WebSocket message to a follower: the follower forwards them on its
/// pipelined stream (several entries in flight to the leader), every one is answered, and a
/// subscriber on the third node sees them in the order sent at contiguous offsets.
#[tokio::test]
async fn pipelined_publishes_through_a_follower_keep_their_order() {
    let t = Trio::start();
    let leader = t.wait_leader().await;
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut sub = Client::open(&t.node(other).ws_url()).await;
    sub.connect(&token("sub")).await;
    sub.subscribe("open:fwd").await;
    let mut publisher = Client::open(&t.node(follower).ws_url()).await;
    publisher.connect(&token("pub")).await;
    let admin = t.node(follower).admin_addr;
    let series = |path: &str| format!("switchyard_forwarded_entries_total{{path=\"{path}\"}}");
    // (Writes made before a leader was known at start-up went one at a time.)
    let sequential_before = metric(admin, &series("sequential")).await;
    pipelined_publishes_arrive_in_order(&mut publisher, &mut sub, "open:fwd", 150).await;
    // Forwarded on the pipelined stream, none one at a time (no retries).
    assert!(metric(admin, &series("pipelined")).await >= 1.0);
    assert_eq!(
        metric(admin, &series("sequential")).await,
        sequential_before
    );
}

/// A follower SIGKILLed and restarted while the leader keeps committing is not ready until it
/// has applied what was acknowledged meanwhile: the first time its `/readyz` says 200, its own
/// history already holds the last publication acknowledged before it came back. (Snapshots
/// every 100 entries and ~3 MB of history, so it catches up from a snapshot that takes a while
/// to send.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_is_not_ready_until_it_has_caught_up() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut t = Trio::start_with("snapshot_every = 100");
    let leader = t.wait_leader().await;
    let follower = (leader + 1) % 3;
    let via = t.node(leader).client_addr;
    // The channels exist on the follower before it dies (a read of a channel it does not
    // know would itself wait for a commit, hiding stale state).
    for c in 0..30 {
        publish_at(via, &format!("chat:ready-{c}"), json!("first")).await;
    }
    eventually("the follower has every channel", || async {
        !t.history(follower, "chat:ready-29").await.0.is_empty()
    })
    .await;
    t.kill(follower);
    let blob = "x".repeat(1000);
    let mut last = (String::new(), 0);
    for n in 0..1500u64 {
        let channel = format!("chat:ready-{}", n % 30);
        last = (
            channel.clone(),
            publish_at(via, &channel, json!([n, blob])).await,
        );
    }
    // The leader keeps committing while the follower comes back (bounded in count).
    let (stop, more) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let background = tokio::spawn({
        let (stop, more) = (stop.clone(), more.clone());
        async move {
            for n in 0..20_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                publish_at(via, "chat:ready-more", json!(n)).await;
                more.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let p = t.spawn(follower);
    t.nodes[follower] = Some(p);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        if http_get(t.node(follower).admin_addr, "/readyz").await.0 == 200 {
            let (h, _) = t.history(follower, &last.0).await;
            let seen = h.last().map_or(0, |x| x.0);
            assert!(
                seen >= last.1,
                "ready with {} at offset {seen}, {} acknowledged before it restarted",
                last.0,
                last.1
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    assert!(
        more.load(Ordering::Relaxed) > 0,
        "the leader kept committing"
    );
}

/// Publishes through `addr` and returns the offset (panics on an error).
async fn publish_at(addr: std::net::SocketAddr, channel: &str, data: serde_json::Value) -> u64 {
    let body = json!({"channel": channel, "data": data}).to_string();
    let (st, b) = api_call(addr, "publish", Some(API_KEY), &body).await;
    assert_eq!(st, 200);
    b["result"]["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("publish failed: {b}"))
}

/// The leader whose two peers die stops being ready within the election timeout (300 ms
/// here; 1 s of slack for a busy machine), and is ready again once one of them is back.
#[tokio::test]
async fn a_node_whose_peers_die_stops_being_ready_within_the_election_timeout() {
    let mut t = Trio::start();
    let leader = t.wait_leader().await;
    let admin = t.node(leader).admin_addr;
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    t.kill(a);
    t.kill(b);
    let killed = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http_get(admin, "/readyz").await.0 == 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(1300),
        "not ready only after {took:?}"
    );
    let p = t.spawn(a);
    t.nodes[a] = Some(p);
    eventually("ready again with a quorum", || async {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await;
}

/// SIGKILL the leader under a steady publish load: a new leader takes over; every
/// acknowledged publication is on the survivors exactly once; a client of the dead node
/// recovers on a survivor with no loss and no duplicate; the restarted node catches up; a
/// node left alone refuses writes with a temporary error instead of acknowledging them.
#[tokio::test]
async fn leader_kill_loses_nothing_acknowledged() {
    let mut t = Trio::start();
    let leader = t.wait_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // A client on the leader, which is about to die.
    let mut doomed = Client::open(&t.node(leader).ws_url()).await;
    doomed.connect(&token("doomed")).await;
    let r = doomed
        .call(
            "subscribe",
            json!({"channel": "chat:k", "recoverable": true}),
        )
        .await;
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();

    // Steady load through the two followers; the leader is killed halfway. 90 publications
    // stay within the namespace's history (100), so every one is checkable afterwards.
    let mut acked: Vec<(u64, u64)> = vec![];
    let mut seen_by_doomed = 0u64;
    for n in 0..90u64 {
        if n == 45 {
            // What the doomed client saw before the crash.
            while seen_by_doomed < acked.last().unwrap().0 {
                seen_by_doomed = doomed.publication("chat:k").await["offset"]
                    .as_u64()
                    .unwrap();
            }
            t.kill(leader);
        }
        let via = if n % 2 == 0 { follower } else { other };
        if let Ok(off) = publish_via(t.node(via), "chat:k", json!(n)).await {
            acked.push((off, n));
        }
    }
    let new_leader = t.wait_leader().await;
    assert_ne!(new_leader, leader);
    assert!(
        acked.len() >= 80,
        "most publications acknowledged: {}",
        acked.len()
    );

    // Every acknowledged publication is there exactly once, with the offset it was given.
    let (h, e) = t.history(follower, "chat:k").await;
    assert_eq!(e, epoch, "epoch survives the leader change");
    let offsets: Vec<u64> = h.iter().map(|(o, _)| *o).collect();
    let mut dedup = offsets.clone();
    dedup.dedup();
    assert_eq!(offsets, dedup, "no duplicates");
    for (off, n) in &acked {
        assert!(
            h.contains(&(*off, json!(n))),
            "acknowledged #{n} at offset {off} is missing"
        );
    }
    assert_eq!(t.history(other, "chat:k").await, (h.clone(), epoch.clone()));

    // The dead node's client reconnects to a survivor and recovers from where it was.
    let mut back = Client::open(&t.node(follower).ws_url()).await;
    back.connect(&token("doomed")).await;
    let r = back
        .call(
            "subscribe",
            json!({"channel": "chat:k", "recoverable": true, "recover": true,
                                  "offset": seen_by_doomed, "epoch": epoch}),
        )
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let got: Vec<u64> = r["subscribe"]["publications"]
        .as_array()
        .map(|a| a.iter().map(|p| p["offset"].as_u64().unwrap()).collect())
        .unwrap_or_default();
    let expected: Vec<u64> = offsets
        .iter()
        .copied()
        .filter(|o| *o > seen_by_doomed)
        .collect();
    assert_eq!(got, expected, "exactly what it missed, in order");

    // The killed node restarts and catches up.
    let p = t.spawn(leader);
    t.nodes[leader] = Some(p);
    t.wait_leader().await;
    let top = offsets.last().copied().unwrap();
    eventually("restarted node caught up", || async {
        t.history(leader, "chat:k").await.0.last().map(|x| x.0) == Some(top)
    })
    .await;
    assert_eq!(t.history(leader, "chat:k").await, (h, epoch));

    // Alone, a node cannot commit: writes fail with a temporary error, not an ack.
    let lone = t.wait_leader().await;
    let (a, b) = ((lone + 1) % 3, (lone + 2) % 3);
    t.kill(a);
    t.kill(b);
    let err = publish_via(t.node(lone), "chat:k", json!("unacknowledgeable"))
        .await
        .unwrap_err();
    assert_eq!(err["error"]["code"], 100, "{err}");
    assert_eq!(err["error"]["temporary"], true);
    let (h, _) = t.history(lone, "chat:k").await;
    assert!(!h.iter().any(|(_, d)| *d == json!("unacknowledgeable")));
}

/// What one backend saw retrying a keyed publish: the positions it was given, the
/// temporary errors (100), and the calls cut by a node dying.
type Retries = (Vec<(u64, String)>, usize, usize);

/// A backend retrying the publish with key "the-one" through random running nodes (`addrs`,
/// None while a node is down) until `attempts` reaches `max`.
async fn retry_keyed_publish(
    backend: u64,
    addrs: std::sync::Arc<std::sync::Mutex<Vec<Option<std::net::SocketAddr>>>>,
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    max: u64,
) -> Retries {
    use rand::Rng;
    let (mut answers, mut refused, mut cut) = (vec![], 0, 0);
    loop {
        let n = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n >= max {
            return (answers, refused, cut);
        }
        let via = {
            let up: Vec<_> = addrs.lock().unwrap().iter().flatten().copied().collect();
            up[rand::rng().random_range(0..up.len())]
        };
        let body =
            json!({"channel": "chat:once", "data": [backend, n], "idempotency_key": "the-one"});
        let within = Duration::from_secs(10);
        match try_api_call(via, "publish", &body.to_string(), within).await {
            Some((200, b)) if b["result"].is_object() => answers.push((
                b["result"]["offset"].as_u64().unwrap_or(0),
                b["result"]["epoch"].as_str().unwrap_or("").to_string(),
            )),
            // No leader, or the outcome is unknown: a temporary error, to retry.
            Some((200, b)) => {
                assert_eq!(b["error"]["code"], 100, "attempt {n} via {via}: {b}");
                refused += 1;
            }
            Some(other) => panic!("attempt {n} via {via}: {other:?}"),
            // The node died during the call.
            None => cut += 1,
        }
    }
}

/// One idempotency key retried 1000 times through random nodes by four concurrent backends
/// while the leader is SIGKILLed (calls in flight to it are cut; calls forwarded to it fail
/// with 100) and then restarted, with snapshots every 20 entries so the keys also travel in
/// snapshots: every answer names the same position, every node's history holds one
/// publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_publishes_once_across_a_leader_kill() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    const ATTEMPTS: u64 = 1000;
    let mut t = Trio::start_with("snapshot_every = 20");
    let leader = t.wait_leader().await;
    let started = std::time::Instant::now();
    let addrs = Arc::new(Mutex::new(
        (0..3).map(|i| Some(t.node(i).client_addr)).collect(),
    ));
    let attempts = Arc::new(AtomicU64::new(0));
    let backends: Vec<_> = (0..4)
        .map(|b| {
            tokio::spawn(retry_keyed_publish(
                b,
                addrs.clone(),
                attempts.clone(),
                ATTEMPTS,
            ))
        })
        .collect();
    let reached = |n: u64| {
        let attempts = attempts.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while attempts.load(Ordering::SeqCst) < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "stuck before attempt {n}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    reached(ATTEMPTS / 4).await;
    addrs.lock().unwrap()[leader] = None;
    t.kill(leader);
    reached(ATTEMPTS / 2).await;
    let p = t.spawn(leader);
    addrs.lock().unwrap()[leader] = Some(p.client_addr);
    t.nodes[leader] = Some(p);
    let mut answers = std::collections::BTreeSet::new();
    let (mut acked, mut refused, mut cut) = (0, 0, 0);
    for b in backends {
        let (a, r, c) = b.await.unwrap();
        acked += a.len();
        answers.extend(a);
        refused += r;
        cut += c;
    }
    let took = started.elapsed();
    eprintln!("acknowledged {acked}, refused {refused}, cut {cut} in {took:?}");
    assert!(
        took < Duration::from_secs(60),
        "{ATTEMPTS} attempts took {took:?}"
    );
    assert!(acked as u64 > ATTEMPTS / 2, "most attempts acknowledged");
    assert_eq!(
        answers.len(),
        1,
        "one position in every answer: {answers:?}"
    );
    let (offset, epoch) = answers.into_iter().next().unwrap();
    assert_eq!(offset, 1);

    // One publication, the same on every node (the restarted one once it has caught up).
    t.wait_leader().await;
    let (h, e) = t.history((leader + 1) % 3, "chat:once").await;
    assert_eq!((h.len(), h[0].0, &e), (1, 1, &epoch), "{h:?}");
    for i in 0..3 {
        eventually("every node holds the one publication", || async {
            t.history(i, "chat:once").await == (h.clone(), epoch.clone())
        })
        .await;
    }
    let snapshot = t.status(leader).await["snapshot_index"].as_u64();
    assert!(
        snapshot >= Some(20),
        "restarted node's snapshot: {snapshot:?}"
    );
    // Another publication (no key) takes the next offset, through the restarted node too.
    let off = publish_via(t.node(leader), "chat:once", json!("next")).await;
    assert_eq!(off, Ok(2));
}

/// A follower is killed while publishing goes on, long enough for the others to snapshot and
/// purge their logs; brought back, it catches up from a snapshot and serves identical
/// history and recovery.
#[tokio::test]
async fn follower_returns_and_catches_up_from_a_snapshot() {
    let mut t = Trio::start_with("snapshot_every = 10");
    let leader = t.wait_leader().await;
    let follower = (leader + 1) % 3;
    for n in 0..5u64 {
        publish_via(t.node(leader), "chat:f", json!(n))
            .await
            .unwrap();
    }
    t.kill(follower);
    for n in 5..60u64 {
        publish_via(t.node(leader), "chat:f", json!(n))
            .await
            .unwrap();
    }
    let st = t.status(leader).await;
    assert!(
        st["snapshot_index"].as_u64().unwrap_or(0) >= 10,
        "leader snapshotted: {st}"
    );

    let p = t.spawn(follower);
    t.nodes[follower] = Some(p);
    t.wait_leader().await;
    let (h, epoch) = t.history(leader, "chat:f").await;
    eventually("returning follower caught up", || async {
        t.history(follower, "chat:f").await.0.len() == h.len()
    })
    .await;
    assert_eq!(
        t.history(follower, "chat:f").await,
        (h.clone(), epoch.clone())
    );
    let st = t.status(follower).await;
    assert!(
        st["snapshot_index"].as_u64().unwrap_or(0) >= 10,
        "caught up via a snapshot: {st}"
    );

    // Recovery served by the returned follower.
    let mut c = Client::open(&t.node(follower).ws_url()).await;
    c.connect(&token("late")).await;
    let r = c
        .call("subscribe", json!({"channel": "chat:f", "recoverable": true, "recover": true, "offset": 50, "epoch": epoch}))
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    assert_eq!(r["subscribe"]["publications"].as_array().unwrap().len(), 10);
    // And it takes part in new commits.
    let off = publish_via(t.node(follower), "chat:f", json!("after"))
        .await
        .unwrap();
    assert_eq!(off, 61);
    assert_eq!(c.publication("chat:f").await["offset"], 61);
}

/// Server API subscribe/unsubscribe/disconnect/refresh called on one node act on the user's
/// connections on every node.
#[tokio::test]
async fn api_user_operations_reach_other_nodes() {
    let t = Trio::start();
    t.wait_leader().await;
    let mut on_b = Client::open(&t.node(1).ws_url()).await;
    on_b.connect(&token("roamer")).await;
    let mut on_c = Client::open(&t.node(2).ws_url()).await;
    on_c.connect(&token("roamer")).await;
    let api = |body: serde_json::Value, method: &'static str| {
        let addr = t.node(0).client_addr;
        async move { api_call(addr, method, Some(API_KEY), &body.to_string()).await }
    };
    let (_, b) = api(
        json!({"user": "roamer", "channel": "chat:srv"}),
        "subscribe",
    )
    .await;
    assert_eq!(b["result"], json!({}));
    for c in [&mut on_b, &mut on_c] {
        let p = c.push().await;
        assert_eq!(p["channel"], "chat:srv");
        assert!(p.get("subscribe").is_some(), "{p}");
    }
    publish_via(t.node(0), "chat:srv", json!("hello"))
        .await
        .unwrap();
    assert_eq!(on_b.publication("chat:srv").await["data"], "hello");
    assert_eq!(on_c.publication("chat:srv").await["data"], "hello");

    api(
        json!({"user": "roamer", "channel": "chat:srv"}),
        "unsubscribe",
    )
    .await;
    // (Join pushes of the two roamer connections may still be queued before it.)
    for c in [&mut on_b, &mut on_c] {
        let unsub = loop {
            let p = c.push().await;
            if p.get("join").is_none() && p.get("leave").is_none() {
                break p;
            }
        };
        assert_eq!(unsub["unsubscribe"]["code"], 2000, "{unsub}");
    }

    api(
        json!({"user": "roamer", "disconnect": {"code": 4001, "reason": "moved"}}),
        "disconnect",
    )
    .await;
    assert_eq!(on_b.closed().await, Closed::Code(4001, "moved".into()));
    assert_eq!(on_c.closed().await, Closed::Code(4001, "moved".into()));

    // `refresh` too: marking a user's connections expired closes them on every node.
    let mut later_b = Client::open(&t.node(1).ws_url()).await;
    later_b.connect(&token("refreshed")).await;
    let mut later_c = Client::open(&t.node(2).ws_url()).await;
    later_c.connect(&token("refreshed")).await;
    let (_, b) = api(json!({"user": "refreshed", "expired": true}), "refresh").await;
    assert_eq!(b["result"], json!({}), "{b}");
    for c in [&mut later_b, &mut later_c] {
        assert_eq!(
            c.closed().await,
            Closed::Code(3005, "connection expired".into())
        );
    }
}

/// Presence converges on every node; the clients of a node that dies leave presence (with
/// leave pushes) once the leader has not reached it for the presence lease.
#[tokio::test]
async fn presence_converges_and_a_dead_nodes_clients_leave() {
    let mut t = Trio::start_with("presence_lease = \"1s\"");
    let leader = t.wait_leader().await;
    let victim = (leader + 1) % 3;
    let watcher_node = (leader + 2) % 3;
    let mut watcher = Client::open(&t.node(watcher_node).ws_url()).await;
    watcher.connect(&token("watcher")).await;
    watcher
        .call(
            "subscribe",
            json!({"channel": "chat:pres", "join_leave": true}),
        )
        .await;
    let mut clients = vec![];
    for i in 0..3 {
        let mut c = Client::open(&t.node(i).ws_url()).await;
        c.connect(&token(&format!("p{i}"))).await;
        c.subscribe("chat:pres").await;
        clients.push(c);
    }
    let addrs: Vec<_> = (0..3).map(|i| t.node(i).client_addr).collect();
    let presence = |i: usize| {
        let addr = addrs[i];
        async move {
            let (_, b) = api_call(
                addr,
                "presence",
                Some(API_KEY),
                &json!({"channel": "chat:pres"}).to_string(),
            )
            .await;
            let mut users: Vec<String> = b["result"]["presence"]
                .as_object()
                .map(|m| {
                    m.values()
                        .map(|v| v["user"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            users.sort();
            users
        }
    };
    let all = vec!["p0", "p1", "p2", "watcher"];
    for i in 0..3 {
        eventually("presence converges", || async { presence(i).await == all }).await;
    }
    t.kill(victim);
    let gone = format!("p{victim}");
    // The watcher sees the victim's client leave.
    loop {
        let p = watcher.push().await;
        if p.get("leave").is_some() && p["leave"]["info"]["user"] == json!(gone) {
            break;
        }
    }
    let expected: Vec<&str> = all.iter().copied().filter(|u| *u != gone).collect();
    for i in [leader, watcher_node] {
        eventually(
            "presence converges without the dead node's client",
            || async { presence(i).await == expected },
        )
        .await;
    }
}

/// `switchyard cluster add-learner | promote | remove` through any node's admin listener: a
/// fourth node not in `cluster.peers` waits, is added as a learner and receives the log, is
/// promoted to voter, then removed; removing it again fails with the leader's reason, passed
/// on by the follower asked.
#[tokio::test]
async fn membership_changes_with_the_cli() {
    let t = Trio::start();
    let leader = t.wait_leader().await;
    for n in 0..5u64 {
        publish_via(t.node(leader), "chat:m4", json!(n))
            .await
            .unwrap();
    }
    let cluster_addr = format!("127.0.0.4:{}", free_port("127.0.0.4"));
    let toml = base_toml()
        .replace(
            "[client]\nlisten = \"127.0.0.1:0\"",
            "[client]\nlisten = \"127.0.0.4:0\"",
        )
        .replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[admin]\nlisten = \"127.0.0.4:0\"",
        )
        .replace(
            "[cluster]\nlisten = \"127.0.0.1:0\"",
            &format!("[cluster]\nlisten = \"{cluster_addr}\""),
        );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    {
        use std::io::Write;
        write!(f, "{toml}\n[node]\nid = 4\n{}", t.peers).unwrap();
    }
    let fourth = Proc::start(f.path(), &[]);
    let (st, _) = http_get(fourth.admin_addr, "/readyz").await;
    assert_eq!(st, 503, "not a member yet");

    // Ask a follower: the change is forwarded to the leader.
    let follower = (leader + 1) % 3;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("cluster")
            .args(args)
            .arg("--admin")
            .arg(format!("http://{}", t.node(follower).admin_addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let st = cli(&["add-learner", "--id", "4", "--addr", &cluster_addr]);
    let node4 = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == 4)
        .cloned()
        .unwrap();
    assert_eq!(node4["voter"], false, "{st}");
    let (h, epoch) = t.history(leader, "chat:m4").await;
    let fourth_history = || async {
        let (_, b) = api_call(
            fourth.client_addr,
            "history",
            Some(API_KEY),
            &json!({"channel": "chat:m4", "limit": -1}).to_string(),
        )
        .await;
        b["result"]["publications"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    eventually("learner received the log", || async {
        fourth_history().await == h.len()
    })
    .await;
    // Readiness follows within a probe (one heartbeat interval) of catching up.
    eventually("a caught-up learner is ready", || async {
        http_get(fourth.admin_addr, "/readyz").await.0 == 200
    })
    .await;
    // A learner serves clients: publishing through it works (forwarded to the leader).
    let off = publish_via(&fourth, "chat:m4", json!("via learner"))
        .await
        .unwrap();
    assert_eq!(off, 6);
    assert!(!epoch.is_empty());

    let st = cli(&["promote", "--id", "4"]);
    let voters: Vec<u64> = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["voter"] == true)
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, vec![1, 2, 3, 4], "{st}");

    let st = cli(&["remove", "--id", "4"]);
    let ids: Vec<u64> = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3], "{st}");
    let st = cli(&["status"]);
    assert_eq!(st["leader"].as_u64().unwrap() as usize, leader + 1);

    // Removing a node that is not a member fails, with the leader's reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["cluster", "remove", "--id", "4", "--admin"])
        .arg(format!("http://{}", t.node(follower).admin_addr))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("node 4 is not a member") && err.trim_end().ends_with("(HTTP 404)"),
        "the follower passes the leader's answer on: {err}"
    );
}

/// A fault-injecting TCP proxy in front of one node's cluster listener: it can refuse (and
/// cut) connections from given source IPs, or all of them.
struct Proxy {
    addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    blocked: std::sync::Arc<std::sync::Mutex<(bool, std::collections::HashSet<std::net::IpAddr>)>>,
    cut: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    /// One proxy in front of each of the three nodes (127.0.1.N forwarding to 127.0.0.N).
    fn one_per_node() -> Vec<Proxy> {
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            .iter()
            .enumerate()
            .map(|(i, ip)| Proxy::spawn(&format!("127.0.1.{}", i + 1), ip))
            .collect()
    }

    /// Listens on `listen_ip:0` and forwards to `target_ip` at a free port (the node's real
    /// cluster listener, started later).
    fn spawn(listen_ip: &str, target_ip: &str) -> Proxy {
        let std_l = std::net::TcpListener::bind((listen_ip, 0)).unwrap();
        std_l.set_nonblocking(true).unwrap();
        let addr = std_l.local_addr().unwrap();
        let target: std::net::SocketAddr = format!("{target_ip}:{}", free_port(target_ip))
            .parse()
            .unwrap();
        let blocked = std::sync::Arc::new(std::sync::Mutex::new((
            false,
            std::collections::HashSet::<std::net::IpAddr>::new(),
        )));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cut = std::sync::Arc::new(cut);
        let (b, c) = (blocked.clone(), cut.clone());
        tokio::spawn(async move {
            let l = tokio::net::TcpListener::from_std(std_l).unwrap();
            loop {
                let Ok((mut inbound, peer)) = l.accept().await else {
                    return;
                };
                let refused = {
                    let g = b.lock().unwrap();
                    g.0 || g.1.contains(&peer.ip())
                };
                if refused {
                    continue; // dropped: the connection is reset
                }
                let mut rx = c.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            target,
            blocked,
            cut,
        }
    }

    /// Refuses everything (`all`) or connections from `from`, and cuts live connections.
    fn block(&self, all: bool, from: &[std::net::IpAddr]) {
        {
            let mut g = self.blocked.lock().unwrap();
            g.0 = all;
            g.1 = from.iter().copied().collect();
        }
        self.cut.send_modify(|g| *g += 1);
    }
}

/// A follower down for a restart is routine: the leader logs one WARN "peer unreachable" and
/// one INFO "peer reachable again" for it, no ERROR line at all and no openraft WARN line
/// while it is down (openraft logs one per failed heartbeat, every 50 ms here, and per failed
/// append; they are dropped).
#[tokio::test]
async fn a_restarted_follower_is_one_warning_not_a_stream_of_errors() {
    // On append streams (the default): a connection to the killed process is not used once
    // it is back.
    let mut t = Trio::start();
    let leader = t.wait_leader().await;
    let follower = (leader + 1) % 3;
    let node_field = format!("\"node\":{}", follower + 1);
    let count = |t: &Trio, needle: &str| {
        t.node(leader)
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle) && l.contains(&node_field))
            .count()
    };
    // (Nodes starting at slightly different times may already have seen each other down.)
    let (down, back) = (
        count(&t, "peer unreachable"),
        count(&t, "peer reachable again"),
    );
    let killed_at = t.node(leader).log.lock().unwrap().len();
    t.kill(follower);
    eventually("the leader reports the follower unreachable", || async {
        count(&t, "peer unreachable") > down
    })
    .await;
    let p = t.spawn(follower);
    t.nodes[follower] = Some(p);
    eventually("the leader reports it back", || async {
        count(&t, "peer reachable again") > back
    })
    .await;
    assert_eq!(
        count(&t, "peer unreachable"),
        down + 1,
        "{:#?}",
        t.node(leader)
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("peer_health"))
            .collect::<Vec<_>>()
    );
    let errors: Vec<String> = t
        .node(leader)
        .log
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            l.contains("\"level\":\"ERROR\"")
                || (*i >= killed_at
                    && l.contains("\"level\":\"WARN\"")
                    && l.contains("\"target\":\"openraft"))
        })
        .map(|(_, l)| l)
        .cloned()
        .collect();
    assert!(
        errors.is_empty(),
        "ERROR or openraft WARN lines: {errors:#?}"
    );
}

/// The leader is paused (SIGSTOP): a write forwarded to it by a follower is answered as soon
/// as a new leader is known (a temporary error: it may have reached the old leader), not
/// after the propose timeout (3 s here), and writes through that follower resume with the new
/// leader well within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_forwarded_to_a_paused_leader_do_not_wait_for_the_timeout() {
    let t = Trio::start();
    let leader = t.wait_leader().await;
    let follower = (leader + 1) % 3;
    publish_via(t.node(follower), "chat:pause", json!("before"))
        .await
        .unwrap();
    t.node(leader).signal("STOP");
    let paused = std::time::Instant::now();
    let mut resumed = None;
    for n in 0..200u64 {
        let started = std::time::Instant::now();
        let r = publish_via(t.node(follower), "chat:pause", json!(n)).await;
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "a publish waited {:?} (attempt {n}: {r:?})",
            started.elapsed()
        );
        if r.is_ok() {
            resumed = Some(paused.elapsed());
            break;
        }
    }
    t.node(leader).signal("CONT");
    let resumed = resumed.expect("writes resumed");
    assert!(
        resumed < Duration::from_millis(2500),
        "resumed after {resumed:?}"
    );
}

/// A subscriber joins on a node without quorum: the subscription stands but its join cannot
/// commit. Once a quorum is back, the join is retried and presence on every node lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_failed_is_retried_until_presence_has_it() {
    let mut t = Trio::start();
    let leader = t.wait_leader().await;
    let (survivor, other) = ((leader + 1) % 3, (leader + 2) % 3);
    t.kill(leader);
    t.kill(other);
    let mut c = Client::open(&t.node(survivor).ws_url()).await;
    c.connect(&token("lonely")).await;
    c.subscribe("chat:rejoin").await;
    eventually("the join failed", || async {
        t.node(survivor)
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("presence change not committed: retrying"))
    })
    .await;
    let p = t.spawn(other);
    t.nodes[other] = Some(p);
    for i in [survivor, other] {
        let addr = t.node(i).client_addr;
        eventually("presence lists the retried join", || async {
            let (_, b) = api_call(
                addr,
                "presence",
                Some(API_KEY),
                &json!({"channel": "chat:rejoin"}).to_string(),
            )
            .await;
            b["result"]["presence"]
                .as_object()
                .is_some_and(|m| m.values().any(|v| v["user"] == "lonely"))
        })
        .await;
    }
}

/// A subscriber saw offset 2 on the leader; the follower it recovers on has not applied it
/// (the leader's traffic to it is cut for 300 ms). Recovery there waits until the follower has
/// caught up and answers `recovered: true` with nothing missed, instead of "not recovered";
/// the next publication arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_a_lagging_node_waits_and_recovers_exactly() {
    recovery_on_a_lagging_node(false).await;
}

/// The same with the subscription named by the connection token (`channels` claim), recovered
/// through `connect.subs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_recovery_on_a_lagging_node_waits_and_recovers_exactly() {
    recovery_on_a_lagging_node(true).await;
}

async fn recovery_on_a_lagging_node(via_connect: bool) {
    let proxies = Proxy::one_per_node();
    let t = Trio::start_via("", Some(&proxies));
    let leader = t.wait_leader().await;
    let lagging = (leader + 1) % 3;
    let ip = |i: usize| -> std::net::IpAddr { format!("127.0.0.{}", i + 1).parse().unwrap() };
    let mut seen = Client::open(&t.node(leader).ws_url()).await;
    seen.connect(&token("reader")).await;
    let r = seen
        .call(
            "subscribe",
            json!({"channel": "chat:lag", "recoverable": true}),
        )
        .await;
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();
    publish_via(t.node(leader), "chat:lag", json!(1))
        .await
        .unwrap();
    assert_eq!(seen.publication("chat:lag").await["offset"], 1);
    eventually("the follower has offset 1", || async {
        t.history(lagging, "chat:lag").await.0.len() == 1
    })
    .await;

    // The leader cannot reach the follower for a moment (shorter than its election timeout).
    proxies[lagging].block(false, &[ip(leader)]);
    let heal = {
        let p = (
            proxies[lagging].blocked.clone(),
            proxies[lagging].cut.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            p.0.lock().unwrap().1.clear();
            p.1.send_modify(|g| *g += 1);
        })
    };
    publish_via(t.node(leader), "chat:lag", json!(2))
        .await
        .unwrap();
    assert_eq!(seen.publication("chat:lag").await["offset"], 2);
    assert_eq!(
        t.history(lagging, "chat:lag").await.0.len(),
        1,
        "still behind"
    );

    let mut c = Client::open(&t.node(lagging).ws_url()).await;
    let position = json!({"recover": true, "offset": 2, "epoch": epoch});
    let r = if via_connect {
        let tok = hs256(json!({"sub": "reader", "channels": ["chat:lag"]}));
        let r = c
            .call(
                "connect",
                json!({"token": tok, "subs": {"chat:lag": position}}),
            )
            .await;
        json!({"subscribe": r["connect"]["subs"]["chat:lag"].clone()})
    } else {
        c.connect(&token("reader")).await;
        let mut sub = position.clone();
        sub["channel"] = json!("chat:lag");
        sub["recoverable"] = json!(true);
        c.call("subscribe", sub).await
    };
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    assert_eq!(
        r["subscribe"]["publications"]
            .as_array()
            .map_or(0, |a| a.len()),
        0,
        "{r}"
    );
    heal.await.unwrap();
    publish_via(t.node(leader), "chat:lag", json!(3))
        .await
        .unwrap();
    let p = c.publication("chat:lag").await;
    assert_eq!(
        (p["offset"].clone(), p["data"].clone()),
        (json!(3), json!(3))
    );
}

/// The leader is cut off from the other two while all three live: it refuses writes with a
/// temporary error instead of acknowledging them; the majority elects a new leader and keeps
/// committing; when the link heals, the old leader converges on the majority's history and
/// the write it could not commit is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_refuses_writes_and_converges() {
    let proxies = Proxy::one_per_node();
    let t = Trio::start_via("", Some(&proxies));
    let leader = t.wait_leader().await;
    for n in 0..3u64 {
        publish_via(t.node(leader), "chat:part", json!(n))
            .await
            .unwrap();
    }
    let ip = |i: usize| -> std::net::IpAddr { format!("127.0.0.{}", i + 1).parse().unwrap() };

    // --- cut the leader off: nobody reaches it, and its connections to the others are refused.
    proxies[leader].block(true, &[]);
    for (i, p) in proxies.iter().enumerate() {
        if i != leader {
            p.block(false, &[ip(leader)]);
        }
    }
    let err = publish_via(t.node(leader), "chat:part", json!("minority"))
        .await
        .unwrap_err();
    assert_eq!(err["error"]["code"], 100, "{err}");
    assert_eq!(err["error"]["temporary"], true);

    // The majority elects a new leader and commits.
    let majority: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut committed = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while committed.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "majority did not commit"
        );
        committed = publish_via(t.node(majority[0]), "chat:part", json!("majority"))
            .await
            .ok();
    }
    assert_eq!(committed, Some(4), "the minority's write took no offset");

    // --- heal: the old leader rejoins and converges; its uncommitted write is gone.
    for p in &proxies {
        p.block(false, &[]);
    }
    let (h, epoch) = t.history(majority[0], "chat:part").await;
    eventually("old leader converged", || async {
        t.history(leader, "chat:part").await == (h.clone(), epoch.clone())
    })
    .await;
    assert!(!h.iter().any(|(_, d)| *d == json!("minority")), "{h:?}");
    assert!(h.contains(&(4, json!("majority"))));
}

/// SIGTERM on the leader: it hands leadership to another voter *before* closing its clients,
/// so when a client sees 3001 and reconnects elsewhere, writes already have a leader, after
/// one campaign; its clients' leaves are committed and the process exits 0.
#[tokio::test]
async fn sigterm_leader_hands_over_before_closing_clients() {
    let mut t = Trio::start();
    let leader = t.wait_leader().await;
    let others = [(leader + 1) % 3, (leader + 2) % 3];
    let mut watcher = Client::open(&t.node(others[0]).ws_url()).await;
    watcher.connect(&token("watcher")).await;
    watcher
        .call(
            "subscribe",
            json!({"channel": "chat:handover", "join_leave": true}),
        )
        .await;
    let mut leaving = Client::open(&t.node(leader).ws_url()).await;
    leaving.connect(&token("leaving")).await;
    leaving
        .call("subscribe", json!({"channel": "chat:handover"}))
        .await;
    loop {
        let p = watcher.push().await;
        if p["join"]["info"]["user"] == "leaving" {
            break;
        }
    }

    let term = t.status(leader).await["term"].as_u64().unwrap();
    t.node(leader).signal("TERM");
    assert_eq!(
        leaving.closed().await,
        Closed::Code(3001, "shutdown".into())
    );
    // By now the survivors agree on a new leader: the new leader knows at once, the other
    // voter at its first append from it (milliseconds). Without the hand-off the old leader
    // would still lead here, and an election would take its lease plus a timeout afterwards.
    let closed_at = std::time::Instant::now();
    'agree: loop {
        let mut seen = std::collections::BTreeSet::new();
        for i in others {
            seen.insert(t.status(i).await["leader"].as_u64().unwrap_or(0) as usize);
        }
        if seen.len() == 1 && !seen.contains(&0) && !seen.contains(&(leader + 1)) {
            break 'agree;
        }
        assert!(
            closed_at.elapsed() < Duration::from_millis(200),
            "the survivors follow a new leader when clients are closed: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One campaign (two at most) took over: the successor was not asked again while its
    // campaign was under way (each ask restarts it with a higher term).
    let new_term = t.status(others[0]).await["term"].as_u64().unwrap();
    assert!(
        new_term <= term + 2,
        "the hand-over took terms {term} → {new_term}"
    );
    let started = std::time::Instant::now();
    publish_via(t.node(others[1]), "chat:handover", json!({"after": true}))
        .await
        .expect("a write right after the hand-over succeeds");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no leaderless gap: the write took {:?}",
        started.elapsed()
    );
    loop {
        let p = watcher.push().await;
        if p["leave"]["info"]["user"] == "leaving" {
            break;
        }
    }
    let mut p = t.nodes[leader].take().unwrap();
    assert_eq!(p.wait_exit(Duration::from_secs(15)), Some(0));
    // The log is read from its stderr by a thread, possibly still draining: poll.
    eventually("the old leader logged the hand-over", || async {
        p.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("leadership handed over"))
    })
    .await;
}

/// A follower cut off from the leader past the presence lease is declared down, which clears
/// its clients' presence although they stay connected; once the link heals, the follower's
/// reconciliation puts them back, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lost_to_a_partition_is_restored_when_it_heals() {
    let proxies = Proxy::one_per_node();
    let t = Trio::start_via("presence_lease = \"1s\"", Some(&proxies));
    let leader = t.wait_leader().await;
    let cut = (leader + 1) % 3;
    let mut c = Client::open(&t.node(cut).ws_url()).await;
    let client = c.connect(&token("cutoff")).await["connect"]["client"]
        .as_str()
        .unwrap()
        .to_string();
    c.subscribe("chat:heal").await;
    let has = |i: usize| {
        let (addr, client) = (t.node(i).client_addr, client.clone());
        async move {
            let body = json!({"channel": "chat:heal"}).to_string();
            try_api_call(addr, "presence", &body, Duration::from_secs(2))
                .await
                .is_some_and(|(_, v)| v["result"]["presence"].get(&client).is_some())
        }
    };
    eventually("the client is in presence", || has(leader)).await;

    // The leader cannot reach the cut node (nor the cut node the others): declared down.
    let ip = |i: usize| -> std::net::IpAddr { format!("127.0.0.{}", i + 1).parse().unwrap() };
    proxies[cut].block(true, &[]);
    for (i, p) in proxies.iter().enumerate() {
        if i != cut {
            p.block(false, &[ip(cut)]);
        }
    }
    eventually("the cut node's client leaves presence", || async {
        !has(leader).await
    })
    .await;

    for p in &proxies {
        p.block(false, &[]);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for i in 0..3 {
        while !has(i).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} never got the connected client back into presence",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `info` and `channels` through any node answer for the whole cluster, with Centrifugo's
/// semantics: one `info` entry per node with that node's own connections, and the union of
/// every node's channels with `num_clients` summed over the nodes (`pattern` applied on each).
/// `/cluster/status` shows every member reachable with its figures and the cluster's totals.
/// With a node killed, nothing is silently dropped: `info` lists it as unreachable,
/// `channels` names it under `unanswered`, `/cluster/status` marks it unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_channels_answer_for_the_whole_cluster() {
    let mut t = Trio::start();
    t.wait_leader().await;
    // Node 1: one client on chat:all. Node 2: two clients on chat:two, one of them also on
    // chat:all. Node 3: three clients, one on chat:all.
    let layout: [&[&[&str]]; 3] = [
        &[&["chat:all"]],
        &[&["chat:all", "chat:two"], &["chat:two"]],
        &[&["chat:all"], &[], &[]],
    ];
    let mut clients = vec![];
    for (i, node) in layout.iter().enumerate() {
        for (k, chans) in node.iter().enumerate() {
            let mut c = Client::open(&t.node(i).ws_url()).await;
            c.connect(&token(&format!("u{i}-{k}"))).await;
            for ch in *chans {
                c.subscribe(ch).await;
            }
            clients.push(c);
        }
    }
    let addrs: Vec<_> = (0..3).map(|i| t.node(i).client_addr).collect();
    let api = |i: usize, method: &'static str, body: serde_json::Value| {
        let addr = addrs[i];
        async move {
            let (st, b) = api_call(addr, method, Some(API_KEY), &body.to_string()).await;
            assert_eq!(st, 200, "{b}");
            b["result"].clone()
        }
    };

    let info = api(0, "info", json!({})).await;
    let nodes = info["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 3, "{info}");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["uid"], (i + 1).to_string(), "{info}");
        assert_eq!(n["name"], format!("node-{}", i + 1), "{info}");
        assert_eq!(n["num_clients"], layout[i].len(), "{info}");
        assert_eq!(n["num_users"], layout[i].len(), "{info}");
        assert!(
            n["version"].as_str().unwrap().contains("(commit "),
            "{info}"
        );
        assert!(n.get("unreachable").is_none(), "{info}");
    }
    assert_eq!(nodes[1]["num_subs"], 3, "{info}");
    assert_eq!(nodes[1]["num_channels"], 2, "{info}");

    let channels = api(1, "channels", json!({})).await;
    assert_eq!(
        channels,
        json!({"channels": {
            "chat:all": {"num_clients": 3},
            "chat:two": {"num_clients": 2},
        }}),
        "union over the nodes, counts summed"
    );
    let two = api(2, "channels", json!({"pattern": "chat:t*"})).await;
    assert_eq!(two, json!({"channels": {"chat:two": {"num_clients": 2}}}));

    // The status page's JSON (the others' figures are renewed in the background while it is
    // polled): every member reachable, the cluster's totals.
    eventually("node 3's status counts every node's clients", || async {
        t.status(2).await["totals"]["num_clients"] == 6
    })
    .await;
    let st = t.status(2).await;
    assert_eq!(st["quorum"], true, "{st}");
    assert_eq!(st["totals"]["reachable"], 3, "{st}");
    for n in st["nodes"].as_array().unwrap() {
        assert_eq!(n["reachable"], true, "{st}");
    }
    assert_eq!(st["figures"]["2"]["num_clients"], 2, "{st}");

    t.kill(2);
    let info = api(0, "info", json!({})).await;
    let nodes = info["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 3, "a dead node is listed: {info}");
    assert_eq!(nodes[2]["uid"], "3", "{info}");
    assert_eq!(nodes[2]["unreachable"], true, "{info}");
    assert!(nodes[2]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(nodes[1]["num_clients"], 2, "{info}");

    let channels = api(0, "channels", json!({})).await;
    assert_eq!(
        channels["channels"]["chat:all"]["num_clients"], 2,
        "{channels}"
    );
    assert_eq!(
        channels["channels"]["chat:two"]["num_clients"], 2,
        "{channels}"
    );
    assert_eq!(channels["unanswered"][0]["uid"], "3", "{channels}");
    assert_eq!(channels["unanswered"][0]["unreachable"], true, "{channels}");

    eventually("node 1 sees node 3 unreachable", || async {
        let st = t.status(0).await;
        let n3 = st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == 3)
            .cloned();
        n3.is_some_and(|n| n["reachable"] == false) && st["totals"]["reachable"] == 2
    })
    .await;
    drop(clients);
}

/// The status page of the node left alone when two of three die, in chromium: before, every
/// member is reachable and there is no banner; after, both dead nodes are shown unreachable
/// (and as plain voters, not followers), the no-quorum banner is up, and the cluster totals
/// count only the survivor. The screenshot is kept as
/// target/test-artifacts/status-page-outage.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_an_outage() {
    let mut t = Trio::start();
    t.wait_leader().await;
    let mut client = Client::open(&t.node(2).ws_url()).await;
    client.connect(&token("watcher")).await;
    let url = format!("http://{}/", t.node(2).admin_addr);
    let healthy = artifact("status-page-cluster.png");
    let expect = json!({"self": 3, "reachable": [1, 2], "unreachable": [], "quorum": true,
        "reachableText": "3 of 3", "connections": "1"});
    status_page_check(
        "cluster.mjs",
        &[
            url.clone(),
            healthy.display().to_string(),
            expect.to_string(),
        ],
    );
    assert_png(&healthy);

    t.kill(0);
    t.kill(1);
    let shot = artifact("status-page-outage.png");
    let expect = json!({"self": 3, "reachable": [], "unreachable": [1, 2], "quorum": false,
        "reachableText": "1 of 3", "connections": "1"});
    status_page_check(
        "cluster.mjs",
        &[url, shot.display().to_string(), expect.to_string()],
    );
    assert_png(&shot);
    let st = t.status(2).await;
    assert_eq!(st["quorum"], false, "{st}");
    drop(client);
}

/// centrifuge-js on HTTP streaming and SSE (then its Protobuf build on HTTP streaming) with
/// its streams on one node and its `/emulation` requests sent to another: each request is forwarded over the cluster listener to the node
/// holding the session (counted there as forwarded), and the whole scenario passes, recovery
/// included. An emulation request for a session nobody holds is answered 404 on any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulation_requests_landing_on_another_node_are_forwarded() {
    let t = Trio::start_env("", None, &EMULATION_ENV);
    let leader = t.wait_leader().await;
    let (stream, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let forwarded = "switchyard_emulation_forwarded_total";
    assert_eq!(metric(t.node(other).admin_addr, forwarded).await, 0.0);
    let addrs = (
        t.node(stream).client_addr,
        t.node(other).client_addr,
        t.node(leader).client_addr,
    );
    let cfg = t.configs[0].path().to_path_buf();
    let logs = || {
        t.nodes
            .iter()
            .flatten()
            .map(|p| p.log.lock().unwrap().join("\n"))
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    tokio::task::block_in_place(|| {
        run_emulation_script(addrs, false, &cfg, "chat:emu-cluster-", &logs)
    });
    let n = metric(t.node(other).admin_addr, forwarded).await;
    assert!(
        n >= 10.0,
        "the other node forwarded the emulation requests: {n}"
    );
    // The Protobuf form (centrifuge-js's Protobuf build on `http_stream`) is forwarded as well.
    tokio::task::block_in_place(|| {
        run_emulation_script(addrs, true, &cfg, "chat:emu-cluster-pb-", &logs)
    });
    let m = metric(t.node(other).admin_addr, forwarded).await;
    assert!(
        m >= n + 5.0,
        "the other node forwarded the Protobuf emulation requests: {n} then {m}"
    );
    // Sessions that do not exist: on a member, on a node id that is no member, malformed.
    for session in ["1-no-such-session", "9-no-such-node", "garbage"] {
        let body = json!({"session": session, "node": "x", "data": "{}"}).to_string();
        for i in 0..3 {
            let (st, b) =
                http_post(t.node(i).client_addr, "/emulation", None, body.as_bytes()).await;
            assert_eq!(
                st,
                404,
                "{session} on node {i}: {}",
                String::from_utf8_lossy(&b)
            );
        }
    }
}

/// A cgroup (v1 blkio) that throttles the writes of the processes put in it: a real slow
/// disk for one node. Dropping it moves them back and removes it.
struct SlowDisk {
    dir: std::path::PathBuf,
    pids: Vec<u32>,
}

impl SlowDisk {
    /// Throttles writes to the disk under `path` to `iops` per second; `None` where the
    /// kernel or the user cannot (no blkio hierarchy, not root).
    fn new(path: &std::path::Path, iops: u32) -> Option<SlowDisk> {
        use std::os::unix::fs::MetadataExt;
        let root = std::path::Path::new("/sys/fs/cgroup/blkio");
        if !root.join("cgroup.procs").exists() {
            return None;
        }
        let dev = std::fs::metadata(path).ok()?.dev();
        let (major, minor) = (libc_major(dev), libc_minor(dev));
        // Throttling applies to the whole disk, not to a partition of it.
        let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let disk = if sys.join("partition").exists() {
            std::fs::read_to_string(sys.join("../dev")).ok()?
        } else {
            format!("{major}:{minor}")
        };
        // One cgroup per throttle: tests running at once must not share (or remove) one.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("switchyard-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let rule = format!("{} {iops}", disk.trim());
        if std::fs::write(dir.join("blkio.throttle.write_iops_device"), rule).is_err() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(SlowDisk { dir, pids: vec![] })
    }

    fn add(&mut self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("into the cgroup");
        self.pids.push(pid);
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = std::fs::write("/sys/fs/cgroup/blkio/cgroup.procs", pid.to_string());
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

/// A follower whose disk is slow (flushes of several seconds, longer than the leader lease)
/// answers the leader's appends late; that is its own disk, not a dead leader: it must not
/// campaign and depose a healthy leader (before the fix it did, and every slow fsync could cost a leader
/// change and a burst of refused writes). Writes keep committing through the leader and the
/// other follower, the term and the leader never change, and the slow node catches up once
/// its disk is fast again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_slow_disk_does_not_depose_the_leader() {
    // 1 write IOPS: a flush (sled's writes and an fsync) takes seconds, longer than the
    // lease here, and flushes queue behind each other under the steady writes below. The
    // leader pipelines appends to it (the default) that time out and are sent again.
    let t = Trio::start_lease_1s(&[]);
    let leader = t.wait_leader().await;
    let slow = (leader + 1) % 3;
    let Some(mut disk) = SlowDisk::new(t.data[slow].path(), 1) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root with the blkio cgroup: the slow-disk test must run there"
        );
        eprintln!("SKIPPED: no blkio cgroup to slow a disk down (needs root and cgroup v1 blkio)");
        return;
    };
    let term = t.status(leader).await["term"].as_u64().unwrap();
    publish_via(t.node(leader), "chat:slowdisk", json!(0))
        .await
        .unwrap();
    let before = t.node(slow).log.lock().unwrap().len();
    disk.add(t.node(slow).child.id());

    // What the slow node logged since its disk was slowed (the first election is before).
    let slow_log = || t.node(slow).log.lock().unwrap()[before..].join("\n");
    // Writes for at least 8 s, and on until the slow node finished a (slow) flush: its first
    // takes 5-6 s here (several writes and an fsync at 1 write/s), more on a loaded machine.
    let started = std::time::Instant::now();
    let mut n = 1u64;
    while (started.elapsed() < Duration::from_secs(8) || !slow_log().contains("slow disk"))
        && started.elapsed() < Duration::from_secs(40)
        && n < 2000
    {
        let r = publish_via(t.node(leader), "chat:slowdisk", json!(n)).await;
        assert!(r.is_ok(), "publish {n} refused: {r:?}");
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slow_log().contains("slow disk"),
        "the throttled node's fsyncs were not slow: the test proves nothing"
    );
    for i in 0..3 {
        let st = t.status(i).await;
        assert_eq!(st["term"].as_u64(), Some(term), "node {}: {st}", i + 1);
        assert_eq!(st["leader"].as_u64(), Some(leader as u64 + 1), "{st}");
    }
    assert!(
        !slow_log().contains("campaigning"),
        "the slow follower campaigned: {}",
        slow_log()
            .lines()
            .filter(|l| l.contains("campaign") || l.contains("slow disk") || l.contains("vote"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    drop(disk);
    let (h, epoch) = t.history(leader, "chat:slowdisk").await;
    assert_eq!(
        h.last().map(|p| p.0),
        Some(n),
        "the last acknowledged publish is the last in history"
    );
    eventually("the slow node caught up", || async {
        t.history(slow, "chat:slowdisk").await == (h.clone(), epoch.clone())
    })
    .await;
}

/// Every node's log lines about elections and votes, for a failure message.
fn election_lines(t: &Trio) -> String {
    let words = ["vote", "Vote", "campaign", "elect", "lease", "term"];
    (0..3)
        .flat_map(|i| {
            t.node(i)
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| words.iter().any(|w| l.contains(w)))
                .map(|l| format!("node {}: {}", i + 1, &l[..l.len().min(300)]))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A follower paused (SIGSTOP) for longer than the leader lease and resumed: the silence was
/// its own, not the leader's, so it does not campaign on waking and the leader and term stay.
/// Repeated, since which of its timers and sockets it serves first on waking varies. Its
/// append stream is cut by the RPC timeout meanwhile; on waking it catches up on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_resumed_from_a_pause_does_not_depose_the_leader() {
    // openraft's election lines too (who asked for votes, who refused and why), for a failure.
    let t = Trio::start_lease_1s(&[(
        "SWITCHYARD_LOG__LEVEL",
        "info,openraft::core=info,openraft::engine=info",
    )]);
    let leader = t.wait_leader().await;
    let paused = (leader + 1) % 3;
    let term = t.status(leader).await["term"].as_u64().unwrap();
    let before = t.node(paused).log.lock().unwrap().len();
    for round in 0..3u64 {
        t.node(paused).signal("STOP");
        // Writes go on meanwhile: the leader and the other follower are a majority.
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < until {
            publish_via(t.node(leader), "chat:paused", json!(round))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.node(paused).signal("CONT");
        let (h, epoch) = t.history(leader, "chat:paused").await;
        eventually("the resumed follower caught up", || async {
            t.history(paused, "chat:paused").await == (h.clone(), epoch.clone())
        })
        .await;
    }
    for i in 0..3 {
        let st = t.status(i).await;
        assert_eq!(
            st["term"].as_u64(),
            Some(term),
            "node {}: {st}\npaused: node {}, leader: node {}\n{}",
            i + 1,
            paused + 1,
            leader + 1,
            election_lines(&t)
        );
    }
    let log = t.node(paused).log.lock().unwrap()[before..].join("\n");
    assert!(
        !log.contains("campaigning"),
        "the resumed follower campaigned"
    );
    // While it was paused the leader kept sending it appends without waiting for answers
    // (up to `cluster.append_pipeline`, until the RPC timeout closed the stream).
    let pipelined = appends_sent(&t, leader, "pipelined").await;
    assert!(pipelined >= 1.0, "no append was pipelined");
}

/// The leader's own disk stalls for a moment (one flush of ~1 s, the lease). With
/// openraft 0.9 its core waited for the leader's flush and sent no heartbeats meanwhile, so
/// the followers took that for a dead leader and elected another (every publish in flight
/// then failed with error 100), as the soak saw after one 857 ms flush. Now the leader
/// replicates and heartbeats while its own flush runs, and the followers' two flushes are a
/// majority. Three such stalls, one publish each: all acknowledged, and the term and leader
/// stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_stalls_for_a_moment_keeps_leading() {
    let t = Trio::start_lease_1s(&[]);
    let leader = t.wait_leader().await;
    let term = t.status(leader).await["term"].as_u64().unwrap();
    publish_via(t.node(leader), "chat:slowleader", json!(0))
        .await
        .unwrap();
    let before: Vec<usize> = (0..3)
        .map(|i| t.node(i).log.lock().unwrap().len())
        .collect();
    for n in 1..=3u64 {
        // 1 write IOPS: a flush (one write and an fsync) waits up to ~1 s, the lease here.
        // How long a given flush waits depends on the throttle's accounting, so each round
        // publishes steadily for 1.5 s: some of the leader's flushes are slow (checked
        // below).
        let Some(mut disk) = SlowDisk::new(t.data[leader].path(), 1) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root with the blkio cgroup: the slow-disk test must run there"
            );
            eprintln!(
                "SKIPPED: no blkio cgroup to slow a disk down (needs root and cgroup v1 blkio)"
            );
            return;
        };
        disk.add(t.node(leader).child.id());
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        let mut r = Ok(());
        for k in 0..75u64 {
            if r.is_err() || std::time::Instant::now() >= until {
                break;
            }
            r = publish_via(t.node(leader), "chat:slowleader", json!(n * 100 + k))
                .await
                .map(|_| ());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(disk);
        assert!(r.is_ok(), "publish {n} refused: {r:?}\n{}", {
            (0..3)
                .flat_map(|i| {
                    t.node(i).log.lock().unwrap()[before[i]..]
                        .iter()
                        .filter(|l| {
                            ["stalled", "slow disk", "campaign", "Vote"]
                                .iter()
                                .any(|w| l.contains(w))
                        })
                        .map(|l| format!("node {}: {}", i + 1, &l[..l.len().min(220)]))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        publish_via(t.node(leader), "chat:slowleader", json!(n * 10))
            .await
            .unwrap();
    }
    let logs: Vec<String> = (0..3)
        .map(|i| t.node(i).log.lock().unwrap()[before[i]..].join("\n"))
        .collect();
    assert!(
        logs[leader].contains("slow disk"),
        "the leader's fsyncs were not slow: the test proves nothing"
    );
    for (i, log) in logs.iter().enumerate() {
        assert!(!log.contains("campaigning"), "node {} campaigned", i + 1);
        let st = t.status(i).await;
        assert_eq!(st["term"].as_u64(), Some(term), "node {}: {st}", i + 1);
    }
}
