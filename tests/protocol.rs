//! Client protocol over a real WebSocket: every command, the error codes a client can provoke,
//! join/leave, recovery. Each test starts its own node on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Connect reply carries a client id, ping/pong and the version; the client id is a UUID.
#[tokio::test]
async fn connect_reply_fields() {
    let s = TestServer::start().await;
    let mut c = Client::open(&s.ws_url()).await;
    let r = c.connect(&token("alice")).await;
    let cr = &r["connect"];
    assert_eq!(cr["client"].as_str().unwrap().len(), 36, "uuid: {r}");
    assert_eq!(cr["ping"], 25);
    assert_eq!(cr["pong"], true);
    assert_eq!(cr["expires"], true);
    assert!(cr["ttl"].as_u64().unwrap() > 3500);
    assert!(cr["version"].is_string());
}

/// Commands before connect, a second connect, undecodable JSON: disconnect 3501.
#[tokio::test]
async fn protocol_violations_close_with_3501() {
    let s = TestServer::start().await;
    let mut c = Client::open(&s.ws_url()).await;
    c.send(json!({"id": 1, "subscribe": {"channel": "news"}}))
        .await;
    assert_eq!(c.closed().await, Closed::Code(3501, "bad request".into()));

    let mut c = s.client("bob").await;
    c.send(json!({"id": 5, "connect": {"token": token("bob")}}))
        .await;
    assert_eq!(c.closed().await, Closed::Code(3501, "bad request".into()));

    let mut c = s.client("bob").await;
    c.send_raw("{\"id\":2,\"publish\":").await;
    assert_eq!(c.closed().await, Closed::Code(3501, "bad request".into()));

    let mut c = s.client("bob").await;
    c.send_raw("{\"publish\":{\"channel\":\"a\",\"data\":1}}")
        .await;
    assert_eq!(
        c.closed().await,
        Closed::Code(3501, "bad request".into()),
        "no id"
    );

    // The node keeps serving.
    let mut c = s.client("carol").await;
    c.subscribe("news").await;
}

