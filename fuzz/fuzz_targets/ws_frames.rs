//! The WebSocket message reader fed raw client bytes, without and with permessage-deflate
//! agreed: it must end in an event stream that respects every limit (an inflated message
//! too), or a violation / end of input, never a panic or unbounded memory.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard::transport::reader::{Event, MessageReader, ReadError, close_code_allowed};

/// Message limit used here (small, so inputs can cross it).
const MAX: usize = 4096;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    read_all(data, false);
    read_all(data, true);
});

fn read_all(data: &[u8], inflate: bool) {
    rt().block_on(async {
        let mut rd = MessageReader::new(data, MAX);
        if inflate {
            rd = rd.inflating();
        }
        // Each event consumes at least one frame header (2 bytes): this bound is never hit.
        for _ in 0..=data.len() {
            match rd.next().await {
                Ok(Event::Message { text, data }) => {
                    assert!(data.len() <= MAX);
                    if text {
                        assert!(std::str::from_utf8(&data).is_ok());
                    }
                }
                Ok(Event::Ping(p) | Event::Pong(p)) => assert!(p.len() <= 125),
                Ok(Event::Close { code, reason }) => {
                    assert!(code.is_none_or(close_code_allowed));
                    assert!(reason.len() <= 123);
                }
                Err(ReadError::Violation(d)) => {
                    assert!(matches!(d.code, 1002 | 1007 | 1009), "{d:?}");
                    return;
                }
                Err(ReadError::Gone) => return,
            }
        }
        panic!("more events than input bytes");
    });
}
