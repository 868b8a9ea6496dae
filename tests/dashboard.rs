//! The live dashboard example end to end: a node with examples/dashboard/config.toml, the feed
//! (`cargo run --example dashboard-feed`, sped up), and the page in Debian's chromium with a
//! staff token (the four staff streams arrive; the admin panel is refused with 103) and with an
//! admin token (alerts arrive too). Screenshots are kept in target/test-artifacts/.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_example_shows_each_audience_its_streams() {
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
    let _feed = Feed(child);
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

    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for role in ["staff", "admin"] {
        let shot = artifacts.join(format!("dashboard-{role}.png"));
        let out = status_page_check(
            "dashboard.mjs",
            &[links[role].clone(), shot.display().to_string(), role.into()],
        );
        assert!(out.contains(&format!("{role}:")), "{out}");
        assert_png(&shot);
    }
}
