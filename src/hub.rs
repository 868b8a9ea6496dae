//! The local fan-out index: channel → this node's subscribers.
//!
//! Each event is encoded once into shared bytes and pushed to every subscriber's outbound
//! queue; when some subscribers compress (permessage-deflate), they also share one slot for
//! the compressed form, which the first of their writers fills, so a publication is
//! compressed at most once per node. The index is sharded by channel hash so that deliveries to different channels never
//! contend on one lock. Knows nothing about Raft or the log.
//!
//! Delta subscribers (`delta: "fossil"`) of a channel share one more encoding or two: the
//! publication in full (its data as a JSON string), and the Fossil delta from the channel's
//! previous publication, computed once per publication for all of them. A subscriber gets
//! the delta only if it was sent that previous publication (deliveries run in log order under
//! the engine's lock); one that has just subscribed or recovered, or whose queue refused the
//! previous one, gets it in full. A channel without delta subscribers keeps no previous
//! publication and computes nothing.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::outbound::{Message, Outbound, PushError, SharedDeflate};
use crate::protocol::Publication;
use crate::protocol::delta::{DeltaPublication, fossil, quoted};
use crate::protocol::json::encode_push;
use crate::protocol::types::JoinLeave;
use crate::state::Event;

const SHARDS: usize = 64;

/// One subscriber of a channel on this node.
#[derive(Clone, Debug)]
pub struct Subscriber {
    /// The connection's queue.
    pub out: Arc<Outbound>,
    /// Wants join/leave pushes.
    pub join_leave: bool,
    /// Fossil delta updates were granted (see the module doc).
    pub delta: bool,
}

/// The base of a channel's next delta.
#[derive(Default)]
struct DeltaBase {
    /// The last publication delivered in the channel while it had delta subscribers.
    last: Option<Arc<Publication>>,
    /// The delta subscribers that were sent it.
    sent_to: HashSet<u64>,
}

/// A channel's local subscribers.
#[derive(Default)]
struct Channel {
    subs: HashMap<u64, Subscriber>,
    /// How many of them are delta subscribers.
    delta_subs: usize,
    /// Only used while `delta_subs > 0`; deliveries to one channel are serialised by the
    /// engine, so this lock is never contended.
    base: Mutex<DeltaBase>,
}

impl Channel {
    /// Forgets what `conn` was sent (it is leaving or subscribing anew).
    fn forget(&mut self, conn: u64) {
        let base = self.base.get_mut();
        base.sent_to.remove(&conn);
        if self.delta_subs == 0 {
            *base = DeltaBase::default();
        }
    }
}

type Shard = RwLock<HashMap<String, Channel>>;

/// Counters of what the hub did.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Messages queued to subscribers.
    pub delivered: AtomicU64,
    /// Subscribers disconnected because their queue overflowed (3008).
    pub slow_disconnects: AtomicU64,
    /// Fossil deltas computed (one per publication in a channel with delta subscribers that
    /// were sent the previous one).
    pub deltas: AtomicU64,
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

/// One encoding of an event, made on first use and shared by the subscribers that get it.
#[derive(Default)]
struct Shared {
    json: Option<Bytes>,
    deflated: Option<SharedDeflate>,
}

impl Shared {
    fn message(&mut self, out: &Outbound, encode: impl FnOnce() -> Bytes) -> Message {
        Message {
            json: self.json.get_or_insert_with(encode).clone(),
            deflated: out
                .deflates()
                .then(|| self.deflated.get_or_insert_with(Default::default).clone()),
        }
    }
}

/// What a delta subscriber of a channel is sent for one publication.
struct DeltaEncodings<'a> {
    channel: &'a str,
    publication: &'a Publication,
    /// The delta from the previous publication (`None` inside: not worth sending).
    delta: Option<Option<Bytes>>,
    prev: Option<Arc<Publication>>,
    full: Shared,
    patch: Shared,
}

