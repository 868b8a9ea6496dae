//! The WebSocket write side: unmasked server frames, with RSV1 set on the first frame of a
//! compressed message (permessage-deflate), which fastwebsockets' writer cannot express.
//! fastwebsockets still performs the upgrade handshake.

use bytes::Buf;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::reader::{OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT};

/// Payloads up to this size are copied behind their header and written at once; larger ones
/// are written from where they are (vectored when the stream supports it).
const COPY_MAX: usize = 16 * 1024;

/// The most buffer a connection keeps between writes.
const KEEP_MAX: usize = 2048;

/// Writes frames to one connection.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    /// Where a small frame is put together, kept from one write to the next.
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `io` (the write half of an upgraded connection).
    pub fn new(io: W) -> FrameWriter<W> {
        FrameWriter {
            io,
            buf: Vec::new(),
        }
    }

    /// One text (`text`) or binary message in one frame; `compressed` sets RSV1.
    pub async fn message(
        &mut self,
        text: bool,
        compressed: bool,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let opcode = if text { OP_TEXT } else { OP_BINARY };
        self.frame(opcode, compressed, payload).await
    }

    /// A pong carrying `payload`.
    pub async fn pong(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.frame(OP_PONG, false, payload).await
    }

    /// A close frame with `code` and `reason` (at most 123 bytes).
    pub async fn close(&mut self, code: u16, reason: &[u8]) -> std::io::Result<()> {
        let payload = [&code.to_be_bytes()[..], reason].concat();
        self.frame(OP_CLOSE, false, &payload).await
    }

    /// Flushes what was written (over TLS, the last records can otherwise wait in rustls's
    /// buffer until the next write).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.io.flush().await
    }

    async fn frame(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) -> std::io::Result<()> {
        let (head, n) = head(opcode, rsv1, payload.len());
        if payload.len() <= COPY_MAX {
            self.buf.clear();
            self.buf.extend_from_slice(&head[..n]);
            self.buf.extend_from_slice(payload);
            let written = self.io.write_all(&self.buf).await;
            // A connection keeps a small buffer, not the largest frame it ever sent.
            if self.buf.capacity() > KEEP_MAX {
                self.buf = Vec::new();
            }
            written
        } else {
            let mut buf = (&head[..n]).chain(payload);
            self.io.write_all_buf(&mut buf).await
        }
    }
}

/// A final frame's header for a payload of `len` bytes: its bytes and how many are used.
fn head(opcode: u8, rsv1: bool, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    let rsv = if rsv1 { 0x40 } else { 0 };
    h[0] = 0x80 | rsv | opcode;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(l) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&l.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_have_the_three_length_forms_and_rsv1() {
        assert_eq!(&head(OP_TEXT, false, 5).0[..2], &[0x81, 5]);
        assert_eq!(&head(OP_TEXT, true, 125).0[..2], &[0xC1, 125]);
        let (h, n) = head(OP_BINARY, false, 126);
        assert_eq!(&h[..n], &[0x82, 126, 0, 126]);
        let (h, n) = head(OP_TEXT, true, 65_536);
        assert_eq!(&h[..n], &[0xC1, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[tokio::test]
    async fn frames_reach_the_stream_whole() {
        let mut w = FrameWriter::new(Vec::new());
        w.message(true, true, b"hi").await.unwrap();
        w.close(1000, b"").await.unwrap();
        w.message(false, false, &[1u8; 20_000]).await.unwrap();
        let b = w.io;
        assert_eq!(&b[..8], &[0xC1, 2, b'h', b'i', 0x88, 2, 0x03, 0xe8]);
        assert_eq!(&b[8..12], &[0x82, 126, 0x4e, 0x20]);
        assert_eq!(b.len(), 12 + 20_000);
    }
}
