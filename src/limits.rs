//! Connection and command limits: per-IP connection rate and concurrency, the node-wide
//! WebSocket cap and the per-connection command rate. Rates are GCRA limiters from `governor`.
//!
//! The settings are reloadable (SIGHUP): caps and the per-IP rate apply to the next
//! connection; a connection keeps the command rate it started with.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};

use crate::config::ClientConfig;

/// How long a connection may keep sending commands past its rate (each answered with 111)
/// before it is closed with 3013, counted in refused commands within [`FLOOD_WINDOW`].
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// The limit values, taken from `[client]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    max_connections: usize,
    max_connections_per_ip: usize,
    connection_rate_per_ip: u32,
    connection_burst_per_ip: u32,
    command_rate: u32,
    command_burst: u32,
}

impl Settings {
    fn of(c: &ClientConfig) -> Settings {
        Settings {
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            connection_rate_per_ip: c.connection_rate_per_ip,
            connection_burst_per_ip: c.connection_burst_per_ip,
            command_rate: c.command_rate,
            command_burst: c.command_burst,
        }
    }
}

/// Why a connection was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// `client.max_connections` WebSocket connections are open (HTTP 503).
    MaxConnections,
    /// `client.max_connections_per_ip` connections from this IP are open (HTTP 503).
    ConnectionsPerIp,
    /// This IP opens connections faster than `client.connection_rate_per_ip` (HTTP 429).
    ConnectionRatePerIp,
}

impl Reject {
    /// The limit's name in metrics (the config key).
    pub fn name(self) -> &'static str {
        match self {
            Reject::MaxConnections => "max_connections",
            Reject::ConnectionsPerIp => "max_connections_per_ip",
            Reject::ConnectionRatePerIp => "connection_rate_per_ip",
        }
    }

    /// The HTTP status the request is answered with.
    pub fn status(self) -> u16 {
        match self {
            Reject::ConnectionRatePerIp => 429,
            _ => 503,
        }
    }

    /// Counts the refusal in the metrics.
    pub fn count(self) {
        metrics::counter!(crate::metrics::CONNECTIONS_REJECTED, "reason" => self.name())
            .increment(1);
        metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => self.name()).increment(1);
    }
}

/// The node's limits and the counters they are checked against.
pub struct Limits {
    settings: RwLock<Settings>,
    ip_rate: RwLock<Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    websockets: AtomicUsize,
    origins: RwLock<Arc<Vec<String>>>,
}

fn keyed(s: &Settings) -> Option<Arc<DefaultKeyedRateLimiter<IpAddr>>> {
    let rate = NonZeroU32::new(s.connection_rate_per_ip)?;
    let burst = NonZeroU32::new(s.connection_burst_per_ip).unwrap_or(rate);
    Some(Arc::new(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    )))
}

impl Limits {
    /// Limits from `[client]`.
    pub fn new(c: &ClientConfig) -> Arc<Limits> {
        let s = Settings::of(c);
        Arc::new(Limits {
            ip_rate: RwLock::new(keyed(&s)),
            settings: RwLock::new(s),
            per_ip: Mutex::new(HashMap::new()),
            websockets: AtomicUsize::new(0),
            origins: RwLock::new(Arc::new(c.allowed_origins.clone())),
        })
    }

    /// Applies new values; returns whether anything changed. Per-IP rate state restarts only
    /// when the rate itself changed.
    pub fn reload(&self, c: &ClientConfig) -> bool {
        let origins_changed = **self.origins.read() != c.allowed_origins;
        if origins_changed {
            *self.origins.write() = Arc::new(c.allowed_origins.clone());
        }
        let new = Settings::of(c);
        let mut cur = self.settings.write();
        if *cur == new {
            return origins_changed;
        }
        if (cur.connection_rate_per_ip, cur.connection_burst_per_ip)
            != (new.connection_rate_per_ip, new.connection_burst_per_ip)
        {
            *self.ip_rate.write() = keyed(&new);
        }
        *cur = new;
        true
    }

    /// Admits a new TCP connection from `ip`. The returned slot counts it until dropped, even
    /// when it is refused (its requests are then answered with the refusal).
    pub fn admit_tcp(self: &Arc<Self>, ip: IpAddr) -> (IpSlot, Option<Reject>) {
        let s = *self.settings.read();
        let open = {
            let mut m = self.per_ip.lock();
            let n = m.entry(ip).or_insert(0);
            *n += 1;
            *n
        };
        let slot = IpSlot {
            limits: self.clone(),
            ip,
        };
        if s.max_connections_per_ip > 0 && open > s.max_connections_per_ip {
            return (slot, Some(Reject::ConnectionsPerIp));
        }
        let limiter = self.ip_rate.read().clone();
        if let Some(l) = limiter
            && l.check_key(&ip).is_err()
        {
            return (slot, Some(Reject::ConnectionRatePerIp));
        }
        (slot, None)
    }

