//! `[client]`: the client listener, its timers, sizes, limits, origins and TLS files.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration_str;

/// `[client]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Address of the client listener (`/connection/websocket`, `/api/*`, `/healthz`).
    pub listen: String,
    /// Interval between server pings (`{}`); reported to clients in the connect reply.
    #[serde(with = "duration_str")]
    pub ping_interval: Duration,
    /// How long after a ping the client's pong may take before disconnect 3012.
    #[serde(with = "duration_str")]
    pub pong_timeout: Duration,
    /// A connection that has not sent a valid `connect` within this time is closed with 3502.
    #[serde(with = "duration_str")]
    pub stale_timeout: Duration,
    /// A write to a client that does not complete within this time drops the connection (a
    /// client that stopped reading cannot pin its task and socket forever).
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    /// How long a connection's writer waits after being woken before it writes, so that
    /// publications arriving meanwhile share one frame and one syscall (0 = write at once).
    /// Trades that much delivery latency for CPU under heavy fan-out; at most 1 s.
    #[serde(with = "duration_str")]
    pub write_delay: Duration,
    /// Largest WebSocket message accepted from a client, in bytes (larger: close 1009). A
    /// compressed message counts twice: its compressed size, and its size while inflating.
    pub max_message_size: usize,
    /// Offer permessage-deflate (RFC 7692) to clients that ask for it, without context
    /// takeover either way (no per-connection compressor state); off: the extension is never
    /// negotiated.
    pub websocket_compression: bool,
    /// Messages shorter than this many bytes go uncompressed (alone in a frame) or stored
    /// (beside compressed ones).
    pub websocket_compression_min_size: usize,
    /// Deflate level, 1 (fastest) to 9 (smallest).
    pub websocket_compression_level: u32,
    /// Bound of one connection's outbound queue, in bytes; overflow disconnects with 3008.
    pub outbound_queue_bytes: usize,
    /// Most commands that propose (publish) one connection may have waiting for their commit.
    /// A connection's publishes are handed to the replicator in arrival order without waiting
    /// for the previous commit, and each is answered when its own entry commits; at this bound
    /// the connection is not read until one completes (back-pressure, never a disconnect).
    pub max_inflight_proposals: usize,
    /// Most channels one client may be subscribed to (106 on subscribe, 3505 at connect).
    pub max_channels: usize,
    /// Longest channel name, in bytes.
    pub channel_max_length: usize,
    /// Most publications a recovery may return; a larger gap is not recovered.
    pub recovery_max_publications: usize,
    /// Most publications one `history` call returns.
    pub history_max_publications: usize,
    /// PEM certificate chain for `wss://` / `https://` on the client listener (with `tls_key`;
    /// both unset = plain TCP). Reloaded on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Longest time a new connection may take to finish its TLS handshake and send its HTTP
    /// request head (slowloris protection); the connection is closed after it.
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
    /// Largest HTTP request head (request line and headers), in bytes; larger: HTTP 431.
    pub max_header_size: usize,
    /// Most client connections (WebSockets and HTTP streams) this node serves at once; beyond
    /// it an upgrade or a stream request is answered HTTP 503 (0 = no cap).
    pub max_connections: usize,
    /// Most simultaneous TCP connections from one IP address to the client listener; beyond
    /// it requests are answered HTTP 503 (0 = no cap).
    pub max_connections_per_ip: usize,
    /// New TCP connections per second accepted from one IP address (sustained rate); beyond
    /// it requests are answered HTTP 429 (0 = no limit).
    pub connection_rate_per_ip: u32,
    /// How many connections one IP address may open in a burst above the rate.
    pub connection_burst_per_ip: u32,
    /// Commands per second one connection may send (sustained); beyond it a command is
    /// answered with error 111, and a client that keeps on is closed with 3013 (0 = no limit).
    pub command_rate: u32,
    /// How many commands one connection may send in a burst above the rate.
    pub command_burst: u32,
    /// Origins allowed to open WebSocket connections (`Origin` header): exact origins such as
    /// `https://app.example.com`, or `*`. Empty: requests without an `Origin` (non-browser
    /// clients) and same-origin requests (Origin host = Host header) only.
    pub allowed_origins: Vec<String>,
    /// Subscribe every connecting user (not anonymous ones) server-side to their personal
    /// channel `<personal_channel_namespace>:#<user>` (`#<user>` without a namespace).
    pub subscribe_to_user_personal_channel: bool,
    /// Namespace of the personal channels ("" = none).
    pub personal_channel_namespace: String,
    /// `/connection/uni_websocket`: unidirectional WebSocket (connect request as the first
    /// message or in `cf_connect`, then pushes only).
    pub uni_websocket: bool,
    /// `/connection/uni_sse`: unidirectional Server-Sent Events (connect request in the
    /// `cf_connect` query parameter, or a POST body).
    pub uni_sse: bool,
    /// `/connection/uni_http_stream`: unidirectional HTTP streaming (POST with the connect
    /// request as its body; newline-delimited JSON pushes).
    pub uni_http_stream: bool,
    /// `/connection/http_stream` and `/emulation`: centrifuge-js's HTTP-streaming fallback
    /// (bidirectional emulation).
    pub http_stream: bool,
    /// `/connection/sse` and `/emulation`: centrifuge-js's SSE fallback (bidirectional
    /// emulation).
    pub sse: bool,
    /// Largest request body of the HTTP transports (a connect request, an emulation request),
    /// in bytes; larger: HTTP 413.
    pub http_max_request_body_size: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8000".into(),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            stale_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            write_delay: Duration::ZERO,
            max_message_size: 65_536,
            websocket_compression: false,
            websocket_compression_min_size: 128,
            websocket_compression_level: 1,
            outbound_queue_bytes: 4 * 1024 * 1024,
            max_inflight_proposals: 256,
            max_channels: 128,
            channel_max_length: 255,
            recovery_max_publications: 300,
            history_max_publications: 1000,
            tls_cert: None,
            tls_key: None,
            handshake_timeout: Duration::from_secs(10),
            max_header_size: 32 * 1024,
            max_connections: 100_000,
            max_connections_per_ip: 5_000,
            connection_rate_per_ip: 200,
            connection_burst_per_ip: 1_000,
            command_rate: 50,
            command_burst: 200,
            allowed_origins: Vec::new(),
            subscribe_to_user_personal_channel: false,
            personal_channel_namespace: String::new(),
            uni_websocket: false,
            uni_sse: false,
            uni_http_stream: false,
            http_stream: false,
            sse: false,
            http_max_request_body_size: 65_536,
        }
    }
}
