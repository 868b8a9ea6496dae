//! `switchyard bench` against a node started by the test: each scenario runs for a second or
//! two with a handful of connections, and the report must be consistent — deliveries add up,
//! an injected drop is caught as loss, recovery checks hold, the JSON and HTML are written,
//! and latency is measured open loop (a stalled server shows as latency, a publisher that
//! cannot keep up fails the run).
#![cfg(feature = "bench")]

mod common;

use std::time::Duration;

use common::{API_KEY, Proc, SECRET, TestServer};
use serde_json::Value;
use switchyard::auth::{MintRequest, mint};
use switchyard_bench::{self as bench, Hooks, Report};

/// What `src/main.rs` passes the bench: tokens minted by the server crate.
const HOOKS: Hooks = Hooks {
    mint: |secret, user, ttl| {
        let user = user.into();
        mint(
            secret,
            MintRequest {
                user,
                ttl: Some(ttl),
                ..Default::default()
            },
        )
    },
};

async fn run(server: &TestServer, words: &[&str]) -> Report {
    run_at(server.addr, words).await
}

/// Runs a scenario against the node whose client listener is `addr`.
async fn run_at(addr: std::net::SocketAddr, words: &[&str]) -> Report {
    let url = format!("ws://{addr}/connection/websocket");
    let api = format!("http://{addr}");
    let mut all: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    all.extend(
        [
            "--url",
            &url,
            "--api",
            &api,
            "--api-key",
            API_KEY,
            "--token-secret",
            SECRET,
            "--quiet",
        ]
        .map(String::from),
    );
    let scenario = bench::parse(&all).expect("arguments parse");
    tokio::time::timeout(Duration::from_secs(25), bench::run(scenario, HOOKS))
        .await
        .expect("scenario finished in time")
        .expect("scenario ran")
}

fn fig(r: &Report, key: &str) -> f64 {
    r.get(key)
        .unwrap_or_else(|| panic!("figure {key} missing: {}", r.table()))
}

/// Client publishes over two channels: every expected delivery arrives once, in order, and
/// the JSON (every figure) and HTML (plots) files are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_deliveries_add_up_and_reports_are_written() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (dir.path().join("r.json"), dir.path().join("r.html"));
    let pid = std::process::id().to_string();
    let r = run(
        &server,
        &[
            "fanout",
            "--subscribers",
            "10",
            "--channels",
            "2",
            "--publishers",
            "2",
            "--rate",
            "40",
            "--duration",
            "1500ms",
            "--via",
            "client",
            "--pid",
            &pid,
            "--channel",
            "chat:fan",
        ],
    )
    .await;
    assert!(r.passed(), "{}", r.table());
    let (exp, got, lost) = (
        fig(&r, "deliveries_expected"),
        fig(&r, "deliveries_received"),
        fig(&r, "lost"),
    );
    // 2 publishers × 30 publications, each to one channel of 5 subscribers.
    assert_eq!(exp, 300.0, "{}", r.table());
    assert_eq!(exp, got + lost);
    assert_eq!(fig(&r, "duplicates"), 0.0);
    assert!(fig(&r, "latency_p99_ms") > 0.0);
    assert!(fig(&r, "server_cpu_secs") >= 0.0);
    bench::write_outputs(&r, &{
        let mut t = match bench::parse(["fanout", "--token", "x"]).unwrap() {
            bench::Scenario::Fanout(a) => a.target,
            _ => unreachable!(),
        };
        t.json = Some(json.clone());
        t.html = Some(html.clone());
        t
    })
    .unwrap();
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for f in &r.figures {
        assert!(v["figures"][&f.key].is_number(), "{} in the JSON", f.key);
    }
    assert_eq!(v["passed"], true);
    assert!(v["timeline"].as_array().is_some_and(|t| !t.is_empty()));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("Latency by percentile"));
}

/// `--compression` against a node that agrees permessage-deflate: subscribers inflate every
/// publication (all delivered, in order), and with `--payload-kind analytics` the node writes
/// at most 40 % of the bytes per delivery it writes to subscribers that do not compress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_with_compression_reports_bytes_per_delivery() {
    let toml =
        common::base_toml().replace("[client]\n", "[client]\nwebsocket_compression = true\n");
    let server = TestServer::start_toml(&toml).await;
    let admin = format!("http://{}", server.server.as_ref().unwrap().admin_addr);
    let mut bytes = Vec::new();
    for compression in [false, true] {
        let mut words = vec![
            "fanout",
            "--subscribers",
            "5",
            "--publishers",
            "1",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--payload",
            "2048",
            "--payload-kind",
            "analytics",
            "--admin",
            &admin,
            "--channel",
            "chat:zip",
        ];
        if compression {
            words.push("--compression");
        }
        let r = run(&server, &words).await;
        assert!(r.passed(), "{}", r.table());
        assert_eq!(fig(&r, "deliveries_expected"), 100.0, "{}", r.table());
        assert_eq!(fig(&r, "deliveries_received"), 100.0, "{}", r.table());
        bytes.push(fig(&r, "wire_bytes_per_delivery"));
    }
    assert!(bytes[0] > 2048.0, "plain: {bytes:?}");
    assert!(bytes[1] < bytes[0] * 0.4, "compressed vs plain: {bytes:?}");
}

