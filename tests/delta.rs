//! Delta updates (`delta: "fossil"`) over the wire, against an in-process node: what a delta
//! subscriber is sent (the first publication in full, then Fossil deltas against the previous
//! one, every `data` a JSON string), that reconstructing them gives back what was published,
//! recovery and positioning alongside, and how a delta the namespace does not allow, or an
//! unknown delta type, is answered. `tests/compat` (`centrifuge_js_delta`) drives centrifuge-js.

mod common;

use common::*;
use serde_json::{Value, json};

/// The base config plus a namespace that allows Fossil deltas.
fn config() -> String {
    format!(
        "{}\n[[channel.namespaces]]\nname = \"live\"\nhistory_size = 100\nhistory_ttl = \"5m\"\n\
         allow_subscribe_for_client = true\nallow_history_for_subscriber = true\nallowed_delta_types = [\"fossil\"]\n",
        base_toml()
    )
}

/// A dashboard document of about 2 KB of which version `n` changes the version and one
/// row's count.
fn document(n: u64) -> Value {
    let rows: Vec<Value> = (0..30)
        .map(|i| {
            json!({"sensor": format!("building-7/floor-{}/room-{i}", i % 5),
                   "count": (n + 30 - i) / 30, "ok": true})
        })
        .collect();
    json!({"kind": "readings", "version": n, "rows": rows})
}

/// Follows one delta subscription's publications as centrifuge-js does: keeps the bytes of
/// the last data and applies each delta to them.
#[derive(Default)]
struct Follower {
    prev: Option<Vec<u8>>,
    /// Bytes of `data` strings received (full and delta), as the SDK counts them.
    wire: usize,
    deltas: usize,
}

impl Follower {
    /// The data of publication `p` (asserting the delta form), reconstructed.
    fn data(&mut self, p: &Value) -> Value {
        let s = p["data"]
            .as_str()
            .expect("a delta subscriber's data is a JSON string");
        self.wire += s.len();
        let bytes = if p["delta"] == true {
            self.deltas += 1;
            let prev = self
                .prev
                .as_ref()
                .expect("a delta follows a full publication");
            apply_fossil(prev, s.as_bytes()).expect("the delta applies")
        } else {
            assert!(p.get("delta").is_none(), "{p}");
            s.as_bytes().to_vec()
        };
        let v = serde_json::from_slice(&bytes).expect("reconstructed data is JSON");
        self.prev = Some(bytes);
        v
    }
}

/// A subscriber with `delta: "fossil"` on a namespace that allows it gets `delta: true`, the
/// first publication in full and the next ones as deltas, each reconstructing exactly what
/// was published, with consecutive offsets; a plain subscriber of the same channel gets
/// plain publications; deltas are much smaller than the documents.
#[tokio::test]
async fn delta_subscriber_reconstructs_every_publication() {
    let node = TestServer::start_toml(&config()).await;
    let ch = "live:doc";
    let mut d = node.client("d").await;
    let r = d
        .call(
            "subscribe",
            json!({"channel": ch, "delta": "fossil", "positioned": true}),
        )
        .await;
    assert_eq!(r["subscribe"]["delta"], true, "{r}");
    assert_eq!(r["subscribe"]["positioned"], true, "{r}");
    let mut plain = node.client("p").await;
    let r = plain.subscribe(ch).await;
    assert!(
        r["subscribe"].get("delta").is_none(),
        "not asked, not granted: {r}"
    );

    let mut f = Follower::default();
    let mut published_bytes = 0;
    for n in 1..=20u64 {
        let doc = document(n);
        published_bytes += doc.to_string().len();
        node.publish(ch, doc.clone()).await;
        let p = d.publication(ch).await;
        assert_eq!(p["offset"], n, "offsets unaffected");
        if n == 1 {
            assert!(
                p.get("delta").is_none(),
                "the first publication is full: {p}"
            );
        } else {
            assert_eq!(p["delta"], true, "publication {n} is a delta");
        }
        assert_eq!(f.data(&p), doc, "publication {n} reconstructed");
        assert_eq!(plain.publication(ch).await["data"], doc);
    }
    assert_eq!(f.deltas, 19);
    let admin = node.server.as_ref().unwrap().admin_addr;
    let computed = metric(admin, "switchyard_deltas_total").await;
    // The recorder is the process's: this binary's other tests may add their own deltas.
    assert!(computed >= 19.0, "deltas counted: {computed}");
    assert!(
        f.wire * 5 < published_bytes,
        "deltas are small: {} bytes received for {published_bytes} published",
        f.wire
    );
}

/// Recovery with deltas: the recovered publications come in full (as JSON strings), so does
/// the first live one after them, and deltas resume from there; offsets are as without deltas.
#[tokio::test]
async fn recovery_sends_full_publications_then_deltas() {
    let node = TestServer::start_toml(&config()).await;
    let ch = "live:recover";
    for n in 1..=5 {
        node.publish(ch, document(n)).await;
    }
    let mut d = node.client("d").await;
    let r = d
        .call(
            "subscribe",
            json!({"channel": ch, "delta": "fossil", "recoverable": true, "recover": true,
                   "offset": 2, "epoch": ""}),
        )
        .await;
    let res = &r["subscribe"];
    assert_eq!(res["delta"], true, "{r}");
    assert_eq!(res["recovered"], true, "{r}");
    let pubs = res["publications"]
        .as_array()
        .expect("recovered publications");
    let mut f = Follower::default();
    for (i, p) in pubs.iter().enumerate() {
        let n = i as u64 + 3;
        assert_eq!(p["offset"], n);
        assert!(
            p.get("delta").is_none(),
            "recovered publications are full: {p}"
        );
        assert_eq!(f.data(p), document(n));
    }
    assert_eq!(pubs.len(), 3);

    node.publish(ch, document(6)).await;
    let p = d.publication(ch).await;
    assert!(
        p.get("delta").is_none(),
        "the first live publication is full: {p}"
    );
    assert_eq!((p["offset"].clone(), f.data(&p)), (json!(6), document(6)));
    node.publish(ch, document(7)).await;
    let p = d.publication(ch).await;
    assert_eq!(p["delta"], true, "then deltas");
    assert_eq!((p["offset"].clone(), f.data(&p)), (json!(7), document(7)));

    // A history read is unaffected by deltas: plain publications.
    let r = d.call("history", json!({"channel": ch, "limit": -1})).await;
    let hist = r["history"]["publications"].as_array().expect("history");
    assert_eq!(hist.len(), 7);
    assert_eq!(hist[6]["data"], document(7));
}

