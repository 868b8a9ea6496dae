//! permessage-deflate (RFC 7692): the client's offer and our answer at upgrade, bounded
//! inflation of client messages, and the deflated form of what we send.
//!
//! Neither side uses context takeover: every answer carries `server_no_context_takeover;
//! client_no_context_takeover`, so each message is compressed and inflated on its own. A
//! connection therefore keeps no compressor or inflater between messages (both live per
//! thread and are reset per message: an idle connection costs nothing more), and a message's
//! deflated bytes do not depend on the connection, so a publication is deflated once per node
//! and its bytes shared by every subscriber with the full window (`outbound::Message`).
//!
//! A frame's payload may join several independently deflated segments: each ends with a sync
//! flush (byte-aligned, an empty stored block) and refers to nothing before it, so segments
//! concatenate into one valid stream; raw parts (the `\n` between messages, messages under
//! the size threshold) go in as stored blocks.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";
/// The largest LZ77 window (32 KiB), the default of both directions.
pub const MAX_WINDOW_BITS: u8 = 15;
/// The empty stored block a sync flush ends with; RFC 7692 §7.2.1 drops it from the end of a
/// message and the receiver puts it back before inflating.
pub const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
/// Longest stored block.
const STORED_MAX: usize = 65_535;

/// What was agreed with a client at upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// `server_max_window_bits` as the client offered it (we honour it as offered).
    pub server_max_window_bits: Option<u8>,
}

impl Agreed {
    /// Most window bits our compressor may use towards this client.
    pub fn window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS)
    }

    /// The `Sec-WebSocket-Extensions` value of our answer.
    pub fn header(&self) -> String {
        let mut h = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
        if let Some(b) = self.server_max_window_bits {
            h.push_str(&format!("; server_max_window_bits={b}"));
        }
        h
    }
}

/// How one connection compresses what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Deflate level (1–9).
    pub level: u32,
    /// Messages shorter than this go uncompressed.
    pub min_size: usize,
    /// Most window bits agreed (15 unless the client asked for less).
    pub window_bits: u8,
}

impl Settings {
    /// The settings for a connection that agreed `agreed`, from the config.
    pub fn new(cfg: &crate::config::ClientConfig, agreed: Agreed) -> Settings {
        Settings {
            level: cfg.websocket_compression_level,
            min_size: cfg.websocket_compression_min_size,
            window_bits: agreed.window_bits(),
        }
    }

    /// Whether this connection can use the compressed form shared by every connection
    /// (made with the full window at the node's level).
    pub fn shares(&self) -> bool {
        self.window_bits == MAX_WINDOW_BITS
    }

    /// `data` deflated for this connection, when it is long enough.
    pub fn segment(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < self.min_size {
            return None;
        }
        segment(data, self.level, self.window_bits)
    }

    /// The payload of a compressed frame carrying `data` alone, when it is long enough
    /// (even if compressing does not pay: the echo endpoint compresses all it can).
    pub fn message(&self, data: &[u8]) -> Option<Vec<u8>> {
        let seg = self.segment(data)?;
        Some(frame_payload(&[Part::Deflated(&seg)], b"\n"))
    }
}

/// The answer to a request's permessage-deflate offers ([`negotiate`]): what was agreed, and
/// the `Sec-WebSocket-Extensions` value to send back.
pub fn answer(headers: &hyper::HeaderMap) -> Option<(Agreed, hyper::header::HeaderValue)> {
    let values = headers
        .get_all(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let agreed = negotiate(values)?;
    let value = hyper::header::HeaderValue::from_str(&agreed.header()).ok()?;
    Some((agreed, value))
}

/// Picks, from the values of a request's `Sec-WebSocket-Extensions` headers, the first
/// permessage-deflate offer whose parameters are all known, well formed and not repeated
/// (RFC 7692 §5: an offer we cannot honour is declined, the next one considered). `None`:
/// every offer declined; the connection goes on uncompressed.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    values
        .into_iter()
        .flat_map(|v| split_unquoted(v, b','))
        .find_map(accept_offer)
}

/// One offer (`permessage-deflate; param; param=value`), if we accept it.
fn accept_offer(offer: &str) -> Option<Agreed> {
    let mut parts = split_unquoted(offer, b';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreed = Agreed {
        server_max_window_bits: None,
    };
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (p, None),
        };
        let slot = match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) => 0,
            ("client_no_context_takeover", None) => 1,
            ("server_max_window_bits", Some(v)) => {
                agreed.server_max_window_bits = Some(window_bits(v)?);
                2
            }
            ("client_max_window_bits", None) => 3,
            ("client_max_window_bits", Some(v)) => {
                // Any window of the client's suits our inflater (always 32 KiB).
                window_bits(v)?;
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(agreed)
}

