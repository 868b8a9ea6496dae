//! The WebSocket read side: raw client frames → whole, validated messages and control events.
//!
//! One reader serves both the client connection (`ws.rs`) and the test-only echo endpoint
//! (`echo.rs`), so the Autobahn suite exercises the exact code clients hit. It parses frames
//! itself instead of using fastwebsockets' reader, because fastwebsockets 0.10.0 does not
//! enforce client masking, does not bound the payload of close/pong frames, and does not cap a
//! reassembled message. Every RFC 6455 violation becomes a [`Disconnect`] (1002 protocol error,
//! 1007 invalid payload, 1009 too big) that the caller sends as its close frame.
//!
//! With permessage-deflate negotiated ([`MessageReader::inflating`]), a message whose first
//! frame has RSV1 set is reassembled compressed (its compressed size bounded like any
//! message), then inflated with the same bound applied while inflating ([`deflate::inflate`]):
//! a deflate bomb ends in 1009 having cost at most the limit.
//!
//! [`MessageReader::next`] is cancel-safe: its only await point is a read into its own buffer,
//! and frames are consumed only once complete.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::deflate::{self, InflateError, TAIL};
use crate::protocol::{Disconnect, codes};

/// Longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEAD: usize = 14;
/// Bytes asked of the socket per read when no frame size is known yet.
const READ_CHUNK: usize = 8 * 1024;
/// Buffer kept by a connection between messages: most commands fit; an idle connection (the
/// common case, by far) holds this little instead of a whole read chunk.
const IDLE_CHUNK: usize = 512;

pub(super) const OP_CONTINUATION: u8 = 0x0;
pub(super) const OP_TEXT: u8 = 0x1;
pub(super) const OP_BINARY: u8 = 0x2;
pub(super) const OP_CLOSE: u8 = 0x8;
pub(super) const OP_PING: u8 = 0x9;
pub(super) const OP_PONG: u8 = 0xA;

/// What the peer sent, once a message or a control frame is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole data message (text is valid UTF-8), at most the reader's limit long.
    Message {
        /// A text message (else binary).
        text: bool,
        /// Its payload.
        data: Bytes,
    },
    /// A ping; it is owed a pong with the same payload.
    Ping(Bytes),
    /// A pong (unsolicited or not; nothing is owed).
    Pong(Bytes),
    /// A valid close frame. Reply with [`Event::close_reply`] and stop reading messages.
    Close {
        /// Its code, if it carried one (always a valid code).
        code: Option<u16>,
        /// Its reason (valid UTF-8).
        reason: String,
    },
}

impl Event {
    /// For a close event, the code to answer with: the peer's code echoed, 1000 for none.
    pub fn close_reply(&self) -> Option<u16> {
        match self {
            Event::Close { code, .. } => Some(code.unwrap_or(1000)),
            _ => None,
        }
    }
}

/// Why reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The peer broke the protocol: close the connection with this code.
    Violation(Disconnect),
    /// The peer is gone (end of stream or a socket error): nothing can be sent.
    Gone,
}

fn violation(code: u16, reason: &'static str) -> ReadError {
    ReadError::Violation(Disconnect { code, reason })
}

fn protocol_error(reason: &'static str) -> ReadError {
    violation(codes::PROTOCOL_ERROR.code, reason)
}

/// Whether a close frame may carry `code` (RFC 6455 §7.4 and the IANA registry: 1000–1003,
/// 1007–1014 and the application ranges 3000–4999; never 1004–1006, 1015 or below 1000).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A frame header, validated on its own (before any payload is read).
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    /// RSV1: a compressed message (permessage-deflate), if that was negotiated.
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Payload length.
    len: usize,
    /// Header length (payload starts here).
    head_len: usize,
}