/// `--inject-drop` makes publisher 0 claim a publication it never sent: every subscriber of
/// its channel must report exactly that one delivery lost, and the run must fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_catches_an_injected_drop() {
    let server = TestServer::start().await;
    let r = run(
        &server,
        &[
            "fanout",
            "--subscribers",
            "4",
            "--publishers",
            "1",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--via",
            "api",
            "--inject-drop",
            "3",
            "--drain",
            "1s",
            "--channel",
            "chat:drop",
        ],
    )
    .await;
    assert_eq!(fig(&r, "lost"), 4.0, "{}", r.table());
    assert_eq!(
        fig(&r, "deliveries_expected"),
        fig(&r, "deliveries_received") + fig(&r, "lost")
    );
    assert_eq!(fig(&r, "duplicates"), 0.0);
    assert!(!r.passed());
    assert!(r.checks.iter().any(|c| c.name == "no loss" && !c.ok));
}

/// Step mode raises the rate and reports each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_step_mode_reports_each_step() {
    let server = TestServer::start().await;
    let r = run(
        &server,
        &[
            "fanout",
            "--subscribers",
            "3",
            "--publishers",
            "2",
            "--rate",
            "10",
            "--duration",
            "1s",
            "--step",
            "--max-steps",
            "2",
            "--p99-bound",
            "5s",
            "--channel",
            "chat:step",
        ],
    )
    .await;
    assert_eq!(r.steps.len(), 2, "{}", r.table());
    assert_eq!(r.steps[1]["rate"], 20.0);
    assert!(fig(&r, "step_best_rate") >= 10.0);
}

fn check<'a>(r: &'a Report, name: &str) -> &'a bench::report::Check {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("check {name:?} missing: {}", r.table()))
}

/// Open loop: a server stopped (SIGSTOP) for half a second mid-run shows as latency, because
/// every publication's latency counts from when it was due, and the publisher went on
/// sending on schedule meanwhile (pipelined, not waiting for acknowledgements), so the run
/// still achieves its offered rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_shows_a_server_stall_as_latency() {
    let config = common::config_file("");
    let node = Proc::start(config.path(), &[("SWITCHYARD_CLIENT__COMMAND_RATE", "0")]);
    const WORDS: [&str; 13] = [
        "fanout",
        "--subscribers",
        "2",
        "--publishers",
        "1",
        "--rate",
        "100",
        "--duration",
        "2500ms",
        "--via",
        "client",
        "--channel",
        "chat:stall",
    ];
    let bench = tokio::spawn(run_at(node.client_addr, &WORDS));
    // Once the run is publishing, stop the node for longer than the latency asserted below.
    common::eventually("the bench publishes", || async {
        common::metric(node.admin_addr, "switchyard_publications_committed_total").await >= 20.0
    })
    .await;
    let stall = Duration::from_millis(500);
    node.signal("STOP");
    tokio::time::sleep(stall).await;
    node.signal("CONT");
    let r = bench.await.unwrap();
    let table = r.table();
    // The publication due as the node stopped waited out the stall, less at most one 10 ms
    // gap; the ones due during it waited for what was left of it.
    let floor = 450.0;
    assert!(fig(&r, "ack_max_ms") >= floor, "{table}");
    assert!(fig(&r, "latency_max_ms") >= floor, "{table}");
    // A fifth of the publications were due during the stall: the slowest 1 % of them waited
    // most of it (closed loop, only the one in flight would have).
    assert!(fig(&r, "ack_p99_ms") >= floor / 2.0, "{table}");
    assert!(fig(&r, "latency_p99_ms") >= floor / 2.0, "{table}");
    assert!(
        check(&r, "publishers kept to the offered rate").ok,
        "{table}"
    );
    assert!(
        check(&r, "no loss").ok && check(&r, "in order").ok,
        "{table}"
    );
    assert_eq!(fig(&r, "deliveries_expected"), 500.0, "{table}");
}

/// A rate one publisher cannot offer (a debug build, 200,000/s) fails the run: the achieved
/// rate falls short of the offered one, and the report says by how much and how far behind
/// schedule the publisher got. (`--max-in-flight` keeps what is left to answer after the
/// window small, so the run ends soon after it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_fails_when_the_publisher_cannot_keep_up() {
    let server = TestServer::start().await;
    let r = run(
        &server,
        &[
            "fanout",
            "--subscribers",
            "1",
            "--publishers",
            "1",
            "--rate",
            "200000",
            "--duration",
            "1s",
            "--via",
            "api",
            "--drain",
            "1s",
            "--timeout",
            "3s",
            "--max-in-flight",
            "1000",
            "--channel",
            "chat:behind",
        ],
    )
    .await;
    let table = r.table();
    assert!(!r.passed(), "{table}");
    let c = check(&r, "publishers kept to the offered rate");
    assert!(!c.ok, "{table}");
    assert_eq!(fig(&r, "offered_rate"), 200_000.0, "{table}");
    assert!(fig(&r, "achieved_rate") < 198_000.0, "{table}");
    assert!(fig(&r, "publications_unsent") > 0.0, "{table}");
    assert!(fig(&r, "publish_lag_max_ms") > 0.0, "{table}");
}

