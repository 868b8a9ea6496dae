//! The server HTTP API (`POST /api/<method>`): what backends call to publish, query presence and
//! history, and act on users' connections.
//!
//! Responses: HTTP 200 with `{"result":{…}}` or `{"error":{"code":N,"message":"…"}}`; an
//! undecodable body is HTTP 400, an unknown method HTTP 404, a bad key HTTP 401 with a body
//! that names the key to send ([`unauthorized`]; the transport checks the key with
//! [`authorized`] before reading the body).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::ChannelOptions;
use crate::node::Node;
use crate::ops;
use crate::protocol::types::{Payload, Raw, StreamPosition};
use crate::protocol::{ErrorCode, codes};
use crate::state::{Op, OpResult, UserAction};
use crate::survey::{self, ChannelsQuery, NodeInfo, Seen};

/// Whether `key` is the configured API key (constant-time); an empty config key allows none.
pub fn authorized(node: &Node, key: Option<&str>) -> bool {
    key_matches(key, &node.cfg.auth.api_key)
}

/// The body of a 401: which key the API wants and how to send it, or that none is set on this
/// node (the API is then off). A backend's developer meets it while wiring the key up, and
/// the key is the operator's to set; nothing here tells more than that.
pub fn unauthorized(node: &Node) -> &'static str {
    if node.cfg.auth.api_key.is_empty() {
        r#"{"error":"unauthorized: auth.api_key is not set on this node, so the server API refuses every request; set it in the config (or SWITCHYARD_AUTH__API_KEY) and send it as the X-API-Key header (or Authorization: apikey KEY)"}"#
    } else {
        r#"{"error":"unauthorized: the server API needs the node's auth.api_key, sent as the X-API-Key header (or Authorization: apikey KEY)"}"#
    }
}

/// Whether `key` equals `want` (constant-time); an empty `want` matches nothing.
pub fn key_matches(key: Option<&str>, want: &str) -> bool {
    match key {
        Some(k) if !want.is_empty() => constant_time_eq(k.as_bytes(), want.as_bytes()),
        _ => false,
    }
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0 && a.len() == b.len()
}

/// How a call failed.
enum Fail {
    /// HTTP 400: the body does not decode.
    BadBody,
    /// HTTP 404: no such method.
    NoMethod,
    /// HTTP 200 with an error object.
    Error(ErrorCode),
}

impl From<ErrorCode> for Fail {
    fn from(e: ErrorCode) -> Self {
        Fail::Error(e)
    }
}

type Out = Result<Value, Fail>;

/// Runs one API method on a JSON body; returns the HTTP status and response body.
pub async fn call(node: &Node, method: &str, body: &[u8]) -> (u16, Vec<u8>) {
    if !crate::protocol::json::depth_within(body, crate::protocol::json::MAX_DEPTH) {
        return (400, Vec::new());
    }
    let res = if method == "batch" {
        batch(node, body).await
    } else {
        dispatch(node, method, body).await
    };
    match res {
        // Centrifugo answers a batch with `{"replies":[…]}` at the top level (its `cent`
        // client reads it there), not inside `result`.
        Ok(v) if method == "batch" => (200, serde_json::to_vec(&v).expect("json")),
        Ok(v) => (200, envelope(Ok(v))),
        Err(Fail::Error(e)) => (200, envelope(Err(e))),
        Err(Fail::BadBody) => (400, Vec::new()),
        Err(Fail::NoMethod) => (404, Vec::new()),
    }
}

fn envelope(r: Result<Value, ErrorCode>) -> Vec<u8> {
    let v = match r {
        Ok(v) => json!({ "result": v }),
        Err(e) => json!({ "error": e }),
    };
    serde_json::to_vec(&v).expect("json")
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|_| Fail::BadBody)
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serialisable")
}

