//! `/metrics` after a known workload: each counter moved by exactly what the workload did.
//! One test in this binary, so the process-wide recorder sees nothing else.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::json;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("series {series} missing from /metrics"))
}

#[tokio::test]
async fn counters_move_by_the_workload() {
    let s = TestServer::start().await;
    let admin = s.server.as_ref().unwrap().admin_addr;
    let scrape = || async move {
        let (st, b) = http_get(admin, "/metrics").await;
        assert_eq!(st, 200);
        String::from_utf8(b).unwrap()
    };
    eventually("ready", || async {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await;
    let before = scrape().await;
    for name in [
        "switchyard_connections_accepted_total",
        "switchyard_publications_committed_total",
        "switchyard_slow_consumer_disconnects_total",
        "switchyard_raft_term",
        "switchyard_store_bytes",
        "switchyard_store_flush_duration_seconds_count",
        "switchyard_command_errors_total{code=\"102\"}",
        "switchyard_connections_rejected_total{reason=\"shutting_down\"}",
    ] {
        value(&before, name); // registered from the first scrape
    }

    // Workload: 2 clients subscribe, 5 API publications reach both, 1 pong, 1 unknown-namespace
    // error, 1 binary frame (disconnect 3501).
    let mut a = s.client("a").await;
    let mut b = s.client("b").await;
    a.subscribe("chat:m").await;
    b.subscribe("chat:m").await;
    for i in 0..5 {
        s.publish("chat:m", json!(i)).await;
    }
    for c in [&mut a, &mut b] {
        for _ in 0..5 {
            c.publication("chat:m").await;
        }
    }
    // A pong (`{}`): counted in messages_in, not in commands. The reply to the call after it
    // shows it was handled.
    a.ws.send(tokio_tungstenite::tungstenite::Message::text("{}"))
        .await
        .unwrap();
    let r = a.call("subscribe", json!({"channel": "nope:x"})).await;
    assert_eq!(r["error"]["code"], 102);
    b.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8]))
        .await
        .unwrap();
    assert!(matches!(b.closed().await, Closed::Code(3501, _)));

    eventually("connections gauge shows the one left", || async {
        value(&scrape().await, "switchyard_connections") == 1.0
    })
    .await;
    let after = scrape().await;
    let delta = |name: &str| value(&after, name) - value(&before, name);
    assert_eq!(delta("switchyard_connections_accepted_total"), 2.0);
    assert_eq!(delta("switchyard_publications_committed_total"), 5.0);
    // connect ×2, subscribe ×2, the refused subscribe; messages_in also counts the pong.
    assert_eq!(delta("switchyard_commands_total"), 5.0);
    assert_eq!(delta("switchyard_messages_in_total"), 6.0);
    // connect and subscribe replies ×2, 5 publications ×2, the error reply.
    assert_eq!(delta("switchyard_messages_out_total"), 15.0);
    assert_eq!(delta("switchyard_command_errors_total{code=\"102\"}"), 1.0);
    assert_eq!(delta("switchyard_disconnects_total{code=\"3501\"}"), 1.0);
    assert_eq!(delta("switchyard_delivery_latency_seconds_count"), 10.0);
    assert!(delta("switchyard_bytes_out_total") > 0.0);
    assert_eq!(value(&after, "switchyard_subscriptions"), 1.0);
    assert_eq!(value(&after, "switchyard_channels"), 1.0);
    assert_eq!(value(&after, "switchyard_raft_is_leader"), 1.0);
    assert!(value(&after, "switchyard_raft_applied_index") >= 5.0);
    assert!(value(&after, "switchyard_process_resident_memory_bytes") > 1e6);
    assert!(value(&after, "switchyard_process_open_fds") > 3.0);
}