/// A delta the namespace does not allow is not granted: the subscription goes on with plain
/// publications (as in Centrifugo); an unknown delta type is a bad request (3501).
#[tokio::test]
async fn delta_not_allowed_or_unknown() {
    let node = TestServer::start_toml(&config()).await;
    let ch = "open:nodelta";
    let mut c = node.client("c").await;
    let r = c
        .call("subscribe", json!({"channel": ch, "delta": "fossil"}))
        .await;
    assert!(r["subscribe"].is_object(), "{r}");
    assert!(
        r["subscribe"].get("delta").is_none(),
        "not allowed here: {r}"
    );
    for n in 1..=2 {
        node.publish(ch, document(n)).await;
        let p = c.publication(ch).await;
        assert!(p.get("delta").is_none());
        assert_eq!(p["data"], document(n), "plain JSON data");
    }

    let mut bad = node.client("b").await;
    bad.send(json!({"id": 9, "subscribe": {"channel": "live:x", "delta": "xdelta"}}))
        .await;
    assert_eq!(bad.closed().await, Closed::Code(3501, "bad request".into()));
}

/// Non-ASCII data: a delta that would cut a UTF-8 character (which a JSON string cannot carry
/// byte for byte) is replaced by the full data; whole characters travel inside deltas.
#[tokio::test]
async fn non_ascii_data_survives_deltas() {
    let node = TestServer::start_toml(&config()).await;
    let ch = "live:utf8";
    let mut d = node.client("d").await;
    let r = d
        .call("subscribe", json!({"channel": ch, "delta": "fossil"}))
        .await;
    assert_eq!(r["subscribe"]["delta"], true, "{r}");
    let pad = "Grüße aus Köln, ".repeat(20);
    let docs = [
        json!({"pad": pad, "name": "café", "n": 1}),
        json!({"pad": pad, "name": "cafè", "n": 1}),
        json!({"pad": pad, "name": "cafè 🚲", "n": 2}),
    ];
    let mut f = Follower::default();
    for (i, doc) in docs.iter().enumerate() {
        node.publish(ch, doc.clone()).await;
        let p = d.publication(ch).await;
        assert_eq!(&f.data(&p), doc, "publication {i} reconstructed");
        match i {
            1 => assert!(
                p.get("delta").is_none(),
                "é → è would cut a character: full"
            ),
            2 => assert_eq!(p["delta"], true, "whole characters: a delta"),
            _ => {}
        }
    }
}

/// The Fossil encoder (the `fossil-delta` crate behind `protocol::delta::fossil`) against the
/// test's own decoder, on thousands of random edits of random text, binary included, from
/// empty and tiny sources to 8 KB: every delta rebuilds exactly its target. A wrong copy
/// offset or length in the encoder shows here.
#[test]
fn encoder_output_decodes_to_the_target() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let alphabet = b"{}[]\":,0123456789abcdefghijklmnop \n";
    for round in 0..3000 {
        let binary = round % 5 == 0;
        let len = match round % 4 {
            0 => rng.random_range(0..20),
            _ => rng.random_range(0..8192),
        };
        let byte = |rng: &mut rand::rngs::StdRng| -> u8 {
            if binary {
                rng.random()
            } else {
                alphabet[rng.random_range(0..alphabet.len())]
            }
        };
        let prev: Vec<u8> = (0..len).map(|_| byte(&mut rng)).collect();
        let mut cur = prev.clone();
        for _ in 0..rng.random_range(0..6) {
            let at = rng.random_range(0..=cur.len());
            let n = rng.random_range(0..64).min(cur.len() - at);
            match rng.random_range(0..3) {
                0 => drop(cur.splice(at..at + n, [])),
                1 => {
                    let ins: Vec<u8> = (0..rng.random_range(1..64))
                        .map(|_| byte(&mut rng))
                        .collect();
                    drop(cur.splice(at..at, ins));
                }
                _ => cur[at..at + n].iter_mut().for_each(|b| *b = byte(&mut rng)),
            }
        }
        let patch = fossil_delta::delta(&cur, &prev);
        let out = apply_fossil(&prev, &patch).unwrap_or_else(|e| {
            panic!("round {round}: {e} ({} → {} bytes)", prev.len(), cur.len())
        });
        assert!(out == cur, "round {round}: wrong reconstruction");
        if !binary && let (Ok(p), Ok(c)) = (std::str::from_utf8(&prev), std::str::from_utf8(&cur)) {
            // What subscribers get: the same delta as a JSON string, or nothing.
            if let Some(lit) = switchyard::protocol::delta::fossil(p.as_bytes(), c.as_bytes()) {
                let s: String = serde_json::from_str(lit.get()).unwrap();
                assert_eq!(apply_fossil(prev.as_slice(), s.as_bytes()).unwrap(), cur);
            }
        }
    }
}
