//! The status page in a real browser: Debian's chromium, headless, driven by playwright-core
//! (tests/status-page/), against the built binary with clients connected. The screenshot is
//! kept as a test artefact in target/test-artifacts/status-page.png. (The page of a cluster
//! in an outage is checked in tests/cluster.rs.)

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_node_in_chromium() {
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
    let shot = artifact("status-page.png");
    let args = [
        format!("http://{}/", p.admin_addr),
        "1".into(),
        "3".into(),
        "2".into(),
        "chat:room".into(),
        "3".into(),
        shot.display().to_string(),
    ];
    status_page_check("check.mjs", &args);
    assert_png(&shot);
    drop(clients);
}
