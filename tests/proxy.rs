//! Proxy hooks against a real application backend: `tests/proxy/backend.py`, a Python HTTP
//! server on 127.0.0.1:0 answering in Centrifugo's proxy format, started per test (its PID
//! killed on drop). Clients are real WebSockets; each test starts its own node.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The backend process.
struct Backend {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Backend {
    fn start() -> Backend {
        Self::start_args(&[])
    }

    /// An HTTPS backend with this certificate chain and key.
    fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Backend {
        Self::start_args(&["--tls".as_ref(), cert.as_os_str(), key.as_os_str()])
    }

    fn start_args(args: &[&std::ffi::OsStr]) -> Backend {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/backend.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the test backend");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the backend prints its port");
        Backend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How the backend answers from now on: "ok", "500", "timeout", "expire", "garbage".
    async fn mode(&self, mode: &str) {
        let body = json!({ "mode": mode }).to_string();
        let (st, _) = http_post(self.addr, "/control", None, body.as_bytes()).await;
        assert_eq!(st, 200);
    }

    /// Every call the backend received, in order.
    async fn calls(&self) -> Vec<Value> {
        let (st, body) = http_get(self.addr, "/calls").await;
        assert_eq!(st, 200);
        serde_json::from_slice::<Vec<Value>>(&body).unwrap()
    }

