//! The Protobuf form of the client protocol over a real WebSocket (subprotocol
//! `centrifuge-protobuf`): a Protobuf and a JSON client on one channel, binary payloads (the
//! API's `b64data`, a Protobuf client's bytes) and what each side receives, and bad input
//! (truncated and oversized lengths, wrong wire types, unknown methods) closing with the
//! documented codes. The official SDKs in Protobuf mode run in tests/compat.rs.

mod common;

use std::collections::VecDeque;

use base64::Engine as _;
use common::*;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::json;
use switchyard::protocol::proto as pb;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A Protobuf client: length-delimited `Command`s out, `Reply`s in; answers the server's
/// pings (empty replies) with an empty command, as the SDKs do.
struct PbClient {
    ws: Ws,
    inbox: VecDeque<pb::Reply>,
    next_id: u32,
    /// Pings received.
    pings: usize,
}

impl PbClient {
    async fn open(url: &str) -> PbClient {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "centrifuge-protobuf".parse().unwrap(),
        );
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(
            resp.headers()["sec-websocket-protocol"],
            "centrifuge-protobuf"
        );
        PbClient {
            ws,
            inbox: VecDeque::new(),
            next_id: 1,
            pings: 0,
        }
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.unwrap();
    }

    /// Sends `cmd` with the next id and returns the reply with that id.
    async fn call(&mut self, mut cmd: pb::Command) -> pb::Reply {
        let id = self.next_id;
        self.next_id += 1;
        cmd.id = id;
        self.send_raw(cmd.encode_length_delimited_to_vec()).await;
        loop {
            if let Some(i) = self.inbox.iter().position(|r| r.id == id) {
                return self.inbox.remove(i).unwrap();
            }
            if let Err(c) = self.fill().await {
                panic!("closed while waiting for reply {id}: {c:?}");
            }
        }
    }

    async fn fill(&mut self) -> Result<(), Closed> {
        loop {
            let msg = match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("timed out waiting for a message"),
                Ok(Some(Ok(m))) => m,
                Ok(_) => return Err(Closed::NoCode),
            };
            match msg {
                Message::Binary(b) => {
                    let mut buf = &b[..];
                    while !buf.is_empty() {
                        let r = pb::Reply::decode_length_delimited(&mut buf)
                            .expect("server sent length-delimited Replies");
                        if r == pb::Reply::default() {
                            self.pings += 1;
                            self.send_raw(vec![0]).await;
                            continue;
                        }
                        self.inbox.push_back(r);
                    }
                    return Ok(());
                }
                Message::Text(t) => panic!("text frame on a Protobuf connection: {t}"),
                Message::Close(Some(f)) => {
                    return Err(Closed::Code(u16::from(f.code), f.reason.to_string()));
                }
                Message::Close(None) => return Err(Closed::NoCode),
                _ => continue,
            }
        }
    }

    /// The next push (replies stay queued).
    async fn push(&mut self) -> pb::Push {
        loop {
            if let Some(i) = self.inbox.iter().position(|r| r.push.is_some()) {
                return self.inbox.remove(i).unwrap().push.unwrap();
            }
            if let Err(c) = self.fill().await {
                panic!("closed while waiting for a push: {c:?}");
            }
        }
    }

    /// The next join (`join`) or leave push of `user`; other pushes are skipped.
    async fn join_leave(&mut self, join: bool, user: &str) -> pb::ClientInfo {
        loop {
            let p = self.push().await;
            let jl = if join { p.join } else { p.leave };
            if let Some(info) = jl.and_then(|jl| jl.info)
                && info.user == user
            {
                return info;
            }
        }
    }

    /// The next publication on `channel`.
    async fn publication(&mut self, channel: &str) -> pb::Publication {
        loop {
            let p = self.push().await;
            if p.channel == channel
                && let Some(p) = p.r#pub
            {
                return p;
            }
        }
    }

    async fn closed(&mut self) -> Closed {
        loop {
            self.inbox.clear();
            if let Err(c) = self.fill().await {
                return c;
            }
        }
    }

    async fn connect(&mut self, user: &str) -> pb::ConnectResult {
        let r = self
            .call(pb::Command {
                connect: Some(pb::ConnectRequest {
                    token: token(user),
                    name: "rust-pb".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        r.connect
            .clone()
            .unwrap_or_else(|| panic!("connect: {r:?}"))
    }

    async fn subscribe(&mut self, req: pb::SubscribeRequest) -> pb::SubscribeResult {
        let r = self
            .call(pb::Command {
                subscribe: Some(req),
                ..Default::default()
            })
            .await;
        r.subscribe
            .clone()
            .unwrap_or_else(|| panic!("subscribe: {r:?}"))
    }
}

fn sub_req(channel: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        channel: channel.into(),
        recoverable: true,
        positioned: true,
        join_leave: true,
        ..Default::default()
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A Protobuf client and a JSON client on one channel: both receive every publication (API
/// JSON `data`, API binary `b64data`, each other's client publications) — the Protobuf
/// client the exact bytes, the JSON client JSON as it is and binary as a base64 string —
/// both see each other in presence and join/leave, and both recover what they missed.
#[tokio::test]
async fn protobuf_and_json_clients_share_a_channel() {
    let s = TestServer::start().await;
    let ch = "chat:mixed";
    let mut p = PbClient::open(&s.ws_url()).await;
    let cr = p.connect("pia").await;
    assert_eq!(cr.client.len(), 36);
    assert!(cr.ping > 0 && cr.pong);
    let sr = p.subscribe(sub_req(ch)).await;
    assert!(sr.recoverable && sr.positioned);
    let mut j = s.client("jay").await;
    let jr = j
        .call(
            "subscribe",
            json!({"channel": ch, "recoverable": true, "positioned": true, "join_leave": true}),
        )
        .await;
    let epoch = jr["subscribe"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(epoch, sr.epoch, "one stream, one epoch");

    // The JSON client's join reaches the Protobuf client.
    let info = p.join_leave(true, "jay").await;
    assert_eq!(info.client.len(), 36);

    // API publications: JSON data and binary b64data.
    s.publish(ch, json!({"n": 1})).await;
    let (st, r) = s
        .api(
            "publish",
            json!({"channel": ch, "b64data": b64(&[0, 159, 146, 150])}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["result"]["offset"], 2);
    // b64data holding one JSON value is JSON for everyone.
    s.api(
        "publish",
        json!({"channel": ch, "b64data": b64(br#"[1,"x"]"#)}),
    )
    .await;
    let got: Vec<_> = [
        p.publication(ch).await,
        p.publication(ch).await,
        p.publication(ch).await,
    ]
    .into_iter()
    .map(|x| (x.offset, x.data))
    .collect();
    assert_eq!(
        got,
        vec![
            (1, br#"{"n":1}"#.to_vec()),
            (2, vec![0, 159, 146, 150]),
            (3, br#"[1,"x"]"#.to_vec())
        ]
    );
    assert_eq!(j.publication(ch).await["data"], json!({"n": 1}));
    assert_eq!(
        j.publication(ch).await["data"],
        json!(b64(&[0, 159, 146, 150]))
    );
    assert_eq!(j.publication(ch).await["data"], json!([1, "x"]));

    // Client publications both ways; the publisher's info travels as bytes in Protobuf.
    let r = p
        .call(pb::Command {
            publish: Some(pb::PublishRequest {
                channel: ch.into(),
                data: vec![0xff, 0xfe],
            }),
            ..Default::default()
        })
        .await;
    assert!(r.publish.is_some() && r.error.is_none(), "{r:?}");
    let jp = j.publication(ch).await;
    assert_eq!(jp["data"], json!(b64(&[0xff, 0xfe])));
    assert_eq!(jp["info"]["user"], "pia");
    assert_eq!(p.publication(ch).await.data, [0xff, 0xfe]);
    j.call("publish", json!({"channel": ch, "data": {"from": "jay"}}))
        .await;
    let pp = p.publication(ch).await;
    assert_eq!(pp.data, br#"{"from":"jay"}"#);
    assert_eq!(pp.info.unwrap().user, "jay");

    // History and presence, from the Protobuf side.
    let h = p
        .call(pb::Command {
            history: Some(pb::HistoryRequest {
                channel: ch.into(),
                limit: -1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .history
        .unwrap();
    assert_eq!(h.publications.len(), 5);
    assert_eq!(h.publications[1].data, [0, 159, 146, 150]);
    assert_eq!((h.offset, h.epoch.as_str()), (5, epoch.as_str()));
    let pr = p
        .call(pb::Command {
            presence: Some(pb::ChannelRequest { channel: ch.into() }),
            ..Default::default()
        })
        .await
        .presence
        .unwrap();
    let mut users: Vec<_> = pr.presence.values().map(|i| i.user.clone()).collect();
    users.sort();
    assert_eq!(users, ["jay", "pia"]);
    let jpres = j.call("presence", json!({"channel": ch})).await;
    assert_eq!(jpres["presence"]["presence"].as_object().unwrap().len(), 2);
    let stats = p
        .call(pb::Command {
            presence_stats: Some(pb::ChannelRequest { channel: ch.into() }),
            ..Default::default()
        })
        .await
        .presence_stats
        .unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));

    // The Protobuf client leaves: the JSON client sees it; two publications are missed; the
    // Protobuf client recovers exactly them.
    drop(p);
    let leave = loop {
        let push = j.push().await;
        if push.get("leave").is_some() {
            break push;
        }
    };
    assert_eq!(leave["leave"]["info"]["user"], "pia");
    s.publish(ch, json!("m6")).await;
    s.api("publish", json!({"channel": ch, "b64data": b64(&[7])}))
        .await;
    let mut p = PbClient::open(&s.ws_url()).await;
    p.connect("pia").await;
    let rec = p
        .subscribe(pb::SubscribeRequest {
            recover: true,
            offset: 5,
            epoch: epoch.clone(),
            ..sub_req(ch)
        })
        .await;
    assert!(rec.was_recovering && rec.recovered, "{rec:?}");
    let data: Vec<_> = rec.publications.iter().map(|x| x.data.clone()).collect();
    assert_eq!(data, vec![br#""m6""#.to_vec(), vec![7]]);
    assert_eq!(j.publication(ch).await["data"], "m6");
    assert_eq!(j.publication(ch).await["data"], json!(b64(&[7])));

    // The JSON client recovers across a reconnect too, binary included.
    j.close().await;
    p.join_leave(false, "jay").await;
    s.api("publish", json!({"channel": ch, "b64data": b64(&[8, 9])}))
        .await;
    assert_eq!(p.publication(ch).await.data, [8, 9]);
    let mut j = s.client("jay").await;
    let r = j
        .call(
            "subscribe",
            json!({"channel": ch, "recover": true, "recoverable": true, "offset": 7, "epoch": epoch}),
        )
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    assert_eq!(
        r["subscribe"]["publications"],
        json!([{"offset": 8, "data": b64(&[8, 9])}])
    );
}

/// Server-side subscriptions and the other replies in Protobuf: the token's `channels` in the
/// connect result's `subs`, the API's `subscribe` and `unsubscribe` as pushes, `refresh`, and
/// the API's `disconnect` as the close code.
#[tokio::test]
async fn protobuf_server_side_subscriptions_refresh_and_disconnect() {
    let s = TestServer::start().await;
    let mut p = PbClient::open(&s.ws_url()).await;
    let r = p
        .call(pb::Command {
            connect: Some(pb::ConnectRequest {
                token: hs256(json!({"sub": "sam", "channels": ["chat:tok"]})),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let cr = r.connect.expect("connect result");
    assert!(cr.subs.contains_key("chat:tok"), "{cr:?}");
    s.publish("chat:tok", json!({"t": 1})).await;
    assert_eq!(p.publication("chat:tok").await.data, br#"{"t":1}"#);

    let (st, _) = s
        .api("subscribe", json!({"user": "sam", "channel": "chat:srv"}))
        .await;
    assert_eq!(st, 200);
    let push = p.push().await;
    assert_eq!(push.channel, "chat:srv");
    assert!(push.subscribe.is_some(), "{push:?}");
    s.publish("chat:srv", json!(2)).await;
    assert_eq!(p.publication("chat:srv").await.data, b"2");
    s.api("unsubscribe", json!({"user": "sam", "channel": "chat:srv"}))
        .await;
    let push = loop {
        let push = p.push().await;
        if push.unsubscribe.is_some() {
            break push;
        }
    };
    assert_eq!(
        (push.channel.as_str(), push.unsubscribe.unwrap().code),
        ("chat:srv", 2000)
    );

    let r = p
        .call(pb::Command {
            refresh: Some(pb::RefreshRequest {
                token: token("sam"),
            }),
            ..Default::default()
        })
        .await;
    let rr = r.refresh.expect("refresh result");
    assert!(rr.expires && rr.ttl > 3500, "{rr:?}");

    s.api(
        "disconnect",
        json!({"user": "sam", "disconnect": {"code": 4501, "reason": "bye"}}),
    )
    .await;
    assert_eq!(p.closed().await, Closed::Code(4501, "bye".into()));
}

/// Fossil delta updates over Protobuf: the subscribe result says `delta`, the first
/// publication comes in full (the payload's bytes), the next as a delta against it, which
/// rebuilds the payload exactly; a binary payload works the same way.
#[tokio::test]
async fn protobuf_delta_subscription() {
    let s = TestServer::start_with(
        "[[channel.namespaces]]\nname = \"delta\"\nhistory_size = 10\nhistory_ttl = \"5m\"\n\
         allow_subscribe_for_client = true\nallowed_delta_types = [\"fossil\"]\n",
    )
    .await;
    let ch = "delta:doc";
    let mut p = PbClient::open(&s.ws_url()).await;
    p.connect("dee").await;
    let sr = p
        .subscribe(pb::SubscribeRequest {
            delta: "fossil".into(),
            ..sub_req(ch)
        })
        .await;
    assert!(sr.delta, "{sr:?}");
    let doc = |v: u32| json!({"rows": "r".repeat(400), "v": v});
    s.publish(ch, doc(1)).await;
    let first = p.publication(ch).await;
    assert!(!first.delta);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&first.data).unwrap(),
        doc(1)
    );
    s.publish(ch, doc(2)).await;
    let second = p.publication(ch).await;
    assert!(second.delta && second.data.len() < 100, "{second:?}");
    let rebuilt = fossil_delta::apply(&first.data, &second.data).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&rebuilt).unwrap(),
        doc(2)
    );
    // Binary payloads: the delta is between the bytes themselves.
    let mut bin: Vec<u8> = (0..=255u8).cycle().take(2000).collect();
    s.api("publish", json!({"channel": ch, "b64data": b64(&bin)}))
        .await;
    let full_or_delta = p.publication(ch).await;
    let b1 = if full_or_delta.delta {
        fossil_delta::apply(&rebuilt, &full_or_delta.data).unwrap()
    } else {
        full_or_delta.data
    };
    assert_eq!(b1, bin);
    bin[1000] ^= 0xff;
    s.api("publish", json!({"channel": ch, "b64data": b64(&bin)}))
        .await;
    let d = p.publication(ch).await;
    assert!(d.delta, "a one-byte change is sent as a delta");
    assert_eq!(fossil_delta::apply(&b1, &d.data).unwrap(), bin);
}

/// The server's ping on a Protobuf connection is an empty Reply; answering it with an empty
/// Command (the SDKs' pong) keeps the connection past the pong timeout.
#[tokio::test]
async fn protobuf_ping_and_pong() {
    let s = TestServer::start_toml(&base_toml().replace(
        "[client]",
        "[client]\nping_interval = \"200ms\"\npong_timeout = \"150ms\"",
    ))
    .await;
    let mut p = PbClient::open(&s.ws_url()).await;
    let cr = p.connect("pia").await;
    assert_eq!(cr.ping, 1, "whole seconds, at least 1");
    while p.pings < 4 {
        p.fill().await.expect("still open after pongs");
    }
    p.subscribe(sub_req("chat:ping")).await;
}

/// An unknown method (a field this server does not know) and the v1 `ping` command are
/// answered 104 and the connection stays; a binary payload cannot go to a proxy-only field.
#[tokio::test]
async fn protobuf_unknown_methods_are_errors_not_disconnects() {
    let s = TestServer::start().await;
    let mut p = PbClient::open(&s.ws_url()).await;
    p.connect("pia").await;
    // id 50, field 20 (length-delimited, empty).
    p.send_raw(vec![5, 0x08, 50, 0xa2, 0x01, 0]).await;
    let r = loop {
        if let Some(i) = p.inbox.iter().position(|r| r.id == 50) {
            break p.inbox.remove(i).unwrap();
        }
        p.fill().await.unwrap();
    };
    assert_eq!(r.error.unwrap().code, 104);
    let r = p
        .call(pb::Command {
            ping: Some(pb::Empty {}),
            ..Default::default()
        })
        .await;
    assert_eq!(r.error.unwrap().code, 104);
    p.subscribe(sub_req("chat:still-open")).await;
}

/// Each bad input closes with its documented code; none takes the server down.
#[tokio::test]
async fn protobuf_bad_input_closes_with_documented_codes() {
    let s = TestServer::start_toml(
        &base_toml().replace("[client]", "[client]\nmax_message_size = 4096"),
    )
    .await;
    let connect = pb::Command {
        id: 1,
        connect: Some(pb::ConnectRequest {
            token: token("x"),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_length_delimited_to_vec();
    let no_id = pb::Command {
        presence: Some(pb::ChannelRequest {
            channel: "chat:a".into(),
        }),
        ..Default::default()
    }
    .encode_length_delimited_to_vec();
    let rpc_binary = pb::Command {
        id: 2,
        rpc: Some(pb::RpcRequest {
            method: "m".into(),
            data: vec![0xff],
        }),
        ..Default::default()
    }
    .encode_length_delimited_to_vec();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("truncated varint", vec![0x80], 3501),
        ("varint over 10 bytes", vec![0xff; 12], 3501),
        ("length past the end of the message", vec![40, 8, 1], 3501),
        // 2^32 - 1 announced in a 6-byte message: refused before anything is read.
        (
            "length over max_message_size",
            vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0],
            1009,
        ),
        ("id with the wrong wire type", vec![3, 0x0a, 1, 0], 3501),
        ("connect as a varint", vec![4, 0x08, 3, 0x20, 1], 3501),
        ("a command without id", no_id, 3501),
        ("binary rpc data", rpc_binary, 3501),
    ];
    for (what, bytes, code) in cases {
        let mut p = PbClient::open(&s.ws_url()).await;
        let mut msg = connect.clone();
        msg.extend_from_slice(&bytes);
        p.send_raw(msg).await;
        match p.closed().await {
            Closed::Code(c, _) => assert_eq!(c, code, "{what}"),
            Closed::NoCode => panic!("{what}: closed without a code"),
        }
    }
    // A text frame on a Protobuf connection, a binary frame on a JSON one.
    let mut p = PbClient::open(&s.ws_url()).await;
    p.ws.send(Message::text("{}")).await.unwrap();
    assert!(matches!(p.closed().await, Closed::Code(3501, _)));
    let mut j = Client::open(&s.ws_url()).await;
    j.ws.send(Message::binary(connect.clone())).await.unwrap();
    assert!(matches!(j.closed().await, Closed::Code(3501, _)));
    // Still serving.
    let mut p = PbClient::open(&s.ws_url()).await;
    p.connect("after").await;
}

/// The API's `b64data`: exactly one of `data` and `b64data`, valid base64, and the size limit
/// counts the decoded bytes; broadcast takes it too.
#[tokio::test]
async fn api_b64data_is_checked() {
    let s = TestServer::start_with("[api]\nmax_publication_size = 8").await;
    let (st, _) = s
        .api(
            "publish",
            json!({"channel": "chat:b", "b64data": "not base64!"}),
        )
        .await;
    assert_eq!(st, 400, "bad base64");
    let (st, _) = s
        .api(
            "publish",
            json!({"channel": "chat:b", "data": 1, "b64data": "AA=="}),
        )
        .await;
    assert_eq!(st, 400, "both");
    let (st, _) = s.api("publish", json!({"channel": "chat:b"})).await;
    assert_eq!(st, 400, "neither");
    // 8 bytes decoded (12 in base64): within the limit; 9: refused with 107.
    let (st, r) = s
        .api(
            "publish",
            json!({"channel": "chat:b", "b64data": b64(&[1; 8])}),
        )
        .await;
    assert_eq!((st, &r["result"]["offset"]), (200, &json!(1)), "{r}");
    let (_, r) = s
        .api(
            "publish",
            json!({"channel": "chat:b", "b64data": b64(&[1; 9])}),
        )
        .await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let (st, r) = s
        .api(
            "broadcast",
            json!({"channels": ["chat:b", "chat:c"], "b64data": b64(&[2, 3])}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let (_, h) = s
        .api("history", json!({"channel": "chat:c", "limit": -1}))
        .await;
    assert_eq!(
        h["result"]["publications"],
        json!([{"offset": 1, "data": b64(&[2, 3])}]),
        "the API reads binary publications as base64 strings"
    );
}
