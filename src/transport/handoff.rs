//! Handing a backend's server API connection to the API runtime (see [`api_connection`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Where a plain client-listener connection is served (see [`api_connection`]).
pub(super) enum Moved {
    /// A server API connection, deregistered here to be registered with the API runtime.
    Api(std::net::TcpStream),
    /// Anything else (WebSocket upgrades, HTTP streams, the status page): served here.
    Stay(tokio::net::TcpStream),
    /// Closed, silent past the handshake timeout, or the node is stopping.
    Closed,
}

/// A backend's server API connection (its first bytes `POST /api`, or the HTTP/2 preface:
/// browsers speak HTTP/2 only over TLS) is served on the API runtime, whose thread runs no
/// subscriber: a sequential publisher's request and reply do not wait for CPU in a queue
/// behind thousands of connection tasks, as commits do not (the Raft runtime). Decided by
/// peeking, so nothing is consumed; a request whose first bytes arrive split stays here.
/// TLS connections stay here (the TLS session lives on this runtime's socket).
pub(super) async fn api_connection(
    stream: tokio::net::TcpStream,
    timeout: Duration,
    stop: &CancellationToken,
) -> Moved {
    let mut head = [0u8; 14];
    let n = tokio::select! {
        r = tokio::time::timeout(timeout, stream.peek(&mut head)) => match r {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Moved::Closed,
        },
        _ = stop.cancelled() => return Moved::Closed,
    };
    let head = &head[..n];
    if !(head.starts_with(b"POST /api") || head.starts_with(b"PRI * HTTP/2.0")) {
        return Moved::Stay(stream);
    }
    match stream.into_std() {
        Ok(std) => Moved::Api(std),
        Err(e) => {
            tracing::debug!(error = %e, "could not hand an API connection over");
            Moved::Closed
        }
    }
}
