//! The replicated state machine: channel streams (epoch, offsets, bounded history) and presence.
//!
//! It is fed entries of an ordered log. `apply` is deterministic: it depends only on the state
//! and the entry (whose time the log stamped), never on the local clock or randomness, so every
//! node that applies the same log holds the same state. Reads take a `now` for TTL filtering.
//! Pure data structure: no I/O, no locks, no async.
//!
//! This file holds the log's vocabulary (`Entry`, `Op`, `OpResult`, `Event`) and `apply`, which
//! hands each op to its own method: `stream` (publications, history, recovery), `idempotency`
//! (publications with an idempotency key) and `presence`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::protocol::{ClientInfo, Publication, Raw};

mod idempotency;
mod presence;
mod stream;

pub use idempotency::IdempotencyKey;
pub use presence::PresenceEntry;
pub use stream::Recovery;
use stream::Stream;

/// One log entry: a batch of operations stamped by the log with an index and a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log (1, 2, …).
    pub index: u64,
    /// Wall-clock milliseconds assigned by the log (leader) when the entry was created.
    pub time_ms: u64,
    /// The operations, applied in order.
    pub ops: std::sync::Arc<[Op]>,
}

/// How a channel keeps history; resolved from the namespace by the proposer so that apply does
/// not depend on each node's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPolicy {
    /// Publications kept (0 = no history).
    pub size: usize,
    /// Milliseconds a publication is kept.
    pub ttl_ms: u64,
}

impl HistoryPolicy {
    /// No history: publications get no offset.
    pub const NONE: HistoryPolicy = HistoryPolicy { size: 0, ttl_ms: 0 };

    /// Whether publications are kept at all.
    pub fn enabled(&self) -> bool {
        self.size > 0 && self.ttl_ms > 0
    }
}

/// One replicated operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// Publish into a channel; with history on, the publication gets the next offset.
    Publish {
        /// Channel.
        channel: String,
        /// Payload (raw JSON; with `binary`, a JSON string holding the payload's base64).
        data: Raw,
        /// The payload is binary. Absent in entries written before binary payloads.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        binary: bool,
        /// Publisher, for client publications.
        info: Option<ClientInfo>,
        /// API tags.
        tags: Option<BTreeMap<String, String>>,
        /// History settings of the channel.
        history: HistoryPolicy,
        /// Epoch used if this creates the stream (chosen by the proposer, so replicated).
        new_epoch: String,
        /// Idempotency key (server API): a repeat within its window publishes nothing and is
        /// given the first publication's position. Absent in entries written before keys.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency: Option<IdempotencyKey>,
    },
    /// Make sure a stream exists (so a position can be given before the first publication).
    EnsureStream {
        /// Channel.
        channel: String,
        /// History settings of the channel.
        history: HistoryPolicy,
        /// Epoch used if this creates the stream.
        new_epoch: String,
    },
    /// A client subscribed: add it to presence and/or announce it.
    Join {
        /// Channel.
        channel: String,
        /// Who joined.
        info: ClientInfo,
        /// Node that holds the connection.
        node: u64,
        /// That node's incarnation.
        incarnation: u64,
        /// Record presence.
        presence: bool,
        /// Emit a join push.
        join_leave: bool,
    },
    /// A client unsubscribed or disconnected.
    Leave {
        /// Channel.
        channel: String,
        /// Who left.
        info: ClientInfo,
        /// Remove from presence.
        presence: bool,
        /// Emit a leave push.
        join_leave: bool,
    },
    /// A node (re)started with this incarnation: presence its earlier incarnations left is
    /// cleared (with leave pushes where the channel announces them).
    NodeUp {
        /// Node id.
        node: u64,
        /// New incarnation (the process start time, so it only grows).
        incarnation: u64,
    },
    /// The leader lost contact with a node for longer than the presence lease: its presence
    /// is cleared. A node that is alive re-announces its clients when it sees this.
    NodeDown {
        /// Node id.
        node: u64,
    },
    /// An action on a user's connections wherever they are (server API subscribe,
    /// unsubscribe, disconnect). Changes no state; every node acts on its own connections.
    User(UserAction),
    /// Drop a channel's publications; its epoch and top offset stay, so clients that try to
    /// recover across the removal are told they cannot, rather than silently reset.
    HistoryRemove {
        /// Channel.
        channel: String,
    },
}

