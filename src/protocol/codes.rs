//! The one table of client-visible error and disconnect codes (protocol.md, "Error codes" and
//! "Disconnects"). Nothing else in the crate invents a code or a client-facing message.

use serde::Serialize;

/// An error reply: `{"id":N,"error":{"code":C,"message":"…","temporary":true?}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ErrorCode {
    /// Numeric code.
    pub code: u32,
    /// Message shown to clients (never internals).
    pub message: &'static str,
    /// The client may retry.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

const fn err(code: u32, message: &'static str, temporary: bool) -> ErrorCode {
    ErrorCode {
        code,
        message,
        temporary,
    }
}

/// 100: something failed inside the server; the client may retry.
pub const INTERNAL: ErrorCode = err(100, "internal server error", true);
/// 101: the request lacks valid credentials.
pub const UNAUTHORIZED: ErrorCode = err(101, "unauthorized", false);
/// 102: the channel's namespace does not exist.
pub const UNKNOWN_CHANNEL: ErrorCode = err(102, "unknown channel", false);
/// 103: not allowed.
pub const PERMISSION_DENIED: ErrorCode = err(103, "permission denied", false);
/// 104: no such method.
pub const METHOD_NOT_FOUND: ErrorCode = err(104, "method not found", false);
/// 105: subscribe to a channel the client is subscribed to.
pub const ALREADY_SUBSCRIBED: ErrorCode = err(105, "already subscribed", false);
/// 106: a limit was reached (channels per client, …).
pub const LIMIT_EXCEEDED: ErrorCode = err(106, "limit exceeded", false);
/// 107: the request is malformed.
pub const BAD_REQUEST: ErrorCode = err(107, "bad request", false);
/// 108: the feature is off for this channel (or no RPC handler exists).
pub const NOT_AVAILABLE: ErrorCode = err(108, "not available", false);
/// 109: the token has expired; the client fetches a new one.
pub const TOKEN_EXPIRED: ErrorCode = err(109, "token expired", false);
/// 110: the connection or subscription has expired.
pub const EXPIRED: ErrorCode = err(110, "expired", false);
/// 111: too many requests; retry later.
pub const TOO_MANY_REQUESTS: ErrorCode = err(111, "too many requests", true);
/// 112: the requested position is not in the stream (epoch changed or history lost).
pub const UNRECOVERABLE_POSITION: ErrorCode = err(112, "unrecoverable position", false);

/// A disconnect: sent as a WebSocket close frame with `code` and `reason` (≤ 123 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    /// Close code.
    pub code: u16,
    /// Close reason.
    pub reason: &'static str,
}

const fn dis(code: u16, reason: &'static str) -> Disconnect {
    Disconnect { code, reason }
}

impl Disconnect {
    /// Codes 3000–3499 and 4000–4499 tell clients to reconnect; others are terminal.
    pub fn reconnect(&self) -> bool {
        matches!(self.code, 3000..=3499 | 4000..=4499)
    }
}

/// 3000: normal close.
pub const NORMAL: Disconnect = dis(3000, "normal");
/// 3001: the node is shutting down; reconnect elsewhere.
pub const SHUTDOWN: Disconnect = dis(3001, "shutdown");
/// 3004: internal server error.
pub const INTERNAL_ERROR: Disconnect = dis(3004, "internal server error");
/// 3005: the connection's credentials expired without a refresh.
pub const CONNECTION_EXPIRED: Disconnect = dis(3005, "connection expired");
/// 3006: a subscription's credentials expired without a refresh.
pub const SUBSCRIPTION_EXPIRED: Disconnect = dis(3006, "subscription expired");
/// 3008: the client does not read fast enough; its outbound queue overflowed.
pub const SLOW: Disconnect = dis(3008, "slow");
/// 3009: writing to the client failed.
pub const WRITE_ERROR: Disconnect = dis(3009, "write error");
/// 3010: the node lacks state to serve the client; reconnect.
pub const INSUFFICIENT_STATE: Disconnect = dis(3010, "insufficient state");
/// 3011: the server asked the client to reconnect.
pub const FORCE_RECONNECT: Disconnect = dis(3011, "force reconnect");
/// 3012: no pong in time.
pub const NO_PONG: Disconnect = dis(3012, "no pong");
/// 3013: too many requests.
pub const TOO_MANY_REQUESTS_DISCONNECT: Disconnect = dis(3013, "too many requests");
/// 3500: the token is invalid.
pub const INVALID_TOKEN: Disconnect = dis(3500, "invalid token");
/// 3501: the client broke the protocol.
pub const BAD_REQUEST_DISCONNECT: Disconnect = dis(3501, "bad request");
/// 3502: no `connect` in time.
pub const STALE: Disconnect = dis(3502, "stale");
/// 3503: the server disconnected the client for good.
pub const FORCE_DISCONNECT: Disconnect = dis(3503, "force disconnect");
/// 3504: too many connections.
pub const CONNECTION_LIMIT: Disconnect = dis(3504, "connection limit");
/// 3505: too many channels.
pub const CHANNEL_LIMIT: Disconnect = dis(3505, "channel limit");
/// 3506: the client speaks a protocol this server does not.
pub const INAPPROPRIATE_PROTOCOL: Disconnect = dis(3506, "inappropriate protocol");
/// 3507: permission denied.
pub const PERMISSION_DENIED_DISCONNECT: Disconnect = dis(3507, "permission denied");
/// 3508: not available.
pub const NOT_AVAILABLE_DISCONNECT: Disconnect = dis(3508, "not available");
/// 3509: too many errors.
pub const TOO_MANY_ERRORS: Disconnect = dis(3509, "too many errors");
/// 1009: message too big (WebSocket standard code; centrifuge-js does not reconnect).
pub const MESSAGE_TOO_BIG: Disconnect = dis(1009, "message too big");
/// 1002: the client broke the WebSocket protocol (RFC 6455: bad framing, an unmasked frame, a
/// bad close frame, …). The reason names the violation.
pub const PROTOCOL_ERROR: Disconnect = dis(1002, "protocol error");
/// 1007: a text message (or a close reason) that is not valid UTF-8.
pub const INVALID_PAYLOAD: Disconnect = dis(1007, "invalid UTF-8");

/// Unsubscribe push code: the server unsubscribed the client (no resubscribe).
pub const UNSUBSCRIBE_SERVER: u32 = 2000;
