//! The writer task every client connection runs, whatever carries it: it drains the
//! connection's outbound queue into a [`Sink`] (a WebSocket, an HTTP response body) and owns
//! every timer (ping, pong, stale, expiry), the shutdown close and the write timeout.
//!
//! The session queues encoded protocol messages; a sink frames them for its transport (a
//! WebSocket frame, SSE `data:` lines, newline-delimited JSON) and, for the unidirectional
//! transports, turns replies into pushes. So an encoding other than JSON plugs in at the
//! session and the sink's framing, not here.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::unix_now;
use crate::conn::Conn;
use crate::node::Node;
use crate::outbound::Batch;
use crate::protocol::codes;

/// Where a connection's writer writes.
pub trait Sink: Send {
    /// Writes one drain of the queue: pongs owed, the messages, then the close when set.
    fn write(&mut self, batch: &Batch) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Resolves when the client is known to be gone without a write (an HTTP response body
    /// dropped); never, for sinks that learn it from their reader.
    fn gone(&self) -> impl Future<Output = ()> + Send;
    /// Whether the client answers the server's pings (the bidirectional protocol): a missing
    /// pong then closes with 3012.
    fn pongs(&self) -> bool;
}

/// Counts what a drain wrote: messages, bytes and each publication's delivery latency.
pub fn count(batch: &Batch, bytes: usize) {
    if batch.messages.is_empty() {
        return;
    }
    let out = crate::metrics::out();
    out.messages.increment(batch.messages.len() as u64);
    out.bytes.increment(bytes as u64);
    if !batch.applied_at.is_empty() {
        let now = std::time::Instant::now();
        for t in &batch.applied_at {
            out.latency.record(now.duration_since(*t).as_secs_f64());
        }
    }
}

/// Counts a disconnect by its code.
pub fn count_close(code: u16) {
    metrics::counter!(crate::metrics::DISCONNECTS, "code" => code.to_string()).increment(1);
}

/// Drains `conn`'s queue into `sink` until the connection closes, the client goes or a
/// write fails or times out; then cancels `done`.
pub async fn write_loop<S: Sink>(
    node: Arc<Node>,
    conn: Arc<Conn>,
    mut sink: S,
    done: CancellationToken,
) {
    let cfg = &node.cfg.client;
    let started = Instant::now();
    let stale_at = started + cfg.stale_timeout;
    let mut next_ping = started + cfg.ping_interval;
    let pongs = sink.pongs();
    // After a ping: when the pong is due, and the pong count at ping time.
    let mut pong_due: Option<(Instant, u64)> = None;
    let mut shutdown_seen = false;
    // Both kept from one wake to the next: made anew each time, they would register with the
    // node's shutdown token (one lock for all its connections) and the timer wheel, and
    // deregister, on every write.
    let closing = node.clients_closing();
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(closing, timer);
    let mut batch = crate::outbound::Batch::default();
    loop {
        let deadline = next_deadline(&conn, stale_at, next_ping, pong_due.map(|p| p.0));
        // Once fired, it is armed again even for a deadline within the millisecond: a fired
        // timer is ready at once, and would turn the loop into a spin until then.
        if timer.is_elapsed() || moved(timer.deadline(), deadline) {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            _ = &mut closing, if !shutdown_seen => {
                shutdown_seen = true;
                conn.out.close(codes::SHUTDOWN);
            }
            _ = sink.gone() => {
                conn.out.close(codes::NORMAL);
                break;
            }
            _ = conn.out.notified() => {
                if !cfg.write_delay.is_zero() && !conn.out.is_closing() {
                    tokio::time::sleep(cfg.write_delay).await;
                }
            }
            _ = &mut timer => {
                let now = Instant::now();
                if !conn.connected.load(Ordering::Acquire) {
                    if now >= stale_at {
                        conn.out.close(codes::STALE);
                    }
                } else {
                    if let Some((due, seen)) = pong_due
                        && now >= due
                    {
                        if conn.pongs.load(Ordering::Relaxed) == seen {
                            conn.out.close(codes::NO_PONG);
                        }
                        pong_due = None;
                    }
                    if now >= next_ping {
                        if pongs {
                            pong_due = Some((now + cfg.pong_timeout, conn.pongs.load(Ordering::Relaxed)));
                        }
                        next_ping = now + cfg.ping_interval;
                        let _ = conn.out.push(conn.out.encoding().ping());
                    }
                    let unix = unix_now();
                    let exp = conn.expires_at.load(Ordering::Relaxed);
                    if exp > 0 && unix >= exp {
                        conn.out.close(codes::CONNECTION_EXPIRED);
                    }
                    let sub_exp = conn.sub_expires_at.load(Ordering::Relaxed);
                    if sub_exp > 0 && unix >= sub_exp {
                        conn.out.close(codes::SUBSCRIPTION_EXPIRED);
                    }
                }
            }
        }
        conn.out.take_into(&mut batch);
        let written = tokio::time::timeout(cfg.write_timeout, sink.write(&batch)).await;
        let closed = batch.close.is_some();
        // What was written is let go now, not at the next wake (an idle connection would
        // hold it); the vectors stay for the next take.
        batch.clear();
        match written {
            Ok(Ok(())) if !closed => {}
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                tracing::debug!(conn = conn.id, error = %e, "write failed");
                conn.out.close(codes::WRITE_ERROR);
                break;
            }
            Err(_) => {
                tracing::info!(
                    conn = conn.id,
                    "write timed out (client not reading): dropping the connection"
                );
                conn.out.close(codes::WRITE_ERROR);
                break;
            }
        }
    }
    done.cancel();
}

/// Whether the timer must be reset to `new`: an expiry's deadline is computed from the
/// clocks at each wake, so it moves by a little every time; a millisecond is no change.
fn moved(old: Instant, new: Instant) -> bool {
    let diff = new
        .checked_duration_since(old)
        .unwrap_or_else(|| old.duration_since(new));
    diff > Duration::from_millis(1)
}

fn next_deadline(
    conn: &Conn,
    stale_at: Instant,
    next_ping: Instant,
    pong_due: Option<Instant>,
) -> Instant {
    if !conn.connected.load(Ordering::Acquire) {
        return stale_at;
    }
    let mut d = next_ping;
    if let Some(p) = pong_due {
        d = d.min(p);
    }
    let unix = unix_now();
    for exp in [
        conn.expires_at.load(Ordering::Relaxed),
        conn.sub_expires_at.load(Ordering::Relaxed),
    ] {
        if exp > 0 {
            let at = Instant::now() + Duration::from_secs(exp.saturating_sub(unix));
            d = d.min(at);
        }
    }
    d
}
