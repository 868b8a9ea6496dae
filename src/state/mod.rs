//! The replicated state machine: channel streams (epoch, offsets, bounded history) and presence.
//!
//! It is fed entries of an ordered log. `apply` is deterministic: it depends only on the state
//! and the entry (whose time the log stamped), never on the local clock or randomness, so every
//! node that applies the same log holds the same state. Reads take a `now` for TTL filtering.
//! Pure data structure: no I/O, no locks, no async.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::protocol::{ClientInfo, PresenceStatsResult, Publication, Raw};

/// One log entry: a batch of operations stamped by the log with an index and a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log (1, 2, …).
    pub index: u64,
    /// Wall-clock milliseconds assigned by the log (leader) when the entry was created.
    pub time_ms: u64,
    /// The operations, applied in order.
    pub ops: Vec<Op>,
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
        /// Payload (raw JSON).
        data: Raw,
        /// Publisher, for client publications.
        info: Option<ClientInfo>,
        /// API tags.
        tags: Option<BTreeMap<String, String>>,
        /// History settings of the channel.
        history: HistoryPolicy,
        /// Epoch used if this creates the stream (chosen by the proposer, so replicated).
        new_epoch: String,
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

/// A stored publication with the log time it was published at.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    time_ms: u64,
    publication: Arc<Publication>,
}

/// A channel stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stream {
    epoch: String,
    top: u64,
    policy: HistoryPolicy,
    history: VecDeque<Stored>,
}

impl Stream {
    fn trim(&mut self, now_ms: u64) {
        while self.history.len() > self.policy.size {
            self.history.pop_front();
        }
        let cutoff = now_ms.saturating_sub(self.policy.ttl_ms);
        while self.history.front().is_some_and(|s| s.time_ms < cutoff) {
            self.history.pop_front();
        }
    }

    /// Publications with offset > `after` that are still alive at `now_ms`.
    fn alive_after(&self, after: u64, now_ms: u64) -> impl DoubleEndedIterator<Item = &Stored> {
        let cutoff = now_ms.saturating_sub(self.policy.ttl_ms);
        self.history
            .iter()
            .filter(move |s| s.publication.offset > after && s.time_ms >= cutoff)
    }
}

/// A presence record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// Who.
    pub info: ClientInfo,
    /// Node holding the connection.
    pub node: u64,
    /// That node's incarnation (process start) when the client joined.
    pub incarnation: u64,
    /// The channel announces leaves.
    pub join_leave: bool,
}

