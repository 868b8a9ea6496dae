//! `Config::validate`: the semantic checks that serde cannot express.
//!
//! The checks run in one fixed order and the first that fails is the one reported. Each group
//! below is a consecutive run of that order (which is why `check_timeouts_and_sizes` also holds
//! a check of `[node]` and one of `[testing]`), so a configuration with several faults is always
//! refused with the same message.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, ConfigError};

/// A refusal with this message.
fn bad(m: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(m))
}

impl Config {
    /// Semantic checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_node_and_listeners()?;
        self.check_cluster()?;
        self.check_timeouts_and_sizes()?;
        self.check_namespaces()?;
        self.check_tls_pairs()?;
        self.check_client_limits()?;
        self.check_api()?;
        self.check_proxy()?;
        self.log.check_level().map_err(ConfigError::Invalid)?;
        self.check_files_exist()
    }

    /// `node.id`, and the three listener addresses.
    fn check_node_and_listeners(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// `[cluster]` timers, snapshot interval and peers.
    fn check_cluster(&self) -> Result<(), ConfigError> {
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
        if !(1..=65_536).contains(&c.max_batch_ops) || !(1..=1024).contains(&c.max_inflight_entries)
        {
            return bad("cluster.max_batch_ops must be between 1 and 65536 and cluster.max_inflight_entries between 1 and 1024".into());
        }
        if !(1..=super::MAX_APPEND_PIPELINE).contains(&c.append_pipeline) {
            return bad(format!(
                "cluster.append_pipeline must be between 1 and {}",
                super::MAX_APPEND_PIPELINE
            ));
        }
        if c.batch_linger > Duration::from_secs(1) {
            return bad("cluster.batch_linger must be at most 1s".into());
        }
        if !(1..=64).contains(&c.raft_threads) {
            return bad("cluster.raft_threads must be between 1 and 64".into());
        }
        if c.realtime_priority > 99 {
            return bad("cluster.realtime_priority must be between 0 (off) and 99".into());
        }
        if !c.raft_slice.is_zero()
            && !(Duration::from_micros(100)..=Duration::from_millis(100)).contains(&c.raft_slice)
        {
            return bad(
                "cluster.raft_slice must be 0 (the kernel's default) or between 100us and 100ms"
                    .into(),
            );
        }
        if c.client_nice > 19 {
            return bad("cluster.client_nice must be between 0 (off) and 19".into());
        }
        if c.snapshot_every == 0 || c.propose_timeout.is_zero() {
            return bad("cluster.snapshot_every and cluster.propose_timeout must be > 0".into());
        }
        if c.query_timeout.is_zero() {
            return bad("cluster.query_timeout must be > 0".into());
        }
        if !c.peers.is_empty() {
            let ids: BTreeSet<u64> = c.peers.iter().map(|p| p.id).collect();
            if ids.len() != c.peers.len() || ids.contains(&0) {
                return bad("cluster.peers ids must be unique and > 0".into());
            }
        }
        Ok(())
    }

    /// Client timers and sizes, with the two size checks of `[node]` and `[testing]` that
    /// come in between.
    fn check_timeouts_and_sizes(&self) -> Result<(), ConfigError> {
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
        if !(1..=9).contains(&self.client.websocket_compression_level) {
            return bad("client.websocket_compression_level must be 1 to 9".into());
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
        Ok(())
    }

    /// Namespace names: well-formed and each defined once; delta types: only "fossil".
    fn check_namespaces(&self) -> Result<(), ConfigError> {
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
        let all = std::iter::once(("[channel]".to_string(), &self.channel.options)).chain(
            self.channel
                .namespaces
                .iter()
                .map(|ns| (format!("namespace {:?}", ns.name), &ns.options)),
        );
        for (place, opts) in all {
            if let Some(t) = opts.allowed_delta_types.iter().find(|t| *t != "fossil") {
                return bad(format!(
                    "{place}: allowed_delta_types has {t:?}; the only delta type is \"fossil\""
                ));
            }
        }
        Ok(())
    }

    /// TLS files that only make sense together: the client pair, the cluster trio.
    fn check_tls_pairs(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The client listener's handshake bounds, rate limits and allowed origins.
    fn check_client_limits(&self) -> Result<(), ConfigError> {
        if !(1..=65_536).contains(&self.client.max_inflight_proposals) {
            return bad("client.max_inflight_proposals must be between 1 and 65536".into());
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
        Ok(())
    }

    /// `[api]`: the idempotency window and, when keys are on, their cap.
    fn check_api(&self) -> Result<(), ConfigError> {
        let a = &self.api;
        if a.idempotency_window > super::MAX_IDEMPOTENCY_WINDOW {
            return bad("api.idempotency_window must be at most 24h (\"0\" turns keys off)".into());
        }
        if !a.idempotency_window.is_zero()
            && !(1..=super::MAX_IDEMPOTENCY_KEYS).contains(&a.idempotency_max_keys)
        {
            return bad(format!(
                "api.idempotency_max_keys must be between 1 and {}",
                super::MAX_IDEMPOTENCY_KEYS
            ));
        }
        Ok(())
    }

    /// `[proxy]` endpoints and names, and the proxy switches of `[channel]` and namespaces.
    fn check_proxy(&self) -> Result<(), ConfigError> {
        let scopes = std::iter::once(("[channel]".to_string(), &self.channel.options)).chain(
            self.channel
                .namespaces
                .iter()
                .map(|ns| (format!("namespace {:?}", ns.name), &ns.options)),
        );
        self.proxy.check(scopes).map_err(ConfigError::Invalid)?;
        // A connection must finish `connect` within the stale timeout, proxy call included.
        if self.proxy.connect.is_set() && self.proxy.connect.timeout >= self.client.stale_timeout {
            return bad("proxy.connect.timeout must be shorter than client.stale_timeout".into());
        }
        Ok(())
    }

    /// Every key and TLS file named must exist.
    fn check_files_exist(&self) -> Result<(), ConfigError> {
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
            ("proxy.tls_ca", &self.proxy.tls_ca),
        ] {
            if let Some(p) = path
                && !p.exists()
            {
                return bad(format!("{key}: file {} does not exist", p.display()));
            }
        }
        Ok(())
    }
}
