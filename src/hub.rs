//! The local fan-out index: channel → this node's subscribers.
//!
//! Each event is encoded once per encoding (JSON, Protobuf) into shared bytes, only in the
//! encodings its subscribers speak, and pushed to every subscriber's outbound queue; when
//! some subscribers compress (permessage-deflate), those of one encoding also share one slot
//! for the compressed form, which the first of their writers fills, so a publication is
//! compressed at most once per encoding per node. The index is sharded by channel hash so that deliveries to different channels never
//! contend on one lock. Knows nothing about Raft or the log.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::outbound::{Message, Outbound, PushError, SharedDeflate};
use crate::protocol::{Encoding, PushBody};
use crate::state::Event;

const SHARDS: usize = 64;

/// One subscriber of a channel on this node.
#[derive(Clone, Debug)]
pub struct Subscriber {
    /// The connection's queue.
    pub out: Arc<Outbound>,
    /// Wants join/leave pushes.
    pub join_leave: bool,
}

type Shard = RwLock<HashMap<String, HashMap<u64, Subscriber>>>;

/// Counters of what the hub did.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Messages queued to subscribers.
    pub delivered: AtomicU64,
    /// Subscribers disconnected because their queue overflowed (3008).
    pub slow_disconnects: AtomicU64,
}

/// The sharded channel index.
pub struct Hub {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    /// Delivery counters.
    pub stats: HubStats,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            stats: HubStats::default(),
        }
    }
}

