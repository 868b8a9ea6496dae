//! permessage-deflate for the bench's connections (`--compression`): the offer sent at the
//! handshake, and a reader of server frames that inflates compressed messages (fastwebsockets'
//! reader refuses frames with RSV1 set). Server frames are unmasked and, from Switchyard,
//! never depend on earlier messages (`server_no_context_takeover`), so the inflater is reset
//! per message.

use anyhow::{anyhow, bail};
use flate2::{Decompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

/// The offer: permessage-deflate with its default parameters (a browser's offer).
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// What a sync flush ends with; removed by the sender, put back before inflating.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// One whole message or control frame from the server.
pub enum Msg {
    /// A text or binary message, inflated if it came compressed.
    Data(Vec<u8>),
    /// A ping with its payload (owed a pong).
    Ping(Vec<u8>),
    /// A close frame's payload.
    Close(Vec<u8>),
}

/// Reads server frames from a connection that agreed permessage-deflate.
pub struct DeflateReader<R> {
    io: BufReader<R>,
    inflater: Decompress,
}

impl<R: AsyncRead + Unpin> DeflateReader<R> {
    /// A reader over the read half of an upgraded connection.
    pub fn new(io: R) -> DeflateReader<R> {
        DeflateReader {
            io: BufReader::new(io),
            inflater: Decompress::new(false),
        }
    }

    /// The next message (fragments joined, inflated) or control frame.
    pub async fn next(&mut self) -> anyhow::Result<Msg> {
        let mut message: Option<(bool, Vec<u8>)> = None;
        loop {
            let (fin, rsv1, opcode, payload) = self.frame().await?;
            match opcode {
                0x9 => return Ok(Msg::Ping(payload)),
                0xA => continue,
                0x8 => return Ok(Msg::Close(payload)),
                0x1 | 0x2 if message.is_none() => {
                    if fin {
                        return Ok(Msg::Data(self.finish(rsv1, payload)?));
                    }
                    message = Some((rsv1, payload));
                }
                0x0 => {
                    let (compressed, mut data) = message
                        .take()
                        .ok_or_else(|| anyhow!("read: continuation without a message"))?;
                    data.extend_from_slice(&payload);
                    if fin {
                        return Ok(Msg::Data(self.finish(compressed, data)?));
                    }
                    message = Some((compressed, data));
                }
                op => bail!("read: unexpected opcode {op}"),
            }
        }
    }

    /// One frame: FIN, RSV1, opcode, payload (unmasked).
    async fn frame(&mut self) -> anyhow::Result<(bool, bool, u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.io.read_exact(&mut h).await?;
        let len = match h[1] & 0x7f {
            126 => u64::from(self.io.read_u16().await?),
            127 => self.io.read_u64().await?,
            n => u64::from(n),
        };
        let mask = if h[1] & 0x80 != 0 {
            let mut m = [0u8; 4];
            self.io.read_exact(&mut m).await?;
            Some(m)
        } else {
            None
        };
        let len = usize::try_from(len).map_err(|_| anyhow!("read: frame too long"))?;
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        if let Some(m) = mask {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= m[i % 4]);
        }
        Ok((h[0] & 0x80 != 0, h[0] & 0x40 != 0, h[0] & 0x0f, payload))
    }

    /// A whole message's data, inflated when it came compressed.
    fn finish(&mut self, compressed: bool, mut data: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        if !compressed {
            return Ok(data);
        }
        data.extend_from_slice(&TAIL);
        self.inflater.reset(false);
        let mut out = Vec::with_capacity(data.len() * 4 + 256);
        let mut input = &data[..];
        loop {
            let before = self.inflater.total_in();
            self.inflater
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|e| anyhow!("inflate: {e}"))?;
            let used = (self.inflater.total_in() - before) as usize;
            input = &input[used..];
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            } else if input.is_empty() {
                return Ok(out);
            } else if used == 0 {
                bail!("inflate: stalled on invalid data");
            }
        }
    }
}
