//! The log's newest entries, kept in memory as they were appended.
//!
//! Right after an entry is appended, openraft reads it back twice or more: the replication
//! of each follower (to send it) and the state machine worker (to apply it, on every node).
//! From sled each read is a copy and a JSON parse of the whole entry; profiled under a full
//! write load (`publish` at 100,000/s offered) those reads were about 9 % of all CPU. Served
//! from here they are a clone of the entry (its operations are shared, `Arc<[Op]>`).
//!
//! The entries held are always a contiguous run ending at the log's last entry, and always a
//! subset of what sled holds: an append is recorded here after sled took it, a truncation
//! and a purge are applied here first. A read this run does not cover in full goes to sled.

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

use parking_lot::Mutex;

use super::types::Entry;

/// Most bytes (of the entries' JSON, as stored) kept; the oldest are dropped beyond.
const MAX_BYTES: usize = 8 << 20;
/// Most entries kept.
const MAX_ENTRIES: usize = 4096;

/// The newest log entries (see the module documentation).
#[derive(Default)]
pub(super) struct Recent {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Entries with their stored size, in index order without gaps.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Inner {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }
}

impl Recent {
    /// Records an entry sled has just taken (`size`: its stored bytes). One that does not
    /// follow the last held (the log was reset under it) starts a new run.
    pub(super) fn push(&self, entry: Entry, size: usize) {
        let mut inner = self.inner.lock();
        let follows = inner
            .entries
            .back()
            .is_none_or(|(last, _)| last.log_id.index + 1 == entry.log_id.index);
        if !follows {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.entries.push_back((entry, size));
        inner.bytes += size;
        while inner.entries.len() > 1
            && (inner.bytes > MAX_BYTES || inner.entries.len() > MAX_ENTRIES)
        {
            inner.pop_front();
        }
    }

    /// The entries in `range`, if every one of them is held; `None` sends the read to sled.
    pub(super) fn get(&self, range: impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1)?,
            Bound::Excluded(i) => *i,
            Bound::Unbounded => return None,
        };
        let inner = self.inner.lock();
        let first = inner.first()?;
        let held_end = first + inner.entries.len() as u64;
        if start < first || end > held_end || start >= end {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(
            inner
                .entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// Forgets the entries from `index` on (before sled removes them).
    pub(super) fn truncate_from(&self, index: u64) {
        let mut inner = self.inner.lock();
        while inner
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= index)
        {
            inner.pop_back();
        }
    }

    /// Forgets the entries up to and including `index` (before sled removes them).
    pub(super) fn purge_to(&self, index: u64) {
        let mut inner = self.inner.lock();
        while inner.first().is_some_and(|first| first <= index) {
            inner.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::{Batch, LogId, TypeConfig};
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderIdExt;

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId::new_committed(1, 1), index),
            payload: EntryPayload::Normal(Batch {
                time_ms: index,
                ops: Vec::new().into(),
            }),
        }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_in_full() {
        let r = Recent::default();
        assert_eq!(indexes(r.get(1..2)), None, "empty");
        for i in 5..=9 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(5..10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(r.get(7..9)), Some(vec![7, 8]));
        assert_eq!(indexes(r.get(4..7)), None, "starts before the first held");
        assert_eq!(indexes(r.get(8..11)), None, "ends after the last held");
        assert_eq!(indexes(r.get(7..7)), None, "empty range");
    }

    #[test]
    fn a_gap_starts_a_new_run() {
        let r = Recent::default();
        r.push(entry(1), 10);
        r.push(entry(2), 10);
        r.push(entry(7), 10);
        assert_eq!(indexes(r.get(1..3)), None);
        assert_eq!(indexes(r.get(7..8)), Some(vec![7]));
    }

    #[test]
    fn truncation_and_purge_forget_their_ends() {
        let r = Recent::default();
        for i in 1..=10 {
            r.push(entry(i), 10);
        }
        r.truncate_from(8);
        assert_eq!(indexes(r.get(7..8)), Some(vec![7]));
        assert_eq!(indexes(r.get(7..9)), None, "8 was truncated");
        r.push(entry(8), 10);
        assert_eq!(indexes(r.get(6..9)), Some(vec![6, 7, 8]));
        r.purge_to(6);
        assert_eq!(indexes(r.get(6..7)), None, "6 was purged");
        assert_eq!(indexes(r.get(7..9)), Some(vec![7, 8]));
    }

    #[test]
    fn the_oldest_go_beyond_the_bounds() {
        let r = Recent::default();
        for i in 1..=(MAX_ENTRIES as u64 + 10) {
            r.push(entry(i), 1);
        }
        assert_eq!(indexes(r.get(10..11)), None);
        assert_eq!(indexes(r.get(11..12)), Some(vec![11]));
        // One entry larger than the byte bound is still held, alone.
        r.push(entry(MAX_ENTRIES as u64 + 11), MAX_BYTES + 1);
        let last = MAX_ENTRIES as u64 + 11;
        assert_eq!(indexes(r.get(last - 1..last + 1)), None);
        assert_eq!(indexes(r.get(last..last + 1)), Some(vec![last]));
    }
}
