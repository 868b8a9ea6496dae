//! Metrics: every name in one place, registered at zero at start-up so dashboards and tests see
//! every series from the first scrape. Counters are bumped where things happen; gauges that
//! describe state (connections, subscriptions, Raft, store, process) are set at scrape time by
//! the admin listener (`admin::render_metrics`), which renders the Prometheus text.
//!
//! Invariant: a leaf of names. It imports nothing of the crate but `protocol::codes` (to
//! register each error and close code's series at zero), so every layer can count into it.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::codes;

/// Connected clients (completed `connect`).
pub const CONNECTIONS: &str = "switchyard_connections";
/// Client connections accepted: WebSocket upgrades and HTTP streams.
pub const CONNECTIONS_ACCEPTED: &str = "switchyard_connections_accepted_total";
/// `/emulation` requests forwarded to the node holding their session.
pub const EMULATION_FORWARDED: &str = "switchyard_emulation_forwarded_total";
/// Connections refused before the upgrade, by `reason`.
pub const CONNECTIONS_REJECTED: &str = "switchyard_connections_rejected_total";
/// Subscriptions of local connections.
pub const SUBSCRIPTIONS: &str = "switchyard_subscriptions";
/// Channels with local subscribers.
pub const CHANNELS: &str = "switchyard_channels";
/// Commands received from clients, pongs included.
pub const MESSAGES_IN: &str = "switchyard_messages_in_total";
/// Commands received from clients other than pongs (the keep-alive answers): the
/// denominator of an error rate, which idle connections' pongs would dilute.
pub const COMMANDS: &str = "switchyard_commands_total";
/// Messages (replies and pushes) written to clients.
pub const MESSAGES_OUT: &str = "switchyard_messages_out_total";
/// WebSocket payload bytes received from clients.
pub const BYTES_IN: &str = "switchyard_bytes_in_total";
/// WebSocket payload bytes written to clients (after compression).
pub const BYTES_OUT: &str = "switchyard_bytes_out_total";
/// Messages written to clients inside compressed frames (permessage-deflate).
pub const MESSAGES_OUT_COMPRESSED: &str = "switchyard_messages_out_compressed_total";
/// Publications and join/leave pushes compressed once and shared by this node's compressing
/// subscribers (each compression counted once, however many subscribers share it).
pub const SHARED_COMPRESSIONS: &str = "switchyard_shared_compressions_total";
/// Fossil deltas computed for delta subscribers (once per publication per node, however many
/// subscribers share it).
pub const DELTAS: &str = "switchyard_deltas_total";
/// Publications applied on this node (committed through Raft).
pub const PUBLICATIONS_COMMITTED: &str = "switchyard_publications_committed_total";
/// Time from a publication's apply on this node to its write to a subscriber's socket.
pub const DELIVERY_LATENCY: &str = "switchyard_delivery_latency_seconds";
/// Subscribers disconnected with 3008 because their outbound queue overflowed.
pub const SLOW_DISCONNECTS: &str = "switchyard_slow_consumer_disconnects_total";
/// Requests refused by a rate limit, by `limit` (limits arrive with the hardening work).
pub const RATE_LIMITED: &str = "switchyard_rate_limited_total";
/// Error replies to client commands, by `code`.
pub const COMMAND_ERRORS: &str = "switchyard_command_errors_total";
/// Connections closed by the server, by close `code`.
pub const DISCONNECTS: &str = "switchyard_disconnects_total";
/// Raft term.
pub const RAFT_TERM: &str = "switchyard_raft_term";
/// Raft leader's node id (0 when unknown).
pub const RAFT_LEADER: &str = "switchyard_raft_leader";
/// 1 when this node is the leader.
pub const RAFT_IS_LEADER: &str = "switchyard_raft_is_leader";
/// Index of the last log entry on this node.
pub const RAFT_LAST_LOG_INDEX: &str = "switchyard_raft_last_log_index";
/// Index of the last applied entry on this node.
pub const RAFT_APPLIED_INDEX: &str = "switchyard_raft_applied_index";
/// Entries a follower is behind the leader, by `node` (reported by the leader).
pub const RAFT_FOLLOWER_LAG: &str = "switchyard_raft_follower_lag";
/// Entries this node forwarded to the leader, by `path` (`pipelined`: on its forwarding
/// stream, several in flight; `sequential`: one at a time, as retries after a failure are).
pub const FORWARDED_ENTRIES: &str = "switchyard_forwarded_entries_total";
/// AppendEntries requests (heartbeats included) this node sent as the leader, by `path`:
/// `pipelined` (sent while earlier ones to that follower were unanswered), `alone` (on an
/// append stream, nothing else in flight) or `sequential` (one request at a time:
/// `cluster.append_pipeline = 1`, or a peer of an older version).
pub const RAFT_APPENDS: &str = "switchyard_raft_appends_total";
/// Proxy calls to the application's backend, by `proxy` (the event, or a named proxy's
/// name) and `outcome` (`ok`, `error`, `disconnect`, or a failure: `timeout`, `unreachable`,
/// `broken`, `http_5xx`, `http_status`, `bad_answer`).
pub const PROXY_CALLS: &str = "switchyard_proxy_calls_total";
/// Time of a proxy call, by `proxy`.
pub const PROXY_DURATION: &str = "switchyard_proxy_call_duration_seconds";
/// Time a store flush (sled's flush and an fsync) took: the disk's part of every commit.
pub const STORE_FLUSH_DURATION: &str = "switchyard_store_flush_duration_seconds";
/// Bytes the sled store occupies on disk.
pub const STORE_BYTES: &str = "switchyard_store_bytes";
/// Resident memory of the process.
pub const PROCESS_RSS: &str = "switchyard_process_resident_memory_bytes";
/// Open file descriptors of the process.
pub const PROCESS_FDS: &str = "switchyard_process_open_fds";

