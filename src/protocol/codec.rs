//! The two encodings of the client protocol behind one interface: JSON (text messages, objects
//! joined by `\n`) and Protobuf (binary messages, varint-length-delimited). A connection's
//! encoding is fixed at the upgrade (the `centrifuge-protobuf` subprotocol); everything the
//! server sends goes through [`Encoding`], so the session and the hub never name a format.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::json::DecodeError;
use super::types::*;
use super::{json, protobuf};

/// How a connection's messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON in text frames.
    #[default]
    Json,
    /// Protobuf in binary frames.
    Protobuf,
}

/// The result a reply carries, by method.
#[derive(Debug)]
pub enum ReplyBody<'a> {
    /// `connect`
    Connect(&'a ConnectResult),
    /// `subscribe`
    Subscribe(&'a SubscribeResult),
    /// `unsubscribe` (empty)
    Unsubscribe,
    /// `publish` (empty)
    Publish,
    /// `presence`
    Presence(&'a PresenceResult),
    /// `presence_stats`
    PresenceStats(&'a PresenceStatsResult),
    /// `history`
    History(&'a HistoryResult),
    /// `rpc`: the backend's data, if any.
    Rpc(Option<&'a RawValue>),
    /// `refresh`
    Refresh(&'a RefreshResult),
    /// `sub_refresh`
    SubRefresh(&'a SubRefreshResult),
}

/// What a push carries.
#[derive(Debug)]
pub enum PushBody<'a> {
    /// A publication.
    Pub(&'a Publication),
    /// Someone joined.
    Join(&'a ClientInfo),
    /// Someone left.
    Leave(&'a ClientInfo),
    /// A server-side subscription.
    Subscribe(&'a SubscribeResult),
    /// A server-side unsubscribe.
    Unsubscribe {
        /// Unsubscribe code.
        code: u32,
        /// Reason.
        reason: &'a str,
    },
}

#[derive(Serialize)]
struct JsonError<'a> {
    code: u32,
    message: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    temporary: bool,
}

#[derive(Serialize)]
struct JsonRpc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

/// A client-to-server emulation request (`POST /emulation`), whichever its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulationRequest {
    /// The emulation session id from the connect result.
    pub session: String,
    /// The commands, as one WebSocket message of the encoding would carry them.
    pub data: Bytes,
}

impl Encoding {
    /// Decodes an emulation request in this encoding: JSON
    /// `{"session":…,"node":…,"data":"<commands>"}`, or a Protobuf `EmulationRequest`.
    pub fn decode_emulation_request(self, body: &[u8]) -> Result<EmulationRequest, DecodeError> {
        Ok(match self {
            Encoding::Json => {
                let r = json::decode_emulation_request(body)?;
                EmulationRequest {
                    session: r.session,
                    data: Bytes::from(r.data),
                }
            }
            Encoding::Protobuf => {
                let r = protobuf::decode_emulation_request(body)?;
                EmulationRequest {
                    session: r.session,
                    data: Bytes::from(r.data),
                }
            }
        })
    }

    /// The disconnect push (the emulation transports, which have no close frame).
    pub fn disconnect_push(self, code: u16, reason: &str) -> Bytes {
        match self {
            Encoding::Json => json::encode_disconnect_push(code, reason),
            Encoding::Protobuf => protobuf::encode_disconnect_push(code, reason),
        }
    }

    /// Frames of this encoding are text (JSON) rather than binary (Protobuf).
    pub fn text(self) -> bool {
        self == Encoding::Json
    }

    /// What goes between two messages in one frame: `\n` for JSON; nothing for Protobuf,
    /// whose messages carry their own length.
    pub fn separator(self) -> &'static [u8] {
        match self {
            Encoding::Json => b"\n",
            Encoding::Protobuf => b"",
        }
    }

    /// The server's ping.
    pub fn ping(self) -> Bytes {
        Bytes::from_static(match self {
            Encoding::Json => json::PING,
            Encoding::Protobuf => protobuf::PING,
        })
    }

    /// A reply to command `id`.
    pub fn reply(self, id: u32, body: &ReplyBody<'_>) -> Vec<u8> {
        if self == Encoding::Protobuf {
            return protobuf::encode_reply(id, body);
        }
        match body {
            ReplyBody::Connect(r) => json::encode_reply(id, "connect", r),
            ReplyBody::Subscribe(r) => json::encode_reply(id, "subscribe", r),
            ReplyBody::Unsubscribe => json::encode_reply(id, "unsubscribe", &Empty {}),
            ReplyBody::Publish => json::encode_reply(id, "publish", &Empty {}),
            ReplyBody::Presence(r) => json::encode_reply(id, "presence", r),
            ReplyBody::PresenceStats(r) => json::encode_reply(id, "presence_stats", r),
            ReplyBody::History(r) => json::encode_reply(id, "history", r),
            ReplyBody::Rpc(data) => json::encode_reply(id, "rpc", &JsonRpc { data: *data }),
            ReplyBody::Refresh(r) => json::encode_reply(id, "refresh", r),
            ReplyBody::SubRefresh(r) => json::encode_reply(id, "sub_refresh", r),
        }
    }

    /// An error reply to command `id`.
    pub fn error(self, id: u32, code: u32, message: &str, temporary: bool) -> Vec<u8> {
        match self {
            Encoding::Json => json::encode_error(
                id,
                &JsonError {
                    code,
                    message,
                    temporary,
                },
            ),
            Encoding::Protobuf => protobuf::encode_error(id, code, message, temporary),
        }
    }

    /// A push on `channel`.
    pub fn push(self, channel: &str, body: &PushBody<'_>) -> Bytes {
        if self == Encoding::Protobuf {
            return protobuf::encode_push(channel, body);
        }
        match body {
            PushBody::Pub(p) => json::encode_push(channel, "pub", &p.view()),
            PushBody::Join(info) => json::encode_push(channel, "join", &JoinLeave { info }),
            PushBody::Leave(info) => json::encode_push(channel, "leave", &JoinLeave { info }),
            PushBody::Subscribe(r) => json::encode_push(channel, "subscribe", r),
            PushBody::Unsubscribe { code, reason } => json::encode_push(
                channel,
                "unsubscribe",
                &UnsubscribePush {
                    code: *code,
                    reason,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_client_gets_binary_data_as_a_base64_string_without_the_mark() {
        let (data, binary) = Payload::Binary(vec![0xde, 0xad]).into_stored();
        let p = Publication {
            offset: 1,
            data,
            binary,
            info: None,
            tags: None,
        };
        assert_eq!(
            &Encoding::Json.push("c", &PushBody::Pub(&p))[..],
            br#"{"push":{"channel":"c","pub":{"offset":1,"data":"3q0="}}}"#
        );
        let stored = serde_json::to_string(&p).unwrap();
        assert!(stored.contains(r#""binary":true"#), "{stored}");
        let back: Publication = serde_json::from_str(&stored).unwrap();
        assert_eq!(back.payload_bytes(), [0xde, 0xad]);
        let h = HistoryResult {
            publications: vec![std::sync::Arc::new(back)],
            ..Default::default()
        };
        let r = Encoding::Json.reply(3, &ReplyBody::History(&h));
        assert_eq!(
            r,
            br#"{"id":3,"history":{"publications":[{"offset":1,"data":"3q0="}]}}"#
        );
    }

    #[test]
    fn errors_have_the_same_shape_as_before() {
        let e = crate::protocol::codes::TOO_MANY_REQUESTS;
        assert_eq!(
            Encoding::Json.error(2, e.code, e.message, e.temporary),
            json::encode_error(2, &e)
        );
        assert_eq!(
            Encoding::Json.reply(4, &ReplyBody::Rpc(None)),
            br#"{"id":4,"rpc":{}}"#
        );
    }
}
