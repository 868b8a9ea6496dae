//! Configuration: one nested, validated type.
//!
//! Layers, lowest first: built-in defaults < the TOML file (`--config`, default `config.toml`) <
//! environment variables `SWITCHYARD_<SECTION>__<KEY>` < command-line flags. The key names are
//! the public contract documented in README.md; new keys may be added, existing ones not renamed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "SWITCHYARD_";

/// The whole configuration of one node.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity and storage of this node.
    pub node: NodeConfig,
    /// The client listener: WebSocket connections, the server API and `/healthz`.
    pub client: ClientConfig,
    /// The admin listener: readiness (and, later, metrics, status page, cluster admin).
    pub admin: AdminConfig,
    /// Raft replication between nodes.
    pub cluster: ClusterConfig,
    /// Tokens and the API key.
    pub auth: AuthConfig,
    /// The server HTTP API.
    pub api: ApiConfig,
    /// Channel options for channels without a namespace, and the namespaces.
    pub channel: ChannelConfig,
    /// Logging.
    pub log: LogConfig,
    /// Test-only endpoints (conformance suites); all off by default.
    pub testing: TestingConfig,
}

/// `[node]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Numeric node id, unique in a cluster (Raft member id). Must be > 0.
    pub id: u64,
    /// Human-readable node name, reported by the `info` API; defaults to `node-<id>`.
    #[serde(deserialize_with = "lenient_string::deserialize")]
    pub name: String,
    /// Directory for this node's persistent state.
    pub data_dir: PathBuf,
    /// On SIGTERM, how long connections may take to close before the process exits anyway.
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
    /// Memory for sled's page cache of the Raft log and snapshot, in bytes. The cache fills
    /// up to this over the first minutes of traffic and then stays there, so it is part of
    /// the node's steady RSS; the recent log entries replication and apply read fit easily.
    pub store_cache_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: 1,
            name: String::new(),
            data_dir: PathBuf::from("./data"),
            drain_timeout: Duration::from_secs(10),
            store_cache_bytes: 16 * 1024 * 1024,
        }
    }
}

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
    /// Largest WebSocket message accepted from a client, in bytes (larger: close 1009).
    pub max_message_size: usize,
    /// Bound of one connection's outbound queue, in bytes; overflow disconnects with 3008.
    pub outbound_queue_bytes: usize,
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
    /// Most WebSocket connections this node serves at once; beyond it an upgrade is answered
    /// HTTP 503 (0 = no cap).
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
            outbound_queue_bytes: 4 * 1024 * 1024,
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
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener; keep it on loopback or a management network.
    pub listen: String,
    /// When non-empty, membership changes (`POST /cluster/<op>`) and presence lookups on the
    /// admin listener need `X-API-Key: KEY` (or `Authorization: apikey KEY`). `switchyard
    /// cluster` sends it from the same config file.
    #[serde(deserialize_with = "lenient_string::deserialize")]
    pub api_key: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8001".into(),
            api_key: String::new(),
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Address of the cluster listener (Raft RPC and proposal forwarding between nodes).
    pub listen: String,
    /// Address other nodes reach this one at; empty = `listen` (which must then not be a
    /// wildcard address in a multi-node cluster).
    pub advertise: String,
    /// The voters: `[[cluster.peers]] id = 1, addr = "10.0.0.1:8100"`, this node included.
    /// Empty = a one-voter cluster of this node alone.
    pub peers: Vec<PeerConfig>,
    /// Leader heartbeat interval.
    #[serde(with = "duration_str")]
    pub heartbeat_interval: Duration,
    /// Follower election timeout, lower bound (randomised up to the upper bound).
    #[serde(with = "duration_str")]
    pub election_timeout_min: Duration,
    /// Follower election timeout, upper bound.
    #[serde(with = "duration_str")]
    pub election_timeout_max: Duration,
    /// How long a write may wait for a leader and its commit before failing (temporary error).
    #[serde(with = "duration_str")]
    pub propose_timeout: Duration,
    /// Take a snapshot (and purge the log behind it) every this many log entries.
    pub snapshot_every: u64,
    /// A node the leader cannot reach for this long is declared down: the presence of its
    /// clients is cleared (leave pushes go out).
    #[serde(with = "duration_str")]
    pub presence_lease: Duration,
    /// PEM CA certificate(s) of the cluster. With `tls_cert` and `tls_key`, cluster traffic is
    /// mutual TLS: a peer must present a certificate signed by this CA to append, vote or
    /// forward, and peers' server certificates must name the address they are dialled at.
    /// `switchyard cert ca|node` makes them. Reloaded on SIGHUP.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate chain of this node (server and client authentication).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8100".into(),
            advertise: String::new(),
            peers: Vec::new(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            propose_timeout: Duration::from_secs(5),
            snapshot_every: 5000,
            presence_lease: Duration::from_secs(10),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// One voter of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its `node.id`.
    pub id: u64,
    /// Its cluster address (`cluster.advertise`).
    pub addr: String,
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Secret for HS256/384/512 connection and subscription tokens.
    #[serde(deserialize_with = "lenient_string::deserialize")]
    pub token_hmac_secret: String,
    /// PEM file with the RSA public key for RS256/384/512 tokens.
    pub token_rsa_public_key: Option<PathBuf>,
    /// PEM file with the ECDSA public key for ES256/384 tokens.
    pub token_ecdsa_public_key: Option<PathBuf>,
    /// When non-empty, tokens must carry this `aud`.
    #[serde(deserialize_with = "lenient_string::deserialize")]
    pub token_audience: String,
    /// When non-empty, tokens must carry this `iss`.
    #[serde(deserialize_with = "lenient_string::deserialize")]
    pub token_issuer: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "duration_str")]
    pub token_leeway: Duration,
    /// Accept connections without a token (user "").
    pub allow_anonymous: bool,
    /// Key for the server HTTP API (`X-API-Key: KEY` or `Authorization: apikey KEY`).
    /// Empty disables the API: every call is answered 401.
    #[serde(deserialize_with = "lenient_string::deserialize")]
    pub api_key: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_hmac_secret: String::new(),
            token_rsa_public_key: None,
            token_ecdsa_public_key: None,
            token_audience: String::new(),
            token_issuer: String::new(),
            token_leeway: Duration::from_secs(5),
            allow_anonymous: false,
            api_key: String::new(),
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest request body accepted by `/api/*`, in bytes (larger: HTTP 413).
    pub max_body_size: usize,
    /// Largest publication `data` accepted by `publish` / `broadcast`, in bytes (larger:
    /// error 107 "bad request"). Keeps one API call from pushing more than a client may be sent.
    pub max_publication_size: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_size: 1024 * 1024,
            max_publication_size: 262_144,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `switchyard=debug,info`.
    pub level: String,
    /// `text` (human) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[testing]`: endpoints that exist only for conformance testing. Never enable in production.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Serve `GET /autobahn/echo` on the client listener: a WebSocket that echoes every message,
    /// through the same frame reader as client connections (for the Autobahn suite,
    /// `scripts/autobahn.sh`). It needs no token.
    pub echo_endpoint: bool,
    /// Largest message the echo endpoint accepts, in bytes (larger: close 1009).
    pub echo_max_message_size: usize,
}