/// A TCP relay in front of a node's client listener that keeps the first 24 bytes each
/// connection sent (the length of the HTTP/2 preface): what the server saw on the wire.
struct Relay {
    addr: std::net::SocketAddr,
    heads: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 24];
                    let Ok(_) = client.read_exact(&mut head).await else {
                        return;
                    };
                    seen.lock().unwrap().push(head.to_vec());
                    let mut server = tokio::net::TcpStream::connect(to).await.unwrap();
                    server.set_nodelay(true).unwrap();
                    client.set_nodelay(true).unwrap();
                    if server.write_all(&head).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { addr, heads }
    }

    /// The first bytes of every connection so far.
    fn heads(&self) -> Vec<Vec<u8>> {
        self.heads.lock().unwrap().clone()
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Runs the `switchyard bench` binary with `words`, subscribers on `server`, the API at
/// `api`; returns its exit code, its stdout and its `--json` report.
async fn run_binary(server: &TestServer, api: &str, words: &[&str]) -> (i32, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (url, json_path) = (server.ws_url(), json.display().to_string());
    let mut all = words.to_vec();
    all.extend([
        "--quiet",
        "--token-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--url",
        &url,
        "--api",
        api,
        "--json",
        &json_path,
    ]);
    let out = bench_binary(&all).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), stdout, v)
}

/// `--via api` publishes over HTTP/2 by default: one publisher's one connection (h2c, the
/// server sees the HTTP/2 preface) carries 400 publications/s, many in flight at once. The
/// node waits 20 ms after a write for more to join its log entry (`cluster.batch_linger`):
/// publications in flight together share an entry, so they are acknowledged at the offered
/// rate, while requests answered one at a time (HTTP/1.1: one request, one entry) could not
/// be acknowledged faster than 50/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_publishes_over_http2_on_one_connection() {
    let toml = common::base_toml().replace("[cluster]\n", "[cluster]\nbatch_linger = \"20ms\"\n");
    let server = TestServer::start_toml(&toml).await;
    let relay = Relay::start(server.addr).await;
    let api = format!("http://{}", relay.addr);
    let (code, table, v) = run_binary(
        &server,
        &api,
        &[
            "fanout",
            "--subscribers",
            "3",
            "--publishers",
            "1",
            "--rate",
            "400",
            "--duration",
            "2s",
            "--via",
            "api",
            "--channel",
            "chat:h2",
        ],
    )
    .await;
    assert_eq!(code, 0, "{table}");
    let f = &v["figures"];
    assert_eq!(f["api_http_version"], 2.0, "{table}");
    assert_eq!(f["publications_acked"], 800.0, "{table}");
    assert_eq!(f["deliveries_received"], 2400.0, "{table}");
    assert!(f["achieved_rate"].as_f64().unwrap() >= 396.0, "{table}");
    // Acknowledged at the offered rate, not one entry (20 ms) at a time.
    assert!(
        f["publications_per_sec"].as_f64().unwrap() >= 360.0,
        "{table}"
    );
    assert!(f["ack_p50_ms"].as_f64().unwrap() < 500.0, "{table}");
    assert_eq!(f["disordered"], 0.0, "{table}");
    // The one publisher connection is all the relay saw, and it spoke HTTP/2 from its
    // first bytes.
    let heads = relay.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(heads[0], H2_PREFACE);
    assert!(table.contains("server API HTTP version"), "{table}");
}

/// `--probe-http`: beside the load, one publisher that waits for each answer before the next,
/// over one kept-alive HTTP/1.1 connection, to a channel of its own; its acknowledgement
/// latency gets a line of its own (text and JSON) and the subscribers' accounting is
/// unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_probe_reports_sequential_http_latency() {
    let server = TestServer::start().await;
    let relay = Relay::start(server.addr).await;
    let api = format!("http://{}", relay.addr);
    let (code, table, v) = run_binary(
        &server,
        &api,
        &[
            "fanout",
            "--subscribers",
            "4",
            "--publishers",
            "1",
            "--rate",
            "50",
            "--duration",
            "1500ms",
            "--probe-http",
            "--channel",
            "chat:probe",
        ],
    )
    .await;
    assert_eq!(code, 0, "{table}");
    let f = &v["figures"];
    let acked = f["probe_acked"].as_f64().unwrap();
    assert!(acked >= 5.0, "{table}");
    assert_eq!(f["probe_failed"], 0.0, "{table}");
    assert_eq!(f["probe_http_version"], 1.1, "{table}");
    for k in ["probe_ack_p50_ms", "probe_ack_p99_ms", "probe_ack_max_ms"] {
        assert!(f[k].as_f64().unwrap() > 0.0, "{k}: {table}");
    }
    assert!(f["probe_ack_p50_ms"].as_f64() <= f["probe_ack_max_ms"].as_f64());
    let line = &v["latencies"][0];
    assert_eq!(line["key"], "probe", "{v}");
    assert_eq!(line["latency"]["count"].as_f64(), Some(acked), "{v}");
    assert!(table.contains("sequential HTTP/1.1 probe ack"), "{table}");
    // The load's accounting does not see the probe: 75 publications to 4 subscribers.
    assert_eq!(f["deliveries_expected"], 300.0, "{table}");
    assert_eq!(f["deliveries_received"], 300.0, "{table}");
    // Two connections reached the server: the publisher's (HTTP/2) and the probe's, one
    // HTTP/1.1 connection kept alive for all its requests.
    let mut heads = relay.heads();
    heads.sort();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert_eq!(heads[0], b"POST /api/publish HTTP/1", "{heads:?}");
    assert_eq!(heads[1], H2_PREFACE);
    // The probe's publications are in its own channel's history.
    let (st, hist) = server
        .api(
            "history",
            serde_json::json!({"channel": "chat:probe-probe", "limit": 1}),
        )
        .await;
    assert_eq!(st, 200);
    assert!(
        hist["result"]["offset"].as_f64().unwrap() >= acked,
        "{hist}"
    );
}