/// A window-bits value: a decimal 8–15, no sign or leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=MAX_WINDOW_BITS).contains(b))
}

/// A token or quoted-string value (ours never need escapes: a backslash declines).
fn unquote(v: &str) -> Option<&str> {
    let v = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => v,
    };
    (!v.contains(['"', '\\'])).then_some(v)
}

/// Splits on `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut cuts = Vec::new();
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                cuts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    cuts.push(&s[start..]);
    cuts.into_iter()
}

thread_local! {
    /// This thread's compressor and its level (reset before each message).
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    /// This thread's inflater (reset before each message).
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `input` deflated on its own at `level`, ending with a sync flush (so with [`TAIL`]), with
/// no back-reference farther than `2^window_bits` bytes: below 15 the input is cut into
/// windows of that size with a full flush (which forgets everything before it) between them,
/// which honours any `server_max_window_bits` with any deflate library. `None` if the
/// library failed (the caller sends the message uncompressed).
pub fn segment(input: &[u8], level: u32, window_bits: u8) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        if !matches!(slot, Some((l, _)) if *l == level) {
            *slot = Some((level, Compress::new(Compression::new(level), false)));
        }
        let (_, c) = slot.as_mut()?;
        c.reset();
        let mut out = Vec::new();
        if window_bits >= MAX_WINDOW_BITS {
            run(c, input, &mut out, FlushCompress::Sync)?;
            return Some(out);
        }
        let mut chunks = input.chunks(1 << window_bits).peekable();
        if chunks.peek().is_none() {
            run(c, &[], &mut out, FlushCompress::Sync)?;
        }
        while let Some(chunk) = chunks.next() {
            let flush = match chunks.peek() {
                Some(_) => FlushCompress::Full,
                None => FlushCompress::Sync,
            };
            run(c, chunk, &mut out, flush)?;
        }
        Some(out)
    })
}

/// Feeds all of `input`, then `flush`es, growing `out` until everything is written.
///
/// Written around two ways of miniz_oxide's found by Autobahn 12.2.9: a call that finds
/// output held back from an earlier one (the buffer was full) writes only that and ignores
/// its own flush; and a flush whose output is held back loses its closing empty block. So
/// everything held back is drained first (a call with nothing to add that writes nothing
/// means nothing is held back), and the flush is given room for all it can write: at most
/// the input it holds, which is at most this `input`, plus block overhead.
fn run(c: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> Option<()> {
    // Stored blocks (what miniz_oxide falls back to) cost 5 bytes per 64 KiB; the flush
    // and a block's header a few more.
    let bound = input.len() + input.len() / 64 + 64;
    let mut step = |c: &mut Compress, input: &[u8], flush, room: usize| -> Option<(usize, bool)> {
        if out.capacity() - out.len() < room {
            // Geometric growth, but no more than needed for short messages: every
            // compressed reply would otherwise leave a 4 KiB buffer to the allocator.
            out.reserve(room.max(out.capacity() / 2));
        }
        let (in0, out0) = (c.total_in(), c.total_out());
        c.compress_vec(input, out, flush).ok()?;
        let used = usize::try_from(c.total_in() - in0).ok()?;
        Some((used, c.total_out() > out0))
    };
    while !input.is_empty() {
        let (used, _) = step(c, input, FlushCompress::None, 256)?;
        input = &input[used..];
    }
    while step(c, &[], FlushCompress::None, 256)?.1 {}
    step(c, &[], flush, bound)?;
    while step(c, &[], FlushCompress::None, 256)?.1 {}
    // A complete flush ends with an empty stored block; anything else is a library fault
    // (the message then goes uncompressed).
    out.ends_with(&TAIL).then_some(())
}

/// Why a compressed client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit (close 1009).
    TooBig,
    /// It is not valid deflate data (close 1007).
    Corrupt,
}

