//! The engine joins the state machine to the hub: applying an entry and delivering its events
//! happen under the state machine's write lock, so a reader holding the read lock (a subscribe
//! computing its position or recovery and registering in the hub) sees a cut between two
//! entries. Every publication is then either in what the reader saw or delivered after it —
//! never both, never neither.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use crate::hub::Hub;
use std::sync::Arc;

use crate::state::{Entry, Event, OpResult, StateMachine};

/// Acts on committed events other than deliveries (user actions, nodes declared down); set
/// by the node at start.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// User actions older than this when applied (a log replayed after a restart) are ignored:
/// they were meant for connections of the past.
pub const USER_ACTION_MAX_AGE_MS: u64 = 30_000;

/// State machine + local fan-out.
#[derive(Default)]
pub struct Engine {
    sm: RwLock<StateMachine>,
    /// Local subscribers.
    pub hub: Hub,
    /// Where non-delivery events go.
    sink: RwLock<Option<EventSink>>,
}

impl Engine {
    /// Applies a committed entry and delivers its events to local subscribers, in log order.
    pub fn apply(&self, entry: &Entry) -> Vec<OpResult> {
        let mut sm = self.sm.write();
        let (results, events) = sm.apply(entry);
        let published = events
            .iter()
            .filter(|e| matches!(e, Event::Publication { .. }))
            .count();
        if published > 0 {
            metrics::counter!(crate::metrics::PUBLICATIONS_COMMITTED).increment(published as u64);
        }
        // Every event of the entry is queued first and each subscriber's writer woken once
        // after the last: it then writes the entry's publications as one frame.
        let mut woken = Vec::new();
        for ev in &events {
            match ev {
                // A replayed log must not act on today's connections.
                Event::User { time_ms, .. } if time_ms + USER_ACTION_MAX_AGE_MS < wall_ms() => {}
                Event::User { .. } | Event::NodeDown { .. } => {
                    if let Some(sink) = self.sink.read().as_ref() {
                        sink(ev);
                    }
                }
                _ => self.hub.deliver_quiet(ev, &mut woken),
            }
        }
        for out in woken {
            out.wake();
        }
        results
    }

    /// Sets where non-delivery events go.
    pub fn set_event_sink(&self, sink: EventSink) {
        *self.sink.write() = Some(sink);
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
