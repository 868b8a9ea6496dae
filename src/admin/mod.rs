//! The status page on the admin listener: one HTML file with its script, compiled into the
//! binary (no build step), `/cluster/status` (what this node sees of the cluster) and the two
//! small JSON endpoints the page needs beside it and `/metrics`. Bytes in, status and bytes
//! out, like `api`.

use std::collections::BTreeMap;

use metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::ClusterStatus;
use crate::metrics::*;
use crate::node::Node;
use crate::survey::{self, NodeInfo};

/// The page.
pub const STATUS_HTML: &str = include_str!("status.html");

/// The body of a 401 from an admin endpoint: which key it wants and how to send it (an
/// operator meets it through `switchyard cluster` or curl, and the key is theirs to set).
pub const UNAUTHORIZED: &str = r#"{"error":"unauthorized: this endpoint needs the node's admin.api_key, sent as the X-API-Key header (or Authorization: apikey KEY)"}"#;

/// `GET /cluster/status`: this node's Raft view, each member's reachability and figures as
/// this node sees them, its version and uptime, and the cluster's totals.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// This node's Raft view, each member marked reachable or not.
    #[serde(flatten)]
    pub raft: ClusterStatus,
    /// This node's version and commit.
    pub version: &'static str,
    /// Seconds since this node started.
    pub uptime: u64,
    /// The figures of each member that answered, by node id.
    pub figures: BTreeMap<String, NodeInfo>,
    /// How old the other members' reachability and figures are, in ms (they are asked in
    /// the background, so that this answer never waits for a member that does not answer).
    pub asked_ms_ago: u64,
    /// Sums over the members that answered.
    pub totals: Totals,
}

/// Cluster-wide sums (over the members that answered).
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Members of the cluster.
    pub members: usize,
    /// Members this node reached (itself included).
    pub reachable: usize,
    /// Members whose figures are in these sums.
    pub answered: usize,
    /// Client connections.
    pub num_clients: u64,
    /// Users connected, counted per node (a user on two nodes counts twice).
    pub num_users: u64,
    /// Subscriptions.
    pub num_subs: u64,
}

/// Builds the [`StatusView`] from the last time every other member was asked for its figures
/// (which is also how their reachability is found): waits for them only on the first call.
pub async fn cluster_status(node: &Node) -> Vec<u8> {
    let (seen, age) = survey::recent_infos(node).await;
    let mut raft = node.cluster.status();
    let mut figures = BTreeMap::new();
    let mut totals = Totals {
        members: raft.nodes.len(),
        ..Totals::default()
    };
    // Answers from the last asking may include a node removed since: members only.
    let members: Vec<u64> = raft.nodes.iter().map(|n| n.id).collect();
    for s in seen.into_iter().filter(|s| members.contains(&s.id)) {
        raft.mark(s.id, s.reachable, s.answer.as_ref().err().cloned());
        totals.reachable += usize::from(s.reachable);
        if let Ok(info) = s.answer {
            totals.answered += 1;
            totals.num_clients += info.num_clients;
            totals.num_users += info.num_users;
            totals.num_subs += info.num_subs;
            figures.insert(s.id.to_string(), info);
        }
    }
    let view = StatusView {
        raft,
        version: crate::sys::VERSION,
        uptime: node.started.elapsed().as_secs(),
        figures,
        asked_ms_ago: age.as_millis() as u64,
        totals,
    };
    serde_json::to_vec(&view).expect("json")
}

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
