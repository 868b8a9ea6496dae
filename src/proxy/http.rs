//! The HTTP side of proxy calls: one pooled HTTP/1.1 client (kept-alive connections per
//! backend) that POSTs a JSON body with the forwarded headers and returns the status and the
//! body, bounded in time and size. The only file of `proxy` that knows HTTP.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest backend answer read.
pub const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Why no answer came.
#[derive(Debug)]
pub enum HttpFailure {
    /// Nothing within the timeout.
    Timeout,
    /// Connecting failed: nothing was sent.
    Unreachable(String),
    /// Sending or reading failed after connecting, or the answer was too large.
    Broken(String),
}

/// A pooled client for every backend.
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HttpClient { client }
    }
}

impl HttpClient {
    /// POSTs `body` to `url` with `headers`; the status and body of the answer.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), HttpFailure> {
        let mut req =
            hyper::Request::post(url).header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpFailure::Broken(e.to_string()))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    HttpFailure::Unreachable(e.to_string())
                } else {
                    HttpFailure::Broken(e.to_string())
                }
            })?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| HttpFailure::Broken(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(HttpFailure::Timeout))
    }
}
