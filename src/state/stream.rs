//! Streams: a channel's epoch, top offset and bounded history. Publishing into them (the
//! `Publish`, `EnsureStream` and `HistoryRemove` ops), and reading them back: position, history
//! and recovery.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Event, HistoryPolicy, OpResult, StateMachine};
use crate::protocol::Publication;

/// A stored publication with the log time it was published at.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    time_ms: u64,
    publication: Arc<Publication>,
}

/// A channel stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Stream {
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

/// Outcome of a recovery attempt.
#[derive(Debug)]
pub enum Recovery {
    /// Every missed publication, in order (possibly none).
    Recovered(Vec<Arc<Publication>>),
    /// The epoch changed, the gap is too large, or history no longer covers it.
    Failed,
}

impl StateMachine {
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

    /// `Op::Publish`: with history on, the publication gets the next offset and is kept.
    pub(super) fn apply_publish(
        &mut self,
        channel: &str,
        mut publication: Publication,
        history: HistoryPolicy,
        new_epoch: &str,
        now: u64,
        events: &mut Vec<Event>,
    ) -> OpResult {
        if history.enabled() {
            let s = self.stream_mut(channel, history, new_epoch);
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
                channel: channel.to_string(),
                publication,
            });
            r
        } else {
            events.push(Event::Publication {
                channel: channel.to_string(),
                publication: Arc::new(publication),
            });
            OpResult::Position {
                offset: 0,
                epoch: String::new(),
            }
        }
    }

    /// `Op::EnsureStream`: creates the stream (with history on) and reports its position.
    pub(super) fn apply_ensure_stream(
        &mut self,
        channel: &str,
        history: HistoryPolicy,
        new_epoch: &str,
    ) -> OpResult {
        if !history.enabled() {
            return OpResult::Done;
        }
        let s = self.stream_mut(channel, history, new_epoch);
        OpResult::Position {
            offset: s.top,
            epoch: s.epoch.clone(),
        }
    }

    /// `Op::HistoryRemove`: drops the publications, keeps the epoch and top offset.
    pub(super) fn apply_history_remove(&mut self, channel: &str) -> OpResult {
        if let Some(s) = self.streams.get_mut(channel) {
            s.history.clear();
        }
        OpResult::Done
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
        // An empty epoch matches the stream's (as in Centrifugo): `{offset: 0, epoch: ""}`
        // recovers from the start.
        if (!epoch.is_empty() && s.epoch != epoch) || offset > s.top {
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
}
