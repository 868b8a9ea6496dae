//! The live dashboard example end to end: a node with examples/dashboard/config.toml, the feed
//! (`cargo run --example dashboard-feed`, sped up), and the page in Debian's chromium with a
//! staff token (the four staff streams arrive; the admin panel is refused with 103) and with an
//! admin token (alerts arrive too), over WebSocket and, with WebSockets blocked, over the
//! HTTP-streaming and SSE fallbacks. Screenshots are kept in target/test-artifacts/.

mod common;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

/// The example binary, built by `cargo build --examples` (scripts/test.sh does) beside this
/// test's: `cargo test` builds examples only as test harnesses.
fn feed_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let bin = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/dashboard-feed");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --examples first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Kills the feed when the test ends.
struct Feed(std::process::Child);

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example running: a node with examples/dashboard/config.toml (ports made free) and the
/// feed serving the page; the feed's page links by audience ("staff", "admin").
/// (Fields drop in order: the feed stops before the node.)
struct Example {
    _feed: Feed,
    _node: Proc,
    _cfg: tempfile::NamedTempFile,
    links: std::collections::HashMap<String, String>,
}

fn start_example() -> Example {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/dashboard/config.toml")).unwrap();
    let page_port = free_port("127.0.0.1");
    let toml = example
        .replace("127.0.0.1:8000", "127.0.0.1:0")
        .replace("127.0.0.1:8001", "127.0.0.1:0")
        .replace("127.0.0.1:8100", "127.0.0.1:0")
        .replace(
            "http://127.0.0.1:8090",
            &format!("http://127.0.0.1:{page_port}"),
        )
        .replace("data_dir = \"/tmp/switchyard-dashboard\"", "");
    let cfg = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(cfg.path(), toml).unwrap();
    let node = Proc::start(cfg.path(), &[]);

    let mut child = Command::new(feed_binary())
        .current_dir(&root)
        .args(["--api", &format!("http://{}/api", node.client_addr)])
        .args(["--ws", &node.ws_url()])
        .args(["--listen", &format!("127.0.0.1:{page_port}")])
        .args(["--speed", "10", "--run-for", "120s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the feed");
    let out = child.stdout.take().unwrap();
    let feed = Feed(child);
    // The feed prints one link per audience once it serves the page.
    let mut links = std::collections::HashMap::new();
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        if let Some((who, url)) = line.split_once(" dashboard: ") {
            links.insert(who.to_string(), url.to_string());
        }
        if links.len() == 2 {
            break;
        }
    }
    assert_eq!(links.len(), 2, "the feed printed its links: {links:?}");
    Example {
        _feed: feed,
        _node: node,
        _cfg: cfg,
        links,
    }
}

/// Runs tests/status-page/dashboard.mjs for `role` with the `blocked` transports refused by the
/// network, asserting the page settled on `want`; the screenshot goes to
/// target/test-artifacts/`shot`.
fn check_page(ex: &Example, role: &str, blocked: &str, want: &str, shot: &str) {
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(shot);
    let out = status_page_check(
        "dashboard.mjs",
        &[
            ex.links[role].clone(),
            shot.display().to_string(),
            role.into(),
            blocked.into(),
        ],
    );
    assert!(out.contains(&format!("{role} over {want}:")), "{out}");
    assert_png(&shot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_example_shows_each_audience_its_streams() {
    let ex = start_example();
    for role in ["staff", "admin"] {
        check_page(&ex, role, "", "websocket", &format!("dashboard-{role}.png"));
    }
}

/// WebSockets blocked (every one the page opens fails, as behind a proxy refusing the
/// upgrade): the page falls back to HTTP streaming; with HTTP streaming refused too, to SSE.
/// Each audience still sees its streams, the staff page the 103 refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_example_falls_back_when_websockets_are_blocked() {
    let ex = start_example();
    for (blocked, want) in [
        ("websocket", "http_stream"),
        ("websocket,http_stream", "sse"),
    ] {
        for role in ["staff", "admin"] {
            check_page(
                &ex,
                role,
                blocked,
                want,
                &format!("dashboard-{role}-{want}.png"),
            );
        }
    }
}
