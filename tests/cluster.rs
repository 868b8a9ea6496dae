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