/// `publish`: three subscribers on every one of 20 channels, one publisher going round them;
/// the report leads with committed publications/s and acknowledgement percentiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reports_committed_rate_and_ack_latency() {
    let server = TestServer::start().await;
    let r = run(
        &server,
        &[
            "publish",
            "--channels",
            "20",
            "--publishers",
            "1",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--channel",
            "chat:pub",
        ],
    )
    .await;
    let table = r.table();
    assert!(r.passed(), "{table}");
    assert_eq!(r.scenario, "publish");
    assert_eq!(fig(&r, "subscribers"), 3.0, "{table}");
    assert_eq!(fig(&r, "publications_acked"), 100.0, "{table}");
    // Every publication reaches each of the three subscribers once, in order.
    assert_eq!(fig(&r, "deliveries_expected"), 300.0, "{table}");
    assert_eq!(fig(&r, "deliveries_received"), 300.0, "{table}");
    assert_eq!(fig(&r, "offered_rate"), 100.0, "{table}");
    assert!(fig(&r, "achieved_rate") >= 99.0, "{table}");
    assert!(fig(&r, "publications_per_sec") > 0.0, "{table}");
    assert!(fig(&r, "publish_lag_max_ms") >= 0.0, "{table}");
    for k in ["ack_p50_ms", "ack_p90_ms", "ack_p99_ms", "ack_max_ms"] {
        assert!(fig(&r, k) > 0.0, "{k}: {table}");
    }
    assert_eq!(r.latency_label, "publish→acknowledgement");
    assert_eq!(r.latency.unwrap().count, 100);
    assert!(table.contains("publish rate offered") && table.contains("publish rate achieved"));
    assert!(
        check(&r, "publishers kept to the offered rate").ok,
        "{table}"
    );
    let v = r.to_json();
    for k in [
        "offered_rate",
        "achieved_rate",
        "publish_lag_max_ms",
        "ack_max_ms",
    ] {
        assert!(v["figures"][k].is_number(), "{k} in the JSON");
    }
    let page = r.html();
    assert!(page.contains("publish rate achieved") && page.contains("publish→acknowledgement"));
}

/// Ramp, hold and ramp down, from two source addresses: every connection subscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_ramps_holds_and_measures_the_server() {
    let server = TestServer::start().await;
    let pid = std::process::id().to_string();
    let r = run(
        &server,
        &[
            "connect",
            "--stages",
            "500ms:60,1500ms:60,200ms:0",
            "--source-addrs",
            "2",
            "--pid",
            &pid,
            "--channel",
            "chat:conn",
        ],
    )
    .await;
    assert!(r.passed(), "{}", r.table());
    assert_eq!(fig(&r, "connected"), 60.0);
    assert_eq!(fig(&r, "success_rate"), 100.0);
    assert!(fig(&r, "connect_p99_ms") > 0.0);
    assert!(fig(&r, "server_rss_peak_bytes") > 0.0);
}

/// The binary spreads a connect run over two worker processes and merges their reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_over_worker_processes() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("c.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "bench",
            "connect",
            "--connections",
            "40",
            "--rate",
            "200",
            "--hold",
            "1s",
        ])
        .args([
            "--workers",
            "2",
            "--channel",
            "chat:workers",
            "--quiet",
            "--token-secret",
            SECRET,
        ])
        .arg("--url")
        .arg(server.ws_url())
        .arg("--json")
        .arg(&json)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(25), out)
        .await
        .expect("bench finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["figures"]["connected"], 40.0, "{stdout}");
    assert_eq!(v["figures"]["workers"], 2.0);
}

