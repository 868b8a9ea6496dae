//! The status page in a real browser: Debian's chromium, headless, driven by playwright-core
//! (tests/status-page/), against the built binary with clients connected. The screenshot is
//! kept as a test artefact in target/test-artifacts/status-page.png.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_node_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/status-page");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/test.sh"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "chromium is not installed (apt-get install chromium; scripts/test.sh does it as root)"
    );
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &[]);
    // 3 connections, 5 subscriptions over 2 channels; chat:room keeps presence.
    let mut clients = vec![];
    for (i, chans) in [
        &["chat:room", "chat:other"][..],
        &["chat:room", "chat:other"],
        &["chat:room"],
    ]
    .iter()
    .enumerate()
    {
        let mut c = Client::open(&p.ws_url()).await;
        c.connect(&token(&format!("viewer{i}"))).await;
        for ch in *chans {
            c.subscribe(ch).await;
        }
        clients.push(c);
    }
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(dir.join("check.mjs"))
        .arg(format!("http://{}/", p.admin_addr))
        .args(["1", "3", "2", "chat:room", "3"])
        .arg(&shot)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "status page check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
    drop(clients);
}