/// Outcome of a recovery attempt.
#[derive(Debug)]
pub enum Recovery {
    /// Every missed publication, in order (possibly none).
    Recovered(Vec<Arc<Publication>>),
    /// The epoch changed, the gap is too large, or history no longer covers it.
    Failed,
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
        let mut results = Vec::with_capacity(entry.ops.len());
        let mut events = Vec::new();
        for op in &entry.ops {
            results.push(self.apply_op(op, now, &mut events));
        }
        self.last_applied = entry.index;
        self.last_time_ms = now;
        (results, events)
    }

    fn stream_mut(&mut self, channel: &str, policy: HistoryPolicy, new_epoch: &str) -> &mut Stream {
        let s = self
            .streams
            .entry(channel.to_string())
            .or_insert_with(|| Stream {
                epoch: new_epoch.to_string(),
                top: 0,
                policy,
                history: VecDeque::new(),
            });
        s.policy = policy;
        s
    }

    fn apply_op(&mut self, op: &Op, now: u64, events: &mut Vec<Event>) -> OpResult {
        match op {
            Op::Publish {
                channel,
                data,
                info,
                tags,
                history,
                new_epoch,
            } => {
                let mut publication = Publication {
                    offset: 0,
                    data: data.clone(),
                    info: info.clone(),
                    tags: tags.clone(),
                };
                if history.enabled() {
                    let s = self.stream_mut(channel, *history, new_epoch);
                    s.top += 1;
                    publication.offset = s.top;
                    let publication = Arc::new(publication);
                    s.history.push_back(Stored {
                        time_ms: now,
                        publication: publication.clone(),
                    });
                    s.trim(now);
                    let r = OpResult::Position {
                        offset: s.top,
                        epoch: s.epoch.clone(),
                    };
                    events.push(Event::Publication {
                        channel: channel.clone(),
                        publication,
                    });
                    r
                } else {
                    events.push(Event::Publication {
                        channel: channel.clone(),
                        publication: Arc::new(publication),
                    });
                    OpResult::Position {
                        offset: 0,
                        epoch: String::new(),
                    }
                }
            }
            Op::EnsureStream {
                channel,
                history,
                new_epoch,
            } => {
                if !history.enabled() {
                    return OpResult::Done;
                }
                let s = self.stream_mut(channel, *history, new_epoch);
                OpResult::Position {
                    offset: s.top,
                    epoch: s.epoch.clone(),
                }
            }
            Op::Join {
                channel,
                info,
                node,
                incarnation,
                presence,
                join_leave,
            } => {
                if *presence {
                    self.presence.entry(channel.clone()).or_default().insert(
                        info.client.clone(),
                        PresenceEntry {
                            info: info.clone(),
                            node: *node,
                            incarnation: *incarnation,
                            join_leave: *join_leave,
                        },
                    );
                }
                if *join_leave {
                    events.push(Event::Join {
                        channel: channel.clone(),
                        info: info.clone(),
                    });
                }
                OpResult::Done
            }
            Op::Leave {
                channel,
                info,
                presence,
                join_leave,
            } => {
                if *presence && let Some(m) = self.presence.get_mut(channel) {
                    m.remove(&info.client);
                    if m.is_empty() {
                        self.presence.remove(channel);
                    }
                }
                if *join_leave {
                    events.push(Event::Leave {
                        channel: channel.clone(),
                        info: info.clone(),
                    });
                }
                OpResult::Done
            }
            Op::NodeUp { node, incarnation } => {
                self.clear_presence(|e| e.node == *node && e.incarnation < *incarnation, events);
                OpResult::Done
            }
            Op::NodeDown { node } => {
                self.clear_presence(|e| e.node == *node, events);
                events.push(Event::NodeDown { node: *node });
                OpResult::Done
            }
            Op::User(action) => {
                events.push(Event::User {
                    action: action.clone(),
                    time_ms: now,
                });
                OpResult::Done
            }
            Op::HistoryRemove { channel } => {
                if let Some(s) = self.streams.get_mut(channel) {
                    s.history.clear();
                }
                OpResult::Done
            }
        }
    }

    /// Removes the presence entries matching `gone`, emitting leaves where announced. Channels
    /// are visited in name order so events come out in the same order on every node.
    fn clear_presence(&mut self, gone: impl Fn(&PresenceEntry) -> bool, events: &mut Vec<Event>) {
        let mut channels: Vec<String> = self.presence.keys().cloned().collect();
        channels.sort();
        for ch in channels {
            let m = self.presence.get_mut(&ch).expect("listed");
            let mut clients: Vec<String> = m
                .iter()
                .filter(|(_, e)| gone(e))
                .map(|(c, _)| c.clone())
                .collect();
            clients.sort();
            for c in clients {
                if let Some(e) = m.remove(&c)
                    && e.join_leave
                {
                    events.push(Event::Leave {
                        channel: ch.clone(),
                        info: e.info,
                    });
                }
            }
            if m.is_empty() {
                self.presence.remove(&ch);
            }
        }
    }

    /// The stream's `(top offset, epoch)`, if the stream exists.
    pub fn position(&self, channel: &str) -> Option<(u64, String)> {
        self.streams.get(channel).map(|s| (s.top, s.epoch.clone()))
    }

    /// History of a channel, at most `limit` publications. Forward: oldest first, after
    /// `since` when given. Reverse: newest first, before `since` when given.
    pub fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        reverse: bool,
        now_ms: u64,
    ) -> Vec<Arc<Publication>> {
        let Some(s) = self.streams.get(channel) else {
            return Vec::new();
        };
        if reverse {
            let before = since.unwrap_or(u64::MAX);
            s.alive_after(0, now_ms)
                .rev()
                .filter(|p| p.publication.offset < before)
                .take(limit)
                .map(|p| p.publication.clone())
                .collect()
        } else {
            s.alive_after(since.unwrap_or(0), now_ms)
                .take(limit)
                .map(|p| p.publication.clone())
                .collect()
        }
    }

    /// Every publication after `offset` in stream `epoch`, or `Failed` when that cannot be
    /// given whole (epoch differs, more than `max` missed, or history no longer reaches back).
    pub fn recover(
        &self,
        channel: &str,
        offset: u64,
        epoch: &str,
        max: usize,
        now_ms: u64,
    ) -> Recovery {
        let Some(s) = self.streams.get(channel) else {
            return Recovery::Failed;
        };
        if s.epoch != epoch || offset > s.top {
            return Recovery::Failed;
        }
        let missed = s.top - offset;
        if missed == 0 {
            return Recovery::Recovered(Vec::new());
        }
        if missed > max as u64 {
            return Recovery::Failed;
        }
        let pubs: Vec<_> = s
            .alive_after(offset, now_ms)
            .map(|p| p.publication.clone())
            .collect();
        // Offsets are contiguous in the stream, so a complete answer has exactly `missed`.
        if pubs.len() as u64 != missed || pubs.first().map(|p| p.offset) != Some(offset + 1) {
            return Recovery::Failed;
        }
        Recovery::Recovered(pubs)
    }

    /// Presence of a channel: client id → info.
    pub fn presence(&self, channel: &str) -> BTreeMap<String, ClientInfo> {
        self.presence
            .get(channel)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.info.clone())).collect())
            .unwrap_or_default()
    }

    /// Presence counts of a channel.
    pub fn presence_stats(&self, channel: &str) -> PresenceStatsResult {
        let Some(m) = self.presence.get(channel) else {
            return PresenceStatsResult::default();
        };
        let users: std::collections::HashSet<&str> =
            m.values().map(|e| e.info.user.as_str()).collect();
        PresenceStatsResult {
            num_clients: m.len() as u32,
            num_users: users.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            info: None,
            tags: None,
            history: policy,
            new_epoch: epoch.into(),
        }
    }

    fn entry(index: u64, time_ms: u64, ops: Vec<Op>) -> Entry {
        Entry {
            index,
            time_ms,
            ops,
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