/// Inflates one client message (its payload with [`TAIL`] put back) into `out`, stopping as
/// soon as more than `max` bytes come out: `out` grows geometrically and never beyond
/// `max + 1` bytes (plus the allocator's rounding), so a deflate bomb costs at most the
/// message size limit, never its inflated size.
pub fn inflate(mut input: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    INFLATER.with_borrow_mut(|slot| {
        let d = slot.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        let limit = max.saturating_add(1);
        out.reserve_exact(input.len().saturating_mul(4).max(256).min(limit));
        loop {
            if out.len() == out.capacity() {
                // Full at most `max` bytes (more has been refused below): room up to `limit`.
                let more = out.capacity().max(256).min(limit - out.capacity());
                out.reserve_exact(more);
            }
            let (in0, out0) = (d.total_in(), out.len());
            let status = d
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = usize::try_from(d.total_in() - in0).map_err(|_| InflateError::Corrupt)?;
            input = &input[used..];
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                return Ok(());
            }
            // Done when a call with room to write makes no progress (room alone is not
            // enough: the library may hold output back).
            if used == 0 && out.len() == out0 && out.len() < out.capacity() {
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(InflateError::Corrupt)
                };
            }
        }
    })
}

/// One part of a frame's payload.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// Bytes sent as they are (in stored blocks).
    Raw(&'a [u8]),
    /// A [`segment`]: deflated, ending with [`TAIL`].
    Deflated(&'a [u8]),
}

/// The payload of one compressed frame carrying `parts` joined by `sep` (`\n` for JSON,
/// nothing for Protobuf): segments as they are,
/// raw runs (separators included) as stored blocks, the final [`TAIL`] removed (RFC 7692
/// §7.2.1: the stream must end with an empty stored block, which loses its last 4 bytes).
pub fn frame_payload(parts: &[Part<'_>], sep: &[u8]) -> Vec<u8> {
    let size = parts
        .iter()
        .map(|p| match p {
            Part::Raw(b) | Part::Deflated(b) => b.len() + 6,
        })
        .sum();
    let mut out = Vec::with_capacity(size);
    let mut raw: Vec<u8> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            raw.extend_from_slice(sep);
        }
        match p {
            Part::Raw(b) => raw.extend_from_slice(b),
            Part::Deflated(seg) => {
                stored(&mut out, &raw);
                raw.clear();
                out.extend_from_slice(seg);
            }
        }
    }
    if raw.is_empty() {
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    } else {
        stored(&mut out, &raw);
        // The header byte of the closing empty stored block; the tail is its other 4 bytes.
        out.push(0);
    }
    out
}

