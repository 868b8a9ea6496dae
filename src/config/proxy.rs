//! `[proxy]`: the application's backend endpoints that client events are proxied to
//! (Centrifugo's proxy hooks): `connect`, `refresh`, `subscribe`, `publish`, `sub_refresh`,
//! `rpc`, named proxies for namespaces and RPC methods that need another backend, and the
//! RPC namespaces that pick one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration_str;

/// Default of every proxy's `timeout` (Centrifugo's default too).
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(1);

/// One backend endpoint: `[proxy.connect]`, `[proxy.rpc]`, … An empty `endpoint` is off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyEndpoint {
    /// `http://host:port/path` the JSON request is POSTed to; empty: this proxy is off.
    pub endpoint: String,
    /// Longest wait for the backend's whole answer (then the client gets error 100,
    /// temporary).
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Headers of the client's HTTP request (e.g. the WebSocket upgrade) copied into every
    /// call of this proxy, by name (`Cookie`, `Authorization`, `X-Forwarded-For`, …).
    pub http_headers: Vec<String>,
    /// Headers sent with every call of this proxy (e.g. a key the backend checks); a client
    /// request header of the same name forwarded through `http_headers` replaces one.
    pub static_http_headers: BTreeMap<String, String>,
    /// Send the connection's `meta` (from the connect hook's result or the token's `meta`
    /// claim; never shown to clients) in this hook's requests.
    pub include_connection_meta: bool,
}

impl Default for ProxyEndpoint {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            timeout: DEFAULT_PROXY_TIMEOUT,
            http_headers: Vec::new(),
            static_http_headers: BTreeMap::new(),
            include_connection_meta: false,
        }
    }
}

impl ProxyEndpoint {
    /// This proxy is configured.
    pub fn is_set(&self) -> bool {
        !self.endpoint.is_empty()
    }
}

/// `[[proxy.rpc_namespaces]]`: RPC methods named `<name>:…` go to the named proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RpcNamespace {
    /// The part of the method before `:`.
    pub name: String,
    /// A `[proxy.named.<name>]` name.
    pub proxy_name: String,
}

/// `[proxy]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Connections without a token are authenticated by this backend.
    pub connect: ProxyEndpoint,
    /// Expiring connections are extended (or ended) by this backend instead of the client.
    pub refresh: ProxyEndpoint,
    /// Subscriptions to channels whose namespace says `subscribe_proxy = true`.
    pub subscribe: ProxyEndpoint,
    /// Client publications to channels whose namespace says `publish_proxy = true`.
    pub publish: ProxyEndpoint,
    /// Expiring subscriptions of namespaces with `sub_refresh_proxy = true`.
    pub sub_refresh: ProxyEndpoint,
    /// `rpc` commands (methods of no `[[proxy.rpc_namespaces]]`).
    pub rpc: ProxyEndpoint,
    /// Named backends, `[proxy.named.<name>]`: a backend that namespaces
    /// (`subscribe_proxy_name`, …) and RPC namespaces refer to by name.
    pub named: BTreeMap<String, ProxyEndpoint>,
    /// RPC namespaces: which named backend a `ns:method` goes to.
    pub rpc_namespaces: Vec<RpcNamespace>,
    /// PEM CA bundle trusted for `https://` endpoints; unset: the system's
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Why an endpoint is refused: `None` when it is a usable `http(s)://host[:port][/path]`.
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    let Some(rest) = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
    else {
        return Some("must start with http:// or https://".into());
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Some("needs a host (http://host:port/path)".into());
    }
    if endpoint.contains(char::is_whitespace) {
        return Some("contains white space".into());
    }
    None
}