/// Clients cycle while the API publishes; every reconnect recovers exactly what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_recovers_exactly_what_was_missed() {
    let server = TestServer::start().await;
    let r = run(
        &server,
        &[
            "churn",
            "--clients",
            "8",
            "--cycle-rate",
            "16",
            "--offline",
            "150ms",
            "--duration",
            "2s",
            "--rate",
            "30",
            "--channel",
            "chat:churn",
        ],
    )
    .await;
    assert!(r.passed(), "{}", r.table());
    assert!(fig(&r, "recovered") >= 8.0, "{}", r.table());
    assert_eq!(
        fig(&r, "deliveries_expected"),
        fig(&r, "deliveries_received") + fig(&r, "lost")
    );
    assert_eq!(fig(&r, "stream_top"), 60.0);
}

/// A (very) short soak samples the server and reports slopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_samples_the_server_over_time() {
    let server = TestServer::start().await;
    let pid = std::process::id().to_string();
    let r = run(
        &server,
        &[
            "soak",
            "--subscribers",
            "3",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--sample-every",
            "200ms",
            "--pid",
            &pid,
            "--channel",
            "chat:soak",
        ],
    )
    .await;
    assert!(fig(&r, "soak_samples") >= 5.0, "{}", r.table());
    assert!(r.get("rss_slope_bytes_per_hour").is_some());
    assert!(r.server.iter().all(|s| s.rss_bytes > 0));
    assert_eq!(fig(&r, "lost"), 0.0);
}

/// Runs the `switchyard bench` binary with `words`, stdout and stderr piped (not a
/// terminal); its output, within a deadline.
async fn bench_binary(words: &[&str]) -> std::process::Output {
    bench_binary_env(words, &[]).await
}

/// [`bench_binary`] with extra environment variables.
async fn bench_binary_env(words: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    bench_binary_within(words, envs, Duration::from_secs(25)).await
}

/// [`bench_binary_env`] run from the repository's root (where plans name their commands
/// from), within `within`.
async fn bench_binary_within(
    words: &[&str],
    envs: &[(&str, &str)],
    within: Duration,
) -> std::process::Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("bench")
        .args(words)
        .envs(envs.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(within, out)
        .await
        .expect("bench finished in time")
        .unwrap()
}

/// The API key (given in `SY_BENCH_API_KEY`, kept out of `ps`) and the token secret (given on
/// the command line) are used (the run connects, subscribes with minted tokens and publishes
/// through the API) but no output shows them: the JSON, the HTML page and the table carry the
/// redaction marker instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_redact_the_secrets_the_run_used() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (dir.path().join("r.json"), dir.path().join("r.html"));
    let api = format!("http://{}", server.addr);
    let out = bench_binary_env(
        &[
            "fanout",
            "--subscribers",
            "2",
            "--publishers",
            "1",
            "--rate",
            "20",
            "--duration",
            "500ms",
            "--via",
            "api",
            "--channel",
            "chat:redact",
            "--quiet",
            "--url",
            &server.ws_url(),
            "--api",
            &api,
            "--token-secret",
            SECRET,
            "--json",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        &[("SY_BENCH_API_KEY", API_KEY)],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["figures"]["publications_acked"], 10.0, "{stdout}");
    assert_eq!(v["figures"]["deliveries_received"], 20.0, "{stdout}");
    let page = std::fs::read_to_string(&html).unwrap();
    for (name, output) in [
        ("JSON", &text),
        ("HTML", &page),
        ("table", &stdout),
        ("stderr", &stderr),
    ] {
        for secret in [API_KEY, SECRET] {
            assert!(!output.contains(secret), "{secret} in the {name}: {output}");
        }
    }
    let marker = bench::redact::MARK;
    assert!(text.contains(marker) && page.contains(marker));
    assert_eq!(v["args"]["target"]["api_key"], marker);
    assert_eq!(v["args"]["target"]["token_secret"], marker);
    // What is not secret is shown as given.
    assert_eq!(v["args"]["target"]["apis"][0], api.as_str());
    assert_eq!(v["args"]["target"]["channel"], "chat:redact");
}

/// With stderr not a terminal the live line (indicatif) draws nothing, so the bench prints a
/// plain progress line every `--progress-every` with the live figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_plain_lines_when_stderr_is_not_a_terminal() {
    let server = TestServer::start().await;
    let out = bench_binary(&[
        "fanout",
        "--subscribers",
        "2",
        "--publishers",
        "1",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--via",
        "client",
        "--channel",
        "chat:progress",
        "--progress-every",
        "200ms",
        "--url",
        &server.ws_url(),
        "--token-secret",
        SECRET,
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("switchyard bench [00:00:"))
        .collect();
    assert!(!lines.is_empty(), "no progress line: {stderr}");
    for l in &lines {
        for figure in ["subscribers", "sent", "acked", "delivered", "/s"] {
            assert!(l.contains(figure), "{figure} missing from {l:?}");
        }
    }
    // Plain lines only: no terminal control sequences.
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

/// A URL that does not resolve to loopback only is refused at the argument check unless
/// `--allow-remote`, whichever flag gives it, and before anything is sent: the loopback node
/// given beside it sees no connection. (With `--allow-remote` the check accepts it: a unit
/// test of `loopback` shows that without sending anything off this machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_targets_are_refused_without_allow_remote() {
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    local.set_nonblocking(true).unwrap();
    let here = local.local_addr().unwrap();
    let ws = format!("ws://{here}/connection/websocket");
    let remote_ws = "ws://192.0.2.1:1/connection/websocket";
    let remote_http = "http://192.0.2.1:1";
    let with_url = format!("{ws},{remote_ws}");
    for (flag, value, remote) in [
        ("--url", with_url.as_str(), remote_ws),
        ("--api", remote_http, remote_http),
        ("--admin", remote_http, remote_http),
    ] {
        let mut words = vec!["connect", "--connections", "1", "--hold", "0s"];
        words.extend(["--token-secret", SECRET, "--timeout", "60s", flag, value]);
        if flag != "--url" {
            words.extend(["--url", &ws]);
        }
        let out = bench_binary(&words).await;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(remote) && stderr.contains("--allow-remote"),
            "{flag}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{flag}: a report was printed");
        let accepted = local.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{flag}: the loopback node saw a connection: {accepted:?}"
        );
    }
}