/// Appends `data` as non-final stored blocks (nothing for no data).
fn stored(out: &mut Vec<u8>, data: &[u8]) {
    for block in data.chunks(STORED_MAX) {
        let len = block.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(offers: &[&str]) -> Option<Option<u8>> {
        negotiate(offers.iter().copied()).map(|a| a.server_max_window_bits)
    }

    #[test]
    fn offers_with_valid_parameters_are_accepted() {
        assert_eq!(agreed(&["permessage-deflate"]), Some(None));
        assert_eq!(
            agreed(&["permessage-deflate; client_max_window_bits"]),
            Some(None)
        );
        assert_eq!(
            agreed(&[
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=\"12\""
            ]),
            Some(Some(10))
        );
        assert_eq!(
            agreed(&[
                "x-webkit-deflate-frame",
                "Permessage-Deflate;SERVER_MAX_WINDOW_BITS=9"
            ]),
            Some(Some(9))
        );
    }

    #[test]
    fn unsupported_or_malformed_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; ",
            "permessage-deflate; server_max_window_bits=\"9",
            "deflate-frame",
        ] {
            assert_eq!(agreed(&[bad]), None, "{bad}");
        }
        assert_eq!(
            agreed(&[
                "permessage-deflate; server_max_window_bits=7, permessage-deflate; \
                 server_max_window_bits=8"
            ]),
            Some(Some(8))
        );
        assert_eq!(
            agreed(&["permessage-deflate; mystery", "permessage-deflate"]),
            Some(None)
        );
    }

    #[test]
    fn the_answer_forbids_context_takeover_and_echoes_the_window() {
        let a = negotiate(["permessage-deflate; server_max_window_bits=9"]).unwrap();
        assert_eq!(
            a.header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9"
        );
        assert_eq!(a.window_bits(), 9);
        let a = negotiate(["permessage-deflate"]).unwrap();
        assert!(!a.header().contains("max_window_bits"));
        assert_eq!(a.window_bits(), 15);
    }

    /// Inflates a frame payload the way a client does.
    fn client_inflate(payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::new();
        inflate(&input, 1 << 24, &mut out).unwrap();
        out
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"sensor\":{},\"value\":{}}}", i % 7, i % 13))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn segments_round_trip_at_every_window() {
        let data = sample(2000);
        for bits in 8..=15u8 {
            let seg = segment(&data, 6, bits).unwrap();
            assert!(seg.ends_with(&TAIL));
            assert!(seg.len() < data.len() * 3 / 4, "compresses at {bits} bits");
            assert_eq!(
                client_inflate(&frame_payload(&[Part::Deflated(&seg)], b"\n")),
                data
            );
        }
        let empty = segment(b"", 1, 15).unwrap();
        assert!(client_inflate(&frame_payload(&[Part::Deflated(&empty)], b"\n")).is_empty());
    }

    #[test]
    fn segments_and_raw_parts_join_with_newlines_in_one_stream() {
        let (a, b) = (sample(100), sample(300));
        let (sa, sb) = (segment(&a, 1, 15).unwrap(), segment(&b, 9, 15).unwrap());
        let big = vec![b'x'; 70_000];
        let cases: Vec<Vec<Part>> = vec![
            vec![Part::Deflated(&sa), Part::Deflated(&sb)],
            vec![Part::Raw(b"small"), Part::Deflated(&sa), Part::Raw(b"tiny")],
            vec![Part::Deflated(&sb), Part::Raw(b"last")],
            vec![Part::Raw(&big), Part::Deflated(&sa)],
        ];
        // JSON joins with `\n`; Protobuf messages carry their length and go back to back.
        for (parts, sep) in cases
            .into_iter()
            .flat_map(|p| [(p.clone(), &b"\n"[..]), (p, &b""[..])])
        {
            let expected: Vec<&[u8]> = parts
                .iter()
                .map(|p| match p {
                    Part::Raw(r) => *r,
                    Part::Deflated(s) if s.as_ptr() == sa.as_ptr() => &a[..],
                    Part::Deflated(_) => &b[..],
                })
                .collect();
            let payload = frame_payload(&parts, sep);
            assert!(!payload.ends_with(&TAIL));
            assert_eq!(client_inflate(&payload), expected.join(sep));
        }
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit_without_growing_past_it() {
        // 64 copies of one deflated MiB of zeros: 64 MiB from a few KiB.
        let seg = segment(&vec![0u8; 1 << 20], 9, 15).unwrap();
        let mut bomb = seg.repeat(64);
        assert!(bomb.len() < 80_000);
        bomb.extend_from_slice(&TAIL);
        let mut out = Vec::new();
        assert_eq!(inflate(&bomb, 65_536, &mut out), Err(InflateError::TooBig));
        assert!(out.capacity() <= 2 * 65_537, "capacity {}", out.capacity());
        // Exactly at the limit is fine.
        let seg = segment(&vec![7u8; 65_536], 1, 15).unwrap();
        let mut out = Vec::new();
        inflate(&[&seg[..], &TAIL].concat(), 65_536, &mut out).unwrap();
        assert_eq!(out.len(), 65_536);
    }

    /// Pseudo-random bytes (incompressible: deflate falls back to stored blocks).
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Output held back when the flush is asked for must not lose the flush (found by
    /// Autobahn 12.2.9: miniz_oxide ignores a flush while it writes held-back output).
    #[test]
    fn a_flush_behind_held_back_output_is_not_lost() {
        for n in (1..40).map(|k| k * 3_000) {
            for level in [1, 6] {
                let mut data = noise(n);
                let half = data.len() / 2;
                data[..half].iter_mut().for_each(|b| *b %= 16);
                let mut c = Compress::new(Compression::new(level), false);
                // Half of it compressible: the first call fills a buffer of half the input
                // and holds output back.
                let mut out = Vec::with_capacity(n / 2 + 64);
                run(&mut c, &data, &mut out, FlushCompress::Sync).expect("complete flush");
                assert_eq!(client_inflate(&out[..out.len() - TAIL.len()]), data);
            }
        }
    }

    #[test]
    fn incompressible_data_round_trips_both_ways() {
        for n in [16, 65_535, 65_536, 131_072] {
            let data = noise(n);
            let seg = segment(&data, 1, 15).unwrap();
            assert_eq!(
                client_inflate(&frame_payload(&[Part::Deflated(&seg)], b"\n")),
                data
            );
            // As a client compresses it (flate2, default level), inflated by us.
            let mut c = Compress::new(Compression::default(), false);
            let mut z = Vec::new();
            run(&mut c, &data, &mut z, FlushCompress::Sync).unwrap();
            let mut out = Vec::new();
            inflate(&z, 1 << 20, &mut out).unwrap();
            assert_eq!(out.len(), n);
            assert_eq!(out, data);
        }
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut out = Vec::new();
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff], 1000, &mut out),
            Err(InflateError::Corrupt)
        );
    }
}