/// Token errors: invalid → 3500, tampered → 3500, expired → error 109, missing → 3501,
/// anonymous only when allowed.
#[tokio::test]
async fn token_errors() {
    let s = TestServer::start().await;
    let mut c = Client::open(&s.ws_url()).await;
    c.send(json!({"id": 1, "connect": {"token": "not.a.jwt"}}))
        .await;
    assert_eq!(c.closed().await, Closed::Code(3500, "invalid token".into()));

    // Tamper with the signature: flip its last character to a different one.
    let mut t = token("alice");
    let last = t.pop().unwrap();
    t.push(if last == 'A' { 'B' } else { 'A' });
    let mut c = Client::open(&s.ws_url()).await;
    c.send(json!({"id": 1, "connect": {"token": t}})).await;
    assert_eq!(c.closed().await, Closed::Code(3500, "invalid token".into()));

    let other_key = switchyard::auth::mint(
        "another-secret",
        switchyard::auth::MintRequest {
            user: "alice".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = Client::open(&s.ws_url()).await;
    c.send(json!({"id": 1, "connect": {"token": other_key}}))
        .await;
    assert_eq!(c.closed().await, Closed::Code(3500, "invalid token".into()));

    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": switchyard::auth::unix_now() - 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut c = Client::open(&s.ws_url()).await;
    let r = c.connect(&expired).await;
    assert_eq!(r["error"]["code"], 109, "{r}");
    assert_eq!(r["error"]["message"], "token expired");

    let mut c = Client::open(&s.ws_url()).await;
    c.send(json!({"id": 1, "connect": {}})).await;
    assert_eq!(c.closed().await, Closed::Code(3501, "bad request".into()));

    let anon =
        TestServer::start_toml(&base_toml().replace("[auth]", "[auth]\nallow_anonymous = true"))
            .await;
    let mut c = Client::open(&anon.ws_url()).await;
    let r = c.call("connect", json!({})).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
}

/// API publications reach every subscriber with contiguous offsets; a client publication
/// comes back with the publisher's ClientInfo.
#[tokio::test]
async fn publish_and_receive() {
    let s = TestServer::start().await;
    let mut a = s.client("alice").await;
    let mut b = s.client("bob").await;
    a.subscribe("chat:room").await;
    b.subscribe("chat:room").await;
    for i in 1..=3 {
        let r = s.publish("chat:room", json!({"n": i})).await;
        assert_eq!(r["offset"], i);
    }
    for c in [&mut a, &mut b] {
        for i in 1..=3 {
            let p = c.publication("chat:room").await;
            assert_eq!(p["data"], json!({"n": i}));
            assert_eq!(p["offset"], i);
        }
    }
    let r = a
        .call(
            "publish",
            json!({"channel": "chat:room", "data": {"from": "a"}}),
        )
        .await;
    assert_eq!(r["publish"], json!({}), "{r}");
    let p = b.publication("chat:room").await;
    assert_eq!(p["data"], json!({"from": "a"}));
    assert_eq!(p["info"]["user"], "alice");
    assert_eq!(p["info"]["client"], json!(a.client_id));
    let p = a.publication("chat:room").await;
    assert_eq!(p["offset"], 4, "the publisher receives its own publication");
}

/// connect + subscribes in one frame are handled in order; replies may share a frame.
#[tokio::test]
async fn newline_batched_commands() {
    let s = TestServer::start().await;
    let mut c = Client::open(&s.ws_url()).await;
    let frame = format!(
        "{}\n{}\n{}",
        json!({"id": 1, "connect": {"token": token("alice")}}),
        json!({"id": 2, "subscribe": {"channel": "chat:a"}}),
        json!({"id": 3, "subscribe": {"channel": "chat:b"}})
    );
    c.send_raw(&frame).await;
    assert!(c.reply(1).await.get("connect").is_some());
    assert!(c.reply(2).await.get("subscribe").is_some());
    assert!(c.reply(3).await.get("subscribe").is_some());
    assert!(c.frames <= 3);
}

/// `client.write_delay`: the writer waits that long after being woken, so publications that
/// arrive meanwhile share one frame (fewer syscalls under fan-out), at that much latency.
#[tokio::test]
async fn write_delay_batches_publications_into_one_frame() {
    let toml = base_toml().replace("[client]\n", "[client]\nwrite_delay = \"1s\"\n");
    let s = TestServer::start_toml(&toml).await;
    let mut c = s.client("alice").await;
    c.subscribe("open:batch").await;
    let before = c.frames;
    let started = std::time::Instant::now();
    for i in 1..=5 {
        s.publish("open:batch", json!({"n": i})).await;
    }
    let published = started.elapsed();
    assert!(
        published < Duration::from_millis(900),
        "five publishes should take well under the delay (took {published:?})"
    );
    for i in 1..=5 {
        assert_eq!(c.publication("open:batch").await["data"], json!({"n": i}));
    }
    let first_after = started.elapsed();
    assert!(
        first_after >= Duration::from_secs(1),
        "delivery waited for the delay ({first_after:?})"
    );
    assert_eq!(
        c.frames - before,
        1,
        "five publications inside the delay arrive in one frame"
    );
}

/// Error codes a client can provoke, each as an error reply (the connection stays up).
#[tokio::test]
async fn error_replies() {
    let s = TestServer::start_toml(&base_toml().replace("[client]", "[client]\nmax_channels = 3"))
        .await;
    let mut c = s.client("alice").await;
    let code = |r: &Value| r["error"]["code"].as_u64().unwrap_or(0);

    assert_eq!(
        code(&c.call("subscribe", json!({"channel": "nope:x"})).await),
        102
    );
    assert_eq!(
        code(&c.call("subscribe", json!({"channel": "$secret"})).await),
        103
    );
    assert_eq!(
        code(&c.call("subscribe", json!({"channel": "locked:x"})).await),
        103
    );
    c.subscribe("chat:one").await;
    assert_eq!(
        code(&c.call("subscribe", json!({"channel": "chat:one"})).await),
        105
    );
    c.subscribe("chat:two").await;
    c.subscribe("chat:three").await;
    assert_eq!(
        code(&c.call("subscribe", json!({"channel": "chat:four"})).await),
        106
    );
    assert_eq!(
        code(&c.call("subscribe", json!({"channel": ""})).await),
        107
    );
    assert_eq!(
        code(
            &c.call("subscribe", json!({"channel": "x".repeat(300)}))
                .await
        ),
        107
    );
    assert_eq!(
        code(&c.call("publish", json!({"channel": "chat:one"})).await),
        107,
        "no data"
    );
    assert_eq!(
        code(
            &c.call("publish", json!({"channel": "chat:zzz", "data": 1}))
                .await
        ),
        103,
        "not subscribed"
    );
    assert_eq!(
        code(&c.call("presence", json!({"channel": "news"})).await),
        108,
        "presence off"
    );
    assert_eq!(
        code(
            &c.call("history", json!({"channel": "news", "limit": 1}))
                .await
        ),
        108,
        "history off"
    );
    assert_eq!(
        code(&c.call("presence", json!({"channel": "locked:x"})).await),
        103
    );
    assert_eq!(
        code(&c.call("rpc", json!({"method": "m", "data": {}})).await),
        108
    );
    assert_eq!(code(&c.call("frobnicate", json!({})).await), 104);
    let h = c
        .call(
            "history",
            json!({"channel": "chat:one", "limit": 1, "since": {"offset": 1, "epoch": "wrong"}}),
        )
        .await;
    assert_eq!(code(&h), 112);
    assert!(h["error"]["message"].is_string());
    // still connected
    let r = c
        .call("presence_stats", json!({"channel": "chat:one"}))
        .await;
    assert_eq!(r["presence_stats"]["num_clients"], 1);
}

/// `$` channels need a subscription token for this user and channel; `#` channels admit the
/// users they list.
#[tokio::test]
async fn private_and_user_limited_channels() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    let r = c
        .call(
            "subscribe",
            json!({"channel": "$chat:vip", "token": sub_token("alice", "$chat:vip")}),
        )
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    s.publish("$chat:vip", json!("hi")).await;
    assert_eq!(c.publication("$chat:vip").await["data"], "hi");

    let r = c
        .call("subscribe", json!({"channel": "chat:dialog#alice,bob"}))
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    let r = c
        .call("subscribe", json!({"channel": "chat:dialog#bob,carol"}))
        .await;
    assert_eq!(r["error"]["code"], 103);

    // A token for someone else's subscription: invalid token.
    c.send(json!({"id": 99, "subscribe": {"channel": "$chat:x", "token": sub_token("mallory", "$chat:x")}}))
        .await;
    assert_eq!(c.closed().await, Closed::Code(3500, "invalid token".into()));

    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "bob", "channel": "$chat:y", "exp": switchyard::auth::unix_now() - 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut b = s.client("bob").await;
    let r = b
        .call("subscribe", json!({"channel": "$chat:y", "token": expired}))
        .await;
    assert_eq!(r["error"]["code"], 109);
}

/// Presence, presence_stats, join and leave pushes (including the joiner's own join).
#[tokio::test]
async fn presence_join_leave() {
    let s = TestServer::start().await;
    let mut a = s.client("alice").await;
    let r = a
        .call(
            "subscribe",
            json!({"channel": "chat:p", "join_leave": true}),
        )
        .await;
    assert!(r.get("subscribe").is_some());
    let own = a.push().await;
    assert_eq!(own["join"]["info"]["user"], "alice", "own join: {own}");

    let mut b = s.client("bob").await;
    b.subscribe("chat:p").await;
    let j = a.push().await;
    assert_eq!(j["channel"], "chat:p");
    assert_eq!(j["join"]["info"]["user"], "bob");
    assert_eq!(j["join"]["info"]["client"], json!(b.client_id));

    let p = a.call("presence", json!({"channel": "chat:p"})).await;
    let map = p["presence"]["presence"].as_object().unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!(map[&b.client_id]["user"], "bob");
    let st = a.call("presence_stats", json!({"channel": "chat:p"})).await;
    assert_eq!(
        st["presence_stats"],
        json!({"num_clients": 2, "num_users": 2})
    );

    let r = b.call("unsubscribe", json!({"channel": "chat:p"})).await;
    assert_eq!(r["unsubscribe"], json!({}));
    let l = a.push().await;
    assert_eq!(l["leave"]["info"]["user"], "bob");

    b.subscribe("chat:p").await;
    assert_eq!(a.push().await["join"]["info"]["user"], "bob");
    b.close().await;
    let l = a.push().await;
    assert_eq!(l["leave"]["info"]["user"], "bob", "leave on disconnect");
    let st = a.call("presence_stats", json!({"channel": "chat:p"})).await;
    assert_eq!(
        st["presence_stats"],
        json!({"num_clients": 1, "num_users": 1})
    );
}

/// History: limit 0 gives the position only, -1 everything, `reverse` newest first, `since`
/// continues after an offset.
#[tokio::test]
async fn history_queries() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    c.subscribe("chat:h").await;
    let mut epoch = String::new();
    for i in 1..=5 {
        epoch = s.publish("chat:h", json!(i)).await["epoch"]
            .as_str()
            .unwrap()
            .into();
    }
    let h = c.call("history", json!({"channel": "chat:h"})).await;
    assert_eq!(h["history"]["offset"], 5);
    assert_eq!(h["history"]["epoch"], json!(epoch));
    assert!(h["history"].get("publications").is_none(), "{h}");
    let offs = |h: &Value| -> Vec<u64> {
        h["history"]["publications"]
            .as_array()
            .map(|a| a.iter().map(|p| p["offset"].as_u64().unwrap()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        offs(
            &c.call("history", json!({"channel": "chat:h", "limit": -1}))
                .await
        ),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        offs(
            &c.call(
                "history",
                json!({"channel": "chat:h", "limit": 2, "reverse": true})
            )
            .await
        ),
        vec![5, 4]
    );
    assert_eq!(
        offs(
            &c.call(
                "history",
                json!({"channel": "chat:h", "limit": 10, "since": {"offset": 3, "epoch": epoch}})
            )
            .await
        ),
        vec![4, 5]
    );
}

/// A client that reconnects with its last offset and epoch gets exactly what it missed, in
/// order, with `recovered: true`; a different epoch is not recovered.
#[tokio::test]
async fn recovery_after_reconnect() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    let r = c
        .call(
            "subscribe",
            json!({"channel": "chat:r", "recoverable": true, "positioned": true}),
        )
        .await;
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();
    assert!(!epoch.is_empty());
    assert_eq!(r["subscribe"]["recoverable"], true);
    s.publish("chat:r", json!("seen")).await;
    let seen = c.publication("chat:r").await;
    assert_eq!(seen["offset"], 1);
    c.close().await;

    for i in 0..3 {
        s.publish("chat:r", json!({"missed": i})).await;
    }

    let mut c = s.client("alice").await;
    let r = c
        .call(
            "subscribe",
            json!({"channel": "chat:r", "recoverable": true, "positioned": true,
                   "recover": true, "offset": 1, "epoch": epoch}),
        )
        .await;
    let sr = &r["subscribe"];
    assert_eq!(sr["recovered"], true, "{r}");
    assert_eq!(sr["was_recovering"], true);
    let pubs = sr["publications"].as_array().unwrap();
    assert_eq!(
        pubs.iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(pubs[0]["data"], json!({"missed": 0}));
    s.publish("chat:r", json!("live")).await;
    assert_eq!(
        c.publication("chat:r").await["offset"],
        5,
        "no duplicate of recovered ones"
    );

    let mut d = s.client("alice").await;
    let r = d
        .call(
            "subscribe",
            json!({"channel": "chat:r", "recoverable": true, "recover": true, "offset": 1, "epoch": "other"}),
        )
        .await;
    assert_eq!(
        r["subscribe"]["recovered"],
        json!(null),
        "not recovered: {r}"
    );
    assert_eq!(r["subscribe"]["was_recovering"], true);
    assert_eq!(r["subscribe"]["offset"], 5, "told the current top");
    assert!(r["subscribe"].get("publications").is_none());
}

/// While publications stream in, a subscriber recovering from an old offset receives every
/// publication exactly once, in order: recovered ones, then live ones, with no gap.
#[tokio::test]
async fn recovery_merges_with_live_publications() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    let r = c
        .call(
            "subscribe",
            json!({"channel": "chat:m", "recoverable": true}),
        )
        .await;
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();
    for i in 0..10 {
        s.publish("chat:m", json!(i)).await;
    }
    c.close().await;
    let addr = s.addr;
    let publisher = tokio::spawn(async move {
        for i in 10..80 {
            let (st, _) = api_call(
                addr,
                "publish",
                Some(API_KEY),
                &json!({"channel": "chat:m", "data": i}).to_string(),
            )
            .await;
            assert_eq!(st, 200);
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut c = s.client("alice").await;
    let r = c
        .call("subscribe", json!({"channel": "chat:m", "recoverable": true, "recover": true, "offset": 5, "epoch": epoch}))
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let mut got: Vec<u64> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    publisher.await.unwrap();
    while got.last().copied().unwrap_or(5) < 80 {
        got.push(c.publication("chat:m").await["offset"].as_u64().unwrap());
    }
    assert_eq!(got, (6..=80).collect::<Vec<u64>>());
}

/// After unsubscribe no publication arrives; refresh and sub_refresh extend expiry.
#[tokio::test]
async fn unsubscribe_refresh_sub_refresh() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    c.subscribe("chat:u").await;
    let r = c.call("unsubscribe", json!({"channel": "chat:u"})).await;
    assert_eq!(r["unsubscribe"], json!({}));
    s.publish("chat:u", json!(1)).await;
    c.assert_quiet(Duration::from_millis(200)).await;

    let r = c.call("refresh", json!({"token": token("alice")})).await;
    assert_eq!(r["refresh"]["client"], json!(c.client_id));
    assert_eq!(r["refresh"]["expires"], true);
    c.send(json!({"id": 50, "refresh": {"token": token("mallory")}}))
        .await;
    assert_eq!(
        c.closed().await,
        Closed::Code(3500, "invalid token".into()),
        "token of another user"
    );

    let mut c = s.client("alice").await;
    let r = c
        .call(
            "subscribe",
            json!({"channel": "$chat:s", "token": sub_token("alice", "$chat:s")}),
        )
        .await;
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    let r = c
        .call(
            "sub_refresh",
            json!({"channel": "$chat:s", "token": sub_token("alice", "$chat:s")}),
        )
        .await;
    assert_eq!(r["sub_refresh"]["expires"], true, "{r}");
    let r = c
        .call(
            "sub_refresh",
            json!({"channel": "chat:not-subscribed", "token": "x"}),
        )
        .await;
    assert_eq!(r["error"]["code"], 107);
}

/// `send` gets no reply; pongs keep the connection; a client that never pongs is closed with
/// 3012; one that never connects with 3502.
#[tokio::test]
async fn ping_pong_and_stale() {
    let s = TestServer::start_toml(&base_toml().replace(
        "[client]",
        "[client]\nping_interval = \"1s\"\npong_timeout = \"500ms\"\nstale_timeout = \"500ms\"",
    ))
    .await;
    let mut idle = Client::open(&s.ws_url()).await;
    assert_eq!(idle.closed().await, Closed::Code(3502, "stale".into()));

    let mut c = s.client("alice").await;
    c.send(json!({"send": {"data": {"x": 1}}})).await;
    c.subscribe("chat:pp").await;
    // pump() answers pings like the SDKs; across 3 ping intervals the connection stays up.
    c.pump(Duration::from_millis(2500)).await;
    s.publish("chat:pp", json!("still here")).await;
    assert_eq!(c.publication("chat:pp").await["data"], "still here");

    // A raw client that connects and never answers.
    use futures_util::StreamExt;
    let mut raw = Client::open(&s.ws_url()).await;
    raw.send(json!({"id": 1, "connect": {"token": token("bob")}}))
        .await;
    let mut saw_ping = false;
    let code = loop {
        match tokio::time::timeout(WAIT, raw.ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                if t.as_str().split('\n').any(|l| l == "{}") {
                    saw_ping = true;
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                break u16::from(f.code);
            }
            Some(Ok(_)) => {}
            other => panic!("unexpected end: {other:?}"),
        }
    };
    assert!(saw_ping, "server pinged");
    assert_eq!(code, 3012);
}

/// Shutdown closes every client with 3001.
#[tokio::test]
async fn shutdown_closes_with_3001() {
    let mut s = TestServer::start().await;
    let mut a = s.client("alice").await;
    let mut b = s.client("bob").await;
    a.subscribe("chat:x").await;
    let stop = tokio::spawn(async move {
        s.stop().await;
    });
    assert_eq!(a.closed().await, Closed::Code(3001, "shutdown".into()));
    assert_eq!(b.closed().await, Closed::Code(3001, "shutdown".into()));
    stop.await.unwrap();
}

/// Token `channels` make server-side subscriptions, reported in the connect reply.
#[tokio::test]
async fn server_side_subscriptions_from_token() {
    let s = TestServer::start().await;
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "channels": ["chat:srv"]}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut c = Client::open(&s.ws_url()).await;
    let r = c.connect(&t).await;
    assert!(r["connect"]["subs"].get("chat:srv").is_some(), "{r}");
    assert!(r["connect"].get("expires").is_none(), "no exp, no expiry");
    s.publish("chat:srv", json!("pushed")).await;
    assert_eq!(c.publication("chat:srv").await["data"], "pushed");
}

/// A connection whose token expires without a refresh is closed with 3005; a subscription
/// whose token expires with 3006.
#[tokio::test]
async fn expiry_without_refresh() {
    let s = TestServer::start().await;
    let now = switchyard::auth::unix_now();
    let mut c = Client::open(&s.ws_url()).await;
    let r = c
        .connect(&hs256(json!({"sub": "alice", "exp": now + 2})))
        .await;
    assert!(r["connect"]["ttl"].as_u64().unwrap() <= 2, "{r}");
    assert_eq!(
        c.closed().await,
        Closed::Code(3005, "connection expired".into())
    );

    let mut c = s.client("bob").await;
    let now = switchyard::auth::unix_now();
    let st = hs256(json!({"sub": "bob", "channel": "$chat:e", "exp": now + 2}));
    let r = c
        .call("subscribe", json!({"channel": "$chat:e", "token": st}))
        .await;
    assert!(r["subscribe"]["ttl"].as_u64().unwrap() <= 2, "{r}");
    assert_eq!(
        c.closed().await,
        Closed::Code(3006, "subscription expired".into())
    );
}

/// More token channels than `client.max_channels`: 3505. The `centrifuge-protobuf` and
/// `centrifuge-json` subprotocols are echoed (Protobuf itself: tests/protobuf.rs).
#[tokio::test]
async fn channel_limit_and_subprotocols() {
    let s = TestServer::start_toml(&base_toml().replace("[client]", "[client]\nmax_channels = 2"))
        .await;
    let mut c = Client::open(&s.ws_url()).await;
    c.send(json!({"id": 1, "connect": {"token": hs256(json!({"sub": "a", "channels": ["chat:1", "chat:2", "chat:3"]}))}}))
        .await;
    assert_eq!(c.closed().await, Closed::Code(3505, "channel limit".into()));

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "centrifuge-protobuf".parse().unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "centrifuge-protobuf"
    );
    drop(ws);

    // centrifuge-json is accepted and echoed.
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "centrifuge-json".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "centrifuge-json");
    let mut c = Client::from_ws(ws);
    assert!(c.connect(&token("a")).await["connect"].is_object());
}