impl Default for TestingConfig {
    fn default() -> Self {
        Self {
            echo_endpoint: false,
            echo_max_message_size: 16 * 1024 * 1024,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Options that apply to a channel, set for channels without a namespace in `[channel]` and per
/// namespace in `[[channel.namespaces]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChannelOptions {
    /// Publications kept per channel (0 = no history, no recovery).
    pub history_size: usize,
    /// How long publications stay in history (0 = no history).
    #[serde(with = "duration_str")]
    pub history_ttl: Duration,
    /// Keep presence (who is subscribed).
    pub presence: bool,
    /// Send join/leave pushes to subscribers that ask for them.
    pub join_leave: bool,
    /// Make every subscription recoverable, whatever the client asked.
    pub force_recovery: bool,
    /// Make every subscription positioned, whatever the client asked.
    pub force_positioning: bool,
    /// Any connected client may subscribe without a subscription token (not to `$` channels).
    pub allow_subscribe_for_client: bool,
    /// Subscribers may publish from the client.
    pub allow_publish_for_subscriber: bool,
    /// Any connected client may publish from the client.
    pub allow_publish_for_client: bool,
    /// Subscribers may ask for presence.
    pub allow_presence_for_subscriber: bool,
    /// Any connected client may ask for presence.
    pub allow_presence_for_client: bool,
    /// Subscribers may ask for history.
    pub allow_history_for_subscriber: bool,
    /// Any connected client may ask for history.
    pub allow_history_for_client: bool,
    /// `name#u1,u2` channels may be subscribed by the users listed after `#`.
    pub allow_user_limited_channels: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl: Duration::ZERO,
            presence: false,
            join_leave: false,
            force_recovery: false,
            force_positioning: false,
            allow_subscribe_for_client: false,
            allow_publish_for_subscriber: false,
            allow_publish_for_client: false,
            allow_presence_for_subscriber: false,
            allow_presence_for_client: false,
            allow_history_for_subscriber: false,
            allow_history_for_client: false,
            allow_user_limited_channels: false,
        }
    }
}

