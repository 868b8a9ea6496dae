//! Client protocol v2 messages (JSON form): requests as the clients send them, results as the
//! clients parse them. Field names and "omit empty" rules follow protocol.md.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An embedded raw JSON value (`data`, `info`, `conn_info`, `chan_info`): never re-parsed.
pub type Raw = Box<RawValue>;

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// `connect` request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    /// Connection JWT.
    pub token: String,
    /// Custom data (unused without a connect proxy).
    pub data: Option<Raw>,
    /// Client name, ≤ 16 characters.
    pub name: String,
    /// Client version, ≤ 64 characters.
    pub version: String,
    /// Positions of server-side subscriptions to recover.
    pub subs: HashMap<String, SubscribeRequest>,
}

/// `subscribe` request (also the per-channel entries of `connect.subs`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    /// Channel name.
    pub channel: String,
    /// Subscription JWT.
    pub token: String,
    /// Custom data (unused without a subscribe proxy).
    pub data: Option<Raw>,
    /// Recover missed publications from `offset`/`epoch`.
    pub recover: bool,
    /// Last offset the client saw.
    pub offset: u64,
    /// Epoch the client saw.
    pub epoch: String,
    /// The client wants a stream position.
    pub positioned: bool,
    /// The client wants recovery on reconnect.
    pub recoverable: bool,
    /// The client wants join/leave pushes.
    pub join_leave: bool,
    /// Flag bits: 1 = channel compaction (ignored), 2 = reject unrecovered (error 112 when
    /// recovery fails).
    pub flag: u64,
    /// Subscription kind: 0 = stream, the only kind served (others: error 108).
    #[serde(rename = "type")]
    pub kind: u64,
    /// Delta updates wanted: "fossil" (granted where the channel's `allowed_delta_types` has
    /// it), or "" for none; any other value is a bad request (3501).
    pub delta: String,
}

/// Subscribe flag bit: answer error 112 when the asked recovery fails.
pub const FLAG_REJECT_UNRECOVERED: u64 = 2;

/// `unsubscribe`, `presence`, `presence_stats` requests: a channel only.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChannelRequest {
    /// Channel name.
    pub channel: String,
}

/// `publish` request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    /// Channel name.
    pub channel: String,
    /// Publication payload; required.
    pub data: Option<Raw>,
}

/// A stream position: `{offset, epoch}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct StreamPosition {
    /// Offset.
    pub offset: u64,
    /// Epoch.
    pub epoch: String,
}

/// `history` request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HistoryRequest {
    /// Channel name.
    pub channel: String,
    /// 0 = position only, -1 = all (up to the cap), N = at most N.
    pub limit: i64,
    /// Return publications after this position.
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
}

/// `rpc` request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RpcRequest {
    /// RPC method name.
    pub method: String,
    /// Payload.
    pub data: Option<Raw>,
}

/// `send` request (asynchronous message, no reply).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SendRequest {
    /// Payload.
    pub data: Option<Raw>,
}

/// `refresh` request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    /// A new connection token.
    pub token: String,
}

/// `sub_refresh` request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubRefreshRequest {
    /// Channel name.
    pub channel: String,
    /// A new subscription token.
    pub token: String,
}

/// Who sent a publication, or who joined or left.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    /// User id ("" for anonymous); always written.
    pub user: String,
    /// Client (connection) id; always written.
    pub client: String,
    /// From the connection token's `info`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub conn_info: Option<Raw>,
    /// From the subscription token's `info`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub chan_info: Option<Raw>,
}

/// A publication as stored in history and sent to clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    /// Offset in the channel stream (0 when the channel keeps no history).
    #[serde(skip_serializing_if = "is_zero_u64", default)]
    pub offset: u64,
    /// Payload.
    pub data: Raw,
    /// Publisher, when a client published.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub info: Option<ClientInfo>,
    /// Key/value tags set by the API publisher.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tags: Option<BTreeMap<String, String>>,
}

/// `connect` result.
#[derive(Debug, Default, Serialize)]
pub struct ConnectResult {
    /// Client id; always written.
    pub client: String,
    /// Server version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The connection expires and must be refreshed.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the client must refresh.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// Custom data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
    /// Server-side subscriptions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    /// Server ping interval in seconds.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    /// The client must answer pings.
    #[serde(skip_serializing_if = "is_false")]
    pub pong: bool,
    /// Node that serves the connection (informational).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Emulation session id (HTTP streaming and SSE connections), sent back by the client
    /// with each `/emulation` request.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session: String,
}

/// `subscribe` result (also server-side `subscribe` pushes and `connect.subs` entries).
#[derive(Debug, Default, Serialize)]
pub struct SubscribeResult {
    /// The subscription expires and must be refreshed.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the subscription must be refreshed.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// The client may recover on resubscribe.
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// Stream epoch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Recovered publications, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<std::sync::Arc<Publication>>,
    /// Recovery succeeded.
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// Stream offset (on successful recovery: the client's offset).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// The subscription is positioned.
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// Custom data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
    /// The client asked to recover.
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
    /// Fossil delta updates granted: publications carry `data` as a JSON string (see
    /// `protocol::delta`).
    #[serde(skip_serializing_if = "is_false")]
    pub delta: bool,
}

/// `presence` result; `presence` is always written.
#[derive(Debug, Default, Serialize)]
pub struct PresenceResult {
    /// Client id → info.
    pub presence: BTreeMap<String, ClientInfo>,
}

/// `presence_stats` result; both counts always written.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceStatsResult {
    /// Connections subscribed.
    pub num_clients: u32,
    /// Distinct users among them.
    pub num_users: u32,
}

/// `history` result.
#[derive(Debug, Default, Serialize)]
pub struct HistoryResult {
    /// Publications, oldest first unless reversed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<std::sync::Arc<Publication>>,
    /// Stream epoch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Stream top offset.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
}

/// `refresh` result.
#[derive(Debug, Default, Serialize)]
pub struct RefreshResult {
    /// Client id.
    pub client: String,
    /// Server version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The connection expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the next refresh.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// `sub_refresh` result.
#[derive(Debug, Default, Serialize)]
pub struct SubRefreshResult {
    /// The subscription expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the next refresh.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// An empty result `{}` (unsubscribe, publish).
#[derive(Debug, Default, Serialize)]
pub struct Empty {}

/// Join/leave push body: `{"info": ClientInfo}`.
#[derive(Debug, Serialize)]
pub struct JoinLeave<'a> {
    /// Who joined or left.
    pub info: &'a ClientInfo,
}

/// Unsubscribe push body.
#[derive(Debug, Serialize)]
pub struct UnsubscribePush<'a> {
    /// Code (2000–2499: do not resubscribe; 2500+: resubscribe).
    pub code: u32,
    /// Reason.
    pub reason: &'a str,
}
