//! Client protocol v2 messages in their JSON form (the Protobuf codec maps to and from them):
//! requests as the clients send them, results as the clients parse them. Field names and
//! "omit empty" rules follow protocol.md.

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
    /// Publication payload; required (JSON from JSON clients, bytes from Protobuf ones).
    #[serde(deserialize_with = "json_payload")]
    pub data: Option<Payload>,
}

fn json_payload<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Payload>, D::Error> {
    Ok(Option::<Raw>::deserialize(d)?.map(Payload::Json))
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

/// A publication as stored in history (its serde form is the stored one; clients get
/// [`Publication::view`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    /// Offset in the channel stream (0 when the channel keeps no history).
    #[serde(skip_serializing_if = "is_zero_u64", default)]
    pub offset: u64,
    /// Payload: JSON, or with `binary` a JSON string holding the payload's base64.
    pub data: Raw,
    /// The payload is binary (see [`Payload`]): Protobuf clients get the decoded bytes, JSON
    /// clients the base64 string. Absent in publications stored before binary payloads.
    #[serde(skip_serializing_if = "is_false", default)]
    pub binary: bool,
    /// Publisher, when a client published.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub info: Option<ClientInfo>,
    /// Key/value tags set by the API publisher.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tags: Option<BTreeMap<String, String>>,
}

impl Publication {
    /// What JSON clients and the server API get: everything but the `binary` mark.
    pub fn view(&self) -> PublicationView<'_> {
        PublicationView {
            offset: self.offset,
            data: &self.data,
            info: self.info.as_ref(),
            tags: self.tags.as_ref(),
        }
    }

    /// The payload's bytes as Protobuf clients get them: the JSON text, or the binary bytes.
    pub fn payload_bytes(&self) -> Vec<u8> {
        payload_bytes(&self.data, self.binary)
    }
}

/// The bytes of a stored payload: the JSON text, or (`binary`) the decoded base64 string. A
/// binary payload is always a base64 string written by [`Payload::into_stored`]; anything
/// else is passed as its text rather than lost.
pub fn payload_bytes(data: &serde_json::value::RawValue, binary: bool) -> Vec<u8> {
    use base64::Engine as _;
    let text = data.get();
    if binary
        && let Some(b64) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64)
    {
        return bytes;
    }
    text.as_bytes().to_vec()
}

/// A publication as JSON clients and the server API see it.
#[derive(Debug, Serialize)]
pub struct PublicationView<'a> {
    /// Offset (omitted when 0).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Payload (a base64 string for a binary publication).
    pub data: &'a serde_json::value::RawValue,
    /// Publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<&'a ClientInfo>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a BTreeMap<String, String>>,
}

/// Serialises stored publications as their client view.
fn publication_views<S: serde::Serializer>(
    pubs: &[std::sync::Arc<Publication>],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(pubs.iter().map(|p| p.view()))
}

/// A payload as a client or the API hands it in. Protobuf clients and the API's `b64data` give
/// bytes: when they are exactly one JSON value (no surrounding whitespace, nesting within
/// [`MAX_DEPTH`](super::json::MAX_DEPTH)) they are JSON, otherwise binary.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A JSON value, embedded as it is in JSON messages.
    Json(Raw),
    /// Bytes that are not one JSON value.
    Binary(Vec<u8>),
}

impl Payload {
    /// Classifies bytes (see [`Payload`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Payload {
        let trimmed = bytes.first().is_some_and(|b| !b.is_ascii_whitespace())
            && bytes.last().is_some_and(|b| !b.is_ascii_whitespace());
        if !trimmed || !super::json::depth_within(&bytes, super::json::MAX_DEPTH) {
            return Payload::Binary(bytes);
        }
        match String::from_utf8(bytes) {
            // Without surrounding whitespace the raw value is the text itself, byte for byte.
            Ok(text) => match serde_json::from_str::<Raw>(&text) {
                Ok(raw) => Payload::Json(raw),
                Err(_) => Payload::Binary(text.into_bytes()),
            },
            Err(e) => Payload::Binary(e.into_bytes()),
        }
    }

    /// The stored form: `(data, binary)` as in [`Publication`].
    pub fn into_stored(self) -> (Raw, bool) {
        use base64::Engine as _;
        match self {
            Payload::Json(raw) => (raw, false),
            Payload::Binary(b) => {
                let s = base64::engine::general_purpose::STANDARD.encode(b);
                let raw = serde_json::value::RawValue::from_string(format!("\"{s}\""))
                    .expect("a base64 string is a JSON string");
                (raw, true)
            }
        }
    }

    /// Size in bytes of the payload as given.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(raw) => raw.get().len(),
            Payload::Binary(b) => b.len(),
        }
    }
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
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "publication_views"
    )]
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
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "publication_views"
    )]
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