    async fn calls_to(&self, path: &str) -> Vec<Value> {
        let mut calls = self.calls().await;
        calls.retain(|c| c["path"] == path);
        calls
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every hook on, pointing at `b`, with a short timeout; namespace `proxied` uses the
/// channel hooks; RPC namespace `pay` goes to the named proxy `billing`.
fn proxy_toml(b: &Backend) -> String {
    proxy_toml_tagged(b, "")
}

/// [`proxy_toml`] with `tag` (a query string) after each hook's path, so the backend's record
/// tells which node called.
fn proxy_toml_tagged(b: &Backend, tag: &str) -> String {
    format!(
        r#"
[proxy.connect]
endpoint = "{connect}"
timeout = "500ms"
http_headers = ["Cookie", "X-Forwarded-For"]
static_http_headers = {{ "X-Backend-Key" = "k1", "X-Forwarded-For" = "static" }}
[proxy.refresh]
endpoint = "{refresh}"
[proxy.subscribe]
endpoint = "{subscribe}"
[proxy.publish]
endpoint = "{publish}"
[proxy.sub_refresh]
endpoint = "{sub_refresh}"
[proxy.rpc]
endpoint = "{rpc}"
timeout = "500ms"
http_headers = ["Cookie"]
include_connection_meta = true
[proxy.named.billing]
endpoint = "{billing}"
[[proxy.rpc_namespaces]]
name = "pay"
proxy_name = "billing"
[[channel.namespaces]]
name = "proxied"
history_size = 10
history_ttl = "5m"
subscribe_proxy = true
publish_proxy = true
sub_refresh_proxy = true
"#,
        connect = b.url(&format!("/connect{tag}")),
        refresh = b.url(&format!("/refresh{tag}")),
        subscribe = b.url(&format!("/subscribe{tag}")),
        publish = b.url(&format!("/publish{tag}")),
        sub_refresh = b.url(&format!("/sub_refresh{tag}")),
        rpc = b.url(&format!("/rpc{tag}")),
        billing = b.url("/rpc?via=billing"),
    )
}

async fn start(b: &Backend) -> TestServer {
    TestServer::start_with(&proxy_toml(b)).await
}

/// A WebSocket with extra request headers.
async fn open_with_headers(s: &TestServer, headers: &[(&str, &str)]) -> Client {
    let mut req = s.ws_url().into_client_request().unwrap();
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes());
        req.headers_mut()
            .insert(name.unwrap(), v.parse().expect("header value"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    Client::from_ws(ws)
}

/// A client connected without a token as `user` (through the connect proxy).
async fn proxied_client(s: &TestServer, user: &str) -> (Client, Value) {
    let mut c = Client::open(&s.ws_url()).await;
    let r = c.call("connect", json!({"data": {"user": user}})).await;
    assert!(r["connect"]["client"].is_string(), "connect: {r}");
    c.client_id = r["connect"]["client"].as_str().unwrap().to_string();
    (c, r)
}

fn admin(s: &TestServer) -> SocketAddr {
    s.server.as_ref().unwrap().admin_addr
}

/// A client without a token is authenticated by the connect proxy: the backend's user,
/// `info`, `data` and server-side `channels` take effect, and the request carries the client
/// id, transport, protocol and encoding.
#[tokio::test]
async fn tokenless_connect_is_decided_by_the_connect_proxy() {
    let b = Backend::start();
    let s = start(&b).await;
    let mut c = Client::open(&s.ws_url()).await;
    let r = c
        .call(
            "connect",
            json!({"data": {"user": "alice", "secret": "s3"}, "name": "test"}),
        )
        .await;
    let cr = &r["connect"];
    assert_eq!(cr["data"], json!({"secret": "s3"}), "{r}");
    assert!(cr.get("expires").is_none(), "no expire_at: {r}");
    assert!(
        cr["subs"]["proxied:server-alice"].is_object(),
        "server-side sub: {r}"
    );
    let client = cr["client"].as_str().unwrap();

    let calls = b.calls_to("/connect").await;
    assert_eq!(calls.len(), 1);
    let body = &calls[0]["body"];
    assert_eq!(body["client"], client);
    assert_eq!(
        (&body["transport"], &body["protocol"], &body["encoding"]),
        (&json!("websocket"), &json!("json"), &json!("json"))
    );
    assert_eq!(body["name"], "test");
    let xff = calls[0]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"));
    assert_eq!(
        xff.unwrap().1,
        "static",
        "a static header the client did not replace"
    );
    assert_eq!(body["data"]["user"], "alice");

    // The server-side subscription delivers.
    s.publish("proxied:server-alice", json!({"n": 1})).await;
    assert_eq!(
        c.publication("proxied:server-alice").await["data"],
        json!({"n": 1})
    );
    let r = c.call("rpc", json!({"method": "echo", "data": 1})).await;
    assert_eq!(r["rpc"]["data"]["user"], "alice", "{r}");

    // The backend's `meta` goes to the hooks that include it, never to the client.
    let rpc = b.calls_to("/rpc").await;
    assert_eq!(rpc[0]["body"]["meta"], json!({"tier": "gold"}));
    c.subscribe("proxied:m").await;
    c.call(
        "publish",
        json!({"channel": "proxied:m", "data": {"text": "m"}}),
    )
    .await;
    let publish = b.calls_to("/publish").await;
    assert!(publish[0]["body"].get("meta").is_none(), "not included");
    let p = c.publication("proxied:m").await;
    assert!(!p.to_string().contains("gold"), "{p}");
    assert!(!r.to_string().contains("gold"));
}

/// The backend's errors and disconnects reach the client with their codes.
#[tokio::test]
async fn connect_proxy_errors_and_disconnects_pass_through() {
    let b = Backend::start();
    let s = start(&b).await;
    let mut c = Client::open(&s.ws_url()).await;
    let r = c.call("connect", json!({"data": {}})).await;
    assert_eq!(r["error"], json!({"code": 1001, "message": "who are you?"}));
    let mut c = Client::open(&s.ws_url()).await;
    c.send(json!({"id": 1, "connect": {"data": {"deny": true}}}))
        .await;
    assert_eq!(c.closed().await, Closed::Code(4501, "unauthorized".into()));
    // A token still takes the JWT path, without asking the backend.
    let before = b.calls_to("/connect").await.len();
    s.client("carol").await;
    assert_eq!(b.calls_to("/connect").await.len(), before);
}

/// A backend that answers 500, times out or answers garbage gives the client the temporary
/// error 100 (nothing of the backend's body), counted per outcome; once the backend is back,
/// the same client connects.
#[tokio::test]
async fn backend_failures_are_the_temporary_error_and_recover() {
    let b = Backend::start();
    let s = start(&b).await;
    let temporary = json!({"code": 100, "message": "internal server error", "temporary": true});
    let mut c = Client::open(&s.ws_url()).await;
    for (mode, outcome) in [
        ("500", "http_5xx"),
        ("timeout", "timeout"),
        ("garbage", "bad_answer"),
    ] {
        b.mode(mode).await;
        let started = std::time::Instant::now();
        let r = c.call("connect", json!({"data": {"user": "dave"}})).await;
        assert_eq!(r["error"], temporary, "{mode}: {r}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{mode}: bounded"
        );
        let series =
            format!("switchyard_proxy_calls_total{{proxy=\"connect\",outcome=\"{outcome}\"}}");
        assert!(metric(admin(&s), &series).await >= 1.0, "{series}");
    }
    b.mode("ok").await;
    let r = c.call("connect", json!({"data": {"user": "dave"}})).await;
    assert!(r["connect"]["client"].is_string(), "recovered: {r}");
    let ok = "switchyard_proxy_calls_total{proxy=\"connect\",outcome=\"ok\"}";
    assert!(metric(admin(&s), ok).await >= 1.0);
    let count = "switchyard_proxy_call_duration_seconds_count{proxy=\"connect\"}";
    assert!(metric(admin(&s), count).await >= 4.0);
}

/// `rpc` reaches the backend by method, with the result or the backend's error passed back,
/// and methods of an RPC namespace go to its named proxy.
#[tokio::test]
async fn rpc_round_trips_through_the_backend() {
    let b = Backend::start();
    let s = start(&b).await;
    let mut c = s.client("erin").await;
    let r = c
        .call("rpc", json!({"method": "echo", "data": {"x": [1, 2]}}))
        .await;
    assert_eq!(
        r["rpc"]["data"],
        json!({"echo": {"x": [1, 2]}, "user": "erin", "method": "echo"}),
        "{r}"
    );
    let r = c.call("rpc", json!({"method": "fail"})).await;
    assert_eq!(
        r["error"],
        json!({"code": 1003, "message": "backend says no"})
    );
    let r = c
        .call("rpc", json!({"method": "pay:echo", "data": 7}))
        .await;
    assert_eq!(r["rpc"]["data"]["echo"], 7);
    let via: Vec<Value> = b.calls().await;
    assert!(
        via.iter()
            .any(|c| c["path"] == "/rpc?via=billing" && c["body"]["method"] == "pay:echo"),
        "pay:… went to the named proxy: {via:?}"
    );
    // A token's `meta` claim reaches the hooks that include it.
    let mut m = Client::open(&s.ws_url()).await;
    let t = hs256(json!({"sub": "mo", "meta": {"plan": "x"}}));
    assert!(m.connect(&t).await["connect"].is_object());
    m.call("rpc", json!({"method": "echo"})).await;
    let last = b.calls_to("/rpc").await.pop().unwrap();
    assert_eq!(last["body"]["meta"], json!({"plan": "x"}), "{last}");
    c.send(json!({"id": 99, "rpc": {"method": "bye"}})).await;
    assert_eq!(c.closed().await, Closed::Code(4500, "rpc said bye".into()));
}

/// Without an RPC proxy, `rpc` is still 108.
#[tokio::test]
async fn rpc_without_a_proxy_is_not_available() {
    let s = TestServer::start().await;
    let mut c = s.client("frank").await;
    let r = c.call("rpc", json!({"method": "echo"})).await;
    assert_eq!(r["error"]["code"], 108);
}

/// The subscribe proxy refuses one channel and allows another, whose reply carries the
/// backend's `data` and whose publications carry its `info` as `chan_info`.
#[tokio::test]
async fn subscribe_proxy_refuses_and_allows() {
    let b = Backend::start();
    let s = start(&b).await;
    let (mut c, _) = proxied_client(&s, "gina").await;
    let r = c
        .call("subscribe", json!({"channel": "proxied:forbidden-1"}))
        .await;
    assert_eq!(
        r["error"],
        json!({"code": 403, "message": "permission denied"})
    );
    let r = c
        .call("subscribe", json!({"channel": "proxied:room"}))
        .await;
    assert_eq!(
        r["subscribe"]["data"],
        json!({"welcome": "proxied:room"}),
        "{r}"
    );
    let subs = b.calls_to("/subscribe").await;
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1]["body"]["user"], "gina");
    assert_eq!(subs[1]["body"]["channel"], "proxied:room");
    c.call(
        "publish",
        json!({"channel": "proxied:room", "data": {"text": "x"}}),
    )
    .await;
    let p = c.publication("proxied:room").await;
    assert_eq!(p["info"]["chan_info"], json!({"role": "member"}), "{p}");
    assert_eq!(p["info"]["conn_info"], json!({"name": "Gina"}), "{p}");
}

/// A subscribe result's `override` changes the namespace's options for that subscription:
/// join_leave turned on by the backend sends the subscriber its own join, which the namespace
/// alone (join_leave off) does not.
#[tokio::test]
async fn subscribe_proxy_override_turns_on_join_leave() {
    let b = Backend::start();
    let s = start(&b).await;
    let (mut c, _) = proxied_client(&s, "lena").await;
    let r = c
        .call(
            "subscribe",
            json!({"channel": "proxied:plain", "join_leave": true}),
        )
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    let r = c
        .call(
            "subscribe",
            json!({"channel": "proxied:jl-1", "join_leave": true}),
        )
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    let join = c.push().await;
    assert_eq!(
        join["channel"], "proxied:jl-1",
        "the first push is jl-1's join: {join}"
    );
    assert_eq!(join["join"]["info"]["user"], "lena", "{join}");
    assert_eq!(join["join"]["info"]["chan_info"], json!({"role": "member"}));
}

/// The publish proxy rewrites a publication before it is committed, and a refused one is
/// never committed (history has only the rewritten one).
#[tokio::test]
async fn publish_proxy_rewrites_or_refuses_before_commit() {
    let b = Backend::start();
    let s = start(&b).await;
    let (mut c, _) = proxied_client(&s, "hank").await;
    c.subscribe("proxied:news").await;
    let r = c
        .call(
            "publish",
            json!({"channel": "proxied:news", "data": {"text": "hi"}}),
        )
        .await;
    assert!(r.get("publish").is_some(), "{r}");
    let p = c.publication("proxied:news").await;
    assert_eq!(p["data"], json!({"text": "HI", "by": "backend"}));
    let r = c
        .call(
            "publish",
            json!({"channel": "proxied:news", "data": {"reject": true}}),
        )
        .await;
    assert_eq!(
        r["error"],
        json!({"code": 1002, "message": "not in this channel"})
    );
    let (_, h) = s
        .api("history", json!({"channel": "proxied:news", "limit": -1}))
        .await;
    let pubs = h["result"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 1, "{h}");
    assert_eq!(pubs[0]["data"]["by"], "backend");
}

/// The refresh proxy extends an expiring connection (the client is not asked to refresh);
/// once the backend says `expired`, the connection is closed with 3005.
#[tokio::test]
async fn refresh_proxy_extends_then_expires_the_connection() {
    let b = Backend::start();
    let s = start(&b).await;
    let mut c = Client::open(&s.ws_url()).await;
    let r = c
        .call("connect", json!({"data": {"user": "ivy", "ttl": 1}}))
        .await;
    assert!(
        r["connect"].get("expires").is_none(),
        "server-side refresh: {r}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.calls_to("/refresh").await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "two refreshes in time"
        );
        c.pump(Duration::from_millis(200)).await;
    }
    let refreshes = b.calls_to("/refresh").await;
    assert_eq!(refreshes[0]["body"]["user"], "ivy");
    // Past its first expiry, the connection still works.
    let r = c.call("rpc", json!({"method": "echo"})).await;
    assert!(r.get("rpc").is_some(), "{r}");
    b.mode("expire").await;
    assert_eq!(
        c.closed().await,
        Closed::Code(3005, "connection expired".into())
    );
}

/// The sub_refresh proxy extends an expiring subscription; `expired` closes with 3006.
#[tokio::test]
async fn sub_refresh_proxy_extends_then_expires_the_subscription() {
    let b = Backend::start();
    let s = start(&b).await;
    let (mut c, _) = proxied_client(&s, "jack").await;
    let r = c
        .call(
            "subscribe",
            json!({"channel": "proxied:live", "data": {"ttl": 1}}),
        )
        .await;
    assert!(
        r["subscribe"].get("expires").is_none(),
        "server-side refresh: {r}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.calls_to("/sub_refresh").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a sub_refresh in time"
        );
        c.pump(Duration::from_millis(200)).await;
    }
    let call = &b.calls_to("/sub_refresh").await[0];
    assert_eq!(call["body"]["channel"], "proxied:live");
    assert_eq!(call["body"]["user"], "jack");
    b.mode("expire").await;
    assert_eq!(
        c.closed().await,
        Closed::Code(3006, "subscription expired".into())
    );
}