/// Whether `name` may be used as a proxy, namespace or header name part.
pub fn valid_proxy_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Whether `value` can be an HTTP header value: visible ASCII, spaces and tabs.
pub fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Whether `name` is an HTTP header name (RFC 9110 token).
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The channel options' proxy switches of one scope (`[channel]` or a namespace): for each
/// of subscribe, publish and sub_refresh, whether it is on and the named proxy it uses.
fn channel_proxies(o: &super::ChannelOptions) -> [(&'static str, bool, &str); 3] {
    [
        (
            "subscribe",
            o.subscribe_proxy,
            o.subscribe_proxy_name.as_str(),
        ),
        ("publish", o.publish_proxy, o.publish_proxy_name.as_str()),
        (
            "sub_refresh",
            o.sub_refresh_proxy,
            o.sub_refresh_proxy_name.as_str(),
        ),
    ]
}

impl ProxyConfig {
    /// Whether any endpoint is `https://`.
    pub fn uses_https(&self) -> bool {
        [
            &self.connect,
            &self.refresh,
            &self.subscribe,
            &self.publish,
            &self.sub_refresh,
            &self.rpc,
        ]
        .into_iter()
        .chain(self.named.values())
        .any(|e| e.endpoint.starts_with("https://"))
    }

    /// The default endpoint of a channel proxy kind (`subscribe`, `publish`, `sub_refresh`).
    pub fn channel_default(&self, kind: &str) -> &ProxyEndpoint {
        match kind {
            "subscribe" => &self.subscribe,
            "publish" => &self.publish,
            _ => &self.sub_refresh,
        }
    }

    fn check_endpoints(&self) -> Result<(), String> {
        let named = self
            .named
            .iter()
            .map(|(name, e)| (format!("proxy.named.{name}"), e.clone()));
        let fixed = [
            ("connect", &self.connect),
            ("refresh", &self.refresh),
            ("subscribe", &self.subscribe),
            ("publish", &self.publish),
            ("sub_refresh", &self.sub_refresh),
            ("rpc", &self.rpc),
        ]
        .into_iter()
        .map(|(k, e)| (format!("proxy.{k}"), e.clone()));
        for (key, e) in fixed.chain(named) {
            if e.endpoint.is_empty() {
                if key.starts_with("proxy.named") {
                    return Err(format!("{key} needs an endpoint"));
                }
                continue;
            }
            if let Some(why) = endpoint_problem(&e.endpoint) {
                return Err(format!("{key}.endpoint {:?}: {why}", e.endpoint));
            }
            if e.timeout.is_zero() || e.timeout > Duration::from_secs(60) {
                return Err(format!("{key}.timeout must be between 1ms and 60s"));
            }
            if let Some(h) = e.http_headers.iter().find(|h| !valid_header_name(h)) {
                return Err(format!("{key}.http_headers: {h:?} is not a header name"));
            }
            for (name, value) in &e.static_http_headers {
                if !valid_header_name(name) || !valid_header_value(value) {
                    return Err(format!(
                        "{key}.static_http_headers: {name:?} needs a header name and a value of visible ASCII"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Semantic checks of `[proxy]` and of the proxy switches of `[channel]` and every
    /// namespace (given as (scope, options)).
    pub fn check<'a>(
        &self,
        scopes: impl Iterator<Item = (String, &'a super::ChannelOptions)>,
    ) -> Result<(), String> {
        self.check_endpoints()?;
        if let Some(n) = self.named.keys().find(|n| !valid_proxy_name(n)) {
            return Err(format!(
                "proxy.named.{n}: a name must be letters, digits, '_', '-' or '.'"
            ));
        }
        let names: std::collections::BTreeSet<&str> =
            self.named.keys().map(String::as_str).collect();
        let mut rpc_ns = std::collections::BTreeSet::new();
        for ns in &self.rpc_namespaces {
            if !valid_proxy_name(&ns.name) || !rpc_ns.insert(ns.name.as_str()) {
                return Err(format!(
                    "proxy.rpc_namespaces name {:?} must be letters, digits, '_', '-' or '.', each once",
                    ns.name
                ));
            }
            if !names.contains(ns.proxy_name.as_str()) {
                return Err(format!(
                    "proxy.rpc_namespaces {:?}: proxy_name {:?} is not a [proxy.named.<name>]",
                    ns.name, ns.proxy_name
                ));
            }
        }
        for (scope, opts) in scopes {
            for (kind, on, name) in channel_proxies(opts) {
                if !on && !name.is_empty() {
                    return Err(format!(
                        "{scope}: {kind}_proxy_name is set but {kind}_proxy is not true"
                    ));
                }
                if !on {
                    continue;
                }
                if !name.is_empty() && !names.contains(name) {
                    return Err(format!(
                        "{scope}: {kind}_proxy_name {name:?} is not a [proxy.named.<name>]"
                    ));
                }
                if name.is_empty() && !self.channel_default(kind).is_set() {
                    return Err(format!(
                        "{scope}: {kind}_proxy = true needs proxy.{kind}.endpoint (or a {kind}_proxy_name)"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn proxies_parse_and_validate() {
        let cfg = Config::from_toml(
            r#"
            [proxy.connect]
            endpoint = "http://127.0.0.1:3000/connect"
            timeout = "500ms"
            http_headers = ["Cookie", "X-Forwarded-For"]
            [proxy.subscribe]
            endpoint = "http://backend/sub"
            [proxy.named.billing]
            endpoint = "http://billing:8080/rpc"
            [[proxy.rpc_namespaces]]
            name = "pay"
            proxy_name = "billing"
            [channel]
            subscribe_proxy = true
            [[channel.namespaces]]
            name = "chat"
            publish_proxy = true
            publish_proxy_name = "billing"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.proxy.connect.timeout.as_millis(), 500);
        assert_eq!(
            cfg.proxy.connect.http_headers,
            ["Cookie", "X-Forwarded-For"]
        );
        assert!(cfg.channel.options.subscribe_proxy);
        assert_eq!(
            cfg.channel.namespaces[0].options.publish_proxy_name,
            "billing"
        );
        assert_eq!(cfg.proxy.rpc.timeout.as_secs(), 1, "default timeout");
    }

    #[test]
    fn bad_proxies_are_refused_with_the_key() {
        let err = |toml: &str| Config::from_toml(toml).unwrap_err().to_string();
        assert!(err("[proxy.connect]\nendpoint = \"ftp://x\"").contains("proxy.connect.endpoint"));
        assert!(err("[proxy.rpc]\nendpoint = \"htp://x/rpc\"").contains("http:// or https://"));
        assert!(err("[proxy.rpc]\nendpoint = \"http:///rpc\"").contains("host"));
        assert!(err("[proxy.rpc]\nendpoint = \"http://x\"\ntimeout = \"0s\"").contains("timeout"));
        assert!(
            err("[proxy.rpc]\nendpoint = \"http://x\"\nhttp_headers = [\"a b\"]")
                .contains("header name")
        );
        assert!(err("[proxy.connect]\nendpont = \"http://x\"").contains("endpont"));
        assert!(
            err("[proxy.rpc]\nendpoint = \"http://x\"\nstatic_http_headers = { \"X-K\" = \"a\\nb\" }")
                .contains("static_http_headers")
        );
        assert!(err("[channel]\nsubscribe_proxy = true").contains("proxy.subscribe.endpoint"));
        assert!(err("[channel]\npublish_proxy_name = \"x\"").contains("publish_proxy is not true"));
        assert!(
            err("[[channel.namespaces]]\nname = \"a\"\nsub_refresh_proxy = true\nsub_refresh_proxy_name = \"nope\"")
                .contains("\"nope\" is not a [proxy.named.<name>]")
        );
        assert!(err("[proxy.named.a]\ntimeout = \"2s\"").contains("needs an endpoint"));
        assert!(err("[proxy.named.\"a b\"]\nendpoint = \"http://x\"").contains("a name must be"));
        assert!(
            err("[proxy.connect]\nendpoint = \"http://x\"\ntimeout = \"10s\"")
                .contains("client.stale_timeout")
        );
        assert!(
            err("[[proxy.rpc_namespaces]]\nname = \"a\"\nproxy_name = \"b\"")
                .contains("not a [proxy.named.<name>]")
        );
    }
}