async fn dispatch(node: &Node, method: &str, body: &[u8]) -> Out {
    match method {
        "publish" => publish(node, parse(body)?).await,
        "broadcast" => broadcast(node, parse(body)?).await,
        "subscribe" => subscribe(node, parse(body)?).await,
        "unsubscribe" => unsubscribe(node, parse(body)?).await,
        "disconnect" => disconnect(node, parse(body)?).await,
        "refresh" => refresh(node, parse(body)?).await,
        "presence" => {
            let r: ChannelReq = parse(body)?;
            let opts = node.channels.resolve(&r.channel)?;
            Ok(to_value(&ops::presence(node, &r.channel, opts)?))
        }
        "presence_stats" => {
            let r: ChannelReq = parse(body)?;
            let opts = node.channels.resolve(&r.channel)?;
            Ok(to_value(&ops::presence_stats(node, &r.channel, opts)?))
        }
        "history" => {
            let r: HistoryReq = parse(body)?;
            let opts = node.channels.resolve(&r.channel)?.clone();
            let res = ops::history(node, &r.channel, &opts, r.limit, r.since, r.reverse).await?;
            Ok(to_value(&res))
        }
        "history_remove" => {
            let r: ChannelReq = parse(body)?;
            node.channels.resolve(&r.channel)?;
            node.replicator
                .propose_one(Op::HistoryRemove { channel: r.channel })
                .await
                .map_err(|_| codes::INTERNAL)?;
            Ok(json!({}))
        }
        "channels" => channels(node, parse(body)?).await,
        "info" => {
            let nodes: Vec<Value> = survey::infos(node)
                .await
                .into_iter()
                .map(info_entry)
                .collect();
            Ok(json!({ "nodes": nodes }))
        }
        _ => Err(Fail::NoMethod),
    }
}

#[derive(Deserialize)]
struct ChannelReq {
    channel: String,
}