/// An action on the connections of a user (optionally one client of the user).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum UserAction {
    /// Subscribe the user's connections to a channel.
    Subscribe {
        /// User.
        user: String,
        /// Only this client, when set.
        client: Option<String>,
        /// Channel.
        channel: String,
    },
    /// Unsubscribe the user's connections from a channel.
    Unsubscribe {
        /// User.
        user: String,
        /// Only this client, when set.
        client: Option<String>,
        /// Channel.
        channel: String,
    },
    /// Close the user's connections with a code.
    Disconnect {
        /// User.
        user: String,
        /// Only this client, when set.
        client: Option<String>,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Refresh the user's connections: close them as expired, or set a new expiry.
    Refresh {
        /// User.
        user: String,
        /// Only this client, when set.
        client: Option<String>,
        /// Close them now with "connection expired".
        expired: bool,
        /// New expiry (unix seconds), when set.
        expire_at: Option<u64>,
    },
}

/// What applying one operation produced, returned to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The stream position after the operation (offset 0 and empty epoch without history).
    Position {
        /// Top offset.
        offset: u64,
        /// Epoch.
        epoch: String,
    },
    /// Done; nothing to report.
    Done,
}

/// Something local subscribers must be told, produced by apply in log order.
#[derive(Debug, Clone)]
pub enum Event {
    /// A publication.
    Publication {
        /// Channel.
        channel: String,
        /// The publication (shared with history).
        publication: Arc<Publication>,
    },
    /// A join.
    Join {
        /// Channel.
        channel: String,
        /// Who joined.
        info: ClientInfo,
    },
    /// A leave.
    Leave {
        /// Channel.
        channel: String,
        /// Who left.
        info: ClientInfo,
    },
    /// A node was declared down (its presence cleared).
    NodeDown {
        /// Node id.
        node: u64,
    },
    /// An action on a user's local connections, with the log time it was committed at.
    User {
        /// The action.
        action: UserAction,
        /// Log time (ms) of the entry.
        time_ms: u64,
    },
}

/// The state: streams and presence per channel. Serialisable whole: that is its snapshot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateMachine {
    /// Channel → stream.
    streams: HashMap<String, Stream>,
    /// Channel → client id → presence.
    presence: HashMap<String, HashMap<String, PresenceEntry>>,
    /// Index of the last applied entry.
    last_applied: u64,
    /// Time of the last applied entry.
    last_time_ms: u64,
    /// Idempotency keys of recent publications (absent from snapshots written before them).
    #[serde(default)]
    idempotency: idempotency::Keys,
}

impl StateMachine {
    /// Index of the last applied entry.
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// Time of the last applied entry, in log milliseconds.
    pub fn last_time_ms(&self) -> u64 {
        self.last_time_ms
    }

    /// Applies one entry; returns one result per op and the events for local subscribers.
    pub fn apply(&mut self, entry: &Entry) -> (Vec<OpResult>, Vec<Event>) {
        let now = entry.time_ms.max(self.last_time_ms);
        self.idempotency.expire(now);
        let mut results = Vec::with_capacity(entry.ops.len());
        let mut events = Vec::new();
        for op in entry.ops.iter() {
            results.push(self.apply_op(op, now, &mut events));
        }
        self.last_applied = entry.index;
        self.last_time_ms = now;
        (results, events)
    }

    /// Applies one operation at log time `now`, adding what local subscribers must be told to
    /// `events`. Each kind of op is handled by its own method (in `stream` or `presence`).
    fn apply_op(&mut self, op: &Op, now: u64, events: &mut Vec<Event>) -> OpResult {
        match op {
            Op::Publish {
                channel,
                data,
                binary,
                info,
                tags,
                history,
                new_epoch,
                idempotency,
            } => {
                let publication = Publication {
                    offset: 0,
                    data: data.clone(),
                    binary: *binary,
                    info: info.clone(),
                    tags: tags.clone(),
                };
                let key = idempotency.as_ref();
                self.apply_keyed_publish(
                    channel,
                    publication,
                    *history,
                    new_epoch,
                    key,
                    now,
                    events,
                )
            }
            Op::EnsureStream {
                channel,
                history,
                new_epoch,
            } => self.apply_ensure_stream(channel, *history, new_epoch),
            Op::Join {
                channel,
                info,
                node,
                incarnation,
                presence,
                join_leave,
            } => {
                events.extend(self.apply_join(
                    channel,
                    info,
                    *node,
                    *incarnation,
                    *presence,
                    *join_leave,
                ));
                OpResult::Done
            }
            Op::Leave {
                channel,
                info,
                presence,
                join_leave,
            } => {
                events.extend(self.apply_leave(channel, info, *presence, *join_leave));
                OpResult::Done
            }
            Op::NodeUp { node, incarnation } => self.apply_node_up(*node, *incarnation, events),
            Op::NodeDown { node } => self.apply_node_down(*node, events),
            Op::User(action) => Self::apply_user(action, now, events),
            Op::HistoryRemove { channel } => self.apply_history_remove(channel),
        }
    }

