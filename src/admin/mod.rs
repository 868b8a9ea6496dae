//! The status page on the admin listener: one HTML file with its script, compiled into the
//! binary (no build step), plus the two small JSON endpoints it needs beside `/metrics` and
//! `/cluster/status`. Bytes in, status and bytes out, like `api`.

use serde::Deserialize;
use serde_json::json;

use crate::node::Node;

/// The page.
pub const STATUS_HTML: &str = include_str!("status.html");

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