/// Parses the header at the start of `b`: `Ok(None)` while it is incomplete.
fn parse_head(b: &[u8]) -> Result<Option<Head>, ReadError> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    if b[0] & 0x30 != 0 {
        // RSV2 and RSV3 belong to no extension we negotiate; RSV1 is checked by the reader.
        return Err(protocol_error("reserved bits set"));
    }
    let rsv1 = b[0] & 0x40 != 0;
    let opcode = b[0] & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(protocol_error("unknown opcode"));
    }
    let len7 = (b[1] & 0x7f) as usize;
    if opcode >= OP_CLOSE {
        if !fin {
            return Err(protocol_error("fragmented control frame"));
        }
        if len7 > MAX_CONTROL_PAYLOAD {
            return Err(protocol_error("control frame too long"));
        }
    }
    if b[1] & 0x80 == 0 {
        return Err(protocol_error("unmasked client frame"));
    }
    let (len, at) = match len7 {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            let l = u64::from_be_bytes(l);
            if l >> 63 != 0 {
                return Err(protocol_error("frame length out of range"));
            }
            // Larger than memory could ever hold: surely over any limit.
            (usize::try_from(l).unwrap_or(usize::MAX), 10)
        }
        n => (n, 2),
    };
    if b.len() < at + 4 {
        return Ok(None);
    }
    let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    Ok(Some(Head {
        fin,
        rsv1,
        opcode,
        mask,
        len,
        head_len: at + 4,
    }))
}

/// Checks the UTF-8 of `data[from..]`; an incomplete character at the end is allowed unless
/// the message is complete. Returns how far the text is known to be valid.
fn utf8_checked(data: &[u8], from: usize, complete: bool) -> Result<usize, ReadError> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() && !complete => Ok(from + e.valid_up_to()),
        Err(_) => Err(violation(codes::INVALID_PAYLOAD.code, "invalid UTF-8")),
    }
}

/// A message being reassembled from fragments.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// Compressed (RSV1 on its first frame): `data` is deflate data until the last fragment.
    compressed: bool,
    data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (text only): invalid text fails fast.
    utf8_ok: usize,
}

/// Reads whole messages from a client's byte stream (after the HTTP upgrade).
#[derive(Debug)]
pub struct MessageReader<R> {
    io: R,
    /// Bytes read but not yet consumed as frames.
    buf: BytesMut,
    /// Largest message (sum of its fragments) accepted; beyond: 1009.
    max: usize,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    inflate: bool,
    partial: Option<Partial>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// A reader over `io` accepting messages of at most `max_message_size` bytes.
    pub fn new(io: R, max_message_size: usize) -> MessageReader<R> {
        MessageReader {
            io,
            buf: BytesMut::new(),
            max: max_message_size,
            inflate: false,
            partial: None,
        }
    }

    /// Accepts compressed messages (permessage-deflate was negotiated).
    pub fn inflating(mut self) -> MessageReader<R> {
        self.inflate = true;
        self
    }

