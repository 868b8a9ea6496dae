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
    /// The operations, applied in order.
    pub ops: Vec<Op>,
}

openraft::declare_raft_types!(
    /// Switchyard's Raft types.
    pub TypeConfig:
        D = Batch,
        R = Vec<OpResult>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);