impl Hub {
    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(channel) as usize) % SHARDS]
    }

    /// Adds (or replaces) connection `conn`'s subscription to `channel`.
    pub fn subscribe(&self, channel: &str, conn: u64, sub: Subscriber) {
        self.shard(channel)
            .write()
            .entry(channel.to_string())
            .or_default()
            .insert(conn, sub);
    }

    /// Removes connection `conn` from `channel`; returns whether it was there.
    pub fn unsubscribe(&self, channel: &str, conn: u64) -> bool {
        let mut shard = self.shard(channel).write();
        let Some(subs) = shard.get_mut(channel) else {
            return false;
        };
        let removed = subs.remove(&conn).is_some();
        if subs.is_empty() {
            shard.remove(channel);
        }
        removed
    }

    /// Local subscribers of `channel`.
    pub fn num_subscribers(&self, channel: &str) -> usize {
        self.shard(channel)
            .read()
            .get(channel)
            .map_or(0, |s| s.len())
    }

    /// Every channel with local subscribers, with their count.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.read().iter().map(|(k, v)| (k.clone(), v.len())));
        }
        out
    }

    /// Total local subscriptions.
    pub fn num_subscriptions(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().map(|v| v.len()).sum::<usize>())
            .sum()
    }

    /// Closes every local subscriber's connection with `d`.
    pub fn close_all(&self, d: crate::protocol::Disconnect) {
        for shard in self.shards.iter() {
            for subs in shard.read().values() {
                for s in subs.values() {
                    s.out.close(d);
                }
            }
        }
    }

    /// Delivers one event to the local subscribers of its channel (encoded once).
    pub fn deliver(&self, event: &Event) {
        let mut woken = Vec::new();
        self.deliver_quiet(event, &mut woken);
        for out in woken {
            out.wake();
        }
    }

    /// Like [`Hub::deliver`], without waking the subscribers' writers: the queues that need a
    /// wake are added to `woken` (each once until woken), for the caller to wake after the
    /// last event of a batch, so each writer sends a whole entry's publications in one frame.
    pub fn deliver_quiet(&self, event: &Event, woken: &mut Vec<Arc<Outbound>>) {
        let (channel, join_leave_only) = match event {
            Event::Publication { channel, .. } => (channel, false),
            Event::Join { channel, .. } | Event::Leave { channel, .. } => (channel, true),
            Event::User { .. } | Event::NodeDown { .. } => return,
        };
        let shard = self.shard(channel).read();
        let Some(subs) = shard.get(channel.as_str()) else {
            return;
        };
        if join_leave_only && !subs.values().any(|s| s.join_leave) {
            return;
        }
        let body = match event {
            Event::Publication { publication, .. } => PushBody::Pub(publication),
            Event::Join { info, .. } => PushBody::Join(info),
            Event::Leave { info, .. } => PushBody::Leave(info),
            Event::User { .. } | Event::NodeDown { .. } => return,
        };
        let mut delivered = 0u64;
        let applied_at = (!join_leave_only).then(std::time::Instant::now);
        // Per encoding (index 0 JSON, 1 Protobuf): the bytes, made on first need, and the
        // compressed-form slot shared by that encoding's compressing subscribers.
        let mut encoded: [Option<bytes::Bytes>; 2] = [None, None];
        let mut shared: [Option<SharedDeflate>; 2] = [None, None];
        for sub in subs.values() {
            if join_leave_only && !sub.join_leave {
                continue;
            }
            let enc = sub.out.encoding();
            let i = usize::from(enc == Encoding::Protobuf);
            let msg = Message {
                json: encoded[i]
                    .get_or_insert_with(|| enc.push(channel, &body))
                    .clone(),
                deflated: sub
                    .out
                    .deflates()
                    .then(|| shared[i].get_or_insert_with(Default::default).clone()),
            };
            match sub.out.push_quiet(msg, applied_at) {
                Ok(first) => {
                    delivered += 1;
                    if first {
                        woken.push(sub.out.clone());
                    }
                }
                Err(PushError::Overflow) => {
                    self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(crate::metrics::SLOW_DISCONNECTS).increment(1);
                    tracing::warn!(channel = %channel, "slow consumer: outbound queue full, disconnecting with 3008");
                }
                Err(PushError::Closed) => {}
            }
        }
        self.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientInfo, Publication};

    fn publication(ch: &str) -> Event {
        Event::Publication {
            channel: ch.into(),
            publication: Arc::new(Publication {
                offset: 1,
                data: serde_json::value::RawValue::from_string("1".into()).unwrap(),
                binary: false,
                info: None,
                tags: None,
            }),
        }
    }

    #[test]
    fn delivers_one_shared_encoding_to_each_subscriber() {
        let hub = Hub::default();
        let a = Arc::new(Outbound::new(1000));
        let b = Arc::new(Outbound::new(1000));
        hub.subscribe(
            "c",
            1,
            Subscriber {
                out: a.clone(),
                join_leave: false,
            },
        );
        hub.subscribe(
            "c",
            2,
            Subscriber {
                out: b.clone(),
                join_leave: true,
            },
        );
        hub.deliver(&publication("c"));
        hub.deliver(&publication("other"));
        let (ma, mb) = (a.take().messages, b.take().messages);
        assert_eq!(ma.len(), 1);
        assert_eq!(mb.len(), 1);
        assert_eq!(
            ma[0].json.as_ptr(),
            mb[0].json.as_ptr(),
            "same buffer, encoded once"
        );
        assert!(ma[0].deflated.is_none(), "nobody compresses: no slot");
        let info = ClientInfo {
            user: "u".into(),
            client: "x".into(),
            conn_info: None,
            chan_info: None,
        };
        hub.deliver(&Event::Join {
            channel: "c".into(),
            info,
        });
        assert!(a.take().messages.is_empty(), "a did not ask for join/leave");
        assert_eq!(b.take().messages.len(), 1);
    }

    #[test]
    fn compressing_subscribers_share_one_slot_for_the_compressed_form() {
        let hub = Hub::default();
        let queues: Vec<_> = (0..3).map(|_| Arc::new(Outbound::new(1000))).collect();
        queues[0].set_deflate();
        queues[2].set_deflate();
        for (i, q) in queues.iter().enumerate() {
            let sub = Subscriber {
                out: q.clone(),
                join_leave: false,
            };
            hub.subscribe("c", i as u64, sub);
        }
        hub.deliver(&publication("c"));
        let m: Vec<_> = queues.iter().map(|q| q.take().messages.remove(0)).collect();
        assert!(m[1].deflated.is_none(), "a plain subscriber gets no slot");
        let (a, c) = (
            m[0].deflated.as_ref().unwrap(),
            m[2].deflated.as_ref().unwrap(),
        );
        assert!(Arc::ptr_eq(a, c), "one slot per publication");
    }

    #[test]
    fn each_encoding_is_encoded_once_and_shared_by_its_subscribers() {
        let hub = Hub::default();
        let queues: Vec<_> = (0..4).map(|_| Arc::new(Outbound::new(1000))).collect();
        for (i, q) in queues.iter().enumerate() {
            if i % 2 == 1 {
                q.set_encoding(crate::protocol::Encoding::Protobuf);
            }
            q.set_deflate();
            let sub = Subscriber {
                out: q.clone(),
                join_leave: false,
            };
            hub.subscribe("c", i as u64, sub);
        }
        hub.deliver(&publication("c"));
        let m: Vec<_> = queues.iter().map(|q| q.take().messages.remove(0)).collect();
        assert_eq!(m[0].json.as_ptr(), m[2].json.as_ptr(), "JSON encoded once");
        assert_eq!(
            m[1].json.as_ptr(),
            m[3].json.as_ptr(),
            "Protobuf encoded once"
        );
        assert_eq!(m[0].json[0], b'{');
        assert_eq!(
            usize::from(m[1].json[0]),
            m[1].json.len() - 1,
            "length-delimited"
        );
        let slot = |i: usize| m[i].deflated.clone().unwrap();
        assert!(Arc::ptr_eq(&slot(0), &slot(2)) && Arc::ptr_eq(&slot(1), &slot(3)));
        assert!(
            !Arc::ptr_eq(&slot(0), &slot(1)),
            "one compressed slot per encoding"
        );
    }

    #[test]
    fn quiet_delivery_asks_to_wake_each_subscriber_once_per_batch() {
        let hub = Hub::default();
        let a = Arc::new(Outbound::new(1000));
        hub.subscribe(
            "c",
            1,
            Subscriber {
                out: a.clone(),
                join_leave: false,
            },
        );
        let mut woken = Vec::new();
        hub.deliver_quiet(&publication("c"), &mut woken);
        hub.deliver_quiet(&publication("c"), &mut woken);
        assert_eq!(woken.len(), 1, "one wake for the whole batch");
        for o in woken.drain(..) {
            o.wake();
        }
        assert_eq!(a.take().messages.len(), 2);
        hub.deliver_quiet(&publication("c"), &mut woken);
        assert_eq!(woken.len(), 1, "a new batch needs a new wake");
    }

    #[test]
    fn slow_subscriber_is_cut_off_without_affecting_others() {
        let hub = Hub::default();
        let slow = Arc::new(Outbound::new(100));
        let fast = Arc::new(Outbound::new(1_000_000));
        hub.subscribe(
            "c",
            1,
            Subscriber {
                out: slow.clone(),
                join_leave: false,
            },
        );
        hub.subscribe(
            "c",
            2,
            Subscriber {
                out: fast.clone(),
                join_leave: false,
            },
        );
        for _ in 0..10 {
            hub.deliver(&publication("c"));
        }
        assert!(slow.is_closing());
        assert_eq!(fast.take().messages.len(), 10);
        assert_eq!(hub.stats.slow_disconnects.load(Ordering::Relaxed), 1);
        assert!(hub.unsubscribe("c", 1));
        assert!(!hub.unsubscribe("c", 1));
        assert_eq!(hub.num_subscribers("c"), 1);
    }
}