/// Buckets of the delivery latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Reasons counted under [`CONNECTIONS_REJECTED`].
pub const REJECT_REASONS: &[&str] = &[
    "shutting_down",
    "bad_upgrade",
    "max_connections",
    "max_connections_per_ip",
    "connection_rate_per_ip",
    "origin",
    "tls_handshake",
];

/// Limits counted under [`RATE_LIMITED`] when they fire (config key names where there is one).
pub const LIMITS: &[&str] = &[
    "max_connections",
    "max_connections_per_ip",
    "connection_rate_per_ip",
    "command_rate",
    "max_channels",
    "channel_max_length",
    "max_message_size",
    "api_publication_size",
    "handshake_timeout",
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The series every write to a client counts, resolved once: through the macros each write
/// would look its three keys up in the registry again.
#[derive(Clone)]
pub struct Out {
    /// [`MESSAGES_OUT`].
    pub messages: metrics::Counter,
    /// [`BYTES_OUT`].
    pub bytes: metrics::Counter,
    /// [`DELIVERY_LATENCY`].
    pub latency: metrics::Histogram,
}

impl Out {
    fn new() -> Out {
        Out {
            messages: metrics::counter!(MESSAGES_OUT),
            bytes: metrics::counter!(BYTES_OUT),
            latency: metrics::histogram!(DELIVERY_LATENCY),
        }
    }
}

static OUT: OnceLock<Out> = OnceLock::new();

/// The client write series of the installed recorder (looked up anew when none is
/// installed yet, so nothing is pinned to the no-op recorder).
pub fn out() -> std::borrow::Cow<'static, Out> {
    match OUT.get() {
        Some(o) => std::borrow::Cow::Borrowed(o),
        None => std::borrow::Cow::Owned(Out::new()),
    }
}

/// Installs the process-wide recorder once (later calls, e.g. several nodes in one test
/// process, share it) and registers every series at zero.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), LATENCY_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full(PROXY_DURATION.into()), LATENCY_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full(STORE_FLUSH_DURATION.into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => {
                    register_all();
                    OUT.get_or_init(Out::new);
                    spawn_upkeep(h.clone());
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// Counters without labels, with their help text.
const COUNTERS: &[(&str, &str)] = &[
    (
        CONNECTIONS_ACCEPTED,
        "client connections accepted (WebSockets and HTTP streams)",
    ),
    (
        EMULATION_FORWARDED,
        "emulation requests forwarded to the node holding their session",
    ),
    (MESSAGES_IN, "client commands received, pongs included"),
    (COMMANDS, "client commands received, pongs excluded"),
    (MESSAGES_OUT, "messages written to clients"),
    (BYTES_IN, "payload bytes received from clients"),
    (
        BYTES_OUT,
        "payload bytes written to clients (after compression)",
    ),
    (
        MESSAGES_OUT_COMPRESSED,
        "messages written to clients in compressed frames (permessage-deflate)",
    ),
    (
        SHARED_COMPRESSIONS,
        "pushes compressed once and shared by this node's compressing subscribers",
    ),
    (
        DELTAS,
        "Fossil deltas computed once per publication for this node's delta subscribers",
    ),
    (PUBLICATIONS_COMMITTED, "publications applied on this node"),
    (
        SLOW_DISCONNECTS,
        "subscribers disconnected as slow consumers (3008)",
    ),
];

