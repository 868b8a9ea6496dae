//! The connect of a unidirectional client (`uni_websocket`, `uni_sse`, `uni_http_stream`):
//! no commands follow it, so a refusal cannot be an error reply and becomes a disconnect.

use crate::protocol::types::ConnectRequest;
use crate::protocol::{Disconnect, codes};

use super::{Fail, Session};

impl Session {
    /// Connects a unidirectional client (`req` came as a first message, a query parameter or
    /// a POST body). The connect result is queued as the reply to command id 0 (the transport
    /// makes it the connect push); a refusal is a disconnect, since such a client can read no
    /// error reply: 109 → 3005, 103 → 3507, temporary errors → 3004, any other → 3501.
    pub async fn connect_unidirectional(&mut self, req: ConnectRequest) -> Result<(), Disconnect> {
        metrics::counter!(crate::metrics::MESSAGES_IN).increment(1);
        metrics::counter!(crate::metrics::COMMANDS).increment(1);
        let code = match self.connect(0, req).await {
            Ok(_) => return Ok(()),
            Err(Fail::Disconnect(d)) => return Err(d),
            Err(Fail::Close(code, reason)) => {
                self.conn.out.close_with(code, &reason);
                return Ok(());
            }
            Err(Fail::Error(e)) => e.code,
            Err(Fail::Backend(e)) => e.code,
        };
        tracing::debug!(conn = self.conn.id, code, "unidirectional connect refused");
        Err(match code {
            c if c == codes::TOKEN_EXPIRED.code => codes::CONNECTION_EXPIRED,
            c if c == codes::PERMISSION_DENIED.code => codes::PERMISSION_DENIED_DISCONNECT,
            c if c == codes::INTERNAL.code || c == codes::TOO_MANY_REQUESTS.code => {
                codes::INTERNAL_ERROR
            }
            _ => codes::BAD_REQUEST_DISCONNECT,
        })
    }
}
