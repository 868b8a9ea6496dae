//! The live dashboard example's feed: publishes the five streams a monitoring dashboard shows
//! through the server API, and serves the page (examples/dashboard/index.html) with a staff
//! and an admin link, each carrying a connection token minted with the node's secret.
//!
//! ```text
//! switchyard serve --config examples/dashboard/config.toml     # the node
//! cargo run --example dashboard-feed                           # the feed and the page
//! ```
//! Streams (intervals divided by `--speed`):
//! - `staff:system-health` every 10 s, `staff:analytics-update` every 45 s (a 1–2 KB summary),
//! - `staff:sensor-data` continuously (every 500 ms), `staff:device-status` when a device
//!   changes (every 2–6 s), `admin:alert-new` as alerts happen (every 3–9 s).
//!
//! Every stream publishes once at start, so a page opened at once has a value for each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use rand::Rng;
use serde_json::{Value, json};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// The node's server API.
    #[arg(long, default_value = "http://127.0.0.1:8000/api")]
    api: String,
    /// `auth.api_key` of the node.
    #[arg(long, env = "SY_API_KEY", default_value = "dashboard-example-api-key")]
    api_key: String,
    /// `auth.token_hmac_secret` of the node (to mint the page's connection tokens).
    #[arg(
        long,
        env = "SY_TOKEN_SECRET",
        default_value = "dashboard-example-secret"
    )]
    secret: String,
    /// The node's client WebSocket URL, as the page should reach it.
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    ws: String,
    /// Where to serve the page (add its origin to the node's `client.allowed_origins`).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// centrifuge-js's browser build, copied from npm (`centrifuge/dist/centrifuge.js`).
    #[arg(
        long,
        default_value = "tests/compat/js/node_modules/centrifuge/dist/centrifuge.js"
    )]
    sdk: PathBuf,
    /// Divide every interval by this (a test runs the day faster).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Stop after this long (default: run until interrupted).
    #[arg(long, value_parser = humantime::parse_duration)]
    run_for: Option<Duration>,
}

/// One stream: its channel, how long between publications (min..max seconds, before
/// `--speed`), and how to make a payload.
struct Stream {
    channel: &'static str,
    every: (f64, f64),
    make: fn(u64) -> Value,
}

const STREAMS: &[Stream] = &[
    Stream {
        channel: "staff:system-health",
        every: (10.0, 10.0),
        make: health,
    },
    Stream {
        channel: "staff:analytics-update",
        every: (45.0, 45.0),
        make: analytics,
    },
    Stream {
        channel: "staff:sensor-data",
        every: (0.5, 0.5),
        make: sensor,
    },
    Stream {
        channel: "staff:device-status",
        every: (2.0, 6.0),
        make: device,
    },
    Stream {
        channel: "admin:alert-new",
        every: (3.0, 9.0),
        make: alert,
    },
];

fn health(n: u64) -> Value {
    let mut r = rand::rng();
    json!({"seq": n, "status": "ok", "cpu_pct": r.random_range(5.0..60.0_f64).round(),
           "mem_pct": r.random_range(30.0..70.0_f64).round(), "uptime_s": n * 10})
}

fn analytics(n: u64) -> Value {
    let mut r = rand::rng();
    let pages: Vec<Value> = (0..20)
        .map(|i| json!({"path": format!("/product/{i}"), "views": r.random_range(10..5000)}))
        .collect();
    json!({"seq": n, "active_users": r.random_range(100..900), "sessions_today": 1000 + n * 37,
           "conversion_pct": r.random_range(1.0..4.0_f64), "top_pages": pages})
}

fn sensor(n: u64) -> Value {
    let mut r = rand::rng();
    json!({"seq": n, "sensor": format!("temp-{}", n % 4), "celsius": 20.0 + r.random_range(-2.0..2.0_f64),
           "ts_ms": switchyard::auth::unix_now() * 1000})
}

fn device(n: u64) -> Value {
    let mut r = rand::rng();
    json!({"seq": n, "device": format!("gateway-{}", r.random_range(1..6)), "online": r.random_bool(0.8)})
}