/// The bench reads these server metrics from `/metrics` under its own names (it does not
/// depend on the server crate): they must stay the server's names.
#[test]
fn bench_reads_the_server_metric_names() {
    use switchyard::metrics;
    use switchyard_bench::stats;
    assert_eq!(stats::PROCESS_RSS, metrics::PROCESS_RSS);
    assert_eq!(stats::PROCESS_FDS, metrics::PROCESS_FDS);
    assert_eq!(stats::STORE_BYTES, metrics::STORE_BYTES);
    assert_eq!(stats::BYTES_OUT, metrics::BYTES_OUT);
}

/// Runs `switchyard bench run` on a plan whose one scenario is a small fan-out against
/// `server` with `thresholds`; returns the exit code, stdout + stderr and the `--json` document.
async fn run_plan(server: &TestServer, thresholds: &str) -> (i32, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let (plan, json) = (dir.path().join("plan.toml"), dir.path().join("r.json"));
    let text = format!(
        "target = [\"--channel\", \"chat:plan\", \"--url\", \"ws://127.0.0.1:1/nowhere\"]\n\
         [[scenario]]\nname = \"small\"\n\
         run = [\"fanout\", \"--subscribers\", \"2\", \"--rate\", \"20\", \"--duration\", \"500ms\"]\n\
         thresholds = [{thresholds}]\n"
    );
    std::fs::write(&plan, text).unwrap();
    let (url, api) = (server.ws_url(), format!("http://{}", server.addr));
    let out = bench_binary_env(
        &[
            "run",
            "--json",
            json.to_str().unwrap(),
            plan.to_str().unwrap(),
            "--quiet",
            "--url",
            &url,
            "--api",
            &api,
            "--token-secret",
            SECRET,
        ],
        &[("SY_BENCH_API_KEY", API_KEY)],
    )
    .await;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_default()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), text, v)
}

/// A plan whose thresholds hold exits 0; its JSON carries the verdicts and the scenario's
/// report, whose every figure is one a threshold may name. The command line's `--url`
/// replaced the plan's unreachable one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_whose_thresholds_hold_exits_zero() {
    let server = TestServer::start().await;
    let (code, out, v) = run_plan(
        &server,
        "\"loss == 0\", \"delivery_p99 < 20s\", \"deliveries_received >= 20\"",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("plan PASSED"), "{out}");
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["verdicts"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["verdicts"][1]["figure"], "latency_p99_ms");
    assert_eq!(v["verdicts"][1]["limit"], 20000.0);
    let figures = v["scenarios"][0]["report"]["figures"].as_object().unwrap();
    assert_eq!(
        figures["deliveries_received"], figures["deliveries_expected"],
        "{out}"
    );
    let known = bench::plan::threshold::figures("fanout");
    for key in figures.keys() {
        assert!(
            known.iter().any(|(k, _)| k == key),
            "{key} unknown to thresholds"
        );
    }
}

/// A threshold that cannot hold fails the plan with exit 1, and the verdict table names it
/// with the measured value and by how much it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_whose_threshold_fails_exits_one_and_says_by_how_much() {
    let server = TestServer::start().await;
    let (code, out, v) = run_plan(&server, "\"loss == 0\", \"latency_p99_ms < 0.0001ms\"").await;
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("latency_p99_ms < 0.0001ms"))
        .unwrap_or_else(|| panic!("no verdict line: {out}"));
    assert!(line.contains("FAIL by") && line.contains('%'), "{line}");
    assert!(out.contains("plan FAILED"), "{out}");
    assert_eq!(v["passed"], false);
    assert_eq!(v["verdicts"][0]["ok"], true, "{v}");
    assert_eq!(v["verdicts"][1]["ok"], false, "{v}");
    let miss = v["verdicts"][1]["miss"].as_f64().unwrap();
    let measured = v["verdicts"][1]["measured"].as_f64().unwrap();
    assert!(miss > 0.0 && (measured - 0.0001 - miss).abs() < 1e-9, "{v}");
}

