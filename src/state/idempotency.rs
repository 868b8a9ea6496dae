//! Idempotent publishing: a publication may carry a key; a later publication with the same key
//! to the same channel, within the window, publishes nothing and is given the first one's
//! position. Keys are scoped per channel (a broadcast's key applies to each of its channels).
//!
//! The window and the cap on remembered keys are resolved by the proposer and carried in the
//! op (`IdempotencyKey`); expiry is judged with the entry's log time. So every node remembers
//! and forgets the same keys at the same log position.
//!
//! Memory is bounded: at most the op's `max_keys` keys are kept (all channels together). Keys
//! are ordered by when they expire, then by when they were remembered; the first in that order
//! goes first — expired ones at every entry, the oldest when the cap is reached. The keys are
//! part of the state, so of its snapshots (as a list in that order).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize, Serializer};

use super::{Event, HistoryPolicy, OpResult, StateMachine};
use crate::protocol::Publication;

/// A publication's idempotency key, with the window and cap the proposer resolved from its
/// config (`api.idempotency_window`, `api.idempotency_max_keys`), so that apply does not depend
/// on each node's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The key (non-empty; its length is checked by the proposer).
    pub key: String,
    /// Milliseconds of log time the key is remembered after its first publication.
    pub window_ms: u64,
    /// Most keys remembered, all channels together, once this one is added.
    pub max_keys: usize,
}

/// A key and what its first publication was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    channel: String,
    key: String,
    /// Log time from which the key is forgotten.
    expires_ms: u64,
    /// Order of remembering (ties of `expires_ms`).
    seq: u64,
    offset: u64,
    epoch: String,
}

/// The remembered keys: an index by channel and key, and the eviction order.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "StoredKeys")]
pub(super) struct Keys {
    /// Channel → key → position in `order`.
    index: HashMap<String, HashMap<String, (u64, u64)>>,
    /// `(expires_ms, seq)` → the key; the first entry is the next to go.
    order: BTreeMap<(u64, u64), Remembered>,
    /// `seq` of the next key remembered.
    next_seq: u64,
}

/// How `Keys` is kept in a snapshot: the keys in eviction order (the index is rebuilt).
#[derive(Deserialize)]
struct StoredKeys {
    next_seq: u64,
    keys: Vec<Remembered>,
}

impl Serialize for Keys {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            next_seq: u64,
            keys: Vec<&'a Remembered>,
        }
        Out {
            next_seq: self.next_seq,
            keys: self.order.values().collect(),
        }
        .serialize(s)
    }
}

impl From<StoredKeys> for Keys {
    fn from(stored: StoredKeys) -> Keys {
        let mut keys = Keys {
            next_seq: stored.next_seq,
            ..Keys::default()
        };
        for r in stored.keys {
            keys.insert(r);
        }
        keys
    }
}

impl Keys {
    /// Number of keys remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }

    fn insert(&mut self, r: Remembered) {
        let at = (r.expires_ms, r.seq);
        self.index
            .entry(r.channel.clone())
            .or_default()
            .insert(r.key.clone(), at);
        self.order.insert(at, r);
    }

    fn remove(&mut self, at: (u64, u64)) {
        let Some(r) = self.order.remove(&at) else {
            return;
        };
        if let Some(keys) = self.index.get_mut(&r.channel) {
            keys.remove(&r.key);
            if keys.is_empty() {
                self.index.remove(&r.channel);
            }
        }
    }

    /// Forgets every key whose window has passed at log time `now`.
    pub(super) fn expire(&mut self, now: u64) {
        while let Some((&at, _)) = self.order.first_key_value() {
            if at.0 > now {
                break;
            }
            self.remove(at);
        }
    }

    /// What the first publication with `key` to `channel` was given, if still remembered.
    fn get(&self, channel: &str, key: &str, now: u64) -> Option<(u64, String)> {
        let at = self.index.get(channel)?.get(key)?;
        let r = self.order.get(at)?;
        (r.expires_ms > now).then(|| (r.offset, r.epoch.clone()))
    }