    /// `Op::User`: changes no state; every node acts on its own connections of the user.
    fn apply_user(action: &UserAction, now: u64, events: &mut Vec<Event>) -> OpResult {
        events.push(Event::User {
            action: action.clone(),
            time_ms: now,
        });
        OpResult::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PresenceStatsResult;

    fn raw(s: &str) -> Raw {
        serde_json::value::RawValue::from_string(s.to_string()).unwrap()
    }

    const POLICY: HistoryPolicy = HistoryPolicy {
        size: 3,
        ttl_ms: 10_000,
    };

    fn publish(ch: &str, data: &str, policy: HistoryPolicy, epoch: &str) -> Op {
        Op::Publish {
            channel: ch.into(),
            data: raw(data),
            binary: false,
            info: None,
            tags: None,
            history: policy,
            new_epoch: epoch.into(),
            idempotency: None,
        }
    }

    fn entry(index: u64, time_ms: u64, ops: Vec<Op>) -> Entry {
        Entry {
            index,
            time_ms,
            ops: ops.into(),
        }
    }

    fn info(client: &str, user: &str) -> ClientInfo {
        ClientInfo {
            user: user.into(),
            client: client.into(),
            conn_info: None,
            chan_info: None,
        }
    }

    #[test]
    fn offsets_are_contiguous_and_epoch_is_fixed_at_creation() {
        let mut sm = StateMachine::default();
        let (r, ev) = sm.apply(&entry(
            1,
            1000,
            vec![
                publish("a", "1", POLICY, "E1"),
                publish("a", "2", POLICY, "E2"),
            ],
        ));
        assert_eq!(
            r,
            vec![
                OpResult::Position {
                    offset: 1,
                    epoch: "E1".into()
                },
                OpResult::Position {
                    offset: 2,
                    epoch: "E1".into()
                }
            ]
        );
        assert_eq!(ev.len(), 2);
        assert_eq!(sm.position("a"), Some((2, "E1".into())));
        assert_eq!(sm.last_applied(), 1);
    }

    #[test]
    fn same_log_same_state() {
        let log = vec![
            entry(1, 10, vec![publish("a", "1", POLICY, "X")]),
            entry(
                2,
                20,
                vec![
                    publish("a", "2", POLICY, "Y"),
                    publish("b", "3", POLICY, "Z"),
                ],
            ),
            entry(
                3,
                30,
                vec![Op::HistoryRemove {
                    channel: "b".into(),
                }],
            ),
        ];
        let mut one = StateMachine::default();
        let mut two = StateMachine::default();
        for e in &log {
            one.apply(e);
            two.apply(e);
        }
        for ch in ["a", "b"] {
            assert_eq!(one.position(ch), two.position(ch));
            let h1: Vec<_> = one
                .history(ch, None, 10, false, 30)
                .iter()
                .map(|p| p.offset)
                .collect();
            let h2: Vec<_> = two
                .history(ch, None, 10, false, 30)
                .iter()
                .map(|p| p.offset)
                .collect();
            assert_eq!(h1, h2);
        }
        assert!(one.history("b", None, 10, false, 30).is_empty());
        assert_eq!(
            one.position("b"),
            Some((1, "Z".into())),
            "position survives history_remove"
        );
    }

    /// A binary publication keeps its mark through the log (the op's serde form), apply,
    /// history and a snapshot (the state's serde form), and gives back its bytes; ops and
    /// states written before binary payloads read as JSON.
    #[test]
    fn binary_publications_survive_the_log_history_and_snapshots() {
        let (data, binary) = crate::protocol::Payload::Binary(vec![0, 255]).into_stored();
        let op = Op::Publish {
            channel: "b".into(),
            data,
            binary,
            info: None,
            tags: None,
            history: POLICY,
            new_epoch: "E".into(),
            idempotency: None,
        };
        let logged: Op = serde_json::from_slice(&serde_json::to_vec(&op).unwrap()).unwrap();
        let mut sm = StateMachine::default();
        sm.apply(&entry(
            1,
            1000,
            vec![logged, publish("b", "7", POLICY, "E")],
        ));
        let snap: StateMachine = serde_json::from_slice(&serde_json::to_vec(&sm).unwrap()).unwrap();
        let h = snap.history("b", None, 10, false, 1000);
        assert_eq!((h[0].binary, h[0].payload_bytes()), (true, vec![0, 255]));
        assert_eq!((h[1].binary, h[1].payload_bytes()), (false, b"7".to_vec()));
        let old = serde_json::to_string(&publish("b", "1", POLICY, "E")).unwrap();
        assert!(
            !old.contains("binary"),
            "the mark is absent when false: {old}"
        );
    }

    #[test]
    fn history_is_bounded_by_size_and_ttl() {
        let mut sm = StateMachine::default();
        for i in 1..=5 {
            sm.apply(&entry(i, i * 1000, vec![publish("a", "1", POLICY, "E")]));
        }
        let offs: Vec<_> = sm
            .history("a", None, 100, false, 5000)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(offs, vec![3, 4, 5]);
        let rev: Vec<_> = sm
            .history("a", None, 2, true, 5000)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(rev, vec![5, 4]);
        let since: Vec<_> = sm
            .history("a", Some(3), 100, false, 5000)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(since, vec![4, 5]);
        let before: Vec<_> = sm
            .history("a", Some(5), 100, true, 5000)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(before, vec![4, 3]);
        // 13.5 s: publications from t=3 s are older than the 10 s TTL.
        let offs: Vec<_> = sm
            .history("a", None, 100, false, 13_500)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(offs, vec![4, 5]);
    }

    #[test]
    fn recovery_is_all_or_nothing() {
        let mut sm = StateMachine::default();
        for i in 1..=5 {
            sm.apply(&entry(i, 1000, vec![publish("a", "1", POLICY, "E")]));
        }
        // history holds 3, 4, 5
        match sm.recover("a", 2, "E", 100, 1000) {
            Recovery::Recovered(p) => assert_eq!(
                p.iter().map(|p| p.offset).collect::<Vec<_>>(),
                vec![3, 4, 5]
            ),
            Recovery::Failed => panic!("offset 2 is recoverable"),
        }
        assert!(
            matches!(sm.recover("a", 5, "E", 100, 1000), Recovery::Recovered(p) if p.is_empty())
        );
        assert!(
            matches!(sm.recover("a", 1, "E", 100, 1000), Recovery::Failed),
            "gap"
        );
        assert!(
            matches!(sm.recover("a", 2, "OTHER", 100, 1000), Recovery::Failed),
            "epoch"
        );
        assert!(
            matches!(sm.recover("a", 2, "E", 2, 1000), Recovery::Failed),
            "over the cap"
        );
        assert!(
            matches!(sm.recover("a", 9, "E", 100, 1000), Recovery::Failed),
            "future offset"
        );
    }

    #[test]
    fn no_history_means_no_offsets() {
        let mut sm = StateMachine::default();
        let (r, ev) = sm.apply(&entry(
            1,
            1,
            vec![publish("a", "1", HistoryPolicy::NONE, "E")],
        ));
        assert_eq!(
            r[0],
            OpResult::Position {
                offset: 0,
                epoch: String::new()
            }
        );
        assert!(
            matches!(&ev[0], Event::Publication { publication, .. } if publication.offset == 0)
        );
        assert_eq!(sm.position("a"), None);
    }

    #[test]
    fn node_up_clears_older_incarnations_and_node_down_clears_all() {
        let mut sm = StateMachine::default();
        let join = |c: &str, node: u64, incarnation: u64, join_leave: bool| Op::Join {
            channel: "p".into(),
            info: info(c, c),
            node,
            incarnation,
            presence: true,
            join_leave,
        };
        sm.apply(&entry(
            1,
            1,
            vec![
                join("old", 2, 10, true),
                join("new", 2, 20, false),
                join("other", 3, 5, true),
            ],
        ));
        let (_, ev) = sm.apply(&entry(
            2,
            2,
            vec![Op::NodeUp {
                node: 2,
                incarnation: 20,
            }],
        ));
        assert_eq!(
            sm.presence("p").keys().cloned().collect::<Vec<_>>(),
            vec!["new", "other"]
        );
        assert!(matches!(&ev[..], [Event::Leave { info, .. }] if info.client == "old"));
        let (_, ev) = sm.apply(&entry(3, 3, vec![Op::NodeDown { node: 2 }]));
        assert_eq!(
            sm.presence("p").keys().cloned().collect::<Vec<_>>(),
            vec!["other"]
        );
        // "new" did not announce leaves, so only the NodeDown event itself.
        assert!(matches!(&ev[..], [Event::NodeDown { node: 2 }]));
    }

    #[test]
    fn presence_join_leave() {
        let mut sm = StateMachine::default();
        let join = |c: &str, u: &str| Op::Join {
            channel: "p".into(),
            info: info(c, u),
            node: 1,
            incarnation: 1,
            presence: true,
            join_leave: true,
        };
        let (_, ev) = sm.apply(&entry(
            1,
            1,
            vec![join("c1", "u1"), join("c2", "u1"), join("c3", "u2")],
        ));
        assert_eq!(ev.len(), 3);
        assert_eq!(
            sm.presence_stats("p"),
            PresenceStatsResult {
                num_clients: 3,
                num_users: 2
            }
        );
        sm.apply(&entry(
            2,
            2,
            vec![Op::Leave {
                channel: "p".into(),
                info: info("c1", "u1"),
                presence: true,
                join_leave: false,
            }],
        ));
        assert_eq!(
            sm.presence("p").keys().cloned().collect::<Vec<_>>(),
            vec!["c2", "c3"]
        );
    }
}