/// A threshold naming a figure the scenario does not report is a bad plan: exit 2 before
/// anything runs (no report, no JSON), the error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_naming_an_unknown_figure_exits_two_before_running() {
    let server = TestServer::start().await;
    let (code, out, v) = run_plan(&server, "\"lossage == 0\"").await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no figure \"lossage\""), "{out}");
    assert!(!out.contains("switchyard bench fanout"), "it ran: {out}");
    assert_eq!(v, Value::Null);
}

/// Every plan shipped under `scripts/load/plans/` reads: its scenarios' words parse and its
/// thresholds name figures those scenarios report.
#[test]
fn the_shipped_plans_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/load/plans");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let steps = bench::plan::load(&text, &["--token".into(), "t".into()], &[])
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert!(steps.iter().all(|s| !s.thresholds.is_empty()), "{path:?}");
        names.push(path.file_stem().unwrap().to_string_lossy().to_string());
    }
    names.sort();
    let want = [
        "heavy",
        "light",
        "medium",
        "reconnection",
        "rolling-restart",
        "soak",
        "spike",
    ];
    assert_eq!(names, want);
}

/// The path of a shipped plan.
fn shipped_plan(name: &str) -> String {
    format!(
        "{}/scripts/load/plans/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs `switchyard bench run --json … PLAN WORDS…` (with the API key and token secret in the
/// environment, plus `envs`) within `within`: exit code, stdout + stderr, the JSON document.
async fn run_shipped_plan(
    plan: &str,
    words: &[&str],
    envs: &[(&str, &str)],
    within: Duration,
) -> (i32, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let mut all = vec!["run", "--json", json.to_str().unwrap(), plan];
    all.extend(words);
    let mut env = vec![
        ("SY_BENCH_API_KEY", API_KEY),
        ("SY_BENCH_TOKEN_SECRET", SECRET),
    ];
    env.extend(envs);
    let out = bench_binary_within(&all, &env, within).await;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_default()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), text, v)
}

/// A figure of scenario `n` in a plan's JSON document.
fn plan_fig(v: &Value, n: usize, key: &str) -> f64 {
    v["scenarios"][n]["report"]["figures"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("scenario {n}: no figure {key}: {v}"))
}

/// The shipped reconnection plan, small (20 clients, 3 s of publishing a scenario, a drop every
/// 300 ms) against one node: in both scenarios (sockets closed by the bench with the SDK's
/// jittered back-off; server `disconnect` with the 1-2-4 s back-off) clients were dropped and
/// reconnected after at least the back-off's floor, every reconnect recovered, and every
/// client has every acknowledged publication exactly once; the plan passes (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconnection_plan_recovers_exactly_once_after_every_drop() {
    let server = TestServer::start().await;
    let (url, api) = (server.ws_url(), format!("http://{}", server.addr));
    let words = [
        "--url",
        &url,
        "--api",
        &api,
        "--quiet",
        "--clients",
        "20",
        "--duration",
        "3s",
        "--drop-every",
        "300ms",
        "--drop-clients",
        "3",
        "--drain",
        "10s",
    ];
    let (code, out, v) = run_shipped_plan(
        &shipped_plan("reconnection"),
        &words,
        &[],
        Duration::from_secs(50),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    for (n, floor_ms) in [(0, 500.0), (1, 1000.0)] {
        let f = |k| plan_fig(&v, n, k);
        assert!(f("drops") >= 10.0, "scenario {n}: {out}");
        assert!(f("reconnects") >= f("drops"), "scenario {n}: {out}");
        assert_eq!(f("recovered"), f("reconnects"), "scenario {n}: {out}");
        assert!(f("reconnect_p50_ms") >= floor_ms, "scenario {n}: {out}");
        assert!(
            f("deliveries_expected") >= 20.0 * 50.0,
            "scenario {n}: {out}"
        );
        assert_eq!(f("deliveries_received"), f("deliveries_expected"));
        assert_eq!((f("lost"), f("duplicates")), (0.0, 0.0));
        assert_eq!(f("clients_not_back"), 0.0);
    }
    assert!(
        plan_fig(&v, 1, "server_closes") >= plan_fig(&v, 1, "drops"),
        "{out}"
    );
    assert_eq!(plan_fig(&v, 0, "server_closes"), 0.0, "{out}");
}

/// A restart command that fails, or that drops no client, fails the run, the report saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_command_that_fails_or_drops_nobody_fails_the_run() {
    let server = TestServer::start().await;
    for (cmd, want) in [
        ("echo broken >&2; exit 3", "broken"),
        ("true", "0 clients dropped"),
    ] {
        let r = run(
            &server,
            &[
                "reconnect",
                "--clients",
                "3",
                "--rate",
                "10",
                "--duration",
                "1s",
                "--restart-at",
                "200ms",
                "--restart-cmd",
                cmd,
                "--channel",
                "chat:rs",
            ],
        )
        .await;
        let c = check(&r, "every restart command ran and dropped clients");
        assert!(!c.ok && c.detail.contains(want), "{}", r.table());
        assert_eq!(fig(&r, "restarts"), 1.0);
        assert!(r.get("back_max_ms").is_none(), "{}", r.table());
        assert_eq!(fig(&r, "lost"), 0.0);
    }
}

