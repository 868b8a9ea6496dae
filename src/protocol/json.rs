//! JSON codec of the client protocol: one frame holds one or more objects separated by `\n`.
//! Pure functions: bytes in, typed values out, and back.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::types::*;

/// A decoded client command.
#[derive(Debug)]
pub struct Command {
    /// Command id (> 0, except `send` and pong).
    pub id: u32,
    /// What the client asks for.
    pub method: Method,
}

/// The method of a command with its request.
#[derive(Debug)]
pub enum Method {
    /// `connect`
    Connect(ConnectRequest),
    /// `subscribe`
    Subscribe(SubscribeRequest),
    /// `unsubscribe`
    Unsubscribe(ChannelRequest),
    /// `publish`
    Publish(PublishRequest),
    /// `presence`
    Presence(ChannelRequest),
    /// `presence_stats`
    PresenceStats(ChannelRequest),
    /// `history`
    History(HistoryRequest),
    /// `rpc`
    Rpc(RpcRequest),
    /// `send` (no id, no reply)
    Send(SendRequest),
    /// `refresh`
    Refresh(RefreshRequest),
    /// `sub_refresh`
    SubRefresh(SubRefreshRequest),
    /// The empty object `{}`: the client's pong.
    Pong,
    /// An object with an id but no method this server knows (answered with 104).
    Unknown,
}

impl Method {
    /// The key the reply's result goes under.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Connect(_) => "connect",
            Method::Subscribe(_) => "subscribe",
            Method::Unsubscribe(_) => "unsubscribe",
            Method::Publish(_) => "publish",
            Method::Presence(_) => "presence",
            Method::PresenceStats(_) => "presence_stats",
            Method::History(_) => "history",
            Method::Rpc(_) => "rpc",
            Method::Send(_) => "send",
            Method::Refresh(_) => "refresh",
            Method::SubRefresh(_) => "sub_refresh",
            Method::Pong => "pong",
            Method::Unknown => "unknown",
        }
    }
}

/// Why a line could not be decoded into a command (all are protocol violations: 3501).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a JSON object of the expected shape.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// More than one method in one object.
    #[error("more than one method in a command")]
    SeveralMethods,
    /// A command other than `send` without an id.
    #[error("command without id")]
    MissingId,
    /// Protobuf: binary (non-JSON) `data` in a request whose data only a proxy hook reads
    /// (connect, subscribe, rpc): the hooks' bodies are JSON.
    #[error("binary data where only JSON can be passed on")]
    BinaryData,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    id: u32,
    connect: Option<ConnectRequest>,
    subscribe: Option<SubscribeRequest>,
    unsubscribe: Option<ChannelRequest>,
    publish: Option<PublishRequest>,
    presence: Option<ChannelRequest>,
    presence_stats: Option<ChannelRequest>,
    history: Option<HistoryRequest>,
    rpc: Option<RpcRequest>,
    send: Option<SendRequest>,
    refresh: Option<RefreshRequest>,
    sub_refresh: Option<SubRefreshRequest>,
}

/// Deepest JSON nesting accepted in a command (embedded `data` included): raw values are
/// passed to subscribers untouched, and their parsers have depth limits of their own.
pub const MAX_DEPTH: usize = 64;

/// Whether `json` nests arrays/objects at most `max` deep (one pass; strings are skipped).
pub fn depth_within(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Decodes one line (one JSON object) into a command.
pub fn decode_command(line: &[u8]) -> Result<Command, DecodeError> {
    if !depth_within(line, MAX_DEPTH) {
        return Err(DecodeError::Malformed("nesting too deep".into()));
    }
    let w: Wire =
        serde_json::from_slice(line).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let mut methods = Vec::with_capacity(1);
    macro_rules! take {
        ($field:ident, $variant:ident) => {
            if let Some(r) = w.$field {
                methods.push(Method::$variant(r));
            }
        };
    }
    take!(connect, Connect);
    take!(subscribe, Subscribe);
    take!(unsubscribe, Unsubscribe);
    take!(publish, Publish);
    take!(presence, Presence);
    take!(presence_stats, PresenceStats);
    take!(history, History);
    take!(rpc, Rpc);
    take!(send, Send);
    take!(refresh, Refresh);
    take!(sub_refresh, SubRefresh);
    if methods.len() > 1 {
        return Err(DecodeError::SeveralMethods);
    }
    let method = match methods.pop() {
        Some(m) => m,
        None if w.id == 0 => Method::Pong,
        None => Method::Unknown,
    };
    if w.id == 0 && !matches!(method, Method::Send(_) | Method::Pong) {
        return Err(DecodeError::MissingId);
    }
    Ok(Command { id: w.id, method })
}

/// Splits a frame into its non-empty lines (objects are separated by `\n`).
pub fn lines(frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    frame
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
}

fn write_json<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) {
    // Serialising our own types into a Vec cannot fail (no maps with non-string keys).
    serde_json::to_writer(&mut *buf, v).expect("serialisable");
}

