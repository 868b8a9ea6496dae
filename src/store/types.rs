//! The openraft type configuration: what a log entry carries and what applying it returns.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Op, OpResult};

/// Raft node id (`node.id`).
pub type NodeId = u64;

/// The application payload of one log entry: operations batched by the leader, stamped with
/// the leader's wall-clock time so TTLs are applied identically on every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// Leader time in milliseconds when the batch was formed.
    pub time_ms: u64,
    /// The operations, applied in order; shared, so an entry read back from the log's
    /// in-memory tail is a cheap clone (serialised as a plain array).
    pub ops: std::sync::Arc<[Op]>,
}

openraft::declare_raft_types!(
    /// Switchyard's Raft types.
    pub TypeConfig:
        D = Batch,
        R = Vec<OpResult>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

use openraft::type_config::alias as a;

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ops at {} ms", self.ops.len(), self.time_ms)
    }
}

/// The openraft handle of a node.
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;

/// A log id of this configuration.
pub type LogId = a::LogIdOf<TypeConfig>;
/// A vote (term, candidate or leader, committed) of this configuration.
pub type Vote = a::VoteOf<TypeConfig>;
/// A log entry of this configuration.
pub type Entry = a::EntryOf<TypeConfig>;
/// A membership with the log id that set it.
pub type StoredMembership = a::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers.
pub type SnapshotMeta = a::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its bytes.
pub type Snapshot = a::SnapshotOf<TypeConfig, SnapshotData>;

/// A snapshot's bytes (the state machine, JSON), as held and as sent to a peer whole.
pub type SnapshotData = Cursor<Vec<u8>>;