impl ChannelOptions {
    /// History (and so recovery and positioning) is on only with both a size and a TTL.
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

/// `[channel]`: the options of channels without a namespace, plus the namespaces.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ChannelConfig {
    /// Options for channels without a `namespace:` prefix.
    #[serde(flatten)]
    pub options: ChannelOptions,
    /// `[[channel.namespaces]]`: `name` plus any channel option.
    pub namespaces: Vec<Namespace>,
}

/// One namespace: channels named `<name>:…` take these options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Namespace {
    /// Namespace name: letters, digits, `_` and `-`.
    pub name: String,
    /// The options of this namespace's channels.
    #[serde(flatten)]
    pub options: ChannelOptions,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file named explicitly does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// Parsing or type errors from the layers.
    #[error("{0}")]
    Figment(Box<figment::Error>),
    /// Semantically wrong values.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Figment(Box::new(e))
    }
}

impl Config {
    /// Loads defaults < `path` (when it exists; an explicitly named file must exist) <
    /// `SWITCHYARD_…` environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(path, Vec::new())
    }

    /// Like [`Config::load`], with command-line overrides (dotted key, value) on top.
    pub fn load_with(
        path: Option<&Path>,
        overrides: Vec<(&'static str, figment::value::Value)>,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::Missing(p.to_path_buf()));
                }
                fig = fig.merge(Toml::file_exact(p));
            }
            None => {
                let p = Path::new("config.toml");
                if p.exists() {
                    fig = fig.merge(Toml::file_exact(p));
                }
            }
        }
        // `SWITCHYARD_CONFIG` names the file (a clap flag's env), it is not a key.
        fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
        for (key, value) in overrides {
            fig = fig.merge((key, value));
        }
        Self::from_figment(fig)
    }

    /// Loads from a TOML string alone (tests, examples), then validates.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        check_channel_keys(&fig)?;
        let cfg: Config = fig.extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Semantic checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.node.id == 0 {
            return bad("node.id must be > 0".into());
        }
        for (key, addr) in [
            ("client.listen", &self.client.listen),
            ("admin.listen", &self.admin.listen),
            ("cluster.listen", &self.cluster.listen),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                return bad(format!("{key} = {addr:?} is not an IP:port address"));
            }
        }
        let c = &self.cluster;
        if c.heartbeat_interval.is_zero()
            || c.election_timeout_min <= c.heartbeat_interval
            || c.election_timeout_max <= c.election_timeout_min
        {
            return bad(
                "cluster: need 0 < heartbeat_interval < election_timeout_min < election_timeout_max"
                    .into(),
            );
        }
        if c.presence_lease <= c.election_timeout_max {
            return bad(
                "cluster.presence_lease must be longer than cluster.election_timeout_max".into(),
            );
        }
        if c.snapshot_every == 0 || c.propose_timeout.is_zero() {
            return bad("cluster.snapshot_every and cluster.propose_timeout must be > 0".into());
        }
        if !c.peers.is_empty() {
            let ids: BTreeSet<u64> = c.peers.iter().map(|p| p.id).collect();
            if ids.len() != c.peers.len() || ids.contains(&0) {
                return bad("cluster.peers ids must be unique and > 0".into());
            }
        }
        if self.client.ping_interval.is_zero() || self.client.pong_timeout.is_zero() {
            return bad("client.ping_interval and client.pong_timeout must be > 0".into());
        }
        if self.node.store_cache_bytes < 1 << 20 {
            return bad("node.store_cache_bytes must be at least 1048576 (1 MiB)".into());
        }
        if self.client.write_delay > Duration::from_secs(1) {
            return bad("client.write_delay must be at most 1s".into());
        }
        if self.client.pong_timeout >= self.client.ping_interval {
            return bad("client.pong_timeout must be shorter than client.ping_interval".into());
        }
        if self.client.write_timeout.is_zero() {
            return bad("client.write_timeout must be > 0".into());
        }
        if self.testing.echo_endpoint && self.testing.echo_max_message_size < 1024 {
            return bad("testing.echo_max_message_size must be at least 1024".into());
        }
        if self.client.max_message_size < 1024 {
            return bad("client.max_message_size must be at least 1024".into());
        }
        if self.client.outbound_queue_bytes < self.client.max_message_size {
            return bad("client.outbound_queue_bytes must be >= client.max_message_size".into());
        }
        if self.client.channel_max_length == 0 || self.client.max_channels == 0 {
            return bad("client.channel_max_length and client.max_channels must be > 0".into());
        }
        let mut seen = BTreeSet::new();
        for ns in &self.channel.namespaces {
            let valid = !ns.name.is_empty()
                && ns
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return bad(format!(
                    "namespace name {:?} must be non-empty letters, digits, '_' or '-'",
                    ns.name
                ));
            }
            if !seen.insert(ns.name.as_str()) {
                return bad(format!("namespace {:?} is defined twice", ns.name));
            }
        }
        if self.client.tls_cert.is_some() != self.client.tls_key.is_some() {
            return bad("client.tls_cert and client.tls_key go together".into());
        }
        let c = &self.cluster;
        let set = [&c.tls_ca, &c.tls_cert, &c.tls_key]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if set != 0 && set != 3 {
            return bad("cluster.tls_ca, cluster.tls_cert and cluster.tls_key go together".into());
        }
        if self.client.handshake_timeout.is_zero() {
            return bad("client.handshake_timeout must be > 0".into());
        }
        if !(1024..=1024 * 1024).contains(&self.client.max_header_size) {
            return bad("client.max_header_size must be between 1024 and 1048576".into());
        }
        if (self.client.command_rate > 0 && self.client.command_burst == 0)
            || (self.client.connection_rate_per_ip > 0 && self.client.connection_burst_per_ip == 0)
        {
            return bad("client.command_burst and client.connection_burst_per_ip must be > 0 when their rate is set".into());
        }
        for o in &self.client.allowed_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return bad(format!(
                    "client.allowed_origins: {o:?} must be \"*\" or an origin such as \"https://app.example.com\""
                ));
            }
        }
        for (key, path) in [
            ("auth.token_rsa_public_key", &self.auth.token_rsa_public_key),
            (
                "auth.token_ecdsa_public_key",
                &self.auth.token_ecdsa_public_key,
            ),
            ("client.tls_cert", &self.client.tls_cert),
            ("client.tls_key", &self.client.tls_key),
            ("cluster.tls_ca", &self.cluster.tls_ca),
            ("cluster.tls_cert", &self.cluster.tls_cert),
            ("cluster.tls_key", &self.cluster.tls_key),
        ] {
            if let Some(p) = path
                && !p.exists()
            {
                return bad(format!("{key}: file {} does not exist", p.display()));
            }
        }
        Ok(())
    }

    /// The sections whose changes from `self` to `new` need a restart: everything except the
    /// limits and origins of `[client]` and `log.level`, which a reload (SIGHUP) applies.
    /// (TLS files are re-read on reload; changing their paths needs a restart.)
    pub fn restart_needed(&self, new: &Config) -> Vec<String> {
        const LIVE: &[(&str, &str)] = &[
            ("client", "max_connections"),
            ("client", "max_connections_per_ip"),
            ("client", "connection_rate_per_ip"),
            ("client", "connection_burst_per_ip"),
            ("client", "command_rate"),
            ("client", "command_burst"),
            ("client", "allowed_origins"),
            ("log", "level"),
        ];
        let strip = |c: &Config| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            for (section, key) in LIVE {
                if let Some(s) = v.get_mut(*section).and_then(|s| s.as_object_mut()) {
                    s.remove(*key);
                }
            }
            v
        };
        let (old, new) = (strip(self), strip(new));
        let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
            return vec!["?".into()];
        };
        o.iter()
            .filter(|(k, v)| n.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The client listener address (validated).
    pub fn client_addr(&self) -> SocketAddr {
        self.client.listen.parse().expect("validated")
    }

    /// The admin listener address (validated).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.listen.parse().expect("validated")
    }

    /// The cluster listener address (validated).
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster.listen.parse().expect("validated")
    }

    /// The address peers reach this node's cluster listener at; `bound` is the real
    /// listening address (port 0 resolved).
    pub fn cluster_advertise(&self, bound: SocketAddr) -> String {
        if let Some(p) = self.cluster.peers.iter().find(|p| p.id == self.node.id) {
            return p.addr.clone();
        }
        if !self.cluster.advertise.is_empty() {
            return self.cluster.advertise.clone();
        }
        bound.to_string()
    }

    /// The node's display name.
    pub fn node_name(&self) -> String {
        if self.node.name.is_empty() {
            format!("node-{}", self.node.id)
        } else {
            self.node.name.clone()
        }
    }
}

