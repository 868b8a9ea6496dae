//! Cluster-wide figures, with Centrifugo's semantics: `info` lists every node's own figures,
//! `channels` is the union of every node's channels with `num_clients` summed over the nodes.
//! Each node reports what it holds itself (its connections, its local subscribers) when asked
//! over the cluster listener ([`INFO_PATH`], [`CHANNELS_PATH`]); the node asked by a backend or
//! the status page asks every other member at once and puts the answers together. Every
//! member is in the result: one that does not answer within `cluster.query_timeout` is
//! reported with the reason, never silently left out.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cluster::{MemberReply, Reply};
use crate::node::Node;

/// Cluster-listener path: the node's own figures ([`NodeInfo`]).
pub const INFO_PATH: &str = "/cluster/node/info";
/// Cluster-listener path: the node's channels (body `{"pattern": …}`) with its local
/// subscriber counts.
pub const CHANNELS_PATH: &str = "/cluster/node/channels";

/// One node's own figures: an entry of Centrifugo's `info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its node id.
    pub uid: String,
    /// `node.name`.
    pub name: String,
    /// The version and commit it was built from.
    pub version: String,
    /// Client connections on it.
    pub num_clients: u64,
    /// Distinct users connected to it.
    pub num_users: u64,
    /// Channels with a subscriber on it.
    pub num_channels: u64,
    /// Subscriptions of its clients.
    pub num_subs: u64,
    /// Seconds since it started.
    pub uptime: u64,
}

/// One member as this node saw it when it asked.
#[derive(Debug, Clone)]
pub struct Seen<T> {
    /// Its node id.
    pub id: u64,
    /// It was reached (a member that answered with an error was reached).
    pub reachable: bool,
    /// What it answered, or why there is no answer.
    pub answer: Result<T, String>,
}

/// A channels question: which channels.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChannelsQuery {
    /// `*` matches any run of characters; none: every channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// A node's answer to a channels question: channel → its local subscribers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LocalChannels {
    channels: BTreeMap<String, u64>,
}

/// This node's own figures.
pub fn local_info(node: &Node) -> NodeInfo {
    NodeInfo {
        uid: node.cfg.node.id.to_string(),
        name: node.cfg.node_name(),
        version: crate::sys::VERSION.to_string(),
        num_clients: node.registry.num_clients() as u64,
        num_users: node.registry.num_users() as u64,
        num_channels: node.engine.hub.channels().len() as u64,
        num_subs: node.engine.hub.num_subscriptions() as u64,
        uptime: node.started.elapsed().as_secs(),
    }
}

/// This node's channels matching `q`, with their local subscriber counts.
fn local_channels(node: &Node, q: &ChannelsQuery) -> BTreeMap<String, u64> {
    node.engine
        .hub
        .channels()
        .into_iter()
        .filter(|(ch, _)| q.pattern.as_deref().is_none_or(|p| glob_match(p, ch)))
        .map(|(ch, n)| (ch, n as u64))
        .collect()
}

/// The cluster listener's side: the answer when `path` is one of these questions.
pub fn answer(node: &Node, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let bytes = match path {
        INFO_PATH => serde_json::to_vec(&local_info(node)),
        CHANNELS_PATH => match serde_json::from_slice::<ChannelsQuery>(body) {
            Ok(q) => serde_json::to_vec(&LocalChannels {
                channels: local_channels(node, &q),
            }),
            Err(_) => return Some((400, Vec::new())),
        },
        _ => return None,
    };
    Some((200, bytes.expect("json")))
}

/// Asks every other member `path` with `body`; this node's own answer (`local`) first, then
/// the others' by id.
async fn ask<T: DeserializeOwned>(node: &Node, path: &str, body: &[u8], local: T) -> Vec<Seen<T>> {
    let timeout = node.cfg.cluster.query_timeout;
    let replies = node.cluster.ask_members(path, body, timeout).await;
    seen(node, local, replies)
}

/// This node's own answer (`local`) first, then the other members' replies, read.
fn seen<T: DeserializeOwned>(node: &Node, local: T, replies: Vec<MemberReply>) -> Vec<Seen<T>> {
    let mut seen = vec![Seen {
        id: node.cfg.node.id,
        reachable: true,
        answer: Ok(local),
    }];
    seen.extend(replies.into_iter().map(|r| {
        let (reachable, answer) = match r.reply {
            Reply::Ok(bytes) => (
                true,
                serde_json::from_slice(&bytes).map_err(|e| format!("unreadable answer: {e}")),
            ),
            Reply::Refused(why) => (true, Err(why)),
            Reply::NoAnswer(why) => (false, Err(why)),
        };
        Seen {
            id: r.id,
            reachable,
            answer,
        }
    }));
    seen
}

/// Every member's own figures, asked now: this node's first, then the others' by id.
pub async fn infos(node: &Node) -> Vec<Seen<NodeInfo>> {
    ask(node, INFO_PATH, b"{}", local_info(node)).await
}

/// Every member's figures for pollers (`/cluster/status`), with the age of the others':
/// they are asked again when the last answers are older than `cluster.heartbeat_interval`,
/// and awaited that long at most (a member that has not answered by then is shown from the
/// last asking, and the asking goes on in the background).
pub async fn recent_infos(node: &Node) -> (Vec<Seen<NodeInfo>>, std::time::Duration) {
    let c = &node.cfg.cluster;
    let (replies, age) = node
        .cluster
        .ask_members_recent(INFO_PATH, c.query_timeout, c.heartbeat_interval)
        .await;
    (seen(node, local_info(node), replies), age)
}

/// The cluster's channels matching `q`: the union over the nodes with `num_clients` summed,
/// and the members whose channels are missing from it (they did not answer).
pub async fn channels(node: &Node, q: &ChannelsQuery) -> (BTreeMap<String, u64>, Vec<Seen<()>>) {
    let body = serde_json::to_vec(q).expect("json");
    let local = LocalChannels {
        channels: local_channels(node, q),
    };
    let mut union: BTreeMap<String, u64> = BTreeMap::new();
    let mut missing = Vec::new();
    for s in ask(node, CHANNELS_PATH, &body, local).await {
        match s.answer {
            Ok(LocalChannels { channels }) => {
                for (ch, n) in channels {
                    *union.entry(ch).or_default() += n;
                }
            }
            Err(why) => missing.push(Seen {
                id: s.id,
                reachable: s.reachable,
                answer: Err(why),
            }),
        }
    }
    (union, missing)
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("chat:*", "chat:room"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("chat:*", "news"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }
}
