//! The engine joins the state machine to the hub: applying an entry and delivering its events
//! happen under the state machine's write lock, so a reader holding the read lock (a subscribe
//! computing its position or recovery and registering in the hub) sees a cut between two
//! entries. Every publication is then either in what the reader saw or delivered after it —
//! never both, never neither.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use crate::hub::Hub;
use crate::state::{Entry, OpResult, StateMachine};

/// State machine + local fan-out.
#[derive(Default)]
pub struct Engine {
    sm: RwLock<StateMachine>,
    /// Local subscribers.
    pub hub: Hub,
}

impl Engine {
    /// Applies a committed entry and delivers its events to local subscribers, in log order.
    pub fn apply(&self, entry: &Entry) -> Vec<OpResult> {
        let mut sm = self.sm.write();
        let (results, events) = sm.apply(entry);
        for ev in &events {
            self.hub.deliver(ev);
        }
        results
    }

    /// Replaces the whole state (a snapshot was installed). Local subscribers may have missed
    /// what the snapshot skipped over, so they are told to reconnect and recover (3010).
    pub fn install(&self, state: StateMachine) {
        let mut sm = self.sm.write();
        *sm = state;
        self.hub
            .close_all(crate::protocol::codes::INSUFFICIENT_STATE);
    }

    /// Runs `f` with a consistent view of the state; no entry is applied meanwhile.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&self.sm.read())
    }

    /// The time reads should use for TTLs: the local clock, but never behind the log.
    pub fn now_ms(sm: &StateMachine) -> u64 {
        wall_ms().max(sm.last_time_ms())
    }
}

/// Wall-clock milliseconds since the unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