#[derive(Deserialize)]
struct PublishReq {
    channel: String,
    #[serde(default)]
    data: Option<Raw>,
    /// Binary payload, base64 (standard alphabet); instead of `data`.
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    skip_history: bool,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct BroadcastReq {
    channels: Vec<String>,
    #[serde(default)]
    data: Option<Raw>,
    /// Binary payload, base64 (standard alphabet); instead of `data`.
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    skip_history: bool,
    /// Applies to each channel on its own (keys are scoped per channel).
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct UserChannelReq {
    user: String,
    channel: String,
    #[serde(default)]
    client: Option<String>,
}

#[derive(Deserialize, Default)]
struct DisconnectObj {
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct DisconnectReq {
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    disconnect: Option<DisconnectObj>,
}

#[derive(Deserialize)]
struct RefreshReq {
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    expire_at: Option<u64>,
}

#[derive(Deserialize)]
struct HistoryReq {
    channel: String,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

fn position(offset: u64, epoch: String) -> Value {
    let mut m = Map::new();
    if offset > 0 {
        m.insert("offset".into(), json!(offset));
    }
    if !epoch.is_empty() {
        m.insert("epoch".into(), json!(epoch));
    }
    Value::Object(m)
}

/// The payload of a publish or broadcast: `data` (JSON) or `b64data` (bytes, which are
/// binary unless they are one JSON value: see [`Payload`]); exactly one of them, and base64
/// that decodes, or the body is refused (HTTP 400).
fn payload(data: Option<Raw>, b64data: Option<String>) -> Result<Payload, Fail> {
    use base64::Engine as _;
    match (data, b64data) {
        (Some(raw), None) => Ok(Payload::Json(raw)),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Payload::from_bytes)
            .map_err(|_| Fail::BadBody),
        _ => Err(Fail::BadBody),
    }
}

/// Refuses publication data larger than `api.max_publication_size` (107); binary data counts
/// its decoded bytes.
fn check_size(node: &Node, data: &Payload) -> Result<(), Fail> {
    if data.len() > node.cfg.api.max_publication_size {
        metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "api_publication_size")
            .increment(1);
        return Err(codes::BAD_REQUEST.into());
    }
    Ok(())
}

async fn publish(node: &Node, r: PublishReq) -> Out {
    let (channel, opts, p) = publication(node, r)?;
    let (offset, epoch) = ops::publish(node, &channel, &opts, p).await?;
    Ok(position(offset, epoch))
}

/// A `publish` request checked (size, idempotency key, channel) into what `ops` publishes.
fn publication(
    node: &Node,
    r: PublishReq,
) -> Result<(String, ChannelOptions, ops::Publication), Fail> {
    let data = payload(r.data, r.b64data)?;
    check_size(node, &data)?;
    let idempotency = ops::idempotency(&node.cfg.api, r.idempotency_key)?;
    let opts = node.channels.resolve(&r.channel)?.clone();
    let p = ops::Publication {
        data,
        info: None,
        tags: r.tags,
        skip_history: r.skip_history,
        idempotency,
    };
    Ok((r.channel, opts, p))
}

async fn broadcast(node: &Node, r: BroadcastReq) -> Out {
    // Valid channels go into one proposal (one log entry); invalid ones get their error.
    let data = payload(r.data, r.b64data)?;
    check_size(node, &data)?;
    let idempotency = ops::idempotency(&node.cfg.api, r.idempotency_key)?;
    let mut slots: Vec<Result<usize, ErrorCode>> = Vec::with_capacity(r.channels.len());
    let mut batch = Vec::new();
    for ch in &r.channels {
        match node.channels.resolve(ch) {
            Ok(opts) => {
                slots.push(Ok(batch.len()));
                let p = ops::Publication {
                    data: data.clone(),
                    info: None,
                    tags: r.tags.clone(),
                    skip_history: r.skip_history,
                    idempotency: idempotency.clone(),
                };
                batch.push(ops::publish_op(ch, opts, p));
            }
            Err(e) => slots.push(Err(e)),
        }
    }
    let results = node
        .replicator
        .propose(batch)
        .await
        .map_err(|_| codes::INTERNAL)?;
    let responses: Vec<Value> = slots
        .into_iter()
        .map(|s| match s {
            Ok(i) => match &results[i] {
                OpResult::Position { offset, epoch } => {
                    json!({ "result": position(*offset, epoch.clone()) })
                }
                OpResult::Done => json!({ "result": {} }),
            },
            Err(e) => json!({ "error": e }),
        })
        .collect();
    Ok(json!({ "responses": responses }))
}

/// Commits a user action; every node then applies it to its own connections of the user.
async fn user_action(node: &Node, action: UserAction) -> Out {
    node.replicator
        .propose_one(Op::User(action))
        .await
        .map_err(|_| codes::INTERNAL)?;
    Ok(json!({}))
}

async fn subscribe(node: &Node, r: UserChannelReq) -> Out {
    node.channels.resolve(&r.channel)?;
    user_action(
        node,
        UserAction::Subscribe {
            user: r.user,
            client: r.client,
            channel: r.channel,
        },
    )
    .await
}

async fn unsubscribe(node: &Node, r: UserChannelReq) -> Out {
    node.channels.resolve(&r.channel)?;
    user_action(
        node,
        UserAction::Unsubscribe {
            user: r.user,
            client: r.client,
            channel: r.channel,
        },
    )
    .await
}

async fn disconnect(node: &Node, r: DisconnectReq) -> Out {
    let (code, reason) = match r.disconnect {
        Some(d) => {
            if !(3000..=4999).contains(&d.code) {
                return Err(codes::BAD_REQUEST.into());
            }
            (d.code, d.reason)
        }
        None => (
            codes::FORCE_DISCONNECT.code,
            codes::FORCE_DISCONNECT.reason.to_string(),
        ),
    };
    user_action(
        node,
        UserAction::Disconnect {
            user: r.user,
            client: r.client,
            code,
            reason,
        },
    )
    .await
}

/// `refresh`: replicated like `disconnect`, so it reaches the user's connections on every node.
async fn refresh(node: &Node, r: RefreshReq) -> Out {
    user_action(
        node,
        UserAction::Refresh {
            user: r.user,
            client: r.client,
            expired: r.expired,
            expire_at: r.expire_at,
        },
    )
    .await
}

/// `channels`: the union of every node's channels, `num_clients` summed over the nodes (as
/// Centrifugo). Members that did not answer are listed under `unanswered`: the union lacks
/// their subscribers.
async fn channels(node: &Node, q: ChannelsQuery) -> Out {
    let (union, missing) = survey::channels(node, &q).await;
    let channels: Map<String, Value> = union
        .into_iter()
        .map(|(ch, n)| (ch, json!({ "num_clients": n })))
        .collect();
    let mut out = json!({ "channels": channels });
    if !missing.is_empty() {
        out["unanswered"] = missing
            .into_iter()
            .map(|s| unanswered(s.id, s.reachable, s.answer.err().unwrap_or_default()))
            .collect();
    }
    Ok(out)
}

/// An `info` entry: the node's own figures, or why it gave none.
fn info_entry(s: Seen<NodeInfo>) -> Value {
    match s.answer {
        Ok(info) => to_value(&info),
        Err(why) => unanswered(s.id, s.reachable, why),
    }
}

/// A member that gave no answer: its id, why, and `unreachable` when it was not reached at
/// all (rather than answering with an error).
fn unanswered(id: u64, reachable: bool, why: String) -> Value {
    let mut v = json!({ "uid": id.to_string(), "error": why });
    if !reachable {
        v["unreachable"] = json!(true);
    }
    v
}

/// `batch`: the commands in order. Consecutive `publish` commands are committed together as
/// one proposal (one log entry, their order kept); any other command first waits for the
/// publishes before it, so a read sees them.
async fn batch(node: &Node, body: &[u8]) -> Out {
    #[derive(Deserialize)]
    struct BatchReq {
        commands: Vec<Map<String, Value>>,
    }
    let r: BatchReq = parse(body)?;
    let mut replies: Vec<Value> = Vec::with_capacity(r.commands.len());
    // Publishes not yet proposed: (reply slot, op).
    let mut run: Vec<(usize, Op)> = Vec::new();
    for cmd in r.commands {
        if cmd.len() != 1 {
            return Err(Fail::BadBody);
        }
        let (method, params) = cmd.into_iter().next().expect("one entry");
        if method == "batch" {
            return Err(Fail::BadBody);
        }
        if method == "publish" {
            let params = serde_json::to_vec(&params).expect("json");
            let op = parse::<PublishReq>(&params)
                .and_then(|r| publication(node, r))
                .map(|(channel, opts, p)| ops::publish_op(&channel, &opts, p));
            match op {
                Ok(op) => {
                    run.push((replies.len(), op));
                    replies.push(Value::Null);
                }
                Err(e) => replies.push(batch_error(e)),
            }
            continue;
        }
        commit_run(node, &mut run, &mut replies).await;
        let params = serde_json::to_vec(&params).expect("json");
        let reply = match Box::pin(dispatch(node, &method, &params)).await {
            Ok(v) => json!({ method: v }),
            Err(e) => batch_error(e),
        };
        replies.push(reply);
    }
    commit_run(node, &mut run, &mut replies).await;
    Ok(json!({ "replies": replies }))
}

/// A failed command's reply inside a batch.
fn batch_error(e: Fail) -> Value {
    match e {
        Fail::Error(e) => json!({ "error": e }),
        Fail::BadBody => json!({ "error": codes::BAD_REQUEST }),
        Fail::NoMethod => json!({ "error": codes::METHOD_NOT_FOUND }),
    }
}

/// Proposes a batch's pending publishes as one entry and fills in their replies.
async fn commit_run(node: &Node, run: &mut Vec<(usize, Op)>, replies: &mut [Value]) {
    if run.is_empty() {
        return;
    }
    let (slots, batch): (Vec<usize>, Vec<Op>) = run.drain(..).unzip();
    match node.replicator.propose(batch).await {
        Ok(results) => {
            for (slot, r) in slots.into_iter().zip(results) {
                replies[slot] = match r {
                    OpResult::Position { offset, epoch } => {
                        json!({ "publish": position(offset, epoch) })
                    }
                    OpResult::Done => json!({ "publish": {} }),
                };
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "batch publishes not committed");
            for slot in slots {
                replies[slot] = json!({ "error": codes::INTERNAL });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
