//! Proxy hooks: client events (connect, refresh, subscribe, publish, sub_refresh, rpc) sent to
//! the application's backend over HTTP with JSON bodies in Centrifugo's proxy format, and the
//! backend's decision brought back.
//!
//! Calls are made by the node holding the client's connection (the session calls them) and
//! are bounded by their proxy's `timeout`. Every call is counted and timed per proxy
//! (`switchyard_proxy_calls_total{proxy,outcome}`, `switchyard_proxy_call_duration_seconds`)
//! and logged with its outcome. A failure (timeout, unreachable backend, a status other than
//! 200, an answer that is not the format) reaches the client only as the temporary error 100:
//! nothing about the backend's internals does. The backend's own errors (codes 400–1999) and
//! disconnects (4000–4999) pass through.

pub mod http;
pub mod types;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ProxyConfig, ProxyEndpoint};
use types::{Answer, BackendDisconnect, BackendError};

/// One configured backend endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// The proxy's name in metrics and logs: the event (`connect`, `rpc`, …) for the
    /// `[proxy.*]` ones, the name for `[proxy.named.<name>]` ones.
    pub label: String,
    url: String,
    timeout: Duration,
    /// Lower-case names of the client request headers forwarded.
    headers: Vec<String>,
    /// Headers sent with every call (lower-case names), unless forwarded ones replace them.
    static_headers: Vec<(String, String)>,
    /// Requests carry the connection's `meta`.
    pub include_meta: bool,
}

impl Endpoint {
    fn new(label: &str, e: &ProxyEndpoint) -> Endpoint {
        Endpoint {
            label: label.to_string(),
            url: e.endpoint.clone(),
            timeout: e.timeout,
            headers: e
                .http_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            static_headers: e
                .static_http_headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
            include_meta: e.include_connection_meta,
        }
    }
}

/// The channel events proxied per namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelHook {
    /// `subscribe_proxy`.
    Subscribe,
    /// `publish_proxy`.
    Publish,
    /// `sub_refresh_proxy`.
    SubRefresh,
}

/// What the backend decided.
#[derive(Debug)]
pub enum Verdict<T> {
    /// Go ahead, with this result.
    Result(T),
    /// Refuse the command with this error.
    Error(BackendError),
    /// Close the connection with this code and reason.
    Disconnect(BackendDisconnect),
}

/// Why a call brought no decision. Clients only ever see error 100 (temporary) for it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No answer within the proxy's timeout.
    #[error("timed out")]
    Timeout,
    /// The backend could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The connection broke during the call.
    #[error("call failed: {0}")]
    Broken(String),
    /// An HTTP status other than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// A 200 whose body is not a proxy answer.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

impl ProxyError {
    /// The `outcome` label of the metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Timeout => "timeout",
            ProxyError::Unreachable(_) => "unreachable",
            ProxyError::Broken(_) => "broken",
            ProxyError::Status(s) if *s >= 500 => "http_5xx",
            ProxyError::Status(_) => "http_status",
            ProxyError::BadAnswer(_) => "bad_answer",
        }
    }
}

/// Outcomes counted under `switchyard_proxy_calls_total`.
pub const OUTCOMES: &[&str] = &[
    "ok",
    "error",
    "disconnect",
    "timeout",
    "unreachable",
    "broken",
    "http_5xx",
    "http_status",
    "bad_answer",
];

/// The configured proxies of a node.
#[derive(Default)]
pub struct Proxies {
    http: http::HttpClient,
    connect: Option<Endpoint>,
    refresh: Option<Endpoint>,
    rpc: Option<Endpoint>,
    subscribe: Option<Endpoint>,
    publish: Option<Endpoint>,
    sub_refresh: Option<Endpoint>,
    named: HashMap<String, Endpoint>,
    /// RPC namespace → named proxy.
    rpc_namespaces: HashMap<String, String>,
    /// Every header name some proxy forwards (lower case), for the transports to keep.
    header_names: Vec<String>,
}

