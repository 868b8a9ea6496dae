//! The status page on the admin listener: one HTML file with its script, compiled into the
//! binary (no build step), plus the two small JSON endpoints it needs beside `/metrics` and
//! `/cluster/status`. Bytes in, status and bytes out, like `api`.

use metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::*;
use crate::node::Node;

/// The page.
pub const STATUS_HTML: &str = include_str!("status.html");

/// The body of a 401 from an admin endpoint: which key it wants and how to send it (an
/// operator meets it through `switchyard cluster` or curl, and the key is theirs to set).
pub const UNAUTHORIZED: &str = r#"{"error":"unauthorized: this endpoint needs the node's admin.api_key, sent as the X-API-Key header (or Authorization: apikey KEY)"}"#;

/// Channels shown in the top list.
const TOP: usize = 20;

/// `GET /status/channels`: this node's channels with the most local subscribers.
pub fn top_channels(node: &Node) -> Vec<u8> {
    let mut channels = node.engine.hub.channels();
    channels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    channels.truncate(TOP);
    let list: Vec<_> = channels
        .into_iter()
        .map(|(channel, subscribers)| json!({"channel": channel, "subscribers": subscribers}))
        .collect();
    serde_json::to_vec(&json!({ "channels": list })).expect("json")
}

/// `POST /status/presence {"channel": …}`: the channel's presence (empty when it keeps none).
pub fn presence(node: &Node, body: &[u8]) -> (u16, Vec<u8>) {
    #[derive(Deserialize)]
    struct Req {
        channel: String,
    }
    let Ok(req) = serde_json::from_slice::<Req>(body) else {
        return (400, Vec::new());
    };
    let presence = node.engine.read(|sm| sm.presence(&req.channel));
    (
        200,
        serde_json::to_vec(&json!({ "presence": presence })).expect("json"),
    )
}

/// `GET /metrics`: sets the state gauges from the node (a typed cluster status) and renders
/// the Prometheus text.
pub fn render_metrics(node: &Node, handle: &PrometheusHandle) -> String {
    gauge!(CONNECTIONS).set(node.registry.num_clients() as f64);
    gauge!(SUBSCRIPTIONS).set(node.engine.hub.num_subscriptions() as f64);
    gauge!(CHANNELS).set(node.engine.hub.channels().len() as f64);
    let st = node.cluster.status();
    gauge!(RAFT_TERM).set(st.term as f64);
    gauge!(RAFT_LEADER).set(st.leader.unwrap_or(0) as f64);
    gauge!(RAFT_IS_LEADER).set(if st.is_leader() { 1.0 } else { 0.0 });
    gauge!(RAFT_LAST_LOG_INDEX).set(st.last_log_index.unwrap_or(0) as f64);
    gauge!(RAFT_APPLIED_INDEX).set(st.applied_index.unwrap_or(0) as f64);
    for (id, lag) in st.follower_lag {
        gauge!(RAFT_FOLLOWER_LAG, "node" => id).set(lag.unwrap_or(0) as f64);
    }
    gauge!(STORE_BYTES).set(st.store_bytes as f64);
    if let Some(rss) = process_rss_bytes() {
        gauge!(PROCESS_RSS).set(rss as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!(PROCESS_FDS).set(fds.count() as f64);
    }
    handle.run_upkeep();
    handle.render()
}

fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