    /// The next message or control event. Cancel-safe.
    pub async fn next(&mut self) -> Result<Event, ReadError> {
        loop {
            if let Some(ev) = self.step()? {
                return Ok(ev);
            }
            if self.buf.is_empty() && self.partial.is_none() {
                // Between messages: wait for the next one with a small buffer (a big one left
                // by a burst is given back); a read that fills it asks for a whole chunk next.
                if self.buf.capacity() > IDLE_CHUNK * 4 {
                    self.buf = BytesMut::new();
                }
                self.buf.reserve(IDLE_CHUNK);
            } else if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                self.buf.reserve(READ_CHUNK);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(ReadError::Gone),
                Ok(_) => {}
            }
        }
    }

    /// Consumes complete frames from the buffer until one yields an event; `Ok(None)` when more
    /// bytes are needed. Synchronous, so a cancelled `next` loses nothing.
    fn step(&mut self) -> Result<Option<Event>, ReadError> {
        loop {
            let Some(h) = parse_head(&self.buf)? else {
                return Ok(None);
            };
            // Sequencing and size are checked on the header, before the payload is awaited.
            match (h.opcode, &self.partial) {
                (OP_CONTINUATION, None) => {
                    return Err(protocol_error("continuation without a message"));
                }
                (OP_TEXT | OP_BINARY, Some(_)) => {
                    return Err(protocol_error("new message inside a fragmented one"));
                }
                _ => {}
            }
            if h.rsv1 && (!self.inflate || !matches!(h.opcode, OP_TEXT | OP_BINARY)) {
                // Only the first frame of a data message may say "compressed".
                return Err(protocol_error("reserved bits set"));
            }
            if h.opcode < OP_CLOSE {
                let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
                if h.len > self.max.saturating_sub(so_far) {
                    return Err(ReadError::Violation(codes::MESSAGE_TOO_BIG));
                }
            }
            let total = h.head_len + h.len;
            if self.buf.len() < total {
                self.buf.reserve(total - self.buf.len() + MAX_HEAD);
                return Ok(None);
            }
            let mut payload = self.buf.split_to(total);
            payload.advance(h.head_len);
            fastwebsockets::unmask(&mut payload, h.mask);
            if let Some(ev) = self.frame(h, payload)? {
                return Ok(Some(ev));
            }
        }
    }

    /// Handles one complete, unmasked frame.
    fn frame(&mut self, h: Head, payload: BytesMut) -> Result<Option<Event>, ReadError> {
        match h.opcode {
            OP_PING => Ok(Some(Event::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Event::Pong(payload.freeze()))),
            OP_CLOSE => close_event(&payload).map(Some),
            OP_TEXT | OP_BINARY => {
                let text = h.opcode == OP_TEXT;
                if h.rsv1 {
                    let p = Partial {
                        text,
                        compressed: true,
                        data: payload.to_vec(),
                        utf8_ok: 0,
                    };
                    if h.fin {
                        return self.inflated(p).map(Some);
                    }
                    self.partial = Some(p);
                    return Ok(None);
                }
                if h.fin {
                    if text {
                        utf8_checked(&payload, 0, true)?;
                    }
                    return Ok(Some(Event::Message {
                        text,
                        data: payload.freeze(),
                    }));
                }
                let utf8_ok = if text {
                    utf8_checked(&payload, 0, false)?
                } else {
                    0
                };
                self.partial = Some(Partial {
                    text,
                    compressed: false,
                    data: payload.to_vec(),
                    utf8_ok,
                });
                Ok(None)
            }
            _ => {
                // OP_CONTINUATION (the header check guarantees a message is open).
                let Some(mut p) = self.partial.take() else {
                    return Err(protocol_error("continuation without a message"));
                };
                p.data.extend_from_slice(&payload);
                if p.compressed {
                    if h.fin {
                        return self.inflated(p).map(Some);
                    }
                    self.partial = Some(p);
                    return Ok(None);
                }
                if p.text {
                    p.utf8_ok = utf8_checked(&p.data, p.utf8_ok, h.fin)?;
                }
                if h.fin {
                    return Ok(Some(Event::Message {
                        text: p.text,
                        data: Bytes::from(p.data),
                    }));
                }
                self.partial = Some(p);
                Ok(None)
            }
        }
    }
}

impl<R> MessageReader<R> {
    /// A whole compressed message, inflated within the size limit and checked.
    fn inflated(&self, mut p: Partial) -> Result<Event, ReadError> {
        p.data.extend_from_slice(&TAIL);
        let mut data = Vec::new();
        deflate::inflate(&p.data, self.max, &mut data).map_err(|e| match e {
            InflateError::TooBig => ReadError::Violation(codes::MESSAGE_TOO_BIG),
            InflateError::Corrupt => violation(codes::INVALID_PAYLOAD.code, "invalid deflate data"),
        })?;
        if p.text {
            utf8_checked(&data, 0, true)?;
        }
        Ok(Event::Message {
            text: p.text,
            data: Bytes::from(data),
        })
    }
}

