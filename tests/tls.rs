//! TLS with real handshakes: certificates made by `switchyard cert`, `wss://` end to end, a
//! plain client on the TLS port, certificate and limit reload on SIGHUP, and mutual TLS
//! between nodes that keeps out a node with a foreign certificate.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// Runs `switchyard cert …` (the operator's tool) and asserts it succeeded.
fn cert(args: &[&str]) {
    let out = std::process::Command::new(bin())
        .arg("cert")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchyard cert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir/<name>/` and a certificate for each `(file name, SANs)` signed by it.
fn make_pki(dir: &Path, name: &str, certs: &[(&str, &[&str])]) -> PathBuf {
    let d = dir.join(name);
    let ds = d.to_str().unwrap();
    cert(&["ca", "--out", ds, "--name", name, "--days", "2"]);
    for (n, sans) in certs {
        let mut args = vec![
            "node",
            "--name",
            n,
            "--ca-cert",
            &format!("{ds}/ca.pem"),
            "--ca-key",
            &format!("{ds}/ca.key"),
            "--out",
            ds,
            "--days",
            "2",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        for s in *sans {
            args.push("--san".into());
            args.push(s.to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cert(&refs);
    }
    d
}

fn connector(ca: &Path, tls12_only: bool, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider);
    let b = if tls12_only {
        b.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        b.with_safe_default_protocol_versions()
    }
    .unwrap();
    let mut c = b.with_root_certificates(roots).with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(c))
}

/// A TLS connection offering ALPN `http/1.1` only, as WebSocket clients do.
async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    tls12_only: bool,
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_alpn(addr, ca, tls12_only, &[b"http/1.1"]).await
}

async fn tls_connect_alpn(
    addr: SocketAddr,
    ca: &Path,
    tls12_only: bool,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(WAIT, connector(ca, tls12_only, alpn).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// A `wss://` client connection. The server joins messages queued together into one frame
/// (one line each), so lines after the one a caller waited for are kept for the next wait.
struct Wss {
    ws: WebSocketStream<TlsStream<TcpStream>>,
    inbox: std::collections::VecDeque<Value>,
}

/// A `wss://` connection, connected as `user` (asserts the connect reply).
async fn wss_client(addr: SocketAddr, ca: &Path, user: &str) -> Wss {
    let tls = tls_connect(addr, ca, false).await.expect("TLS handshake");
    let url = format!("wss://127.0.0.1:{}/connection/websocket", addr.port());
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    let mut ws = Wss {
        ws,
        inbox: Default::default(),
    };
    let r = call(&mut ws, json!({"id": 1, "connect": {"token": token(user)}})).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    ws
}

/// Sends one command and returns the reply with its id (pushes are skipped, pings answered).
async fn call(ws: &mut Wss, cmd: Value) -> Value {
    let id = cmd["id"].clone();
    ws.ws.send(Message::text(cmd.to_string())).await.unwrap();
    next_matching(ws, |v| v["id"] == id).await
}

/// The next message `want` accepts; messages before it are skipped, pings answered.
async fn next_matching(ws: &mut Wss, want: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            while let Some(v) = ws.inbox.pop_front() {
                if v.as_object().is_some_and(|o| o.is_empty()) {
                    ws.ws.send(Message::text("{}")).await.unwrap();
                } else if want(&v) {
                    return v;
                }
            }
            match ws.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    for line in t.as_str().lines() {
                        ws.inbox.push_back(serde_json::from_str(line).unwrap());
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("wss connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("reply in time")
}

/// Subscribes, publishes from the client and receives the publication back, over `ws`.
async fn round_trip(ws: &mut Wss, channel: &str, n: u64) {
    let r = call(ws, json!({"id": 10 + n, "subscribe": {"channel": channel}})).await;
    assert!(r.get("error").is_none() || r["error"]["code"] == 105, "{r}");
    let id = 100 + n;
    let cmd = json!({"id": id, "publish": {"channel": channel, "data": {"n": n}}});
    ws.ws.send(Message::text(cmd.to_string())).await.unwrap();
    // The publication push and the reply may come in either order.
    let (mut replied, mut pushed) = (false, false);
    while !(replied && pushed) {
        let v = next_matching(ws, |v| v["id"] == id || v["push"]["pub"]["data"]["n"] == n).await;
        if v["id"] == id {
            assert!(v.get("error").is_none(), "{v}");
            replied = true;
        } else {
            assert_eq!(v["push"]["channel"], channel);
            pushed = true;
        }
    }
}

fn log_has(p: &Proc, needle: &str) -> bool {
    p.log.lock().unwrap().iter().any(|l| l.contains(needle))
}

async fn wait_log(p: &Proc, needle: &str) {
    eventually(&format!("log line {needle:?}"), || async {
        log_has(p, needle)
    })
    .await;
}

/// A node serving TLS on its client listener with a server certificate for `names`, signed
/// by a new CA `ca_name`; returns the node, the CA file and the config file (kept alive).
fn tls_node(
    dir: &Path,
    ca_name: &str,
    names: &[&str],
) -> (Proc, std::path::PathBuf, tempfile::NamedTempFile) {
    let pki = make_pki(dir, ca_name, &[("server", names)]);
    let cfg = config_file("");
    let (cert, key) = (pki.join("server.pem"), pki.join("server.key"));
    let p = Proc::start(
        cfg.path(),
        &[
            ("SWITCHYARD_CLIENT__TLS_CERT", cert.to_str().unwrap()),
            ("SWITCHYARD_CLIENT__TLS_KEY", key.to_str().unwrap()),
        ],
    );
    (p, pki.join("ca.pem"), cfg)
}

#[tokio::test]
async fn wss_end_to_end_and_plain_client_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (p, ca, _cfg) = tls_node(dir.path(), "ca1", &["127.0.0.1", "localhost"]);
    // TLS 1.3 by default, ALPN http/1.1; a TLS 1.2-only client is served too.
    let tls = tls_connect(p.client_addr, &ca, false).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let tls12 = tls_connect(p.client_addr, &ca, true).await.unwrap();
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    // HTTPS for the API.
    let mut https = tls12;
    let body = json!({"channel": "open:tls", "data": {"via": "api"}}).to_string();
    https
        .write_all(
            format!(
                "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(WAIT, https.read_to_end(&mut resp))
        .await
        .unwrap()
        .ok();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""offset":1"#), "{resp}");
    drop(tls);

    let mut ws = wss_client(p.client_addr, &ca, "alice").await;
    round_trip(&mut ws, "open:tls", 1).await;

    // A plain WebSocket client on the TLS port fails promptly, and the node keeps serving.
    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{}/connection/websocket", p.client_addr)),
    )
    .await
    .expect("a plain client is answered, not left hanging");
    assert!(plain.is_err(), "a plain client cannot talk to the TLS port");
    // The client may see the failure before the node has counted it: poll.
    eventually("the failed handshake is counted", || async {
        metric(
            p.admin_addr,
            "switchyard_connections_rejected_total{reason=\"tls_handshake\"}",
        )
        .await
            >= 1.0
    })
    .await;
    // A client that does not trust the node's CA is refused by its own side.
    let other = make_pki(dir.path(), "ca2", &[]);
    assert!(
        tls_connect(p.client_addr, &other.join("ca.pem"), false)
            .await
            .is_err()
    );
    round_trip(&mut ws, "open:tls", 2).await;
}

/// HTTPS clients offering ALPN `h2` get HTTP/2 (an API publish over it reaches a `wss://`
/// subscriber on the same listener); clients offering `http/1.1` only keep HTTP/1.1.
#[tokio::test]
async fn https_api_over_http2_with_alpn_h2() {
    let dir = tempfile::tempdir().unwrap();
    let (p, ca, _cfg) = tls_node(dir.path(), "ca-h2", &["127.0.0.1"]);
    let mut ws = wss_client(p.client_addr, &ca, "alice").await;
    let r = call(
        &mut ws,
        json!({"id": 2, "subscribe": {"channel": "open:h2tls"}}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    for tls12_only in [false, true] {
        let tls = tls_connect_alpn(p.client_addr, &ca, tls12_only, &[b"h2", b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut h2 = H2::handshake(tls).await;
        let n = u64::from(tls12_only);
        let r = h2_api(
            &mut h2.send,
            "publish",
            json!({"channel": "open:h2tls", "data": {"n": n}}),
        )
        .await;
        assert_eq!(r["offset"], n + 1, "{r}");
        let v = next_matching(&mut ws, |v| v["push"]["pub"]["data"]["n"] == n).await;
        assert_eq!(v["push"]["channel"], "open:h2tls");
    }
    let tls = tls_connect(p.client_addr, &ca, false).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// SIGHUP re-reads the certificate: established connections go on, new handshakes use the
/// new one; a broken file changes nothing. Limits are re-read too.
#[tokio::test]
async fn sighup_reloads_certificates_and_limits_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_pki(dir.path(), "ca-a", &[("server", &["127.0.0.1"])]);
    let b = make_pki(dir.path(), "ca-b", &[("server", &["127.0.0.1"])]);
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let install = |from: &Path| {
        std::fs::copy(from.join("server.pem"), live.join("server.pem")).unwrap();
        std::fs::copy(from.join("server.key"), live.join("server.key")).unwrap();
    };
    install(&a);
    let cfg_path = dir.path().join("node.toml");
    let write_cfg = |max: usize, level: &str, history_max: usize| {
        let toml = base_toml().replace(
            "[client]",
            &format!(
                "[log]\nlevel = {level:?}\n[client]\ntls_cert = {:?}\ntls_key = {:?}\nmax_connections = {max}\nhistory_max_publications = {history_max}",
                live.join("server.pem"),
                live.join("server.key")
            ),
        );
        std::fs::write(&cfg_path, toml).unwrap();
    };
    write_cfg(1, "info", 1000);
    let p = Proc::start(&cfg_path, &[]);
    let (ca_a, ca_b) = (a.join("ca.pem"), b.join("ca.pem"));
    let mut ws = wss_client(p.client_addr, &ca_a, "kept").await;
    round_trip(&mut ws, "open:reload", 1).await;
    // At max_connections = 1 a second WebSocket is refused before the upgrade.
    let tls = tls_connect(p.client_addr, &ca_a, false).await.unwrap();
    let url = format!(
        "wss://127.0.0.1:{}/connection/websocket",
        p.client_addr.port()
    );
    match tokio_tungstenite::client_async(url.clone(), tls).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected HTTP 503, got {other:?}"),
    }

    let subscribed_lines = || {
        p.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(r#""message":"subscribed""#))
            .count()
    };
    assert_eq!(subscribed_lines(), 0, "no debug lines at level info");

    install(&b);
    write_cfg(10, "info,switchyard=debug", 999);
    p.signal("HUP");
    wait_log(&p, "client TLS certificate reloaded").await;
    wait_log(&p, "limits reloaded").await;
    wait_log(&p, "take effect only after a restart").await;
    wait_log(&p, "reload done").await;
    // The established connection is untouched.
    round_trip(&mut ws, "open:reload", 2).await;
    // New handshakes present the new certificate.
    assert!(tls_connect(p.client_addr, &ca_a, false).await.is_err());
    let mut second = wss_client(p.client_addr, &ca_b, "second").await;
    round_trip(&mut second, "open:reload", 3).await;
    // (The log is read from the process's stderr by a thread: poll for it.)
    eventually("log.level reloaded: debug lines now", || async {
        subscribed_lines() >= 1
    })
    .await;

    // A broken certificate file: the reload is refused and the current certificate stays.
    std::fs::write(live.join("server.pem"), "not a certificate").unwrap();
    p.signal("HUP");
    wait_log(&p, "reload failed").await;
    let mut third = wss_client(p.client_addr, &ca_b, "third").await;
    round_trip(&mut third, "open:reload", 4).await;
    round_trip(&mut ws, "open:reload", 5).await;
}

async fn ready(p: &Proc) -> bool {
    http_get(p.admin_addr, "/readyz").await.0 == 200
}

/// Three nodes with mutual TLS, where node 3 holds a certificate from a foreign CA: nodes 1
/// and 2 form the cluster and replicate; node 3 can neither join nor vote, and plain HTTP to
/// a cluster port gets no answer.
#[tokio::test]
async fn cluster_mutual_tls_keeps_out_a_foreign_node() {
    let dir = tempfile::tempdir().unwrap();
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let pki = make_pki(
        dir.path(),
        "cluster",
        &[("n1", &["127.0.0.1"]), ("n2", &["127.0.0.2"])],
    );
    let foreign = make_pki(dir.path(), "foreign", &[("n3", &["127.0.0.3"])]);
    let addrs: Vec<String> = ips
        .iter()
        .map(|ip| format!("{ip}:{}", free_port(ip)))
        .collect();
    let mut peers = String::new();
    for (i, a) in addrs.iter().enumerate() {
        peers.push_str(&format!(
            "[[cluster.peers]]\nid = {}\naddr = \"{a}\"\n",
            i + 1
        ));
    }
    let mut procs = Vec::new();
    let mut files = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let (cert_dir, name) = if i < 2 {
            (&pki, format!("n{}", i + 1))
        } else {
            (&foreign, "n3".to_string())
        };
        let toml = base_toml()
            .replace("[client]\nlisten = \"127.0.0.1:0\"", &format!("[client]\nlisten = \"{ip}:0\""))
            .replace("[admin]\nlisten = \"127.0.0.1:0\"", &format!("[admin]\nlisten = \"{ip}:0\""))
            .replace(
                "[cluster]\nlisten = \"127.0.0.1:0\"",
                &format!(
                    "[cluster]\nlisten = \"{}\"\npropose_timeout = \"3s\"\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}",
                    addrs[i],
                    // Every node trusts the cluster CA; only node 3's own certificate is foreign.
                    pki.join("ca.pem"),
                    cert_dir.join(format!("{name}.pem")),
                    cert_dir.join(format!("{name}.key")),
                ),
            );
        let path = dir.path().join(format!("node{}.toml", i + 1));
        std::fs::write(&path, format!("{toml}\n[node]\nid = {}\n{peers}", i + 1)).unwrap();
        files.push(path);
    }
    for f in &files {
        procs.push(Proc::start(f, &[]));
    }
    eventually("nodes 1 and 2 are ready", || async {
        ready(&procs[0]).await && ready(&procs[1]).await
    })
    .await;
    let (st, b) = api_call(
        procs[0].client_addr,
        "publish",
        Some(API_KEY),
        &json!({"channel": "open:mtls", "data": {"n": 1}}).to_string(),
    )
    .await;
    assert_eq!((st, b["result"]["offset"].clone()), (200, json!(1)), "{b}");
    eventually("node 2 has the publication", || async {
        let (_, b) = api_call(
            procs[1].client_addr,
            "history",
            Some(API_KEY),
            &json!({"channel": "open:mtls", "limit": -1}).to_string(),
        )
        .await;
        b["result"]["publications"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    // Node 3 stays out: never ready, never a member with a leader it learned of.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!ready(&procs[2]).await, "the foreign node is not ready");
    let (_, s3) = http_get(procs[2].admin_addr, "/cluster/status").await;
    let s3: Value = serde_json::from_slice(&s3).unwrap();
    assert_eq!(s3["applied_index"].as_u64().unwrap_or(0), 0, "{s3}");
    assert!(
        s3["leader"].is_null(),
        "node 3 never learned of a leader: {s3}"
    );
    assert!(
        log_has(&procs[0], "cluster TLS handshake refused")
            || log_has(&procs[1], "cluster TLS handshake refused"),
        "the members refused node 3's certificate"
    );
    // The members kept one leader (node 3 could not disrupt them with votes).
    let (_, s1) = http_get(procs[0].admin_addr, "/cluster/status").await;
    let s1: Value = serde_json::from_slice(&s1).unwrap();
    assert!(matches!(s1["leader"].as_u64(), Some(1 | 2)), "{s1}");
    // Plain HTTP on a cluster port gets no HTTP answer.
    let mut raw = TcpStream::connect(&addrs[0]).await.unwrap();
    raw.write_all(b"POST /raft/vote HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut out)).await;
    assert!(
        !String::from_utf8_lossy(&out).starts_with("HTTP/"),
        "no HTTP over a plain connection to the mTLS cluster port"
    );
}

/// The HTTP streaming transports over TLS: `curl` on `https://…/connection/uni_sse`, with
/// HTTP/2 (ALPN `h2`) and HTTP/1.1, receives the connect push and an API publication.
#[tokio::test]
async fn uni_sse_over_https_with_curl() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "ca-sse", &[("server", &["127.0.0.1"])]);
    let cfg = config_file("");
    let (cert, key) = (pki.join("server.pem"), pki.join("server.key"));
    let p = Proc::start(
        cfg.path(),
        &[
            ("SWITCHYARD_CLIENT__TLS_CERT", cert.to_str().unwrap()),
            ("SWITCHYARD_CLIENT__TLS_KEY", key.to_str().unwrap()),
            ("SWITCHYARD_CLIENT__UNI_SSE", "true"),
        ],
    );
    let exp = switchyard::auth::unix_now() + 3600;
    let tok = hs256(json!({"sub": "tls", "exp": exp, "channels": ["open:tls-sse"]}));
    let url = format!(
        "https://127.0.0.1:{}/connection/uni_sse",
        p.client_addr.port()
    );
    let ca = pki.join("ca.pem");
    for (n, proto) in [(1u64, "--http2"), (2, "--http1.1")] {
        let mut child = tokio::process::Command::new("curl")
            .args(["-sS", "-N", proto, "--cacert", ca.to_str().unwrap(), "-G"])
            .args([
                "--data-urlencode",
                &format!("cf_connect={{\"token\":\"{tok}\"}}"),
            ])
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = async || loop {
            let l = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("the stream goes on");
            if let Some(d) = l.strip_prefix("data: ") {
                return serde_json::from_str::<Value>(d).unwrap();
            }
        };
        assert!(
            next().await["connect"]["subs"]["open:tls-sse"].is_object(),
            "{proto}"
        );
        let (st, _) = api_call_tls(&p, &ca, n).await;
        assert_eq!(st, 200);
        let msg = next().await;
        assert_eq!(msg["pub"]["data"]["n"], n, "{proto}: {msg}");
    }
}

/// A publish to `open:tls-sse` through the HTTPS API (HTTP/1.1).
async fn api_call_tls(p: &Proc, ca: &Path, n: u64) -> (u16, Value) {
    let mut tls = tls_connect(p.client_addr, ca, false).await.unwrap();
    let body = json!({"channel": "open:tls-sse", "data": {"n": n}}).to_string();
    tls.write_all(
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
