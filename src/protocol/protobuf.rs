//! Protobuf codec of the client protocol: a binary WebSocket message holds one or more
//! varint-length-delimited `Command`s (client → server) or `Reply`s (server → client).
//! Pure functions: bytes in, the same typed commands as the JSON codec out, and back.
//!
//! Bad input never allocates beyond the message it came in: a declared length is checked
//! against what is left of the message before anything is read, so the cap on a message
//! (`client.max_message_size`, enforced by the reader) bounds everything here.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;

use super::codec::{PushBody, ReplyBody};
use super::json::{Command, DecodeError, Method};
use super::proto as pb;
use super::types::*;

/// The server ping: an empty `Reply`, length-delimited (one zero byte).
pub const PING: &[u8] = &[0];

/// Why a frame's length prefix is unusable (a [`DecodeError`] otherwise).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A command longer than `client.max_message_size` (1009, like an oversized frame).
    #[error("command of {0} bytes is over the message size limit")]
    TooBig(u64),
    /// A truncated or malformed length, or a command (3501).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Splits a binary message into its commands' bytes, in order. Stops at the first bad prefix:
/// a varint that is truncated or over 10 bytes, a length over `max` ([`FrameError::TooBig`]) or
/// past the end of the message.
pub fn split(mut frame: &[u8], max: usize) -> impl Iterator<Item = Result<&[u8], FrameError>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || frame.is_empty() {
            return None;
        }
        let mut buf = frame;
        let r = match prost::encoding::decode_varint(&mut buf) {
            Err(_) => Err(DecodeError::Malformed("bad length prefix".into()).into()),
            Ok(len) if len > max as u64 => Err(FrameError::TooBig(len)),
            Ok(len) if len > buf.len() as u64 => {
                Err(DecodeError::Malformed("truncated command".into()).into())
            }
            Ok(len) => {
                let (cmd, rest) = buf.split_at(len as usize);
                frame = rest;
                Ok(cmd)
            }
        };
        failed = r.is_err();
        Some(r)
    })
}

/// Bytes → an optional raw JSON value for the fields only proxies read (`data` of connect,
/// subscribe, rpc): empty is none, JSON is passed on; other bytes cannot be carried in the
/// proxy's JSON body and are refused (107, or 3501 for connect).
fn opt_json(b: Vec<u8>) -> Result<Option<Raw>, DecodeError> {
    if b.is_empty() {
        return Ok(None);
    }
    match Payload::from_bytes(b) {
        Payload::Json(raw) => Ok(Some(raw)),
        Payload::Binary(_) => Err(DecodeError::BinaryData),
    }
}

fn subscribe_request(r: pb::SubscribeRequest) -> Result<SubscribeRequest, DecodeError> {
    Ok(SubscribeRequest {
        channel: r.channel,
        token: r.token,
        data: opt_json(r.data)?,
        recover: r.recover,
        offset: r.offset,
        epoch: r.epoch,
        positioned: r.positioned,
        recoverable: r.recoverable,
        join_leave: r.join_leave,
        flag: r.flag as u64,
        kind: r.r#type as u64,
        delta: r.delta,
    })
}

fn channel(r: pb::ChannelRequest) -> ChannelRequest {
    ChannelRequest { channel: r.channel }
}

