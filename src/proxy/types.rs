//! The JSON bodies of proxy calls, in Centrifugo's HTTP proxy format: what is POSTed to the
//! backend and what it answers (`{"result": …}`, `{"error": {code, message}}` or
//! `{"disconnect": {code, reason}}`). Unknown answer fields (`b64data`, `meta`, `override`, …)
//! are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::Raw;

/// Who a call is about: the fields every proxy request starts with.
#[derive(Debug, Clone, Serialize)]
pub struct Who<'a> {
    /// The connection's client id.
    pub client: &'a str,
    /// `websocket`.
    pub transport: &'a str,
    /// `json`.
    pub protocol: &'a str,
    /// `json`.
    pub encoding: &'a str,
    /// The connection's user (absent in `connect`, which decides it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// The connection's `meta`, when the proxy has `include_connection_meta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a RawValue>,
}

/// `connect` request.
#[derive(Debug, Serialize)]
pub struct ConnectRequest<'a> {
    /// Who.
    #[serde(flatten)]
    pub who: Who<'a>,
    /// Client name, when it sent one.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    /// Client version, when it sent one.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub version: &'a str,
    /// The connect command's `data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
}

/// `refresh` request.
#[derive(Debug, Serialize)]
pub struct RefreshRequest<'a> {
    /// Who.
    #[serde(flatten)]
    pub who: Who<'a>,
}

/// `subscribe`, `sub_refresh` and `publish` requests.
#[derive(Debug, Serialize)]
pub struct ChannelRequest<'a> {
    /// Who.
    #[serde(flatten)]
    pub who: Who<'a>,
    /// The channel.
    pub channel: &'a str,
    /// The command's `data` (subscribe: optional; publish: the publication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
}

/// `rpc` request.
#[derive(Debug, Serialize)]
pub struct RpcRequest<'a> {
    /// Who.
    #[serde(flatten)]
    pub who: Who<'a>,
    /// The RPC method (absent when the client sent none).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub method: &'a str,
    /// The RPC's `data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
}

/// `connect` result: the connection's credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectResult {
    /// User id ("" = anonymous).
    pub user: String,
    /// When the connection expires (unix seconds; 0 = never).
    pub expire_at: u64,
    /// Becomes `conn_info`.
    pub info: Option<Raw>,
    /// Sent to the client in the connect reply.
    pub data: Option<Raw>,
    /// Server-side subscriptions.
    pub channels: Vec<String>,
    /// Server-side subscriptions with options (only the channel names are used).
    pub subs: BTreeMap<String, serde_json::Value>,
    /// Kept with the connection for later proxy calls; never sent to clients.
    pub meta: Option<Raw>,
}

/// `refresh` and `sub_refresh` results.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RefreshResult {
    /// End it now (3005 / 3006).
    pub expired: bool,
    /// The new expiry (unix seconds; 0 = never).
    pub expire_at: u64,
    /// New `conn_info` / `chan_info`.
    pub info: Option<Raw>,
}

/// `subscribe` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeResult {
    /// Becomes `chan_info`.
    pub info: Option<Raw>,
    /// Sent to the client in the subscribe reply.
    pub data: Option<Raw>,
    /// When the subscription expires (unix seconds; 0 = never).
    pub expire_at: u64,
    /// Channel options changed for this subscription.
    #[serde(rename = "override")]
    pub overrides: Option<Override>,
}

/// A `{"value": bool}` of an [`Override`].
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct BoolValue {
    /// The option's value for this subscription.
    pub value: bool,
}

/// Namespace options a subscribe result overrides for one subscription (Centrifugo's
/// `override`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Override {
    /// Keep presence.
    pub presence: Option<BoolValue>,
    /// Announce joins and leaves.
    pub join_leave: Option<BoolValue>,
    /// Send join/leave pushes whether or not the client asked.
    pub force_push_join_leave: Option<BoolValue>,
    /// Make the subscription recoverable.
    pub force_recovery: Option<BoolValue>,
    /// Make the subscription positioned.
    pub force_positioning: Option<BoolValue>,
}

/// `publish` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishResult {
    /// Published instead of the client's data.
    pub data: Option<Raw>,
    /// Keep it out of history.
    pub skip_history: bool,
}

/// `rpc` result.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RpcResult {
    /// Sent back to the client as the rpc reply's `data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
}

/// An error the backend returned for the client: passed on with its code and message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct BackendError {
    /// 400–1999 (Centrifugo's range for application errors).
    pub code: u32,
    /// Shown to the client.
    #[serde(default)]
    pub message: String,
    /// The client may retry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

/// A disconnect the backend asked for: the connection is closed with it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BackendDisconnect {
    /// 4000–4999 (4000–4499: the client reconnects; 4500–4999: it does not).
    pub code: u16,
    /// Close reason (cut to the 123 bytes of a close frame when sent).
    #[serde(default)]
    pub reason: String,
}

/// The backend's whole answer.
#[derive(Debug, Deserialize)]
pub(super) struct Answer<T> {
    pub result: Option<T>,
    pub error: Option<BackendError>,
    pub disconnect: Option<BackendDisconnect>,
}