impl Proxies {
    /// The proxies `cfg` configures (validated), their metric series registered at zero.
    /// `tls`: the trust for `https://` endpoints.
    pub fn new(cfg: &ProxyConfig, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Proxies {
        let opt = |label: &str, e: &ProxyEndpoint| e.is_set().then(|| Endpoint::new(label, e));
        let mut p = Proxies {
            http: http::HttpClient::new(tls),
            connect: opt("connect", &cfg.connect),
            refresh: opt("refresh", &cfg.refresh),
            rpc: opt("rpc", &cfg.rpc),
            subscribe: opt("subscribe", &cfg.subscribe),
            publish: opt("publish", &cfg.publish),
            sub_refresh: opt("sub_refresh", &cfg.sub_refresh),
            named: cfg
                .named
                .iter()
                .map(|(name, e)| (name.clone(), Endpoint::new(name, e)))
                .collect(),
            rpc_namespaces: cfg
                .rpc_namespaces
                .iter()
                .map(|ns| (ns.name.clone(), ns.proxy_name.clone()))
                .collect(),
            header_names: Vec::new(),
        };
        let all: Vec<&Endpoint> = p.all().collect();
        let mut names: Vec<String> = all.iter().flat_map(|e| e.headers.clone()).collect();
        names.sort();
        names.dedup();
        for e in all {
            for outcome in OUTCOMES {
                metrics::counter!(crate::metrics::PROXY_CALLS, "proxy" => e.label.clone(), "outcome" => *outcome)
                    .absolute(0);
            }
            let _ = metrics::histogram!(crate::metrics::PROXY_DURATION, "proxy" => e.label.clone());
        }
        p.header_names = names;
        p
    }

    fn all(&self) -> impl Iterator<Item = &Endpoint> {
        [
            &self.connect,
            &self.refresh,
            &self.rpc,
            &self.subscribe,
            &self.publish,
            &self.sub_refresh,
        ]
        .into_iter()
        .flatten()
        .chain(self.named.values())
    }

    /// The connect proxy, when configured.
    pub fn connect(&self) -> Option<&Endpoint> {
        self.connect.as_ref()
    }

    /// The refresh proxy, when configured.
    pub fn refresh(&self) -> Option<&Endpoint> {
        self.refresh.as_ref()
    }

    /// The proxy an RPC `method` goes to: its namespace's (`ns:…`), else `[proxy.rpc]`.
    pub fn rpc(&self, method: &str) -> Option<&Endpoint> {
        if let Some((ns, _)) = method.split_once(':')
            && let Some(name) = self.rpc_namespaces.get(ns)
        {
            return self.named.get(name);
        }
        self.rpc.as_ref()
    }

    /// The proxy of a channel hook: the named one, or the `[proxy.*]` default when `name`
    /// is empty.
    pub fn channel(&self, hook: ChannelHook, name: &str) -> Option<&Endpoint> {
        if !name.is_empty() {
            return self.named.get(name);
        }
        match hook {
            ChannelHook::Subscribe => self.subscribe.as_ref(),
            ChannelHook::Publish => self.publish.as_ref(),
            ChannelHook::SubRefresh => self.sub_refresh.as_ref(),
        }
    }

    /// The client request headers some proxy forwards (lower case): what a transport keeps
    /// of a connection's request.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// Calls `ep` with `req`; `headers` are the connection's kept request headers (only
    /// those in the endpoint's `http_headers` are sent). Counted, timed and logged.
    pub async fn call<Req: Serialize, Res: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        headers: &[(String, String)],
        req: &Req,
    ) -> Result<Verdict<Res>, ProxyError> {
        let started = Instant::now();
        let res = self.exchange(ep, headers, req).await;
        let outcome = match &res {
            Ok(Verdict::Result(_)) => "ok",
            Ok(Verdict::Error(_)) => "error",
            Ok(Verdict::Disconnect(_)) => "disconnect",
            Err(e) => e.kind(),
        };
        let took = started.elapsed();
        metrics::histogram!(crate::metrics::PROXY_DURATION, "proxy" => ep.label.clone())
            .record(took.as_secs_f64());
        metrics::counter!(crate::metrics::PROXY_CALLS, "proxy" => ep.label.clone(), "outcome" => outcome)
            .increment(1);
        let ms = took.as_millis() as u64;
        match &res {
            Ok(Verdict::Result(_)) => tracing::debug!(proxy = %ep.label, ms, "proxy call: ok"),
            Ok(Verdict::Error(e)) => {
                tracing::debug!(proxy = %ep.label, ms, code = e.code, "proxy call: backend error")
            }
            Ok(Verdict::Disconnect(d)) => {
                tracing::debug!(proxy = %ep.label, ms, code = d.code, "proxy call: backend disconnect")
            }
            Err(e) => {
                tracing::warn!(proxy = %ep.label, ms, outcome, error = %e, "proxy call failed")
            }
        }
        res
    }