/// Decodes one command's bytes (without its length prefix).
pub fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    let c = pb::Command::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let mut methods = Vec::with_capacity(1);
    if let Some(r) = c.connect {
        let subs = r
            .subs
            .into_iter()
            .map(|(k, v)| Ok((k, subscribe_request(v)?)))
            .collect::<Result<HashMap<_, _>, DecodeError>>()?;
        methods.push(Method::Connect(ConnectRequest {
            token: r.token,
            data: opt_json(r.data)?,
            name: r.name,
            version: r.version,
            subs,
        }));
    }
    if let Some(r) = c.subscribe {
        methods.push(Method::Subscribe(subscribe_request(r)?));
    }
    if let Some(r) = c.unsubscribe {
        methods.push(Method::Unsubscribe(channel(r)));
    }
    if let Some(r) = c.publish {
        // An empty payload is no payload (107), as a missing `data` in JSON.
        let data = (!r.data.is_empty()).then(|| Payload::from_bytes(r.data));
        methods.push(Method::Publish(PublishRequest {
            channel: r.channel,
            data,
        }));
    }
    if let Some(r) = c.presence {
        methods.push(Method::Presence(channel(r)));
    }
    if let Some(r) = c.presence_stats {
        methods.push(Method::PresenceStats(channel(r)));
    }
    if let Some(r) = c.history {
        methods.push(Method::History(HistoryRequest {
            channel: r.channel,
            limit: r.limit.into(),
            since: r.since.map(|s| StreamPosition {
                offset: s.offset,
                epoch: s.epoch,
            }),
            reverse: r.reverse,
        }));
    }
    if c.ping.is_some() {
        methods.push(Method::Unknown);
    }
    if c.send.is_some() {
        methods.push(Method::Send(SendRequest { data: None }));
    }
    if let Some(r) = c.rpc {
        methods.push(Method::Rpc(RpcRequest {
            method: r.method,
            data: opt_json(r.data)?,
        }));
    }
    if let Some(r) = c.refresh {
        methods.push(Method::Refresh(RefreshRequest { token: r.token }));
    }
    if let Some(r) = c.sub_refresh {
        methods.push(Method::SubRefresh(SubRefreshRequest {
            channel: r.channel,
            token: r.token,
        }));
    }
    if methods.len() > 1 {
        return Err(DecodeError::SeveralMethods);
    }
    let method = match methods.pop() {
        Some(m) => m,
        None if c.id == 0 => Method::Pong,
        None => Method::Unknown,
    };
    if c.id == 0 && !matches!(method, Method::Send(_) | Method::Pong) {
        return Err(DecodeError::MissingId);
    }
    Ok(Command { id: c.id, method })
}

fn bytes_of(raw: &Option<Raw>) -> Vec<u8> {
    raw.as_ref()
        .map(|r| r.get().as_bytes().to_vec())
        .unwrap_or_default()
}

fn client_info(i: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: i.user.clone(),
        client: i.client.clone(),
        conn_info: bytes_of(&i.conn_info),
        chan_info: bytes_of(&i.chan_info),
    }
}

fn publication(p: &Publication) -> pb::Publication {
    pb::Publication {
        data: p.payload_bytes(),
        info: p.info.as_ref().map(client_info),
        offset: p.offset,
        tags: p
            .tags
            .as_ref()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        delta: false,
    }
}

fn publications(v: &[Arc<Publication>]) -> Vec<pb::Publication> {
    v.iter().map(|p| publication(p)).collect()
}

fn subscribe_result(r: &SubscribeResult) -> pb::SubscribeResult {
    pb::SubscribeResult {
        expires: r.expires,
        ttl: r.ttl,
        recoverable: r.recoverable,
        epoch: r.epoch.clone(),
        publications: publications(&r.publications),
        recovered: r.recovered,
        offset: r.offset,
        positioned: r.positioned,
        data: bytes_of(&r.data),
        was_recovering: r.was_recovering,
        delta: r.delta,
    }
}

fn delimited(m: &impl prost::Message) -> Vec<u8> {
    m.encode_length_delimited_to_vec()
}

