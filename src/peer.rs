//! An HTTP/1.1 client to one peer node's cluster listener: one kept-alive connection,
//! re-established after any error. Used for Raft RPC and for forwarding proposals.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::tls::ClusterTls;

/// Largest response accepted from a peer (snapshots travel in chunks well below this).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// A connection to a peer taken over by an upgrade ([`PeerClient::upgrade`]): a plain byte
/// stream in both directions.
pub type PeerStream = TokioIo<hyper::upgrade::Upgraded>;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The request certainly did not reach the peer (connect failed or timed out).
    #[error("peer {addr} unreachable: {why}")]
    Unreachable {
        /// Peer address.
        addr: String,
        /// What failed.
        why: String,
    },
    /// The request may or may not have been processed.
    #[error("peer {addr} call failed: {why}")]
    Failed {
        /// Peer address.
        addr: String,
        /// What failed.
        why: String,
    },
}

/// How connections to peers are made.
#[derive(Clone, Default)]
pub struct Link {
    /// Local address outgoing connections are made from (the node's cluster IP), if any.
    pub bind: Option<std::net::IpAddr>,
    /// Mutual TLS with the cluster CA, if configured.
    pub tls: Option<Arc<ClusterTls>>,
}

/// Idle time before the kernel probes a quiet cluster connection, the time between probes,
/// and how many may go unanswered: a peer whose host vanished (power loss, a partition
/// that dropped the connection's state) is noticed within about a minute. Replication
/// connections can be quiet for long on an idle cluster, so no idle timeout can tell.
const KEEPALIVE: (Duration, Duration, u32) = (Duration::from_secs(30), Duration::from_secs(10), 3);

/// Turns TCP keep-alive on for a cluster connection (either side).
pub fn keep_alive(stream: &TcpStream) {
    let (idle, interval, retries) = KEEPALIVE;
    let ka = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(retries);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "TCP keep-alive not set");
    }
}

/// An HTTP/1.1 connection over `io`; with `upgrades`, one that can be taken over by an
/// upgrade ([`PeerClient::upgrade`]).
async fn handshake<I>(io: I, upgrades: bool) -> Result<SendRequest<Full<Bytes>>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
    });
    Ok(sender)
}

/// A client for one peer address.
pub struct PeerClient {
    addr: String,
    link: Link,
    /// Extra headers sent with every request (e.g. the admin API key).
    headers: Vec<(&'static str, String)>,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl PeerClient {
    /// A plain-HTTP client for `addr` (`host:port`); connects lazily.
    pub fn new(addr: impl Into<String>) -> PeerClient {
        Self::with_link(addr, Link::default())
    }

    /// A client whose connections are made as `link` says.
    pub fn with_link(addr: impl Into<String>, link: Link) -> PeerClient {
        PeerClient {
            addr: addr.into(),
            link,
            headers: Vec::new(),
            conn: Mutex::new(None),
        }
    }

    /// Sends `name: value` with every request.
    pub fn with_header(mut self, name: &'static str, value: String) -> PeerClient {
        self.headers.push((name, value));
        self
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connect(
        &self,
        timeout: Duration,
        upgrades: bool,
    ) -> Result<SendRequest<Full<Bytes>>, PeerError> {
        let unreachable = |why: String| PeerError::Unreachable {
            addr: self.addr.clone(),
            why,
        };
        let connect = async {
            match self.link.bind {
                None => TcpStream::connect(&self.addr).await,
                Some(ip) => {
                    let target = tokio::net::lookup_host(&self.addr)
                        .await?
                        .find(|a| a.is_ipv4() == ip.is_ipv4())
                        .ok_or_else(|| std::io::Error::other("no address of the bind family"))?;
                    let sock = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    sock.bind(std::net::SocketAddr::new(ip, 0))?;
                    sock.connect(target).await
                }
            }
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        keep_alive(&stream);
        let Some(tls) = &self.link.tls else {
            return handshake(stream, upgrades).await.map_err(unreachable);
        };
        let name = crate::tls::server_name(&self.addr).map_err(|e| unreachable(e.to_string()))?;
        let stream = tokio::time::timeout(timeout, tls.connector().connect(name, stream))
            .await
            .map_err(|_| unreachable("TLS handshake timed out".into()))?
            .map_err(|e| unreachable(format!("TLS handshake: {e}")))?;
        handshake(stream, upgrades).await.map_err(unreachable)
    }

    /// Opens a new connection and asks the peer to switch it to `protocol` (`POST path`,
    /// `Upgrade: protocol`): the upgraded byte stream, or `None` when the peer does not know
    /// the path (HTTP 404: a node of an older version).
    pub async fn upgrade(
        &self,
        path: &str,
        protocol: &'static str,
        timeout: Duration,
    ) -> Result<Option<PeerStream>, PeerError> {
        let mut sender = self.connect(timeout, true).await?;
        let failed = |why: String| PeerError::Failed {
            addr: self.addr.clone(),
            why,
        };
        let req = Request::post(path)
            .header(hyper::header::HOST, &self.addr)
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, protocol)
            .body(Full::new(Bytes::new()))
            .map_err(|e| failed(e.to_string()))?;
        let call = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| failed(e.to_string()))?;
            match resp.status() {
                StatusCode::SWITCHING_PROTOCOLS => {}
                StatusCode::NOT_FOUND => return Ok(None),
                status => return Err(failed(format!("upgrade refused: HTTP {status}"))),
            }
            let io = hyper::upgrade::on(resp)
                .await
                .map_err(|e| failed(e.to_string()))?;
            Ok(Some(TokioIo::new(io)))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(failed("upgrade timed out".into())))
    }

    /// POSTs `body` to `path`; returns the response body of a 200 answer (any other status
    /// is [`PeerError::Failed`], with the start of the body).
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        let (status, body) = self.post_answer(path, body, timeout).await?;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(PeerError::Failed {
                addr: self.addr.clone(),
                why: format!("HTTP {status}: {text}"),
            });
        }
        Ok(body)
    }

    /// POSTs `body` to `path`; returns whatever status and body the peer answered with, for
    /// callers that pass an answer on or explain it (membership forwarding, the CLI).
    pub async fn post_answer(
        &self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), PeerError> {
        let mut guard = self.conn.lock().await;
        let fresh = match guard.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.connect(timeout, false).await?,
            },
            None => self.connect(timeout, false).await?,
        };
        let mut sender = fresh;
        let failed = |why: String| PeerError::Failed {
            addr: self.addr.clone(),
            why,
        };
        let mut req = Request::post(path)
            .header(hyper::header::HOST, &self.addr)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            req = req.header(*name, value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(e.to_string()))?;
        let call = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        let res = tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(failed("timed out".into())));
        if res.is_ok() {
            *guard = Some(sender);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keep_alive_turns_on_probing_with_the_cluster_timing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let sock = socket2::SockRef::from(&stream);
        assert!(!sock.keepalive().unwrap(), "off by default");
        keep_alive(&stream);
        let (idle, interval, retries) = KEEPALIVE;
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), idle);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), interval);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), retries);
    }
}