fn register_all() {
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
        counter!(name).absolute(0);
    }
    describe_counter!(
        FORWARDED_ENTRIES,
        "entries forwarded to the leader, by path (pipelined, sequential)"
    );
    for path in ["pipelined", "sequential"] {
        counter!(FORWARDED_ENTRIES, "path" => path).absolute(0);
    }
    describe_counter!(
        RAFT_APPENDS,
        "appends sent to followers, by path (pipelined, alone, sequential)"
    );
    for path in ["pipelined", "alone", "sequential"] {
        counter!(RAFT_APPENDS, "path" => path).absolute(0);
    }
    describe_counter!(
        CONNECTIONS_REJECTED,
        "connections refused before the upgrade"
    );
    for reason in REJECT_REASONS {
        counter!(CONNECTIONS_REJECTED, "reason" => *reason).absolute(0);
    }
    describe_counter!(
        RATE_LIMITED,
        "times a configured limit refused a connection, command or request, by limit"
    );
    for limit in LIMITS {
        counter!(RATE_LIMITED, "limit" => *limit).absolute(0);
    }
    describe_counter!(COMMAND_ERRORS, "error replies to client commands, by code");
    for e in [
        codes::INTERNAL,
        codes::UNKNOWN_CHANNEL,
        codes::PERMISSION_DENIED,
        codes::METHOD_NOT_FOUND,
        codes::ALREADY_SUBSCRIBED,
        codes::LIMIT_EXCEEDED,
        codes::BAD_REQUEST,
        codes::NOT_AVAILABLE,
        codes::TOKEN_EXPIRED,
        codes::TOO_MANY_REQUESTS,
        codes::UNRECOVERABLE_POSITION,
    ] {
        counter!(COMMAND_ERRORS, "code" => e.code.to_string()).absolute(0);
    }
    describe_counter!(
        DISCONNECTS,
        "connections closed by the server, by close code"
    );
    for d in [
        codes::SHUTDOWN,
        codes::SLOW,
        codes::NO_PONG,
        codes::STALE,
        codes::INVALID_TOKEN,
        codes::BAD_REQUEST_DISCONNECT,
        codes::MESSAGE_TOO_BIG,
    ] {
        counter!(DISCONNECTS, "code" => d.code.to_string()).absolute(0);
    }
    for (name, help) in [
        (CONNECTIONS, "connected clients"),
        (SUBSCRIPTIONS, "subscriptions of local connections"),
        (CHANNELS, "channels with local subscribers"),
        (RAFT_TERM, "Raft term"),
        (RAFT_LEADER, "Raft leader node id (0: unknown)"),
        (RAFT_IS_LEADER, "1 when this node leads"),
        (RAFT_LAST_LOG_INDEX, "last log index on this node"),
        (RAFT_APPLIED_INDEX, "last applied index on this node"),
        (STORE_BYTES, "sled store size on disk"),
        (PROCESS_RSS, "resident memory of the process"),
        (PROCESS_FDS, "open file descriptors of the process"),
    ] {
        describe_gauge!(name, help);
        gauge!(name).set(0.0);
    }
    describe_gauge!(
        RAFT_FOLLOWER_LAG,
        "entries a follower is behind (leader only)"
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        metrics::Unit::Seconds,
        "publication apply on this node to socket write"
    );
    let _ = histogram!(DELIVERY_LATENCY);
    describe_counter!(
        PROXY_CALLS,
        "proxy calls to the application's backend, by proxy and outcome"
    );
    describe_histogram!(
        STORE_FLUSH_DURATION,
        metrics::Unit::Seconds,
        "time of a store flush (sled flush and fsync)"
    );
    let _ = histogram!(STORE_FLUSH_DURATION);
    describe_histogram!(
        PROXY_DURATION,
        metrics::Unit::Seconds,
        "time of a proxy call, by proxy"
    );
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `install_recorder` leaves upkeep to the caller: until it runs, every histogram sample
/// (one per delivered message) is kept in a growing buffer. Without a scraper that was a leak
/// of about 16 bytes per delivery; a scrape drained it, in bursts. A thread of its own folds
/// them every second whether or not anyone scrapes.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started");
    }
}
