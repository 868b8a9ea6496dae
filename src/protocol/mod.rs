//! The client protocol (Centrifugo protocol v2): message types, the JSON and Protobuf codecs
//! behind one [`Encoding`], and the table of error and disconnect codes.
//!
//! Invariant: this module is pure — no I/O, no async, no knowledge of sockets or state.

pub mod codec;
pub mod codes;
pub mod delta;
pub mod json;
pub mod proto;
pub mod protobuf;
pub mod types;

pub use codec::{EmulationRequest, Encoding, PushBody, ReplyBody};
pub use codes::{Disconnect, ErrorCode};
pub use json::{Command, DecodeError, Method};
pub use types::*;