/// An `https://` endpoint is called over TLS, trusting `proxy.tls_ca`; the same backend
/// untrusted (the system's CAs do not know the test CA) fails at the handshake: error 100,
/// never a plain-text fallback.
#[tokio::test]
async fn https_endpoints_are_called_over_tls_with_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let out = dir.path().to_str().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_key = dir.path().join("ca.key");
    for args in [
        vec!["cert", "ca", "--out", out],
        vec![
            "cert",
            "node",
            "--name",
            "backend",
            "--san",
            "127.0.0.1",
            "--ca-cert",
            ca.to_str().unwrap(),
            "--ca-key",
            ca_key.to_str().unwrap(),
            "--out",
            out,
        ],
    ] {
        let st = std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap();
        assert!(st.status.success(), "{args:?}: {st:?}");
    }
    let b = Backend::start_tls(
        &dir.path().join("backend.pem"),
        &dir.path().join("backend.key"),
    );
    let rpc = format!("[proxy.rpc]\nendpoint = \"https://{}/rpc\"\n", b.addr);
    let s = TestServer::start_with(&format!("[proxy]\ntls_ca = {ca:?}\n{rpc}")).await;
    let mut c = s.client("nina").await;
    let r = c.call("rpc", json!({"method": "echo", "data": 5})).await;
    // The backend speaks only TLS: an answer means the call went over it.
    assert_eq!(r["rpc"]["data"]["echo"], 5, "{r}");

    let untrusted = TestServer::start_with(&rpc).await;
    let mut c = untrusted.client("nina").await;
    let r = c.call("rpc", json!({"method": "echo"})).await;
    assert_eq!(r["error"]["code"], 100, "{r}");
    assert_eq!(r["error"]["temporary"], true, "{r}");
    let refused = "switchyard_proxy_calls_total{proxy=\"rpc\",outcome=\"unreachable\"}";
    assert!(
        metric(admin(&untrusted), refused).await >= 1.0,
        "the handshake failed"
    );
}