    /// Admits a WebSocket connection under `client.max_connections`.
    pub fn admit_websocket(self: &Arc<Self>) -> Result<WsSlot, Reject> {
        let max = self.settings.read().max_connections;
        let n = self.websockets.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = WsSlot {
            limits: self.clone(),
        };
        if max > 0 && n > max {
            return Err(Reject::MaxConnections);
        }
        Ok(slot)
    }

    /// `client.allowed_origins` as currently configured.
    pub fn allowed_origins(&self) -> Arc<Vec<String>> {
        self.origins.read().clone()
    }

    /// Open WebSocket connections.
    pub fn websockets(&self) -> usize {
        self.websockets.load(Ordering::Acquire)
    }

    /// Open TCP connections from `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip.lock().get(&ip).copied().unwrap_or(0)
    }

    /// A command limiter for a new connection (`None` when commands are not limited).
    pub fn command_limiter(&self) -> Option<CommandLimiter> {
        let s = *self.settings.read();
        let rate = NonZeroU32::new(s.command_rate)?;
        let burst = NonZeroU32::new(s.command_burst).unwrap_or(rate);
        Some(CommandLimiter {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            max_refused: burst.get(),
            refused: 0,
            window_start: Instant::now(),
        })
    }

    /// Forgets per-IP rate state of addresses idle long enough to be back at full burst;
    /// call periodically so the map stays bounded by the recently active addresses.
    pub fn housekeeping(&self) {
        if let Some(l) = self.ip_rate.read().clone() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// One open TCP connection from an IP, counted until dropped.
pub struct IpSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.limits.per_ip.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// One open WebSocket connection, counted until dropped.
pub struct WsSlot {
    limits: Arc<Limits>,
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.limits.websockets.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What to do with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate.
    Allow,
    /// Over the rate: answer error 111 and skip it.
    Refuse,
    /// Over the rate for too long: close with 3013.
    Disconnect,
}

/// One connection's command rate.
pub struct CommandLimiter {
    limiter: DefaultDirectRateLimiter,
    /// Refused commands tolerated within [`FLOOD_WINDOW`] before the connection is closed.
    max_refused: u32,
    refused: u32,
    window_start: Instant,
}

impl CommandLimiter {
    /// Takes one command's token.
    pub fn check(&mut self) -> Verdict {
        if self.limiter.check().is_ok() {
            return Verdict::Allow;
        }
        metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "command_rate").increment(1);
        let now = Instant::now();
        if now.duration_since(self.window_start) > FLOOD_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.max_refused {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(f: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
        let mut c = ClientConfig::default();
        f(&mut c);
        c
    }

    #[test]
    fn per_ip_concurrency_counts_open_connections() {
        let l = Limits::new(&cfg(|c| {
            c.max_connections_per_ip = 2;
            c.connection_rate_per_ip = 0;
        }));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let (a, ra) = l.admit_tcp(ip);
        let (_b, rb) = l.admit_tcp(ip);
        let (c, rc) = l.admit_tcp(ip);
        assert_eq!((ra, rb, rc), (None, None, Some(Reject::ConnectionsPerIp)));
        assert_eq!(
            l.admit_tcp(other).1,
            None,
            "other addresses are not affected"
        );
        drop(c);
        drop(a);
        assert_eq!(l.connections_from(ip), 1);
        assert_eq!(
            l.admit_tcp(ip).1,
            None,
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn per_ip_rate_allows_the_burst_then_refuses() {
        let l = Limits::new(&cfg(|c| {
            c.connection_rate_per_ip = 1;
            c.connection_burst_per_ip = 5;
        }));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let refused = (0..8).filter(|_| l.admit_tcp(ip).1.is_some()).count();
        assert_eq!(refused, 3);
        assert_eq!(l.admit_tcp("10.0.0.9".parse().unwrap()).1, None);
    }

    #[test]
    fn websocket_cap_and_reload() {
        let l = Limits::new(&cfg(|c| c.max_connections = 1));
        let a = l.admit_websocket().unwrap();
        assert_eq!(l.admit_websocket().err(), Some(Reject::MaxConnections));
        assert!(l.reload(&cfg(|c| c.max_connections = 2)));
        let _b = l.admit_websocket().unwrap();
        drop(a);
        assert_eq!(l.websockets(), 1);
    }

    #[test]
    fn command_flood_refuses_then_disconnects() {
        let l = Limits::new(&cfg(|c| {
            c.command_rate = 1;
            c.command_burst = 3;
        }));
        let mut c = l.command_limiter().unwrap();
        let verdicts: Vec<Verdict> = (0..8).map(|_| c.check()).collect();
        assert_eq!(&verdicts[..3], &[Verdict::Allow; 3]);
        assert_eq!(&verdicts[3..6], &[Verdict::Refuse; 3]);
        assert_eq!(verdicts[6], Verdict::Disconnect);
        assert!(
            Limits::new(&cfg(|c| c.command_rate = 0))
                .command_limiter()
                .is_none()
        );
    }
}