/// Where Centrifugo's behaviour is the contract: an unparsable subscription token refuses
/// that subscribe (103) and keeps the connection (a token for another user still closes it,
/// 3500); recovery from `{offset: 0, epoch: ""}` recovers from the start; subscribe flag bit
/// 2 (rejectUnrecovered) turns a failed recovery into error 112 without subscribing; an
/// unknown subscription `type` is refused with 108.
#[tokio::test]
async fn subscribe_edge_cases_answer_as_centrifugo() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    let r = c
        .call(
            "subscribe",
            json!({"channel": "$chat:vip", "token": "not.a.jwt"}),
        )
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    c.subscribe("chat:still-here").await;

    for n in 1..=3 {
        s.publish("chat:rec", json!(n)).await;
    }
    let r = c
        .call(
            "subscribe",
            json!({"channel": "chat:rec", "recoverable": true, "recover": true, "offset": 0, "epoch": ""}),
        )
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let got: Vec<Value> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(got, vec![json!(1), json!(2), json!(3)], "{r}");

    let mut d = s.client("bob").await;
    let r = d
        .call(
            "subscribe",
            json!({"channel": "chat:rec", "recoverable": true, "recover": true, "offset": 1,
                   "epoch": "another-epoch", "flag": 3}),
        )
        .await;
    assert_eq!(r["error"]["code"], 112, "{r}");
    // Not subscribed: the same subscribe without the flag is accepted, recovered: false.
    let r = d
        .call(
            "subscribe",
            json!({"channel": "chat:rec", "recoverable": true, "recover": true, "offset": 1,
                   "epoch": "another-epoch"}),
        )
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    assert!(r["subscribe"].get("recovered").is_none(), "{r}");

    let r = d
        .call("subscribe", json!({"channel": "chat:poll", "type": 4}))
        .await;
    assert_eq!(r["error"]["code"], 108, "{r}");

    d.send(json!({"id": 99, "subscribe": {"channel": "$chat:x", "token": sub_token("mallory", "$chat:x")}}))
        .await;
    assert_eq!(d.closed().await, Closed::Code(3500, "invalid token".into()));
}