/// A reply to command `id`, length-delimited.
pub fn encode_reply(id: u32, body: &ReplyBody<'_>) -> Vec<u8> {
    let mut r = pb::Reply {
        id,
        ..Default::default()
    };
    match body {
        ReplyBody::Connect(c) => {
            r.connect = Some(pb::ConnectResult {
                client: c.client.clone(),
                version: c.version.clone(),
                expires: c.expires,
                ttl: c.ttl,
                data: bytes_of(&c.data),
                subs: c
                    .subs
                    .iter()
                    .map(|(k, v)| (k.clone(), subscribe_result(v)))
                    .collect(),
                ping: c.ping,
                pong: c.pong,
                session: c.session.clone(),
                node: c.node.clone(),
            })
        }
        ReplyBody::Subscribe(s) => r.subscribe = Some(subscribe_result(s)),
        ReplyBody::Unsubscribe => r.unsubscribe = Some(pb::Empty {}),
        ReplyBody::Publish => r.publish = Some(pb::Empty {}),
        ReplyBody::Presence(p) => {
            r.presence = Some(pb::PresenceResult {
                presence: p
                    .presence
                    .iter()
                    .map(|(k, v)| (k.clone(), client_info(v)))
                    .collect(),
            })
        }
        ReplyBody::PresenceStats(s) => {
            r.presence_stats = Some(pb::PresenceStatsResult {
                num_clients: s.num_clients,
                num_users: s.num_users,
            })
        }
        ReplyBody::History(h) => {
            r.history = Some(pb::HistoryResult {
                publications: publications(&h.publications),
                epoch: h.epoch.clone(),
                offset: h.offset,
            })
        }
        ReplyBody::Rpc(data) => {
            r.rpc = Some(pb::RpcResult {
                data: data
                    .map(|d| d.get().as_bytes().to_vec())
                    .unwrap_or_default(),
            })
        }
        ReplyBody::Refresh(f) => {
            r.refresh = Some(pb::RefreshResult {
                client: f.client.clone(),
                version: f.version.clone(),
                expires: f.expires,
                ttl: f.ttl,
            })
        }
        ReplyBody::SubRefresh(f) => {
            r.sub_refresh = Some(pb::SubRefreshResult {
                expires: f.expires,
                ttl: f.ttl,
            })
        }
    }
    delimited(&r)
}

/// An error reply to command `id`, length-delimited.
pub fn encode_error(id: u32, code: u32, message: &str, temporary: bool) -> Vec<u8> {
    delimited(&pb::Reply {
        id,
        error: Some(pb::Error {
            code,
            message: message.to_string(),
            temporary,
        }),
        ..Default::default()
    })
}

/// A push on `channel`, length-delimited; encoded once and shared by every receiver.
pub fn encode_push(channel: &str, body: &PushBody<'_>) -> Bytes {
    let mut push = pb::Push {
        channel: channel.to_string(),
        ..Default::default()
    };
    match body {
        PushBody::Pub(p) => push.r#pub = Some(publication(p)),
        PushBody::Join(i) => {
            push.join = Some(pb::JoinLeave {
                info: Some(client_info(i)),
            })
        }
        PushBody::Leave(i) => {
            push.leave = Some(pb::JoinLeave {
                info: Some(client_info(i)),
            })
        }
        PushBody::Subscribe(s) => {
            push.subscribe = Some(pb::Subscribe {
                recoverable: s.recoverable,
                epoch: s.epoch.clone(),
                offset: s.offset,
                positioned: s.positioned,
                data: bytes_of(&s.data),
            })
        }
        PushBody::Unsubscribe { code, reason } => {
            push.unsubscribe = Some(pb::Unsubscribe {
                code: *code,
                reason: reason.to_string(),
            })
        }
    }
    Bytes::from(delimited(&pb::Reply {
        push: Some(push),
        ..Default::default()
    }))
}

