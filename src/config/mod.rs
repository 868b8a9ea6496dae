//! Configuration: one nested, validated type.
//!
//! Layers, lowest first: built-in defaults < the TOML file (`--config`, default `config.toml`) <
//! environment variables `SWITCHYARD_<SECTION>__<KEY>` < command-line flags. The key names are
//! the public contract documented in README.md; new keys may be added, existing ones not renamed.
//!
//! This file holds the root type, loading, and the small sections (`[admin]`, `[auth]`, `[api]`,
//! `[testing]`); `client`, `cluster` (with `[node]`), `channel` and `log` (the level filter and
//! its syntax) hold the others, `validate` the semantic checks, `generate` a new config file
//! with random secrets (`switchyard genconfig`). Every type is re-exported here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod channel;
mod client;
mod cluster;
mod log;
mod proxy;
mod validate;

/// Strings that may arrive from the environment looking like numbers or booleans
/// (`SWITCHYARD_AUTH__API_KEY=12345` is parsed as a number by figment): take them as text.
pub mod lenient_string;

/// Durations written as strings such as `"30s"`, `"10m"`, `"1h"`, `"250ms"` (humantime).
pub mod duration_str;

/// `switchyard genconfig`: the shipped config with random secrets.
pub mod generate;

use channel::check_channel_keys;
pub use channel::{ChannelConfig, ChannelOptions, Namespace};
pub use client::ClientConfig;
pub use cluster::{ClusterConfig, MAX_APPEND_PIPELINE, NodeConfig, PeerConfig};
pub use log::{LEVELS, LogConfig, LogFormat};
pub use proxy::{ProxyConfig, ProxyEndpoint, RpcNamespace};

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
    /// The admin listener: readiness, metrics, the status page, cluster status and membership.
    pub admin: AdminConfig,
    /// Raft replication between nodes.
    pub cluster: ClusterConfig,
    /// Tokens and the API key.
    pub auth: AuthConfig,
    /// The server HTTP API.
    pub api: ApiConfig,
    /// Channel options for channels without a namespace, and the namespaces.
    pub channel: ChannelConfig,
    /// The application's backend endpoints that client events are proxied to.
    pub proxy: ProxyConfig,
    /// Logging.
    pub log: LogConfig,
    /// Test-only endpoints (conformance suites); all off by default.
    pub testing: TestingConfig,
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener; keep it on loopback or a management network.
    pub listen: String,
    /// When non-empty, membership changes (`POST /cluster/<op>`) on the admin listener need
    /// `X-API-Key: KEY` (or `Authorization: apikey KEY`); a 401 body names this key.
    /// `switchyard cluster` sends it from the same config file. The status page and its JSON
    /// endpoints (presence included) need no key.
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
    /// How long an `idempotency_key` of `publish` / `broadcast` is remembered per channel: a
    /// repeat within it publishes nothing and is given the first publication's offset and
    /// epoch. Judged with the log's time, in the replicated state. `"0"` turns keys off.
    #[serde(with = "duration_str")]
    pub idempotency_window: Duration,
    /// Most idempotency keys remembered, all channels together; past it the keys closest to
    /// expiry (the oldest) are forgotten first.
    pub idempotency_max_keys: usize,
}

/// Longest `api.idempotency_window` accepted.
pub const MAX_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Largest `api.idempotency_max_keys` accepted.
pub const MAX_IDEMPOTENCY_KEYS: usize = 1_000_000;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_size: 1024 * 1024,
            max_publication_size: 262_144,
            idempotency_window: Duration::from_secs(300),
            idempotency_max_keys: 100_000,
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
    fn delta_types_are_fossil_or_nothing() {
        let cfg = Config::from_toml(
            "[channel]\nallowed_delta_types = [\"fossil\"]\n[[channel.namespaces]]\nname = \"d\"\nallowed_delta_types = [\"fossil\"]",
        )
        .unwrap();
        assert_eq!(cfg.channel.options.allowed_delta_types, ["fossil"]);
        assert_eq!(
            cfg.channel.namespaces[0].options.allowed_delta_types,
            ["fossil"]
        );
        let e = Config::from_toml(
            "[[channel.namespaces]]\nname = \"d\"\nallowed_delta_types = [\"fossil\", \"xdelta\"]",
        )
        .unwrap_err();
        assert!(e.to_string().contains("xdelta"), "{e}");
        assert!(Config::from_toml("[channel]\nallowed_delta_types = [\"Fossil\"]").is_err());
    }

    #[test]
    fn raft_slice_is_zero_or_within_the_kernels_bounds() {
        let slice = |v: &str| Config::from_toml(&format!("[cluster]\nraft_slice = \"{v}\""));
        assert_eq!(
            Config::default().cluster.raft_slice,
            Duration::from_micros(100)
        );
        assert!(slice("0").unwrap().cluster.raft_slice.is_zero());
        assert_eq!(
            slice("2ms").unwrap().cluster.raft_slice,
            Duration::from_millis(2)
        );
        assert!(slice("50us").is_err(), "under the kernel's 0.1 ms");
        assert!(slice("101ms").is_err(), "over the kernel's 100 ms");
        assert!(slice("fast").is_err());
        // A bare 0 (an environment variable `=0`, unquoted TOML) is zero; other numbers need a unit.
        let zero = Config::from_toml("[cluster]\nraft_slice = 0").unwrap();
        assert!(zero.cluster.raft_slice.is_zero());
        assert!(Config::from_toml("[cluster]\nraft_slice = 5").is_err());
    }

    #[test]
    fn client_nice_is_a_nice_increment() {
        let nice = |v: &str| Config::from_toml(&format!("[cluster]\nclient_nice = {v}"));
        assert_eq!(Config::default().cluster.client_nice, 10);
        assert_eq!(nice("0").unwrap().cluster.client_nice, 0);
        assert_eq!(nice("19").unwrap().cluster.client_nice, 19);
        assert!(nice("20").is_err(), "past the lowest priority");
        assert!(
            nice("-1").is_err(),
            "raising priority is not what it is for"
        );
    }

    #[test]
    fn idempotency_window_and_cap() {
        let cfg = Config::default();
        assert_eq!(cfg.api.idempotency_window, Duration::from_secs(300));
        assert_eq!(cfg.api.idempotency_max_keys, 100_000);
        let off = Config::from_toml("[api]\nidempotency_window = \"0\"").unwrap();
        assert!(off.api.idempotency_window.is_zero());
        let cfg = Config::from_toml("[api]\nidempotency_window = \"90s\"").unwrap();
        assert_eq!(cfg.api.idempotency_window, Duration::from_secs(90));
        assert!(Config::from_toml("[api]\nidempotency_window = \"soon\"").is_err());
        assert!(Config::from_toml("[api]\nidempotency_window = \"25h\"").is_err());
        assert!(Config::from_toml("[api]\nidempotency_max_keys = 0").is_err());
        assert!(Config::from_toml("[api]\nidempotency_max_keys = 1000001").is_err());
        // Off, the cap is not used.
        Config::from_toml("[api]\nidempotency_window = \"0\"\nidempotency_max_keys = 0").unwrap();
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
