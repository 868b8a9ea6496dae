//! Delta updates (Centrifugo's `delta: "fossil"` subscriptions), as the JSON protocol carries
//! them.
//!
//! Once a subscription has `delta: true` in its subscribe result, every publication it is sent
//! (live or recovered) has its `data` as a JSON *string*: either the publication's own JSON
//! text (`delta` absent), or a Fossil delta that turns the previous publication's data (as
//! this subscriber reconstructed it) into this one's (`delta: true`). centrifuge-js 5.7
//! (`JsonCodec.applyDeltaIfNeeded`) parses the string, applies the delta to the bytes it kept
//! and parses the result; so does every Centrifugo SDK.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use super::types::{ClientInfo, Publication, Raw};

/// The one delta type there is (`allowed_delta_types`, the subscribe request's `delta`).
pub const FOSSIL: &str = "fossil";

/// `data` as a JSON string literal of its own JSON text: what a delta subscriber gets for a
/// publication sent in full.
pub fn quoted(data: &RawValue) -> Raw {
    let lit = serde_json::to_string(data.get()).expect("a str serialises");
    RawValue::from_string(lit).expect("a JSON string literal is JSON")
}

/// The Fossil delta from `prev` to `cur` as a JSON string literal, or `None` when sending
/// `cur` in full is better: the delta is not smaller (as Centrifugo decides), or it is not
/// valid UTF-8 (a literal run cut inside a multi-byte character), which a JSON string cannot
/// carry byte for byte.
pub fn fossil(prev: &[u8], cur: &[u8]) -> Option<Raw> {
    // The crate's argument order is (target, source).
    let patch = fossil_delta::delta(cur, prev);
    if patch.len() >= cur.len() {
        return None;
    }
    let text = String::from_utf8(patch).ok()?;
    let lit = serde_json::to_string(&text).expect("a str serialises");
    Some(RawValue::from_string(lit).expect("a JSON string literal is JSON"))
}

/// A publication as pushed to a delta subscriber: `data` is a JSON string (see the module
/// doc), `delta` says whether it is a delta.
#[derive(Debug, Serialize)]
pub struct DeltaPublication<'a> {
    /// Offset in the channel stream (0: no history; omitted).
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// The quoted full data or the quoted delta.
    pub data: &'a RawValue,
    /// Publisher, when a client published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<&'a ClientInfo>,
    /// Tags set by the API publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a BTreeMap<String, String>>,
    /// `data` is a Fossil delta against the previous publication.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl<'a> DeltaPublication<'a> {
    /// `publication` with `data` in its place.
    pub fn new(publication: &'a Publication, data: &'a RawValue, delta: bool) -> Self {
        DeltaPublication {
            offset: publication.offset,
            data,
            info: publication.info.as_ref(),
            tags: publication.tags.as_ref(),
            delta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Raw {
        RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn quoted_data_parses_back_to_the_json_text() {
        let data = raw(r#"{"a":"x\"y","n":[1,2]}"#);
        let q = quoted(&data);
        let back: String = serde_json::from_str(q.get()).unwrap();
        assert_eq!(back, data.get());
    }

    #[test]
    fn delta_applies_to_the_previous_data() {
        let prev = format!(r#"{{"rows":[{}],"t":1}}"#, "\"row\",".repeat(200) + "0");
        let cur = prev.replace("\"t\":1", "\"t\":2");
        let d = fossil(prev.as_bytes(), cur.as_bytes()).expect("a small change gives a delta");
        let patch: String = serde_json::from_str(d.get()).unwrap();
        assert!(patch.len() < 40, "delta of a one-byte change: {patch:?}");
        let out = fossil_delta::apply(prev.as_bytes(), patch.as_bytes()).unwrap();
        assert_eq!(out, cur.as_bytes());
    }

    #[test]
    fn unrelated_or_tiny_data_goes_in_full() {
        assert!(fossil(b"{\"a\":1}", b"{\"b\":2}").is_none());
        let prev = "x".repeat(100);
        let cur = "y".repeat(100);
        assert!(fossil(prev.as_bytes(), cur.as_bytes()).is_none());
    }

    #[test]
    fn a_delta_cutting_a_character_goes_in_full() {
        // "é" is C3 A9 and "è" C3 A8: the copy takes the shared C3, the insert a lone A8.
        let pad = "0123456789abcdef".repeat(8);
        let prev = format!(r#"{{"a":"{pad}","name":"café","b":"{pad}"}}"#);
        let cur = prev.replace("café", "cafè");
        let patch = fossil_delta::delta(cur.as_bytes(), prev.as_bytes());
        assert!(std::str::from_utf8(&patch).is_err(), "the case under test");
        assert!(fossil(prev.as_bytes(), cur.as_bytes()).is_none());
        // Whole characters changed: a delta, with UTF-8 inside.
        let cur = prev.replace("café", "caféé");
        let d = fossil(prev.as_bytes(), cur.as_bytes()).expect("a delta");
        let patch: String = serde_json::from_str(d.get()).unwrap();
        let out = fossil_delta::apply(prev.as_bytes(), patch.as_bytes()).unwrap();
        assert_eq!(out, cur.as_bytes());
    }

    #[test]
    fn delta_subscriber_publication_shape() {
        let p = Publication {
            offset: 3,
            data: raw("{}"),
            info: None,
            tags: None,
        };
        let q = quoted(&p.data);
        let full = serde_json::to_string(&DeltaPublication::new(&p, &q, false)).unwrap();
        assert_eq!(full, r#"{"offset":3,"data":"{}"}"#);
        let d = raw(r#""2\n1;""#);
        let delta = serde_json::to_string(&DeltaPublication::new(&p, &d, true)).unwrap();
        assert_eq!(delta, r#"{"offset":3,"data":"2\n1;","delta":true}"#);
    }
}
