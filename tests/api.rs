//! The server HTTP API over real HTTP: key checks, body errors, every method.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Wrong or missing key → 401 whose body names the config key to set (`auth.api_key`) and
/// the header to send it in; both header forms work; bad body → 400; unknown method → 404;
/// oversized body → 413.
#[tokio::test]
async fn api_key_and_body_errors() {
    let s = TestServer::start().await;
    let body = json!({"channel": "news", "data": 1}).to_string();
    for key in [None, Some("wrong")] {
        let (st, b) = api_call(s.addr, "publish", key, &body).await;
        assert_eq!(st, 401, "{b}");
        let why = b["error"].as_str().expect("an error message");
        assert!(
            why.contains("auth.api_key") && why.contains("X-API-Key"),
            "{why}"
        );
    }
    let (st, _) = api_call(s.addr, "publish", Some(API_KEY), "{not json").await;
    assert_eq!(st, 400);
    let (st, _) = api_call(s.addr, "publish", Some(API_KEY), r#"{"channel": 5}"#).await;
    assert_eq!(st, 400);
    let (st, _) = api_call(s.addr, "frobnicate", Some(API_KEY), "{}").await;
    assert_eq!(st, 404);

    // Authorization: apikey KEY
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "POST /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {API_KEY}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    let big = format!(
        r#"{{"channel":"news","data":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (st, _) = http_post(s.addr, "/api/publish", Some(API_KEY), big.as_bytes()).await;
    assert_eq!(st, 413);
}

/// An empty configured key disables the API, and the 401 says so.
#[tokio::test]
async fn empty_api_key_refuses_everything() {
    let s = TestServer::start_toml(
        &base_toml().replace(&format!("api_key = \"{API_KEY}\""), "api_key = \"\""),
    )
    .await;
    let (st, b) = api_call(s.addr, "info", Some(""), "{}").await;
    assert_eq!(st, 401);
    let why = b["error"].as_str().expect("an error message");
    assert!(why.contains("auth.api_key is not set"), "{why}");
}

/// publish returns offset and epoch; errors come as 200 with an error object.
#[tokio::test]
async fn publish_broadcast_history_remove() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    c.subscribe("chat:a").await;
    c.subscribe("chat:b").await;
    let r = s.publish("chat:a", json!({"x": 1})).await;
    assert_eq!(r["offset"], 1);
    let epoch = r["epoch"].as_str().unwrap().to_string();
    assert_eq!(epoch.len(), 8);

    let (st, b) = s
        .api("publish", json!({"channel": "nope:x", "data": 1}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(b["error"]["code"], 102);
    assert!(b["error"]["message"].is_string());

    let (_, b) = s
        .api(
            "broadcast",
            json!({"channels": ["chat:a", "chat:b", "nope:z"], "data": "all"}),
        )
        .await;
    let resp = b["result"]["responses"].as_array().unwrap();
    assert_eq!(resp[0]["result"]["offset"], 2);
    assert_eq!(resp[1]["result"]["offset"], 1);
    assert_eq!(resp[2]["error"]["code"], 102);
    let mut got = vec![];
    for _ in 0..3 {
        let p = c.push().await;
        got.push((
            p["channel"].as_str().unwrap().to_string(),
            p["pub"]["data"].clone(),
        ));
    }
    assert!(got.contains(&("chat:a".into(), json!("all"))));
    assert!(got.contains(&("chat:b".into(), json!("all"))));

    let (_, b) = s
        .api("history", json!({"channel": "chat:a", "limit": -1}))
        .await;
    assert_eq!(b["result"]["publications"].as_array().unwrap().len(), 2);
    assert_eq!(b["result"]["epoch"], json!(epoch));

    let (_, b) = s
        .api(
            "publish",
            json!({"channel": "chat:a", "data": 3, "skip_history": true, "tags": {"k": "v"}}),
        )
        .await;
    assert!(b["result"].get("offset").is_none(), "{b}");
    let p = c.publication("chat:a").await;
    assert_eq!(p["tags"], json!({"k": "v"}));

    let (_, b) = s.api("history_remove", json!({"channel": "chat:a"})).await;
    assert_eq!(b["result"], json!({}));
    let (_, b) = s
        .api("history", json!({"channel": "chat:a", "limit": -1}))
        .await;
    assert!(b["result"].get("publications").is_none(), "{b}");
    assert_eq!(b["result"]["offset"], 2, "position kept");
    assert_eq!(b["result"]["epoch"], json!(epoch));
}

/// subscribe/unsubscribe/disconnect act on a user's connections; presence, channels, info and
/// batch report the state.
#[tokio::test]
async fn user_operations_and_queries() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;

    let (_, b) = s
        .api("subscribe", json!({"user": "alice", "channel": "chat:srv"}))
        .await;
    assert_eq!(b["result"], json!({}));
    let p = c.push().await;
    assert_eq!(p["channel"], "chat:srv");
    assert!(p.get("subscribe").is_some(), "{p}");
    s.publish("chat:srv", json!(1)).await;
    assert_eq!(c.publication("chat:srv").await["data"], 1);

    let (_, b) = s.api("presence", json!({"channel": "chat:srv"})).await;
    assert_eq!(b["result"]["presence"][&c.client_id]["user"], "alice");
    let (_, b) = s
        .api("presence_stats", json!({"channel": "chat:srv"}))
        .await;
    assert_eq!(b["result"], json!({"num_clients": 1, "num_users": 1}));
    let (_, b) = s.api("presence", json!({"channel": "news"})).await;
    assert_eq!(b["error"]["code"], 108);

    let (_, b) = s.api("channels", json!({})).await;
    assert_eq!(b["result"]["channels"]["chat:srv"]["num_clients"], 1);
    let (_, b) = s.api("channels", json!({"pattern": "news*"})).await;
    assert_eq!(b["result"]["channels"], json!({}));
    let (_, b) = s.api("info", json!({})).await;
    assert_eq!(b["result"]["nodes"][0]["num_clients"], 1);
    assert_eq!(b["result"]["nodes"][0]["num_users"], 1);

    let (_, b) = s
        .api(
            "batch",
            json!({"commands": [
                {"publish": {"channel": "chat:srv", "data": 2}},
                {"presence_stats": {"channel": "chat:srv"}},
                {"publish": {"channel": "nope:x", "data": 2}}
            ]}),
        )
        .await;
    let replies = b["replies"].as_array().unwrap();
    assert_eq!(replies[0]["publish"]["offset"], 2);
    assert_eq!(replies[1]["presence_stats"]["num_clients"], 1);
    assert_eq!(replies[2]["error"]["code"], 102);
    assert_eq!(c.publication("chat:srv").await["data"], 2);

    let (_, b) = s
        .api(
            "unsubscribe",
            json!({"user": "alice", "channel": "chat:srv"}),
        )
        .await;
    assert_eq!(b["result"], json!({}));
    let p = c.push().await;
    assert_eq!(p["unsubscribe"]["code"], 2000, "{p}");
    s.publish("chat:srv", json!(3)).await;
    c.assert_quiet(Duration::from_millis(200)).await;

    let (_, b) = s
        .api(
            "disconnect",
            json!({"user": "alice", "disconnect": {"code": 4123, "reason": "bye"}}),
        )
        .await;
    assert_eq!(b["result"], json!({}));
    assert_eq!(c.closed().await, Closed::Code(4123, "bye".into()));

    let mut d = s.client("bob").await;
    s.api("disconnect", json!({"user": "bob"})).await;
    assert_eq!(
        d.closed().await,
        Closed::Code(3503, "force disconnect".into())
    );
    eventually("registry forgets closed clients", || async {
        let (_, b) = s.api("info", json!({})).await;
        b["result"]["nodes"][0]["num_clients"] == 0
    })
    .await;
}

/// `/healthz` on the client listener, `/readyz` on the admin listener, 404 elsewhere, 400 for
/// a plain GET on the WebSocket path.
#[tokio::test]
async fn health_endpoints() {
    let s = TestServer::start().await;
    let (st, b) = http_get(s.addr, "/healthz").await;
    assert_eq!(st, 200);
    assert_eq!(b, br#"{"status":"ok"}"#);
    let admin = s.server.as_ref().unwrap().admin_addr;
    // Ready once the one-voter cluster has elected itself.
    eventually("readyz turns 200", || async {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await;
    let (st, b) = http_get(admin, "/cluster/status").await;
    assert_eq!(st, 200);
    let status: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(status["state"], "Leader", "{status}");
    assert_eq!(status["leader"], 1);
    assert_eq!(status["nodes"][0]["voter"], true);
    let (st, _) = http_get(s.addr, "/nope").await;
    assert_eq!(st, 404);
    let (st, _) = http_get(s.addr, "/connection/websocket").await;
    assert_eq!(st, 400);
}

/// `batch` runs its commands in order: offsets follow the list, a subscriber receives them in
/// that order, and a read between writes sees the writes before it.
#[tokio::test]
async fn batch_keeps_order() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    c.subscribe("open:order").await;
    let mut commands = Vec::new();
    for i in 0..20 {
        commands.push(json!({"publish": {"channel": "open:order", "data": {"i": i}}}));
        if i == 9 {
            commands.push(json!({"history": {"channel": "open:order", "limit": 0}}));
        }
    }
    let (st, b) = s.api("batch", json!({ "commands": commands })).await;
    assert_eq!(st, 200, "{b}");
    let replies = b["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 21);
    let offsets: Vec<u64> = replies
        .iter()
        .filter_map(|r| r["publish"]["offset"].as_u64())
        .collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<u64>>(), "{b}");
    assert_eq!(
        replies[10]["history"]["offset"], 10,
        "the read saw the ten writes before it"
    );
    for i in 0..20 {
        assert_eq!(c.publication("open:order").await["data"]["i"], i);
    }
}

/// `idempotency_key`: a repeat (even with other data) is given the first publication's offset
/// and epoch and publishes nothing — history holds one, a subscriber receives one. Keys are
/// per channel, shared by `publish`, `broadcast` and `batch`; an empty key is no key; a key
/// over 256 bytes is refused with 107.
#[tokio::test]
async fn idempotency_keys_publish_once() {
    let s = TestServer::start().await;
    let mut c = s.client("alice").await;
    c.subscribe("chat:idem").await;
    c.subscribe("chat:idem2").await;
    let publish = |data: Value, key: &str| json!({"channel": "chat:idem", "data": data, "idempotency_key": key});
    let (_, b) = s.api("publish", publish(json!({"n": 1}), "order-1")).await;
    let first = b["result"].clone();
    assert_eq!(first["offset"], 1, "{b}");
    assert!(first["epoch"].is_string());
    for n in 2..5 {
        let (_, b) = s.api("publish", publish(json!({"n": n}), "order-1")).await;
        assert_eq!(b["result"], first, "a retry is given the first position");
    }
    let (_, b) = s
        .api(
            "batch",
            json!({"commands": [{"publish": publish(json!("batched"), "order-1")}]}),
        )
        .await;
    assert_eq!(b["replies"][0]["publish"], first, "{b}");
    // The next publication delivered after the first is the next one committed: no duplicate
    // was delivered in between (delivery follows log order).
    assert_eq!(s.publish("chat:idem", json!("after")).await["offset"], 2);
    let p = c.publication("chat:idem").await;
    assert_eq!(
        (p["offset"].clone(), p["data"].clone()),
        (json!(1), json!({"n": 1}))
    );
    let p = c.publication("chat:idem").await;
    assert_eq!(
        (p["offset"].clone(), p["data"].clone()),
        (json!(2), json!("after"))
    );
    let (_, b) = s
        .api("history", json!({"channel": "chat:idem", "limit": -1}))
        .await;
    let history: Vec<_> = b["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["offset"].clone(), p["data"].clone()))
        .collect();
    assert_eq!(
        history,
        vec![(json!(1), json!({"n": 1})), (json!(2), json!("after"))]
    );

    // broadcast: the key applies per channel. "order-1" is known on chat:idem only.
    let broadcast = |key: &str| json!({"channels": ["chat:idem", "chat:idem2"], "data": key, "idempotency_key": key});
    let (_, b) = s.api("broadcast", broadcast("order-1")).await;
    let responses = b["result"]["responses"].clone();
    assert_eq!(responses[0]["result"], first, "{b}");
    assert_eq!(responses[1]["result"]["offset"], 1, "{b}");
    let (_, b) = s.api("broadcast", broadcast("b-1")).await;
    let once = b["result"]["responses"].clone();
    assert_eq!(once[0]["result"]["offset"], 3, "{b}");
    assert_eq!(once[1]["result"]["offset"], 2, "{b}");
    for key in ["order-1", "b-1"] {
        let (_, b) = s.api("broadcast", broadcast(key)).await;
        let want = if key == "b-1" { &once } else { &responses };
        assert_eq!(&b["result"]["responses"], want, "retried broadcast {key}");
    }
    s.publish("chat:idem", json!("end")).await;
    let mut got = vec![];
    loop {
        let p = c.push().await;
        let (ch, data) = (
            p["channel"].as_str().unwrap().to_string(),
            &p["pub"]["data"],
        );
        if *data == json!("end") {
            break;
        }
        got.push((ch, p["pub"]["offset"].as_u64().unwrap(), data.clone()));
    }
    got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        got,
        vec![
            ("chat:idem".into(), 3, json!("b-1")),
            ("chat:idem2".into(), 1, json!("order-1")),
            ("chat:idem2".into(), 2, json!("b-1")),
        ]
    );

    // An empty key is no key; a key of 256 bytes is taken, one of 257 refused with 107.
    for expected in [5, 6] {
        let (_, b) = s.api("publish", publish(json!("e"), "")).await;
        assert_eq!(b["result"]["offset"], expected, "{b}");
    }
    let (_, b) = s.api("publish", publish(json!(1), &"k".repeat(256))).await;
    assert_eq!(b["result"]["offset"], 7, "{b}");
    let (_, b) = s.api("publish", publish(json!(1), &"k".repeat(257))).await;
    assert_eq!(b["error"]["code"], 107, "{b}");
    let mut long = broadcast("x");
    long["idempotency_key"] = json!("é".repeat(129));
    let (_, b) = s.api("broadcast", long).await;
    assert_eq!(b["error"]["code"], 107, "258 bytes: {b}");
    let (_, b) = s
        .api("history", json!({"channel": "chat:idem", "limit": 0}))
        .await;
    assert_eq!(
        b["result"]["offset"], 7,
        "the refused keys published nothing"
    );
}

/// `api.idempotency_window = "0s"` turns keys off: every publish publishes.
#[tokio::test]
async fn idempotency_window_zero_turns_keys_off() {
    let s = TestServer::start_with("[api]\nidempotency_window = \"0s\"").await;
    for expected in [1, 2] {
        let (_, b) = s
            .api(
                "publish",
                json!({"channel": "chat:off", "data": 1, "idempotency_key": "k"}),
            )
            .await;
        assert_eq!(b["result"]["offset"], expected, "{b}");
    }
}

/// Consecutive publishes of a `batch` are committed as one log entry: 40 publishes (one with a
/// bad channel, answered with its own error) move the Raft log by one entry, not forty.
#[tokio::test]
async fn batch_publishes_commit_as_one_entry() {
    let s = TestServer::start().await;
    let admin = s.server.as_ref().unwrap().admin_addr;
    // The applied index once it has caught up with the log: openraft publishes its metrics
    // after the apply that answered the request, so a read right after a reply may be behind.
    let applied = || async {
        let (st, b) = http_get(admin, "/cluster/status").await;
        assert_eq!(st, 200);
        let v: Value = serde_json::from_slice(&b).unwrap();
        (v["applied_index"].as_u64(), v["last_log_index"].as_u64())
    };
    let log_index = || async {
        eventually("the applied index caught up with the log", || async {
            let (a, l) = applied().await;
            a.is_some() && a == l
        })
        .await;
        applied().await.0.expect("applied index")
    };
    // The node has a leader and has committed its start-up entries.
    s.publish("open:warm", json!(0)).await;
    let before = log_index().await;
    let mut commands: Vec<Value> = (0..40)
        .map(|i| json!({"publish": {"channel": format!("open:e{}", i % 4), "data": {"i": i}}}))
        .collect();
    commands[7] = json!({"publish": {"channel": "nope:x", "data": 1}});
    let (st, b) = s.api("batch", json!({ "commands": commands })).await;
    assert_eq!(st, 200, "{b}");
    let replies = b["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 40);
    assert_eq!(replies[7]["error"]["code"], 102, "unknown namespace: {b}");
    let mut next = [1u64; 4];
    for (i, r) in replies.iter().enumerate().filter(|(i, _)| *i != 7) {
        assert_eq!(r["publish"]["offset"], next[i % 4], "reply {i}: {b}");
        next[i % 4] += 1;
    }
    let after = log_index().await;
    // One entry for the batch (and at most one more: the node's start-up announcement may
    // commit meanwhile).
    assert!(
        (1..=2).contains(&(after - before)),
        "39 publishes took {} log entries",
        after - before
    );
}