impl DeltaEncodings<'_> {
    fn message(&mut self, out: &Outbound, primed: bool, stats: &HubStats) -> Message {
        if primed && let Some(prev) = &self.prev {
            let (channel, publication) = (self.channel, self.publication);
            let delta = self.delta.get_or_insert_with(|| {
                stats.deltas.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::DELTAS).increment(1);
                let data = fossil(
                    prev.data.get().as_bytes(),
                    publication.data.get().as_bytes(),
                )?;
                let body = DeltaPublication::new(publication, &data, true);
                Some(encode_push(channel, "pub", &body))
            });
            if let Some(bytes) = delta {
                let bytes = bytes.clone();
                return self.patch.message(out, || bytes);
            }
        }
        self.full.message(out, || {
            let data = quoted(&self.publication.data);
            encode_push(
                self.channel,
                "pub",
                &DeltaPublication::new(self.publication, &data, false),
            )
        })
    }
}

impl Hub {
    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(channel) as usize) % SHARDS]
    }

    /// Adds (or replaces) connection `conn`'s subscription to `channel`.
    pub fn subscribe(&self, channel: &str, conn: u64, sub: Subscriber) {
        let mut shard = self.shard(channel).write();
        let ch = shard.entry(channel.to_string()).or_default();
        let delta = sub.delta;
        if let Some(old) = ch.subs.insert(conn, sub) {
            ch.delta_subs -= usize::from(old.delta);
        }
        ch.delta_subs += usize::from(delta);
        ch.forget(conn);
    }

    /// Removes connection `conn` from `channel`; returns whether it was there.
    pub fn unsubscribe(&self, channel: &str, conn: u64) -> bool {
        let mut shard = self.shard(channel).write();
        let Some(ch) = shard.get_mut(channel) else {
            return false;
        };
        let Some(old) = ch.subs.remove(&conn) else {
            return false;
        };
        ch.delta_subs -= usize::from(old.delta);
        ch.forget(conn);
        if ch.subs.is_empty() {
            shard.remove(channel);
        }
        true
    }

    /// Local subscribers of `channel`.
    pub fn num_subscribers(&self, channel: &str) -> usize {
        self.shard(channel)
            .read()
            .get(channel)
            .map_or(0, |c| c.subs.len())
    }

    /// Every channel with local subscribers, with their count.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.read().iter().map(|(k, c)| (k.clone(), c.subs.len())));
        }
        out
    }

    /// Total local subscriptions.
    pub fn num_subscriptions(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().map(|c| c.subs.len()).sum::<usize>())
            .sum()
    }

    /// Closes every local subscriber's connection with `d`.
    pub fn close_all(&self, d: crate::protocol::Disconnect) {
        for shard in self.shards.iter() {
            for ch in shard.read().values() {
                for s in ch.subs.values() {
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
        let Some(ch) = shard.get(channel.as_str()) else {
            return;
        };
        if join_leave_only && !ch.subs.values().any(|s| s.join_leave) {
            return;
        }
        let encode = || match event {
            Event::Publication { publication, .. } => encode_push(channel, "pub", &**publication),
            Event::Join { info, .. } => encode_push(channel, "join", &JoinLeave { info }),
            Event::Leave { info, .. } => encode_push(channel, "leave", &JoinLeave { info }),
            Event::User { .. } | Event::NodeDown { .. } => unreachable!("returned above"),
        };
        let mut plain = Shared::default();
        // Delta subscribers of a publication: the channel's delta base, held for the loop.
        let mut deltas = match event {
            Event::Publication { publication, .. } if ch.delta_subs > 0 => {
                let mut base = ch.base.lock();
                let prev = base.last.replace(publication.clone());
                let sent_to = std::mem::take(&mut base.sent_to);
                Some((
                    base,
                    sent_to,
                    DeltaEncodings {
                        channel,
                        publication,
                        delta: None,
                        prev,
                        full: Shared::default(),
                        patch: Shared::default(),
                    },
                ))
            }
            _ => None,
        };
        let mut delivered = 0u64;
        let applied_at = (!join_leave_only).then(std::time::Instant::now);
        for (&conn, sub) in &ch.subs {
            if join_leave_only && !sub.join_leave {
                continue;
            }
            let msg = match deltas.as_mut() {
                Some((_, sent_to, enc)) if sub.delta => {
                    enc.message(&sub.out, sent_to.contains(&conn), &self.stats)
                }
                _ => plain.message(&sub.out, encode),
            };
            match sub.out.push_quiet(msg, applied_at) {
                Ok(first) => {
                    delivered += 1;
                    if sub.delta
                        && let Some((base, _, _)) = deltas.as_mut()
                    {
                        base.sent_to.insert(conn);
                    }
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
                delta: false,
            },
        );
        hub.subscribe(
            "c",
            2,
            Subscriber {
                out: b.clone(),
                join_leave: true,
                delta: false,
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
                delta: false,
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

    fn doc(v: u32) -> Event {
        let data = format!(r#"{{"rows":"{}","v":{v}}}"#, "r".repeat(300));
        Event::Publication {
            channel: "c".into(),
            publication: Arc::new(Publication {
                offset: v as u64,
                data: serde_json::value::RawValue::from_string(data).unwrap(),
                info: None,
                tags: None,
            }),
        }
    }

    fn sub(hub: &Hub, conn: u64, delta: bool) -> Arc<Outbound> {
        let out = Arc::new(Outbound::new(1 << 20));
        let s = Subscriber {
            out: out.clone(),
            join_leave: false,
            delta,
        };
        hub.subscribe("c", conn, s);
        out
    }

    fn pushed(out: &Outbound) -> Vec<serde_json::Value> {
        let msgs = out.take().messages;
        msgs.iter()
            .map(|m| {
                serde_json::from_slice::<serde_json::Value>(&m.json).unwrap()["push"]["pub"].clone()
            })
            .collect()
    }

    #[test]
    fn delta_subscribers_share_one_delta_from_the_publication_they_were_sent() {
        let hub = Hub::default();
        let plain = sub(&hub, 1, false);
        let a = sub(&hub, 2, true);
        hub.deliver(&doc(1));
        let b = sub(&hub, 3, true);
        assert_eq!(
            hub.stats.deltas.load(Ordering::Relaxed),
            0,
            "nothing to diff yet"
        );
        let first = pushed(&a).remove(0);
        assert!(
            first["data"].is_string(),
            "a delta subscriber gets data as a string"
        );
        assert!(
            first.get("delta").is_none(),
            "the first publication is full"
        );
        assert_eq!(
            pushed(&plain)[0]["data"]["v"],
            1,
            "plain subscribers get plain JSON"
        );

        hub.deliver(&doc(2));
        let (ma, mb) = (a.take().messages, b.take().messages);
        let (pa, pb): (serde_json::Value, serde_json::Value) = (
            serde_json::from_slice(&ma[0].json).unwrap(),
            serde_json::from_slice(&mb[0].json).unwrap(),
        );
        assert_eq!(pa["push"]["pub"]["delta"], true, "a was sent publication 1");
        assert!(
            pb["push"]["pub"].get("delta").is_none(),
            "b subscribed after it: full"
        );
        let prev = match doc(1) {
            Event::Publication { publication, .. } => publication.data.get().to_string(),
            _ => unreachable!(),
        };
        let patch = pa["push"]["pub"]["data"].as_str().unwrap();
        let out = fossil_delta::apply(prev.as_bytes(), patch.as_bytes()).unwrap();
        let cur: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(cur["v"], 2);

        hub.deliver(&doc(3));
        let (ma, mb) = (a.take().messages, b.take().messages);
        assert_eq!(
            ma[0].json.as_ptr(),
            mb[0].json.as_ptr(),
            "one delta for both"
        );
        assert_eq!(
            hub.stats.deltas.load(Ordering::Relaxed),
            2,
            "one per publication"
        );

        // Resubscribing starts over: full again.
        hub.unsubscribe("c", 2);
        let a = sub(&hub, 2, true);
        hub.deliver(&doc(4));
        assert!(pushed(&a)[0].get("delta").is_none());
        assert_eq!(pushed(&b)[0]["delta"], true);
    }

    #[test]
    fn channels_without_delta_subscribers_compute_no_delta() {
        let hub = Hub::default();
        let a = sub(&hub, 1, false);
        for v in 1..=3 {
            hub.deliver(&doc(v));
        }
        assert_eq!(pushed(&a).len(), 3);
        assert_eq!(hub.stats.deltas.load(Ordering::Relaxed), 0);
        let shard = hub.shard("c").read();
        assert!(
            shard["c"].base.lock().last.is_none(),
            "no previous publication kept"
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
                delta: false,
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
                delta: false,
            },
        );
        hub.subscribe(
            "c",
            2,
            Subscriber {
                out: fast.clone(),
                join_leave: false,
                delta: false,
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