    /// Remembers `key` for `channel` with the position its publication was given, then
    /// forgets the first keys in order while more than `k.max_keys` are kept.
    fn remember(&mut self, channel: &str, k: &IdempotencyKey, now: u64, offset: u64, epoch: &str) {
        if k.window_ms == 0 || k.max_keys == 0 {
            return;
        }
        if let Some(&at) = self.index.get(channel).and_then(|m| m.get(&k.key)) {
            self.remove(at);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(Remembered {
            channel: channel.to_string(),
            key: k.key.clone(),
            expires_ms: now.saturating_add(k.window_ms),
            seq,
            offset,
            epoch: epoch.to_string(),
        });
        while self.order.len() > k.max_keys {
            let (&at, _) = self.order.first_key_value().expect("not empty");
            self.remove(at);
        }
    }
}

impl StateMachine {
    /// `Op::Publish`, with or without a key. With a key remembered for the channel, nothing is
    /// published and the first publication's position is returned; otherwise it publishes and,
    /// with a key, remembers the position it was given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_keyed_publish(
        &mut self,
        channel: &str,
        publication: Publication,
        history: HistoryPolicy,
        new_epoch: &str,
        key: Option<&IdempotencyKey>,
        now: u64,
        events: &mut Vec<Event>,
    ) -> OpResult {
        if let Some(k) = key
            && let Some((offset, epoch)) = self.idempotency.get(channel, &k.key, now)
        {
            return OpResult::Position { offset, epoch };
        }
        let r = self.apply_publish(channel, publication, history, new_epoch, now, events);
        if let (Some(k), OpResult::Position { offset, epoch }) = (key, &r) {
            self.idempotency.remember(channel, k, now, *offset, epoch);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Entry, Op};
    use super::*;
    use crate::protocol::Raw;

    const POLICY: HistoryPolicy = HistoryPolicy {
        size: 100,
        ttl_ms: 3_600_000,
    };
    const WINDOW: u64 = 300_000;

    fn raw(s: &str) -> Raw {
        serde_json::value::RawValue::from_string(s.to_string()).unwrap()
    }

    fn keyed(ch: &str, data: &str, key: Option<&str>, max_keys: usize) -> Op {
        Op::Publish {
            channel: ch.into(),
            data: raw(&serde_json::to_string(data).unwrap()),
            binary: false,
            info: None,
            tags: None,
            history: POLICY,
            new_epoch: format!("E-{ch}"),
            idempotency: key.map(|k| IdempotencyKey {
                key: k.into(),
                window_ms: WINDOW,
                max_keys,
            }),
        }
    }

    fn entry(index: u64, time_ms: u64, ops: Vec<Op>) -> Entry {
        Entry {
            index,
            time_ms,
            ops: ops.into(),
        }
    }

    fn pos(offset: u64, epoch: &str) -> OpResult {
        OpResult::Position {
            offset,
            epoch: epoch.into(),
        }
    }

    fn offsets(sm: &StateMachine, ch: &str) -> Vec<u64> {
        sm.history(ch, None, 100, false, 1)
            .iter()
            .map(|p| p.offset)
            .collect()
    }

    #[test]
    fn a_repeated_key_within_the_window_returns_the_first_position_and_publishes_nothing() {
        let mut sm = StateMachine::default();
        let (r, ev) = sm.apply(&entry(1, 1000, vec![keyed("a", "1", Some("k"), 10)]));
        assert_eq!(r, vec![pos(1, "E-a")]);
        assert_eq!(ev.len(), 1);
        // A retry in a later entry, another in the same entry as a fresh publication.
        let (r, ev) = sm.apply(&entry(2, 2000, vec![keyed("a", "retry", Some("k"), 10)]));
        assert_eq!(r, vec![pos(1, "E-a")]);
        assert!(ev.is_empty(), "no event for a duplicate: {ev:?}");
        let (r, ev) = sm.apply(&entry(
            3,
            1000 + WINDOW - 1,
            vec![
                keyed("a", "2", Some("k2"), 10),
                keyed("a", "again", Some("k2"), 10),
                keyed("a", "again", Some("k"), 10),
            ],
        ));
        assert_eq!(r, vec![pos(2, "E-a"), pos(2, "E-a"), pos(1, "E-a")]);
        assert_eq!(ev.len(), 1);
        assert_eq!(offsets(&sm, "a"), vec![1, 2]);
        // The key is per channel; without a key nothing is de-duplicated.
        let (r, _) = sm.apply(&entry(4, 3000, vec![keyed("b", "1", Some("k"), 10)]));
        assert_eq!(r, vec![pos(1, "E-b")]);
        let (r, _) = sm.apply(&entry(
            5,
            3000,
            vec![keyed("c", "1", None, 10), keyed("c", "1", None, 10)],
        ));
        assert_eq!(r, vec![pos(1, "E-c"), pos(2, "E-c")]);
    }

    #[test]
    fn after_the_window_the_key_publishes_again() {
        let mut sm = StateMachine::default();
        sm.apply(&entry(1, 1000, vec![keyed("a", "1", Some("k"), 10)]));
        // The window is judged with the entry's time: at first + window the key is gone.
        let (r, ev) = sm.apply(&entry(
            2,
            1000 + WINDOW,
            vec![keyed("a", "2", Some("k"), 10)],
        ));
        assert_eq!(r, vec![pos(2, "E-a")]);
        assert_eq!(ev.len(), 1);
        // And it is remembered afresh, with its new position.
        let (r, ev) = sm.apply(&entry(
            3,
            1001 + WINDOW,
            vec![keyed("a", "3", Some("k"), 10)],
        ));
        assert_eq!(r, vec![pos(2, "E-a")]);
        assert!(ev.is_empty());
        // Any entry forgets expired keys, keyed or not.
        assert_eq!(sm.idempotency.len(), 1);
        sm.apply(&entry(
            4,
            1000 + 3 * WINDOW,
            vec![keyed("x", "1", None, 10)],
        ));
        assert_eq!(sm.idempotency.len(), 0);
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut sm = StateMachine::default();
        let mut op = keyed("a", "1", Some("k"), 10);
        if let Op::Publish { idempotency, .. } = &mut op {
            idempotency.as_mut().unwrap().window_ms = 0;
        }
        sm.apply(&entry(1, 1000, vec![op.clone(), op]));
        assert_eq!(offsets(&sm, "a"), vec![1, 2]);
        assert_eq!(sm.idempotency.len(), 0);
    }

    #[test]
    fn snapshots_keep_the_keys_and_older_snapshots_load() {
        let mut sm = StateMachine::default();
        sm.apply(&entry(
            1,
            1000,
            vec![
                keyed("a", "1", Some("k1"), 10),
                keyed("b", "1", Some("k1"), 10),
            ],
        ));
        let snap = serde_json::to_vec(&sm).unwrap();
        let mut restored: StateMachine = serde_json::from_slice(&snap).unwrap();
        // (Streams are a HashMap, so compare the keys, in their order, not the whole bytes.)
        assert_eq!(
            serde_json::to_value(&restored.idempotency).unwrap(),
            serde_json::to_value(&sm.idempotency).unwrap(),
            "the same keys in the same order"
        );
        assert_eq!(restored.idempotency.len(), 2);
        let retry = entry(2, 2000, vec![keyed("b", "2", Some("k1"), 10)]);
        let (r, ev) = restored.apply(&retry);
        assert_eq!(r, vec![pos(1, "E-b")]);
        assert!(ev.is_empty());
        // A snapshot written before idempotency keys existed has no such field.
        let mut old: serde_json::Value = serde_json::from_slice(&snap).unwrap();
        old.as_object_mut().unwrap().remove("idempotency").unwrap();
        let mut old: StateMachine = serde_json::from_value(old).unwrap();
        assert_eq!(old.idempotency.len(), 0);
        assert_eq!(old.apply(&retry).0, vec![pos(2, "E-b")]);
    }

    #[test]
    fn the_cap_evicts_the_oldest_first_and_every_node_the_same() {
        let log: Vec<Entry> = (1..=5)
            .map(|i| {
                entry(
                    i,
                    1000 * i,
                    vec![keyed("a", "x", Some(&format!("k{i}")), 3)],
                )
            })
            .collect();
        let (mut one, mut two) = (StateMachine::default(), StateMachine::default());
        for e in &log {
            one.apply(e);
            two.apply(e);
        }
        assert_eq!(one.idempotency.len(), 3);
        assert_eq!(
            serde_json::to_value(&one.idempotency).unwrap(),
            serde_json::to_value(&two.idempotency).unwrap()
        );
        // k3..k5 are remembered; k1 and k2 were evicted, so they publish again.
        for (i, k) in ["k5", "k4", "k3"].iter().enumerate() {
            let (r, _) = one.apply(&entry(
                6 + i as u64,
                9000,
                vec![keyed("a", "y", Some(k), 3)],
            ));
            assert_eq!(r, vec![pos(5 - i as u64, "E-a")], "{k}");
        }
        let (r, _) = one.apply(&entry(9, 9000, vec![keyed("a", "y", Some("k1"), 3)]));
        assert_eq!(r, vec![pos(6, "E-a")]);
        // Remembering k1 evicted the oldest left, k3.
        let (r, _) = one.apply(&entry(10, 9000, vec![keyed("a", "y", Some("k3"), 3)]));
        assert_eq!(r, vec![pos(7, "E-a")]);
        let (r, _) = one.apply(&entry(11, 9000, vec![keyed("a", "y", Some("k5"), 3)]));
        assert_eq!(r, vec![pos(5, "E-a")], "k5 is still remembered");
    }
}