/// `{"id":N,"<method>":<result>}`.
pub fn encode_reply<T: Serialize>(id: u32, method: &str, result: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"{\"id\":");
    buf.extend_from_slice(id.to_string().as_bytes());
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(method.as_bytes());
    buf.extend_from_slice(b"\":");
    write_json(&mut buf, result);
    buf.push(b'}');
    buf
}

/// `{"id":N,"error":{"code":C,"message":"…"}}`: an [`ErrorCode`](super::codes::ErrorCode),
/// or an application's error of the same shape passed on from a proxy.
pub fn encode_error<E: Serialize>(id: u32, err: &E) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"{\"id\":");
    buf.extend_from_slice(id.to_string().as_bytes());
    buf.extend_from_slice(b",\"error\":");
    write_json(&mut buf, err);
    buf.push(b'}');
    buf
}

/// `{"push":{"channel":"…","<kind>":<body>}}`, encoded once and shared by every receiver.
pub fn encode_push<T: Serialize + ?Sized>(channel: &str, kind: &str, body: &T) -> Bytes {
    let mut buf = Vec::with_capacity(96 + channel.len());
    buf.extend_from_slice(b"{\"push\":{\"channel\":");
    write_json(&mut buf, channel);
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\":");
    write_json(&mut buf, body);
    buf.extend_from_slice(b"}}");
    Bytes::from(buf)
}

/// The server ping: an empty object.
pub const PING: &[u8] = b"{}";

/// `{"push":{"disconnect":{"code":C,"reason":"…"}}}`: how a connection that has no close
/// frame (HTTP streaming, SSE, the unidirectional transports) learns why it ends.
pub fn encode_disconnect_push(code: u16, reason: &str) -> Bytes {
    #[derive(Serialize)]
    struct D<'a> {
        code: u16,
        reason: &'a str,
    }
    let mut buf = Vec::with_capacity(64 + reason.len());
    buf.extend_from_slice(b"{\"push\":{\"disconnect\":");
    write_json(&mut buf, &D { code, reason });
    buf.extend_from_slice(b"}}");
    Bytes::from(buf)
}

/// The unidirectional form of a message the session queued: a push without its `{"push":…}`
/// wrapper (`{"channel":"…","pub":{…}}`, `{"disconnect":{…}}`), the connect reply of command
/// id 0 as the connect push `{"connect":{…}}`, the ping as it is; `None` for anything else
/// (replies to commands a unidirectional client cannot send).
pub fn uni_push(msg: &Bytes) -> Option<Bytes> {
    const PUSH: &[u8] = b"{\"push\":";
    const CONNECT: &[u8] = b"{\"id\":0,\"connect\":";
    if msg.starts_with(PUSH) && msg.ends_with(b"}") {
        return Some(msg.slice(PUSH.len()..msg.len() - 1));
    }
    if msg.starts_with(CONNECT) {
        let mut buf = Vec::with_capacity(msg.len());
        buf.extend_from_slice(b"{\"connect\":");
        buf.extend_from_slice(&msg[CONNECT.len()..]);
        return Some(Bytes::from(buf));
    }
    (msg.as_ref() == PING).then(|| msg.clone())
}

