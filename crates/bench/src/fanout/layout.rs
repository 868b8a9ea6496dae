//! Which channels the subscribers and publishers of a run use: `fanout` puts each subscriber
//! and each publisher on one channel; `publish` puts every subscriber on every channel and
//! sends each publisher's publications round the channels. Either way a subscriber sees all of
//! a publisher's stream or none of it, so the per-stream accounting is the same.

use serde::{Deserialize, Serialize};

/// How a run lays its channels out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Subscriber i on channel i mod C; publisher p publishes to channel p mod C.
    #[default]
    Fanout,
    /// Every subscriber on every channel; publication k of publisher p goes to channel
    /// (p + k) mod C.
    Spread,
}

/// The channels of a run: `count` of them, laid out by `layout`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Channels {
    /// Channels (at least 1).
    pub(super) count: usize,
    /// Who uses which.
    pub(super) layout: Layout,
}

impl Channels {
    /// `count` channels (at least one) laid out by `layout`.
    pub(super) fn new(count: usize, layout: Layout) -> Channels {
        Channels {
            count: count.max(1),
            layout,
        }
    }

    /// The channels subscriber `i` subscribes to.
    pub(super) fn of_subscriber(&self, i: usize) -> Vec<usize> {
        match self.layout {
            Layout::Fanout => vec![i % self.count],
            Layout::Spread => (0..self.count).collect(),
        }
    }

    /// The channels publisher `p` publishes to (a client publisher subscribes to them too).
    pub(super) fn of_publisher(&self, p: usize) -> Vec<usize> {
        match self.layout {
            Layout::Fanout => vec![p % self.count],
            Layout::Spread => (0..self.count).collect(),
        }
    }

    /// The channel of publication `k` of publisher `p`.
    pub(super) fn of_publication(&self, p: usize, k: u64) -> usize {
        match self.layout {
            Layout::Fanout => p % self.count,
            Layout::Spread => ((p as u64 + k) % self.count as u64) as usize,
        }
    }

    /// Groups: a subscriber receives every publication of the publishers of its group and
    /// none of the others'.
    pub(super) fn groups(&self) -> usize {
        match self.layout {
            Layout::Fanout => self.count,
            Layout::Spread => 1,
        }
    }

    /// The group of subscriber `i`.
    pub(super) fn group_of_subscriber(&self, i: usize) -> usize {
        i % self.groups()
    }

    /// The group of publisher `p`.
    pub(super) fn group_of_publisher(&self, p: usize) -> usize {
        p % self.groups()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_puts_each_stream_on_one_channel() {
        let c = Channels::new(3, Layout::Fanout);
        assert_eq!(c.of_subscriber(4), vec![1]);
        assert_eq!(c.of_publisher(5), vec![2]);
        assert_eq!(c.of_publication(5, 7), 2);
        assert_eq!(c.groups(), 3);
        assert_eq!(c.group_of_subscriber(4), c.group_of_publisher(1));
    }

    #[test]
    fn spread_sends_round_the_channels_to_every_subscriber() {
        let c = Channels::new(4, Layout::Spread);
        assert_eq!(c.of_subscriber(1), vec![0, 1, 2, 3]);
        let seen: Vec<usize> = (0..5).map(|k| c.of_publication(1, k)).collect();
        assert_eq!(seen, vec![1, 2, 3, 0, 1]);
        assert_eq!(c.groups(), 1);
        assert_eq!(c.group_of_subscriber(2), c.group_of_publisher(7));
        // Zero channels means one.
        assert_eq!(Channels::new(0, Layout::Spread).of_subscriber(0), vec![0]);
    }
}
