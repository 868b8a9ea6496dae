//! `[node]` and `[cluster]`: this node's identity and storage, and Raft replication between
//! nodes.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration_str, lenient_string};

/// `[node]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Numeric node id, unique in a cluster (Raft member id). Must be > 0.
    pub id: u64,
    /// Human-readable node name, reported by the `info` API; defaults to `node-<id>`.
    #[serde(deserialize_with = "lenient_string::deserialize")]
    pub name: String,
    /// Directory for this node's persistent state.
    pub data_dir: PathBuf,
    /// On SIGTERM, how long connections may take to close before the process exits anyway.
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
    /// Memory for sled's page cache of the Raft log and snapshot, in bytes. The cache fills
    /// up to this over the first minutes of traffic and then stays there, so it is part of
    /// the node's steady RSS; the recent log entries replication and apply read fit easily.
    pub store_cache_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: 1,
            name: String::new(),
            data_dir: PathBuf::from("./data"),
            drain_timeout: Duration::from_secs(10),
            store_cache_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Largest `cluster.append_pipeline`: unanswered appends a follower takes on one connection.
pub const MAX_APPEND_PIPELINE: usize = 1024;

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Address of the cluster listener (Raft RPC and proposal forwarding between nodes).
    pub listen: String,
    /// Address other nodes reach this one at; empty = `listen` (which must then not be a
    /// wildcard address in a multi-node cluster).
    pub advertise: String,
    /// The voters: `[[cluster.peers]] id = 1, addr = "10.0.0.1:8100"`, this node included.
    /// Empty = a one-voter cluster of this node alone.
    pub peers: Vec<PeerConfig>,
    /// Leader heartbeat interval.
    #[serde(with = "duration_str")]
    pub heartbeat_interval: Duration,
    /// Follower election timeout, lower bound: a follower campaigns a random time up to
    /// `election_timeout_max - election_timeout_min` after the leader lease has run out.
    #[serde(with = "duration_str")]
    pub election_timeout_min: Duration,
    /// Follower election timeout, upper bound: also the followers' leader lease (no vote for
    /// another candidate until this long after they last heard from the leader).
    #[serde(with = "duration_str")]
    pub election_timeout_max: Duration,
    /// How long a write may wait for a leader and its commit before failing (temporary error).
    #[serde(with = "duration_str")]
    pub propose_timeout: Duration,
    /// Most operations the write batcher gathers into one log entry. Larger entries share one
    /// commit (one fsync per node) among more writes; an entry's size bounds its latency.
    pub max_batch_ops: usize,
    /// How long the batcher waits after the first waiting write for more to join its entry
    /// (0: only what is already queued). Fewer, larger entries under light load, at the cost
    /// of this much latency for every write.
    #[serde(with = "duration_str")]
    pub batch_linger: Duration,
    /// Entries the leader keeps in flight (handed to Raft, not yet committed): writes need not
    /// wait for the previous entry's round trip. More = lower latency under load, more memory
    /// and work lost to a leader change (those entries are retried in order or refused).
    pub max_inflight_entries: usize,
    /// Appends the leader keeps in flight to each follower over one connection, answered in
    /// order: an entry need not wait for the follower's answer to the previous append (its
    /// fsync included). 1 sends each append after the previous one was answered, as plain
    /// requests, as nodes of older versions do.
    pub append_pipeline: usize,
    /// Worker threads of the runtime that runs Raft, the store, the write batcher and the
    /// cluster listener, apart from the runtime of client connections: commits then do not
    /// wait for CPU in a queue behind thousands of connection tasks under heavy fan-out.
    pub raft_threads: usize,
    /// Real-time scheduling (SCHED_RR, this priority, 1–99) for the threads of that runtime,
    /// its blocking threads included (the store's flush and fsync); 0 leaves them at normal
    /// priority. When the CPUs are saturated by fan-out, a commit then does not wait for a
    /// time slice behind connection threads; fan-out waits instead, and the kernel's RT
    /// throttling (`sched_rt_runtime_us`, 95 % by default) keeps the rest of the system
    /// running. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least this value (systemd:
    /// `LimitRTPRIO=`); without it the node logs a warning and runs at normal priority.
    pub realtime_priority: u8,
    /// The time slice those threads (workers and blocking threads) ask of the kernel's fair
    /// scheduler (EEVDF, Linux 6.12 and later; older kernels ignore it) when they do not run
    /// at real-time priority; 0 leaves the kernel's default (a few ms). A thread with a
    /// shorter slice preempts the connection threads sooner when it wakes (a commit's step,
    /// an append from the leader), so on CPUs saturated by fan-out a commit waits less for
    /// them, while its share of CPU time stays a fair one: fan-out is not starved as under
    /// real-time priority. No privilege needed. Between 100us and 100ms, or 0.
    #[serde(with = "duration_str")]
    pub raft_slice: Duration,
    /// How much nicer (lower priority under the fair scheduler, 0–19) the threads of client
    /// connections run than the rest of the node: the Raft, store and API threads above keep
    /// the node's own priority. When fan-out saturates the CPUs, a commit's steps then get the
    /// CPU before connection writes, without a privilege; fan-out still gets all the CPU the
    /// write path leaves (it needs little). 0: every thread at the node's priority. The nice
    /// value weighs threads against every other thread in the same scheduling group: under
    /// systemd the unit is its own group (`CPUWeight=`), so only the node's own threads are
    /// reordered; run by hand, connection threads also yield to the user's other processes.
    pub client_nice: u8,
    /// Take a snapshot (and purge the log behind it) every this many log entries.
    pub snapshot_every: u64,
    /// A node the leader cannot reach for this long is declared down: the presence of its
    /// clients is cleared (leave pushes go out).
    #[serde(with = "duration_str")]
    pub presence_lease: Duration,
    /// How long a node waits for the other members' own figures (the API's cluster-wide
    /// `info` and `channels`, `/cluster/status`, the status page); a member that has not
    /// answered by then is reported as unreachable.
    #[serde(with = "duration_str")]
    pub query_timeout: Duration,
    /// PEM CA certificate(s) of the cluster. With `tls_cert` and `tls_key`, cluster traffic is
    /// mutual TLS: a peer must present a certificate signed by this CA to append, vote or
    /// forward, and peers' server certificates must name the address they are dialled at.
    /// `switchyard cert ca|node` makes them. Reloaded on SIGHUP.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate chain of this node (server and client authentication).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8100".into(),
            advertise: String::new(),
            peers: Vec::new(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(800),
            propose_timeout: Duration::from_secs(5),
            max_batch_ops: 1024,
            batch_linger: Duration::ZERO,
            max_inflight_entries: 8,
            append_pipeline: 16,
            raft_threads: 1,
            realtime_priority: 0,
            raft_slice: Duration::from_micros(100),
            client_nice: 10,
            snapshot_every: 5000,
            presence_lease: Duration::from_secs(10),
            query_timeout: Duration::from_secs(1),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// One voter of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its `node.id`.
    pub id: u64,
    /// Its cluster address (`cluster.advertise`).
    pub addr: String,
}