fn alert(n: u64) -> Value {
    let sev = ["info", "warning", "critical"][rand::rng().random_range(0..3)];
    json!({"seq": n, "severity": sev, "message": format!("alert #{n}: threshold crossed")})
}

/// One kept-alive HTTP/1.1 connection to the server API, opened again after an error.
struct Api {
    uri: hyper::Uri,
    authority: String,
    key: String,
    conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Api {
    fn new(api: &str, key: &str) -> anyhow::Result<Api> {
        let uri: hyper::Uri = format!("{api}/publish").parse()?;
        let authority = uri.authority().context("api URL has no host")?.to_string();
        Ok(Api {
            uri,
            authority,
            key: key.into(),
            conn: None,
        })
    }

    /// Publishes one payload; the error says why it failed (the connection is then dropped).
    async fn publish(&mut self, channel: &str, data: Value) -> anyhow::Result<()> {
        let res = self.try_publish(channel, data).await;
        if res.is_err() {
            self.conn = None;
        }
        res
    }

    async fn try_publish(&mut self, channel: &str, data: Value) -> anyhow::Result<()> {
        if self.conn.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.authority).await?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            self.conn = Some(send);
        }
        let send = self.conn.as_mut().expect("connected");
        send.ready().await?;
        let body = json!({"channel": channel, "data": data}).to_string();
        let req = Request::post(self.uri.clone())
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("x-api-key", &self.key)
            .body(Full::new(Bytes::from(body)))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let answer = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        anyhow::ensure!(
            status == 200 && v.get("error").is_none(),
            "publish to {channel}: HTTP {status} {v}"
        );
        Ok(())
    }
}

/// Runs one stream, on its own API connection, until the process stops.
async fn feed(args: Arc<Args>, s: &'static Stream) -> anyhow::Result<()> {
    let mut api = Api::new(&args.api, &args.api_key)?;
    for n in 1u64.. {
        if let Err(e) = api.publish(s.channel, (s.make)(n)).await {
            eprintln!("{e:#}");
        }
        let secs = rand::rng().random_range(s.every.0..=s.every.1) / args.speed;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
    Ok(())
}

/// A connection token for `user`; admins also get the admin streams as server-side
/// subscriptions.
fn token(secret: &str, user: &str, admin: bool) -> anyhow::Result<String> {
    let channels = if admin {
        vec!["admin:alert-new".to_string()]
    } else {
        vec![]
    };
    switchyard::auth::mint(
        secret,
        switchyard::auth::MintRequest {
            user: user.into(),
            ttl: Some(Duration::from_secs(24 * 3600)),
            channels,
            ..Default::default()
        },
    )
}

/// Serves the page and the SDK file.
async fn serve_page(args: Arc<Args>) -> anyhow::Result<()> {
    let page = Bytes::from(std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/dashboard/index.html"),
    )?);
    let sdk = Bytes::from(std::fs::read(&args.sdk).with_context(|| {
        format!(
            "{}: copy centrifuge-js's dist/centrifuge.js from npm (npm install centrifuge) or give --sdk",
            args.sdk.display()
        )
    })?);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    for (who, admin) in [("staff", false), ("admin", true)] {
        let t = token(&args.secret, &format!("{who}-1"), admin)?;
        println!("{who} dashboard: http://{addr}/#ws={}&token={t}", args.ws);
    }
    loop {
        let (sock, _) = listener.accept().await?;
        let (page, sdk) = (page.clone(), sdk.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (body, kind) = match req.uri().path() {
                    "/centrifuge.js" => (sdk.clone(), "text/javascript"),
                    _ => (page.clone(), "text/html; charset=utf-8"),
                };
                async move {
                    Response::builder()
                        .header("content-type", kind)
                        .body(Full::new(body))
                }
            });
            let io = hyper_util::rt::TokioIo::new(sock);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    anyhow::ensure!(args.speed > 0.0, "--speed must be above 0");
    Api::new(&args.api, &args.api_key)?; // a bad --api fails here, not in every stream
    for s in STREAMS {
        tokio::spawn(feed(args.clone(), s));
    }
    let page = tokio::spawn(serve_page(args.clone()));
    match args.run_for {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => Ok(()),
                r = page => r?,
            }
        }
        None => page.await?,
    }
}