/// Validates a close frame's payload: none, or a valid code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Event, ReadError> {
    match payload.len() {
        0 => Ok(Event::Close {
            code: None,
            reason: String::new(),
        }),
        1 => Err(protocol_error("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                return Err(protocol_error("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| violation(codes::INVALID_PAYLOAD.code, "invalid UTF-8 in close"))?;
            Ok(Event::Close {
                code: Some(code),
                reason: reason.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with the given first byte (FIN/RSV/opcode).
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [9u8, 8, 7, 6];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Every event the bytes produce, then how reading ended.
    fn read_all(bytes: &[u8], max: usize) -> (Vec<Event>, ReadError) {
        read_all_with(bytes, max, false)
    }

    /// Like `read_all`, with permessage-deflate negotiated or not.
    fn read_all_with(bytes: &[u8], max: usize, inflate: bool) -> (Vec<Event>, ReadError) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = MessageReader::new(bytes, max);
            if inflate {
                r = r.inflating();
            }
            let mut events = Vec::new();
            loop {
                match r.next().await {
                    Ok(e) => events.push(e),
                    Err(e) => return (events, e),
                }
            }
        })
    }

    fn code_of(e: ReadError) -> u16 {
        match e {
            ReadError::Violation(d) => d.code,
            ReadError::Gone => 0,
        }
    }

    #[test]
    fn fragments_are_reassembled_with_pings_between() {
        let mut b = frame(0x01, b"hel");
        b.extend(frame(0x89, b"p"));
        b.extend(frame(0x00, "lo é".as_bytes()));
        b.extend(frame(0x80, b"!"));
        let (ev, end) = read_all(&b, 100);
        assert_eq!(ev[0], Event::Ping(Bytes::from_static(b"p")));
        assert_eq!(
            ev[1],
            Event::Message {
                text: true,
                data: Bytes::from("hello é!")
            }
        );
        assert_eq!(end, ReadError::Gone);
    }

    #[test]
    fn size_cap_counts_all_fragments() {
        let mut b = frame(0x02, &[0; 60]);
        b.extend(frame(0x80, &[0; 40]));
        let (ev, end) = read_all(&b, 100);
        assert_eq!(ev.len(), 1);
        assert_eq!(end, ReadError::Gone);
        let mut b = frame(0x02, &[0; 60]);
        b.extend(frame(0x00, &[0; 30]));
        b.extend(frame(0x80, &[0; 11]));
        assert_eq!(code_of(read_all(&b, 100).1), 1009);
        // A single frame announcing more than the limit fails before its payload arrives.
        let mut head = frame(0x82, &[0; 70_000]);
        head.truncate(14);
        assert_eq!(code_of(read_all(&head, 65_536).1), 1009);
    }

    #[test]
    fn violations_have_their_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (frame(0x81 | 0x40, b"x"), 1002),                        // RSV1
            (frame(0x83, b"x"), 1002),                               // reserved opcode
            (frame(0x8B, b""), 1002),                                // reserved control opcode
            (frame(0x09, b""), 1002),                                // fragmented ping
            (frame(0x89, &[0; 126]), 1002),                          // long ping
            (frame(0x8A, &[0; 126]), 1002),                          // long pong
            (frame(0x88, &[0; 126]), 1002),                          // long close
            (frame(0x88, &[3]), 1002),                               // one-byte close
            (frame(0x88, &999u16.to_be_bytes()), 1002),              // invalid close code
            (frame(0x88, &[0x03, 0xe8, 0xff]), 1007),                // bad UTF-8 reason
            (frame(0x80, b"x"), 1002),                               // continuation first
            (frame(0x81, &[0xff]), 1007),                            // invalid UTF-8
            ([frame(0x01, b"a"), frame(0x81, b"b")].concat(), 1002), // text inside text
            (vec![0x81, 0x01, b'x'], 1002),                          // unmasked
            (
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
                1002,
            ), // 64-bit length with the top bit set
        ];
        for (i, (b, code)) in cases.into_iter().enumerate() {
            assert_eq!(code_of(read_all(&b, 1000).1), code, "case {i}");
        }
    }

    #[test]
    fn invalid_utf8_fails_on_the_fragment_that_breaks_it() {
        // The first fragment ends inside a character (fine); the second breaks it.
        let mut b = frame(0x01, &[b'a', 0xc3]);
        b.extend(frame(0x00, &[0x28]));
        let (ev, end) = read_all(&b, 100);
        assert!(ev.is_empty());
        assert_eq!(code_of(end), 1007);
        // A text ending inside a character fails when the message completes.
        let b = [frame(0x01, &[b'a', 0xc3]), frame(0x80, b"")].concat();
        assert_eq!(code_of(read_all(&b, 100).1), 1007);
    }

    #[test]
    fn close_frames_are_validated_and_echoed() {
        let (ev, _) = read_all(&frame(0x88, b""), 10);
        assert_eq!(ev[0].close_reply(), Some(1000));
        let b = [&3001u16.to_be_bytes()[..], "bye".as_bytes()].concat();
        let (ev, _) = read_all(&frame(0x88, &b), 10);
        assert_eq!(
            ev[0],
            Event::Close {
                code: Some(3001),
                reason: "bye".into()
            }
        );
        assert_eq!(ev[0].close_reply(), Some(3001));
        for ok in [1000, 1003, 1007, 1011, 3000, 4999] {
            assert!(close_code_allowed(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!close_code_allowed(bad), "{bad}");
        }
    }

    /// A message deflated the way a client does it (tail removed).
    fn deflated(data: &[u8]) -> Vec<u8> {
        let seg = deflate::segment(data, 6, 15).unwrap();
        seg[..seg.len() - TAIL.len()].to_vec()
    }

    #[test]
    fn compressed_messages_are_inflated_whole_or_fragmented() {
        let text = "compressible ".repeat(50);
        let z = deflated(text.as_bytes());
        let (half1, half2) = z.split_at(z.len() / 2);
        let mut b = frame(0xC1, &z);
        b.extend(frame(0x41, half1)); // text, RSV1, not final
        b.extend(frame(0x89, b"p"));
        b.extend(frame(0x80, half2));
        b.extend(frame(0x81, b"plain"));
        let (ev, end) = read_all_with(&b, 1000, true);
        let msg = |d: &str| Event::Message {
            text: true,
            data: Bytes::from(d.to_string()),
        };
        assert_eq!(
            ev,
            vec![
                msg(&text),
                Event::Ping(Bytes::from_static(b"p")),
                msg(&text),
                msg("plain")
            ]
        );
        assert_eq!(end, ReadError::Gone);
    }

    #[test]
    fn compression_violations_have_their_codes() {
        let z = deflated(b"hello");
        let cases: Vec<(Vec<u8>, u16)> = vec![
            ([frame(0x41, &z[..2]), frame(0xC0, &z[2..])].concat(), 1002), // RSV1 on continuation
            (frame(0xC9, b""), 1002),                                      // RSV1 on a ping
            (frame(0xA1, &z), 1002),                                       // RSV2
            (frame(0xC1, &[0xff, 0xff]), 1007),                            // not deflate data
            (frame(0xC1, &deflated(&[0xff, 0xfe])), 1007),                 // inflates to bad UTF-8
            (frame(0xC1, &deflated(&[b'a'; 1001])), 1009), // inflates past the limit
        ];
        for (i, (b, code)) in cases.into_iter().enumerate() {
            assert_eq!(code_of(read_all_with(&b, 1000, true).1), code, "case {i}");
        }
        // Not negotiated: RSV1 is a protocol error.
        assert_eq!(code_of(read_all(&frame(0xC1, &z), 1000).1), 1002);
        // Compressed binary data is not UTF-8 checked.
        let (ev, _) = read_all_with(&frame(0xC2, &deflated(&[0xff, 0xfe])), 1000, true);
        assert_eq!(
            ev[0],
            Event::Message {
                text: false,
                data: Bytes::from_static(&[0xff, 0xfe])
            }
        );
    }

    /// Byte by byte delivery (every read returns one byte) yields the same events.
    #[test]
    fn byte_at_a_time() {
        let b = [
            frame(0x01, &[0xe2, 0x82]),
            frame(0x80, &[0xac]),
            frame(0x82, &[0u8; 300]),
        ]
        .concat();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut tx, rx) = tokio::io::duplex(1);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tx.write_all(&b).await.unwrap();
            });
            let mut r = MessageReader::new(rx, 1000);
            assert_eq!(
                r.next().await.unwrap(),
                Event::Message {
                    text: true,
                    data: Bytes::from("€")
                }
            );
            match r.next().await.unwrap() {
                Event::Message { text: false, data } => assert_eq!(data.len(), 300),
                e => panic!("{e:?}"),
            }
            writer.await.unwrap();
            assert_eq!(r.next().await, Err(ReadError::Gone));
        });
    }
}