/// A three-node cluster started by `scripts/cluster-local.sh` (this build's binary, its own
/// directory and ports); stopped on drop, and any node still running then killed.
struct LocalCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl LocalCluster {
    fn start() -> LocalCluster {
        let c = LocalCluster {
            dir: tempfile::tempdir().unwrap(),
            port: cluster_port(),
        };
        let mut child = c.script(&["start"]).spawn().unwrap();
        let st = common::wait_child(
            &mut child,
            "cluster-local.sh start",
            Duration::from_secs(60),
        );
        assert!(st.success(), "cluster-local.sh start: {st}");
        c
    }

    /// `SWITCHYARD_BIN`, `CLUSTER_DIR` and `PORT_BASE` for the script.
    fn envs(&self) -> [(&'static str, String); 3] {
        [
            (
                "SWITCHYARD_BIN",
                env!("CARGO_BIN_EXE_switchyard").to_string(),
            ),
            ("CLUSTER_DIR", self.dir.path().display().to_string()),
            ("PORT_BASE", self.port.to_string()),
        ]
    }

    fn script(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("scripts/cluster-local.sh");
        cmd.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .envs(self.envs().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null());
        cmd
    }

    /// Each node's client WebSocket URL and API base URL, comma-separated.
    fn urls(&self) -> (String, String) {
        let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
        let ws = ips.map(|ip| format!("ws://{ip}:{}/connection/websocket", self.port));
        let api = ips.map(|ip| format!("http://{ip}:{}", self.port));
        (ws.join(","), api.join(","))
    }

    /// The PID file of each node.
    fn pids(&self) -> Vec<Option<u32>> {
        (1..=3)
            .map(|n| {
                let f = self.dir.path().join(format!("node-{n}/pid"));
                std::fs::read_to_string(f)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            })
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let pids = self.pids();
        if let Ok(mut child) = self.script(&["stop"]).spawn() {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in pids.into_iter().flatten() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// A `PORT_BASE` for `cluster-local.sh` whose ports (client, admin = +1, cluster = +100) are
/// free on 127.0.0.1–3.
fn cluster_port() -> u16 {
    for _ in 0..100 {
        let base = common::free_port("127.0.0.1");
        let free = ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().all(|ip| {
            [base, base + 1, base + 100]
                .iter()
                .all(|p| std::net::TcpListener::bind((*ip, *p)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no free PORT_BASE");
}

/// The shipped rolling-restart plan against a three-node cluster of this build's processes
/// (`scripts/cluster-local.sh`), small (50 clients, 5 s of publishing, restarts 2 s in and 1 s
/// apart): its restart commands, `cluster-local.sh restart-node 1`, `2` and `3`, really
/// restart every node (new PIDs), every client the restarts dropped is back, and every
/// acknowledged publication reached every client exactly once (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rolling_restart_plan_brings_every_client_back_and_loses_nothing() {
    let cluster = LocalCluster::start();
    let before = cluster.pids();
    let (urls, apis) = cluster.urls();
    let envs = cluster.envs();
    let mut envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The shipped config.toml's credentials, which cluster-local.sh starts the nodes with.
    envs.extend([
        ("SY_BENCH_API_KEY", "switchyard-example-api-key-change-me"),
        (
            "SY_BENCH_TOKEN_SECRET",
            "switchyard-example-secret-change-me",
        ),
    ]);
    let words = [
        "--url",
        &urls,
        "--api",
        &apis,
        "--quiet",
        "--clients",
        "50",
        "--duration",
        "5s",
        "--restart-at",
        "2s",
        "--restart-gap",
        "1s",
    ];
    let (code, out, v) = run_shipped_plan(
        &shipped_plan("rolling-restart"),
        &words,
        &envs,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let f = |k| plan_fig(&v, 0, k);
    assert_eq!((f("restarts"), f("restarts_failed")), (3.0, 0.0), "{out}");
    assert!(f("restart_clients_dropped") >= 50.0, "{out}");
    assert!(f("reconnects") >= f("restart_clients_dropped"), "{out}");
    assert_eq!(f("clients_not_back"), 0.0, "{out}");
    assert!(
        f("back_max_ms") > 0.0 && f("back_max_ms") < 30_000.0,
        "{out}"
    );
    assert!(f("back_p95_ms") <= f("back_max_ms"));
    assert!(f("publications") >= 50.0, "{out}");
    assert!(
        f("deliveries_expected") >= 50.0 * f("publications") * 0.5,
        "{out}"
    );
    assert_eq!(f("deliveries_received"), f("deliveries_expected"), "{out}");
    assert_eq!(
        (f("lost"), f("duplicates"), f("not_recovered")),
        (0.0, 0.0, 0.0)
    );
    let after = cluster.pids();
    for n in 0..3 {
        assert!(
            after[n].is_some() && after[n] != before[n],
            "node {}: {before:?} → {after:?}",
            n + 1
        );
    }
}