/// Decodes a unidirectional connect request: a bare `ConnectRequest` object (`{"token":…}`).
pub fn decode_connect_request(body: &[u8]) -> Result<ConnectRequest, DecodeError> {
    if !depth_within(body, MAX_DEPTH) {
        return Err(DecodeError::Malformed("nesting too deep".into()));
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// A client-to-server emulation request (`POST /emulation`): the session it is for and the
/// commands, encoded as on a WebSocket.
#[derive(Debug, Deserialize)]
pub struct EmulationRequest {
    /// Emulation session id from the connect result.
    pub session: String,
    /// The node name from the connect result (informational: the session id names the node).
    #[serde(default)]
    pub node: String,
    /// The commands, as one WebSocket message would carry them.
    pub data: String,
}

/// Decodes an emulation request.
pub fn decode_emulation_request(body: &[u8]) -> Result<EmulationRequest, DecodeError> {
    if !depth_within(body, MAX_DEPTH) {
        return Err(DecodeError::Malformed("nesting too deep".into()));
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_connect_and_ignores_unknown_fields() {
        let c =
            decode_command(br#"{"id":1,"connect":{"token":"t","name":"js","flag":3}}"#).unwrap();
        assert_eq!(c.id, 1);
        match c.method {
            Method::Connect(r) => {
                assert_eq!(r.token, "t");
                assert_eq!(r.name, "js");
            }
            m => panic!("unexpected {m:?}"),
        }
    }

    #[test]
    fn empty_object_is_pong_and_send_needs_no_id() {
        assert!(matches!(
            decode_command(b"{}").unwrap().method,
            Method::Pong
        ));
        assert!(matches!(
            decode_command(br#"{"send":{"data":{"a":1}}}"#)
                .unwrap()
                .method,
            Method::Send(_)
        ));
    }

    #[test]
    fn rejects_missing_id_several_methods_and_garbage() {
        assert_eq!(
            decode_command(br#"{"publish":{"channel":"a","data":1}}"#).unwrap_err(),
            DecodeError::MissingId
        );
        assert_eq!(
            decode_command(br#"{"id":2,"publish":{},"presence":{}}"#).unwrap_err(),
            DecodeError::SeveralMethods
        );
        assert!(decode_command(b"{\"id\":").is_err());
        assert!(decode_command(b"[1,2]").is_err());
        assert!(decode_command(br#"{"id":-1,"publish":{}}"#).is_err());
        assert!(decode_command(br#"{"id":99999999999,"publish":{}}"#).is_err());
        assert!(decode_command(br#"{"id":1,"publish":{"channel":5}}"#).is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let cmd = format!(r#"{{"id":1,"publish":{{"channel":"a","data":{deep}}}}}"#);
        assert!(decode_command(cmd.as_bytes()).is_err(), "recursion limit");
    }

    #[test]
    fn depth_counts_only_structure() {
        assert!(depth_within(br#"{"a":[[1]]}"#, 3));
        assert!(!depth_within(br#"{"a":[[1]]}"#, 2));
        assert!(
            depth_within(br#"{"a":"[[[[[[\"[[["}"#, 1),
            "brackets inside strings"
        );
    }

    #[test]
    fn unknown_method_with_id_is_unknown() {
        assert!(matches!(
            decode_command(br#"{"id":3,"frobnicate":{}}"#)
                .unwrap()
                .method,
            Method::Unknown
        ));
    }

    #[test]
    fn data_stays_raw() {
        let c =
            decode_command(br#"{"id":1,"publish":{"channel":"a","data":{"x": 1.50}}}"#).unwrap();
        let Method::Publish(p) = c.method else {
            panic!()
        };
        let Some(Payload::Json(data)) = p.data else {
            panic!()
        };
        assert_eq!(data.get(), r#"{"x": 1.50}"#);
    }

    #[test]
    fn lines_split_on_newlines_and_skip_blanks() {
        let v: Vec<_> = lines(b"{\"id\":1}\n\n{}\r\n  \n").collect();
        assert_eq!(v, vec![&b"{\"id\":1}"[..], &b"{}"[..]]);
    }

    #[test]
    fn encodes_reply_error_and_push() {
        assert_eq!(
            encode_reply(7, "publish", &Empty {}),
            br#"{"id":7,"publish":{}}"#
        );
        assert_eq!(
            encode_error(2, &crate::protocol::codes::TOO_MANY_REQUESTS),
            br#"{"id":2,"error":{"code":111,"message":"too many requests","temporary":true}}"#
        );
        let pubn = Publication {
            offset: 3,
            data: serde_json::value::RawValue::from_string("{\"a\":1}".into()).unwrap(),
            binary: false,
            info: None,
            tags: None,
        };
        assert_eq!(
            &encode_push("ch\"x", "pub", &pubn)[..],
            br#"{"push":{"channel":"ch\"x","pub":{"offset":3,"data":{"a":1}}}}"#
        );
        let stats = PresenceStatsResult::default();
        assert_eq!(
            encode_reply(1, "presence_stats", &stats),
            br#"{"id":1,"presence_stats":{"num_clients":0,"num_users":0}}"#
        );
        assert_eq!(
            encode_reply(1, "presence", &PresenceResult::default()),
            br#"{"id":1,"presence":{"presence":{}}}"#
        );
    }

    #[test]
    fn unidirectional_forms() {
        let push = encode_push("ch", "pub", &serde_json::json!({"data": 1}));
        assert_eq!(
            uni_push(&push).unwrap().as_ref(),
            br#"{"channel":"ch","pub":{"data":1}}"#
        );
        let connect = Bytes::from(encode_reply(
            0,
            "connect",
            &serde_json::json!({"client": "c"}),
        ));
        assert_eq!(
            uni_push(&connect).unwrap().as_ref(),
            br#"{"connect":{"client":"c"}}"#
        );
        let bye = encode_disconnect_push(3500, "invalid token");
        assert_eq!(
            uni_push(&bye).unwrap().as_ref(),
            br#"{"disconnect":{"code":3500,"reason":"invalid token"}}"#
        );
        assert_eq!(uni_push(&Bytes::from_static(PING)).unwrap().as_ref(), PING);
        let reply = Bytes::from(encode_reply(3, "presence", &PresenceResult::default()));
        assert!(uni_push(&reply).is_none());
        assert!(decode_connect_request(br#"{"token":"t","subs":{"a":{"recover":true}}}"#).is_ok());
        assert!(decode_connect_request(b"[1]").is_err());
        let e = decode_emulation_request(br#"{"session":"1-x","node":"n","data":"{}"}"#).unwrap();
        assert_eq!((e.session.as_str(), e.data.as_str()), ("1-x", "{}"));
        assert!(decode_emulation_request(br#"{"session":"1-x"}"#).is_err());
    }
}
