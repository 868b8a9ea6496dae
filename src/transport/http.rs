//! Serving one HTTP connection: HTTP/1.1 and HTTP/2 on the client listener (h2c with prior
//! knowledge, or ALPN `h2` under TLS), with the same protections for both.
//!
//! HTTP/2 lets a backend send many `/api/*` requests at once on one connection. The protocol
//! is chosen here rather than by hyper-util's `auto` builder, whose HTTP/1 side cannot set
//! `max_header_size` and whose sniffing has no timeout: by ALPN under TLS, else by reading the
//! first bytes (the HTTP/2 preface or not) within `client.handshake_timeout`. The bounds
//! HTTP/1.1 has are set for HTTP/2 too: the request head (`client.max_header_size` →
//! SETTINGS_MAX_HEADER_LIST_SIZE, 431 per stream), streams per connection
//! ([`H2_MAX_CONCURRENT_STREAMS`]), and the head timeout, which `Activity` applies: an HTTP/2
//! connection with no request in progress for `client.handshake_timeout` (including one that
//! never sends a request) is closed with GOAWAY, as HTTP/1.1 closes an idle keep-alive one.
//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT) is not offered, so browsers open
//! WebSockets on a separate HTTP/1.1 connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most concurrent HTTP/2 streams (requests in progress) on one client connection; more wait
/// in the client. Enough for a backend to pipeline publishes without one connection holding
/// an unbounded number of requests.
pub(super) const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// Longest a connection is given to finish its requests once the node drains.
const GRACE: Duration = Duration::from_secs(5);

/// What a client with HTTP/2 prior knowledge sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    Http1,
    Http2,
    /// Not known yet (plain client listener, or TLS without ALPN): read the first bytes.
    Sniff,
}

impl Proto {
    /// From the protocol ALPN settled on (TLS on the client listener).
    pub(super) fn from_alpn(alpn: Option<&[u8]>) -> Proto {
        match alpn {
            Some(b"h2") => Proto::Http2,
            Some(_) => Proto::Http1,
            None => Proto::Sniff,
        }
    }
}

/// Reads until the first bytes tell the protocol: HTTP/2 once the whole preface is in, HTTP/1
/// at the first byte that differs from it (or at EOF). Returns the bytes read, for
/// [`Prefixed`]. Never reads past the preface.
pub(super) async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Proto, Bytes)> {
    let mut buf = [0u8; PREFACE.len()];
    let mut filled = 0;
    while filled < PREFACE.len() {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 || buf[filled..filled + n] != PREFACE[filled..filled + n] {
            filled += n;
            return Ok((Proto::Http1, Bytes::copy_from_slice(&buf[..filled])));
        }
        filled += n;
    }
    Ok((Proto::Http2, Bytes::copy_from_slice(&buf)))
}

/// The protocol of a connection: `proto` when known, else [`sniff`]ed within `head_timeout`
/// (bounded like a request head: a connection that sends nothing is closed; one that starts
/// like the preface and turns out HTTP/1 then has its HTTP/1 head timeout, twice in all at
/// most). `None` when the connection failed, timed out or the node is stopping.
pub(super) async fn settle<I: AsyncRead + Unpin>(
    io: &mut I,
    proto: Proto,
    head_timeout: Duration,
    shutdown: &CancellationToken,
) -> Option<(Proto, Bytes)> {
    if proto != Proto::Sniff {
        return Some((proto, Bytes::new()));
    }
    tokio::select! {
        r = tokio::time::timeout(head_timeout, sniff(io)) => r.ok()?.ok(),
        _ = shutdown.cancelled() => None,
    }
}

/// A stream whose first bytes were already read: they are read again first.
pub(super) struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    pub(super) fn new(prefix: Bytes, io: I) -> Prefixed<I> {
        Prefixed { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Runs HTTP/2 stream tasks on the listener's tracker, so a drain waits for requests in
/// progress on HTTP/2 as it waits for HTTP/1.1 connections.
#[derive(Clone)]
pub(super) struct TrackedExec(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// HTTP/1.1: the request head bounded in size and time (also between keep-alive requests).
pub(super) fn h1_builder(max_head: usize, head_timeout: Duration) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_header_size(max_head)
        .max_buf_size(max_head.max(8192));
    b
}

/// HTTP/2: the header list bounded like an HTTP/1.1 head, [`H2_MAX_CONCURRENT_STREAMS`],
/// stream tasks on `tracker`. Extended CONNECT (WebSocket over HTTP/2) stays off; hyper's
/// defaults bound resets (rapid-reset), flow-control windows and the send buffer.
pub(super) fn h2_builder(max_head: usize, tracker: TaskTracker) -> http2::Builder<TrackedExec> {
    let mut b = http2::Builder::new(TrackedExec(tracker));
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    b
}

/// Requests in progress on one connection, to close it when it idles or was refused.
#[derive(Default)]
pub(super) struct Activity {
    active: AtomicUsize,
    answered: AtomicBool,
    changed: Notify,
}

/// One request in progress; its end is noted when dropped.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.answered.store(true, Ordering::Release);
        self.0.changed.notify_one();
    }
}

impl Activity {
    /// Notes a request starting; hold the guard until it is answered.
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// Resolves when the connection should be closed: no request in progress for `idle`, or,
    /// with `after_one` (a limit refused the connection), once a request was answered and
    /// none is in progress.
    pub(super) async fn until_closing(&self, idle: Duration, after_one: bool) {
        loop {
            // `notify_one` keeps a permit, so a change between the check and the wait counts.
            let changed = self.changed.notified();
            if self.active.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            if after_one && self.answered.load(Ordering::Acquire) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => return,
                _ = changed => {}
            }
        }
    }
}

/// Drives `conn` until it ends. On `shutdown` (drain) it is shut down gracefully (HTTP/2:
/// GOAWAY, streams in progress finish) and given [`GRACE`] to finish; when `closing` resolves
/// (idle, refused), likewise but given `close_grace`, so a peer that does not take part in
/// the close (never acknowledges GOAWAY's ping) is not kept longer than its head timeout.
pub(super) async fn drive<C, G>(
    conn: C,
    graceful: G,
    closing: impl Future<Output = ()>,
    close_grace: Duration,
    shutdown: CancellationToken,
) where
    C: Future,
    G: FnOnce(Pin<&mut C>),
{
    tokio::pin!(conn);
    let grace = tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.cancelled() => GRACE,
        _ = closing => close_grace,
    };
    graceful(conn.as_mut());
    let _ = tokio::time::timeout(grace, conn).await;
}