/// Only the request headers in a proxy's `http_headers` reach the backend: the cookie
/// authenticates the connection, `X-Forwarded-For` passes, others do not.
#[tokio::test]
async fn allowed_request_headers_are_forwarded() {
    let b = Backend::start();
    let s = start(&b).await;
    let mut c = open_with_headers(
        &s,
        &[
            ("cookie", "session=kate; theme=dark"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-internal", "do-not-forward"),
        ],
    )
    .await;
    let r = c.call("connect", json!({})).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    let r = c.call("rpc", json!({"method": "echo"})).await;
    assert_eq!(r["rpc"]["data"]["user"], "kate", "the cookie's user: {r}");
    let calls = b.calls().await;
    let headers = |path: &str| -> serde_json::Map<String, Value> {
        let call = calls.iter().find(|c| c["path"] == path).unwrap();
        call["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    let connect = headers("/connect");
    assert_eq!(connect["cookie"], "session=kate; theme=dark");
    assert_eq!(connect["x-forwarded-for"], "203.0.113.7");
    assert!(!connect.contains_key("x-internal"));
    assert_eq!(connect["content-type"], "application/json");
    assert_eq!(connect["x-backend-key"], "k1", "static header");
    let rpc = headers("/rpc");
    assert_eq!(rpc["cookie"], "session=kate; theme=dark");
    assert!(
        !rpc.contains_key("x-forwarded-for"),
        "not in rpc's http_headers"
    );
}

/// Across a cluster, each hook is called by the node that holds the client's connection: a
/// client on node 2 connects, publishes and calls rpc through node 2's calls, a subscriber on
/// node 1 is decided by node 1's, and the publication node 2's backend rewrote reaches it.
#[tokio::test]
async fn hooks_are_called_by_the_node_holding_the_connection() {
    let b = Backend::start();
    let ports = [free_port("127.0.0.1"), free_port("127.0.0.1")];
    let peers = format!(
        "[[cluster.peers]]\nid = 1\naddr = \"127.0.0.1:{}\"\n[[cluster.peers]]\nid = 2\naddr = \"127.0.0.1:{}\"\n",
        ports[0], ports[1]
    );
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data = tempfile::tempdir().unwrap();
        let toml = base_toml().replace(
            "[cluster]\nlisten = \"127.0.0.1:0\"",
            &format!("[cluster]\nlisten = \"127.0.0.1:{port}\""),
        );
        let toml = format!(
            "{toml}\n{}\n{peers}\n[node]\nid = {}\ndata_dir = {:?}\n",
            proxy_toml_tagged(&b, &format!("?node={}", i + 1)),
            i + 1,
            data.path()
        );
        let cfg = switchyard::Config::from_toml(&toml).expect("node config");
        let server = switchyard::Server::start(cfg).await.expect("node starts");
        nodes.push(TestServer {
            addr: server.client_addr,
            server: Some(server),
            data,
        });
    }
    for n in &nodes {
        let admin = admin(n);
        eventually("both nodes ready", || async {
            http_get(admin, "/readyz").await.0 == 200
        })
        .await;
    }
    let (mut ben, _) = proxied_client(&nodes[0], "ben").await;
    ben.subscribe("proxied:x").await;
    let (mut amy, _) = proxied_client(&nodes[1], "amy").await;
    let r = amy
        .call(
            "publish",
            json!({"channel": "proxied:x", "data": {"text": "hi"}}),
        )
        .await;
    assert!(r.get("publish").is_some(), "{r}");
    let p = ben.publication("proxied:x").await;
    assert_eq!(p["data"], json!({"text": "HI", "by": "backend"}));
    assert_eq!(p["info"]["user"], "amy");
    let r = amy.call("rpc", json!({"method": "echo"})).await;
    assert_eq!(r["rpc"]["data"]["user"], "amy", "{r}");

    let calls = b.calls().await;
    let by = |path: &str, client: &str| -> Vec<String> {
        calls
            .iter()
            .filter(|c| {
                c["path"].as_str().unwrap().starts_with(path) && c["body"]["client"] == client
            })
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(by("/connect", &ben.client_id), ["/connect?node=1"]);
    assert_eq!(by("/subscribe", &ben.client_id), ["/subscribe?node=1"]);
    assert_eq!(by("/connect", &amy.client_id), ["/connect?node=2"]);
    assert_eq!(by("/publish", &amy.client_id), ["/publish?node=2"]);
    assert_eq!(by("/rpc", &amy.client_id), ["/rpc?node=2"]);
}

/// Runs an SDK script (`program script`) against a node (the built binary) whose hooks point
/// at a fresh backend; asserts it exits 0.
fn run_sdk_script(program: &std::path::Path, script: &std::path::Path) {
    assert!(
        program.exists() || program.components().count() == 1,
        "{} is missing: run scripts/test.sh, which installs the SDKs",
        program.display()
    );
    let b = Backend::start();
    let cfg = config_file(&proxy_toml(&b));
    let p = Proc::start(cfg.path(), &[]);
    let mut child = std::process::Command::new(program)
        .arg(script)
        .env("SY_WS_URL", p.ws_url())
        .env("SY_API_URL", format!("http://{}/api", p.client_addr))
        .env("SY_API_KEY", API_KEY)
        .env("SY_BACKEND", format!("http://{}", b.addr))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let what = script.display().to_string();
    let status = wait_child(&mut child, &what, Duration::from_secs(90));
    assert!(
        status.success(),
        "{what} failed ({status}); server log:\n{}",
        p.log.lock().unwrap().join("\n")
    );
}

fn compat_dir(sdk: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(sdk)
}

/// The real centrifuge-js SDK through every hook (`tests/compat/js/proxy.mjs`): a tokenless
/// connect authenticated by its cookie with a server-side subscription, a subscribe refused
/// and one allowed, a publication rewritten, rpc with data and with a backend error, refresh
/// extending a connection, and a backend answering 500 or timing out (the SDK sees the
/// temporary error and connects once the backend is back).
#[test]
fn centrifuge_js_through_the_proxy() {
    let dir = compat_dir("js");
    assert!(
        dir.join("node_modules/centrifuge").exists(),
        "centrifuge-js is not installed: run scripts/test.sh (npm ci in tests/compat/js)"
    );
    run_sdk_script(std::path::Path::new("node"), &dir.join("proxy.mjs"));
}

/// The real centrifuge-python SDK through the hooks (`tests/compat/python/proxy.py`): a
/// tokenless connect by cookie with connect data and a server-side subscription, rpc with data
/// and with a backend error, a subscribe refused and one allowed, a publication rewritten.
#[test]
fn centrifuge_python_through_the_proxy() {
    let dir = compat_dir("python");
    run_sdk_script(&dir.join(".venv/bin/python"), &dir.join("proxy.py"));
}
