//! Criterion benchmarks of the hot paths: decoding a client command, encoding a publication
//! push, fanning one publication out to 10,000 local subscribers, and applying a committed
//! batch of publications to the state machine.
//!
//! `cargo bench --bench hot_paths` (add `-- <filter>` to pick one).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;
use switchyard::hub::{Hub, Subscriber};
use switchyard::outbound::Outbound;
use switchyard::protocol::json::{decode_command, encode_push};
use switchyard::protocol::{ClientInfo, Publication};
use switchyard::state::{Entry, Event, HistoryPolicy, Op, StateMachine};

fn data(bytes: usize) -> Box<RawValue> {
    let pad = "x".repeat(bytes.saturating_sub(40));
    RawValue::from_string(format!(
        "{{\"p\":1,\"seq\":123,\"ts\":1700000000000000,\"pad\":\"{pad}\"}}"
    ))
    .expect("valid JSON")
}

fn publication() -> Publication {
    Publication {
        offset: 42,
        data: data(100),
        info: Some(ClientInfo {
            user: "user-1".into(),
            client: "8d3c1f4e-0c55-4d0b-9a55-0f0e5f6b7a11".into(),
            conn_info: None,
            chan_info: None,
        }),
        tags: None,
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_command");
    let publish = format!(
        "{{\"id\":7,\"publish\":{{\"channel\":\"chat:room\",\"data\":{}}}}}",
        data(100)
    );
    let subscribe =
        r#"{"id":2,"subscribe":{"channel":"chat:room","recover":true,"epoch":"abcd","offset":17}}"#;
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish_100B", |b| {
        b.iter(|| decode_command(black_box(publish.as_bytes())).expect("decodes"))
    });
    g.bench_function("subscribe_recover", |b| {
        b.iter(|| decode_command(black_box(subscribe.as_bytes())).expect("decodes"))
    });
    g.bench_function("pong", |b| {
        b.iter(|| decode_command(black_box(b"{}")).expect("decodes"))
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let p = publication();
    c.bench_function("encode_push/pub_100B", |b| {
        b.iter(|| encode_push(black_box("chat:room"), "pub", black_box(&p)))
    });
}

fn fanout(c: &mut Criterion) {
    const SUBS: usize = 10_000;
    let hub = Hub::default();
    let queues: Vec<Arc<Outbound>> = (0..SUBS)
        .map(|_| Arc::new(Outbound::new(1 << 20)))
        .collect();
    for (i, q) in queues.iter().enumerate() {
        hub.subscribe(
            "chat:room",
            i as u64,
            Subscriber {
                out: q.clone(),
                join_leave: false,
                delta: false,
            },
        );
    }
    let event = Event::Publication {
        channel: "chat:room".into(),
        publication: Arc::new(publication()),
    };
    let mut g = c.benchmark_group("hub_fanout");
    g.throughput(Throughput::Elements(SUBS as u64));
    g.bench_function("10k_local_subscribers", |b| {
        // Time only the delivery; the writers' draining of the queues happens outside.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                hub.deliver(black_box(&event));
                total += t.elapsed();
                for q in &queues {
                    black_box(q.take());
                }
            }
            total
        })
    });
    g.finish();
}

fn apply(c: &mut Criterion) {
    const OPS: usize = 256;
    let history = HistoryPolicy {
        size: 300,
        ttl_ms: 3_600_000,
    };
    let batch = |index: u64| Entry {
        index,
        time_ms: 1_700_000_000_000 + index,
        ops: (0..OPS)
            .map(|i| Op::Publish {
                channel: format!("chat:room-{}", i % 16),
                data: data(100),
                info: None,
                tags: None,
                history,
                new_epoch: "epoch".into(),
                idempotency: None,
            })
            .collect(),
    };
    let mut g = c.benchmark_group("state_apply");
    g.throughput(Throughput::Elements(OPS as u64));
    g.bench_function("batch_256_publications_16_channels", |b| {
        let mut sm = StateMachine::default();
        let mut index = 0;
        b.iter_batched(
            || {
                index += 1;
                batch(index)
            },
            |entry| sm.apply(black_box(&entry)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, decode, encode, fanout, apply);
criterion_main!(benches);
