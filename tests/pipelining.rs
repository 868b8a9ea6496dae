//! Pipelined publishes on one connection: a connection's publishes are proposed in arrival
//! order without waiting for earlier commits, each answered when its own entry commits; a
//! publish waiting for its commit does not hold back the commands behind it, up to
//! `client.max_inflight_proposals`, where the connection stops being read.

mod common;

use common::*;
use serde_json::{Value, json};

/// 300 publishes in one WebSocket message (no waiting between them): every one is answered,
/// and a subscriber sees them at contiguous offsets in the order they were sent.
#[tokio::test]
async fn pipelined_publishes_commit_in_order_at_contiguous_offsets() {
    let s =
        TestServer::start_toml(&base_toml().replace("[client]\n", "[client]\ncommand_rate = 0\n"))
            .await;
    let mut sub = s.client("sub").await;
    sub.subscribe("open:feed").await;
    let mut publisher = s.client("pub").await;
    pipelined_publishes_arrive_in_order(&mut publisher, &mut sub, "open:feed", 300).await;
}

/// A node that can never commit (its only peer does not exist, so there is no leader):
/// publishes wait for `cluster.propose_timeout` and fail with the temporary error 100.
async fn node_without_quorum(max_inflight: usize) -> TestServer {
    let toml = base_toml()
        .replace(
            "[client]\n",
            &format!("[client]\nmax_inflight_proposals = {max_inflight}\ncommand_rate = 0\n"),
        )
        .replace("[cluster]\n", "[cluster]\npropose_timeout = \"1s\"\n");
    let peers = format!(
        "[[cluster.peers]]\nid = 1\naddr = \"127.0.0.1:{}\"\n[[cluster.peers]]\nid = 2\naddr = \"127.0.0.1:{}\"\n",
        free_port("127.0.0.1"),
        free_port("127.0.0.1"),
    );
    TestServer::start_toml(&format!("{toml}\n{peers}")).await
}

/// Sends two publishes and then a command that needs no commit, in one message; returns the
/// ids in the order their replies arrived.
async fn reply_order(c: &mut Client) -> (Vec<u32>, Vec<Value>) {
    let ids = [c.id(), c.id(), c.id()];
    let msg = [
        json!({"id": ids[0], "publish": {"channel": "open:a", "data": 1}}),
        json!({"id": ids[1], "publish": {"channel": "open:a", "data": 2}}),
        json!({"id": ids[2], "presence_stats": {"channel": "open:a"}}),
    ]
    .map(|v| v.to_string())
    .join("\n");
    c.send_raw(&msg).await;
    let mut order = Vec::new();
    let mut replies = Vec::new();
    while order.len() < 3 {
        let v = c.next().await;
        if let Some(id) = v.get("id").and_then(Value::as_u64) {
            order.push(id as u32 - ids[0]);
            replies.push(v);
        }
    }
    (order, replies)
}

/// With room for both publishes in flight, the third command is answered at once, while both
/// publishes still wait for a commit that cannot happen; then both fail with 100.
#[tokio::test]
async fn a_publish_waiting_for_its_commit_does_not_hold_back_later_commands() {
    let s = node_without_quorum(4).await;
    let mut c = s.client("pub").await;
    let (order, replies) = reply_order(&mut c).await;
    assert_eq!(order, vec![2, 0, 1], "replies: {replies:?}");
    assert_eq!(
        replies[0]["error"]["code"], 108,
        "presence_stats: {}",
        replies[0]
    );
    for r in &replies[1..] {
        assert_eq!(r["error"]["code"], 100, "publish without quorum: {r}");
        assert_eq!(r["error"]["temporary"], true, "{r}");
    }
}

/// At the bound (one proposal in flight) the connection is not read: the second publish is
/// taken only when the first has failed, and the third command is answered only then, before
/// the second publish's outcome. The connection stays open.
#[tokio::test]
async fn at_the_bound_the_connection_is_not_read_until_a_proposal_completes() {
    let s = node_without_quorum(1).await;
    let mut c = s.client("pub").await;
    let (order, replies) = reply_order(&mut c).await;
    assert_eq!(order, vec![0, 2, 1], "replies: {replies:?}");
    // Back-pressure, not a disconnect: the connection still answers.
    let r = c.call("presence_stats", json!({"channel": "open:a"})).await;
    assert_eq!(r["error"]["code"], 108, "{r}");
}
