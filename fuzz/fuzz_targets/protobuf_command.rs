//! The Protobuf command decoder: any bytes, split into length-delimited commands as a binary
//! message is, must give commands or errors, never panic or allocate past the message; and
//! any payload bytes survive classification (JSON or binary) and storage unchanged. The same
//! bytes as a Protobuf `/emulation` body decode to a request whose data is within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::protocol::protobuf::{FrameError, decode_command, decode_emulation_request, split};
use switchyard::protocol::{Payload, payload_bytes};

/// `client.max_message_size` of the session target's config.
const MAX: usize = 65536;

fuzz_target!(|data: &[u8]| {
    for part in split(data, MAX) {
        match part {
            Ok(cmd) => {
                assert!(cmd.len() <= MAX && cmd.len() <= data.len());
                if let Ok(c) = decode_command(cmd) {
                    let _ = c.method.name();
                }
            }
            Err(FrameError::TooBig(len)) => assert!(len > MAX as u64),
            Err(FrameError::Decode(_)) => {}
        }
    }
    // The input as one command body, and as a publication payload.
    let _ = decode_command(data);
    if let Ok(r) = decode_emulation_request(data) {
        assert!(!r.session.is_empty() && r.data.len() <= data.len());
    }
    let (stored, binary) = Payload::from_bytes(data.to_vec()).into_stored();
    assert_eq!(payload_bytes(&stored, binary), data, "payload bytes kept");
});
