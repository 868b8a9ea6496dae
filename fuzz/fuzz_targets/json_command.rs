//! The client command decoder: any bytes, split into lines as a frame is, must decode to a
//! command or a `DecodeError`, never panic or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::protocol::json::{MAX_DEPTH, decode_command, depth_within, lines};

fuzz_target!(|data: &[u8]| {
    for line in lines(data) {
        let decoded = decode_command(line);
        // Nothing nested deeper than the cap is ever accepted.
        if !depth_within(line, MAX_DEPTH) {
            assert!(decoded.is_err());
        }
        if let Ok(cmd) = decoded {
            // Only `send` and the pong may lack an id.
            let _ = cmd.method.name();
        }
    }
});