/// The disconnect push of the emulation transports, length-delimited:
/// `Reply{push:{disconnect:{code, reason}}}`.
pub fn encode_disconnect_push(code: u16, reason: &str) -> Bytes {
    Bytes::from(delimited(&pb::Reply {
        push: Some(pb::Push {
            disconnect: Some(pb::Disconnect {
                code: code.into(),
                reason: reason.to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// Decodes the body of a Protobuf `POST /emulation`: one `EmulationRequest`, not
/// length-delimited (as centrifuge-js sends it). A request without a session is malformed.
pub fn decode_emulation_request(body: &[u8]) -> Result<pb::EmulationRequest, DecodeError> {
    let r =
        pb::EmulationRequest::decode(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if r.session.is_empty() {
        return Err(DecodeError::Malformed("no session".into()));
    }
    Ok(r)
}

/// A publication push to a Protobuf delta subscriber whose data is `patch`, the Fossil delta
/// from the previous publication's payload bytes; length-delimited, shared like any push.
pub fn encode_delta_push(channel: &str, p: &Publication, patch: Vec<u8>) -> Bytes {
    let mut body = publication(p);
    body.data = patch;
    body.delta = true;
    Bytes::from(delimited(&pb::Reply {
        push: Some(pb::Push {
            channel: channel.to_string(),
            r#pub: Some(body),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn raw(s: &str) -> Raw {
        RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn emulation_request_and_disconnect_push_have_client_proto_field_numbers() {
        // As centrifuge-js's Protobuf build writes them: node 1, session 2, data 3.
        let body = [0x0a, 1, b'n', 0x12, 3, b'1', b'-', b'x', 0x1a, 2, 1, 0];
        let r = decode_emulation_request(&body).unwrap();
        assert_eq!(
            (&r.node[..], &r.session[..], &r.data[..]),
            ("n", "1-x", &[1, 0][..])
        );
        assert!(
            decode_emulation_request(&[0x0a, 1, b'n']).is_err(),
            "no session"
        );
        assert!(
            decode_emulation_request(&[0x12, 0x80]).is_err(),
            "truncated varint"
        );
        assert!(
            decode_emulation_request(&[0x10, 1]).is_err(),
            "wrong wire type"
        );
        // Reply{push(4){disconnect(11){code(1) 3011, reason(2) "x"}}}, length-delimited.
        let d = encode_disconnect_push(3011, "x");
        assert_eq!(
            &d[..],
            &[10, 0x22, 8, 0x5a, 6, 0x08, 0xc3, 0x17, 0x12, 1, b'x']
        );
    }

    fn frame(cmds: &[pb::Command]) -> Vec<u8> {
        cmds.iter()
            .flat_map(|c| c.encode_length_delimited_to_vec())
            .collect()
    }

    fn decode_all(f: &[u8], max: usize) -> Vec<Result<Command, FrameError>> {
        split(f, max)
            .map(|r| r.and_then(|b| decode_command(b).map_err(Into::into)))
            .collect()
    }

    #[test]
    fn decodes_several_commands_of_one_message() {
        let f = frame(&[
            pb::Command {
                id: 1,
                connect: Some(pb::ConnectRequest {
                    token: "t".into(),
                    name: "py".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::Command {
                id: 2,
                publish: Some(pb::PublishRequest {
                    channel: "c".into(),
                    data: vec![0xff, 0],
                }),
                ..Default::default()
            },
            pb::Command::default(),
        ]);
        let v = decode_all(&f, 1 << 20);
        assert_eq!(v.len(), 3);
        match &v[0].as_ref().unwrap().method {
            Method::Connect(r) => assert_eq!((r.token.as_str(), r.name.as_str()), ("t", "py")),
            m => panic!("{m:?}"),
        }
        match &v[1].as_ref().unwrap().method {
            Method::Publish(PublishRequest {
                channel,
                data: Some(Payload::Binary(b)),
            }) => assert_eq!((channel.as_str(), &b[..]), ("c", &[0xff, 0][..])),
            m => panic!("{m:?}"),
        }
        assert!(matches!(v[2].as_ref().unwrap().method, Method::Pong));
    }

    #[test]
    fn json_bytes_stay_json() {
        let f = frame(&[pb::Command {
            id: 3,
            publish: Some(pb::PublishRequest {
                channel: "c".into(),
                data: br#"{"a":1}"#.to_vec(),
            }),
            ..Default::default()
        }]);
        match decode_all(&f, 1 << 20).remove(0).unwrap().method {
            Method::Publish(PublishRequest {
                data: Some(Payload::Json(r)),
                ..
            }) => assert_eq!(r.get(), r#"{"a":1}"#),
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            Payload::from_bytes(b" 1".to_vec()),
            Payload::Binary(_)
        ));
        assert!(matches!(
            Payload::from_bytes(b"\"x\"".to_vec()),
            Payload::Json(_)
        ));
    }

    #[test]
    fn bad_prefixes_and_bodies_are_errors_not_panics() {
        // Truncated varint, 11-byte varint, length past the end, length over the cap.
        for (f, want_too_big) in [
            (&[0x80u8][..], false),
            (&[0xff; 11][..], false),
            (&[5, 8, 1][..], false),
            (&[0xff, 0xff, 0xff, 0xff, 0x0f][..], true),
        ] {
            let v = decode_all(f, 1024);
            assert_eq!(v.len(), 1, "{f:?}");
            assert_eq!(
                matches!(v[0], Err(FrameError::TooBig(_))),
                want_too_big,
                "{f:?}"
            );
            assert!(v[0].is_err());
        }
        // Field 1 (id) with wire type 2 (length-delimited) instead of a varint.
        assert!(decode_command(&[0x0a, 1, 0]).is_err());
        // Field 4 (connect) as a varint.
        assert!(decode_command(&[0x20, 1]).is_err());
        // A good command then garbage: the first is decoded, then the error, then nothing.
        let mut f = frame(&[pb::Command {
            id: 1,
            presence: Some(pb::ChannelRequest {
                channel: "c".into(),
            }),
            ..Default::default()
        }]);
        f.extend_from_slice(&[9, 1]);
        let v = decode_all(&f, 1024);
        assert_eq!(v.len(), 2);
        assert!(v[0].is_ok() && v[1].is_err());
    }

    #[test]
    fn missing_id_several_methods_and_unknown() {
        let publish = Some(pb::PublishRequest {
            channel: "c".into(),
            data: b"1".to_vec(),
        });
        let no_id = pb::Command {
            publish: publish.clone(),
            ..Default::default()
        };
        assert_eq!(
            decode_command(&no_id.encode_to_vec()).unwrap_err(),
            DecodeError::MissingId
        );
        let two = pb::Command {
            id: 1,
            publish,
            presence: Some(pb::ChannelRequest::default()),
            ..Default::default()
        };
        assert_eq!(
            decode_command(&two.encode_to_vec()).unwrap_err(),
            DecodeError::SeveralMethods
        );
        // An id and only a field this server does not know (tag 20): method not found.
        let unknown = [0x08, 7, 0xa2, 0x01, 0];
        let c = decode_command(&unknown).unwrap();
        assert_eq!(c.id, 7);
        assert!(matches!(c.method, Method::Unknown));
    }

    #[test]
    fn replies_and_pushes_round_trip_through_the_wire_types() {
        let p = Publication {
            offset: 4,
            data: Payload::Binary(vec![1, 2, 255]).into_stored().0,
            binary: true,
            info: Some(ClientInfo {
                user: "u".into(),
                client: "c".into(),
                conn_info: Some(raw(r#"{"n":1}"#)),
                chan_info: None,
            }),
            tags: None,
        };
        let b = encode_push("ch", &PushBody::Pub(&p));
        let r = pb::Reply::decode_length_delimited(&b[..]).unwrap();
        let push = r.push.unwrap();
        assert_eq!(push.channel, "ch");
        let got = push.r#pub.unwrap();
        assert_eq!((got.offset, &got.data[..]), (4, &[1, 2, 255][..]));
        assert_eq!(got.info.unwrap().conn_info, br#"{"n":1}"#);
        let e = encode_error(9, 103, "permission denied", false);
        let r = pb::Reply::decode_length_delimited(&e[..]).unwrap();
        assert_eq!((r.id, r.error.unwrap().code), (9, 103));
        let h = HistoryResult {
            publications: vec![Arc::new(p)],
            epoch: "e".into(),
            offset: 4,
        };
        let r = pb::Reply::decode_length_delimited(&encode_reply(2, &ReplyBody::History(&h))[..])
            .unwrap();
        assert_eq!(r.history.unwrap().publications[0].data, [1, 2, 255]);
        assert_eq!(
            pb::Reply::decode_length_delimited(PING).unwrap(),
            pb::Reply::default()
        );
    }
}