    async fn exchange<Req: Serialize, Res: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        headers: &[(String, String)],
        req: &Req,
    ) -> Result<Verdict<Res>, ProxyError> {
        let body = serde_json::to_vec(req).map_err(|e| ProxyError::Broken(e.to_string()))?;
        let forwarded = headers
            .iter()
            .filter(|(n, _)| ep.headers.iter().any(|h| h == n));
        // A forwarded client header replaces a static one of the same name (as Centrifugo).
        let fixed = ep.static_headers.iter().filter(|(n, _)| {
            !headers
                .iter()
                .any(|(c, _)| c == n && ep.headers.contains(c))
        });
        let sent: Vec<(&str, &str)> = fixed
            .chain(forwarded)
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let (status, answer) = self
            .http
            .post(&ep.url, &sent, body, ep.timeout)
            .await
            .map_err(|f| match f {
                http::HttpFailure::Timeout => ProxyError::Timeout,
                http::HttpFailure::Unreachable(w) => ProxyError::Unreachable(w),
                http::HttpFailure::Broken(w) => ProxyError::Broken(w),
            })?;
        if status != 200 {
            return Err(ProxyError::Status(status));
        }
        decode(&answer)
    }
}

/// A backend answer: a disconnect first, then an error, then the result (as Centrifugo).
pub fn decode<Res: DeserializeOwned>(answer: &[u8]) -> Result<Verdict<Res>, ProxyError> {
    let a: Answer<Res> =
        serde_json::from_slice(answer).map_err(|e| ProxyError::BadAnswer(e.to_string()))?;
    if let Some(d) = a.disconnect {
        if !(4000..=4999).contains(&d.code) {
            return Err(ProxyError::BadAnswer(format!(
                "disconnect code {} is outside 4000-4999",
                d.code
            )));
        }
        // The reason is cut to a close frame's 123 bytes where the connection is closed.
        return Ok(Verdict::Disconnect(d));
    }
    if let Some(e) = a.error {
        if !(400..=1999).contains(&e.code) {
            return Err(ProxyError::BadAnswer(format!(
                "error code {} is outside 400-1999",
                e.code
            )));
        }
        return Ok(Verdict::Error(e));
    }
    match a.result {
        Some(r) => Ok(Verdict::Result(r)),
        None => Err(ProxyError::BadAnswer(
            "no result, error or disconnect".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::types::{ConnectResult, RpcResult};
    use super::*;

    #[test]
    fn answers_decode_in_centrifugo_order() {
        let r: Verdict<ConnectResult> =
            decode(br#"{"result":{"user":"56","expire_at":7,"channels":["a"]}}"#).unwrap();
        let Verdict::Result(r) = r else { panic!() };
        assert_eq!((r.user.as_str(), r.expire_at), ("56", 7));
        assert_eq!(r.channels, ["a"]);
        let e: Verdict<RpcResult> =
            decode(br#"{"result":{},"error":{"code":1000,"message":"no"}}"#).unwrap();
        assert!(matches!(e, Verdict::Error(BackendError { code: 1000, .. })));
        let d: Verdict<RpcResult> = decode(
            br#"{"error":{"code":1000,"message":"no"},"disconnect":{"code":4501,"reason":"bye"}}"#,
        )
        .unwrap();
        assert!(matches!(
            d,
            Verdict::Disconnect(BackendDisconnect { code: 4501, .. })
        ));
    }

    #[test]
    fn answers_outside_the_format_are_bad() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"error":{"code":100,"message":"internal"}}"#,
            br#"{"disconnect":{"code":3000,"reason":"x"}}"#,
            br#"{"result":{"user":5}}"#,
        ] {
            let r: Result<Verdict<ConnectResult>, _> = decode(bad);
            assert!(
                matches!(r, Err(ProxyError::BadAnswer(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rpc_methods_pick_their_namespace_proxy() {
        let cfg = crate::config::Config::from_toml(
            r#"
            [proxy.rpc]
            endpoint = "http://default/rpc"
            [proxy.named.billing]
            endpoint = "http://billing/rpc"
            http_headers = ["Cookie"]
            [[proxy.rpc_namespaces]]
            name = "pay"
            proxy_name = "billing"
            "#,
        )
        .unwrap();
        let p = Proxies::new(&cfg.proxy, None);
        assert_eq!(p.rpc("pay:charge").unwrap().label, "billing");
        assert_eq!(p.rpc("other:x").unwrap().label, "rpc");
        assert_eq!(p.rpc("plain").unwrap().label, "rpc");
        assert_eq!(p.header_names(), ["cookie"]);
        assert!(p.connect().is_none());
    }
}