/// `ChannelConfig` flattens the options, which serde cannot combine with `deny_unknown_fields`;
/// check the `[channel]` and namespace keys here so that typos are still refused.
fn check_channel_keys(fig: &Figment) -> Result<(), ConfigError> {
    let known: BTreeSet<String> = match serde_json::to_value(ChannelOptions::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => unreachable!("ChannelOptions serialises to an object"),
    };
    let Ok(channel) = fig.find_value("channel") else {
        return Ok(());
    };
    let Some(dict) = channel.as_dict() else {
        return Err(ConfigError::Invalid("[channel] must be a table".into()));
    };
    for key in dict.keys() {
        if key != "namespaces" && !known.contains(key) {
            return Err(ConfigError::Invalid(format!("unknown key channel.{key}")));
        }
    }
    if let Some(list) = dict.get("namespaces").and_then(|v| v.as_array()) {
        for ns in list {
            let Some(d) = ns.as_dict() else {
                return Err(ConfigError::Invalid(
                    "[[channel.namespaces]] entries must be tables".into(),
                ));
            };
            let name = d.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            for key in d.keys() {
                if key != "name" && !known.contains(key) {
                    return Err(ConfigError::Invalid(format!(
                        "unknown key {key} in namespace {name:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Strings that may arrive from the environment looking like numbers or booleans
/// (`SWITCHYARD_AUTH__API_KEY=12345` is parsed as a number by figment): take them as text.
pub mod lenient_string {
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;

    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    /// Deserialises a string, or a number/bool as its text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(V)
    }
}

/// Durations written as strings such as `"30s"`, `"10m"`, `"1h"`, `"250ms"` (humantime).
pub mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes the duration as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads a humantime string; `"0"` means zero.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    /// Parses `"30s"`-style durations; `"0"` is zero.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(t)
            .map_err(|e| format!("invalid duration {s:?} (use e.g. \"30s\", \"10m\", \"1h\"): {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn namespaces_and_durations_parse() {
        let cfg = Config::from_toml(
            r#"
            [channel]
            history_size = 10
            history_ttl = "30s"
            [[channel.namespaces]]
            name = "chat"
            presence = true
            history_ttl = "1h"
            history_size = 5
            "#,
        )
        .unwrap();
        assert_eq!(cfg.channel.options.history_ttl, Duration::from_secs(30));
        assert_eq!(
            cfg.channel.namespaces[0].options.history_ttl,
            Duration::from_secs(3600)
        );
        assert!(cfg.channel.namespaces[0].options.presence);
        assert!(!cfg.channel.namespaces[0].options.join_leave);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("[client]\nlistn = \"1.2.3.4:5\"").is_err());
        assert!(Config::from_toml("[channel]\nhistory_sise = 3").is_err());
        assert!(
            Config::from_toml("[[channel.namespaces]]\nname = \"a\"\npresense = true").is_err()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::from_toml("[client]\nlisten = \"nowhere\"").is_err());
        assert!(Config::from_toml("[client]\nping_interval = \"soon\"").is_err());
        assert!(Config::from_toml("[node]\nid = 0").is_err());
        assert!(
            Config::from_toml("[[channel.namespaces]]\nname = \"a:b\"").is_err(),
            "':' is the namespace separator"
        );
    }
}