/// `force_push_join_leave` pushes joins to a subscriber that did not ask for them (as
/// Centrifugo); `client.subscribe_to_user_personal_channel` subscribes each user at connect to
/// `<namespace>:#<user>`, which API publications reach.
#[tokio::test]
async fn forced_join_leave_and_the_personal_channel() {
    let toml = base_toml()
        .replace(
            "[client]",
            "[client]\nsubscribe_to_user_personal_channel = true\npersonal_channel_namespace = \"chat\"",
        )
        .replace(
            "name = \"open\"",
            "name = \"open\"\npresence = true\njoin_leave = true\nforce_push_join_leave = true",
        );
    let s = TestServer::start_toml(&toml).await;
    let mut a = s.client("alice").await;
    let r = a.call("subscribe", json!({"channel": "open:room"})).await;
    assert!(r.get("subscribe").is_some(), "{r}");
    let mut b = s.client("bob").await;
    b.subscribe("open:room").await;
    // (Her own joins, on the room and on her personal channel, may come first.)
    loop {
        let p = a.push().await;
        if p["channel"] == "open:room" && p["join"]["info"]["user"] == "bob" {
            break;
        }
    }

    let mut c = Client::open(&s.ws_url()).await;
    let r = c.connect(&token("carol")).await;
    assert!(r["connect"]["subs"].get("chat:#carol").is_some(), "{r}");
    s.publish("chat:#carol", json!("for carol")).await;
    assert_eq!(c.publication("chat:#carol").await["data"], "for carol");
}
