//! Requests the mux answers itself because their reply cannot be passed
//! on: a line from the process that is no message but names one of them,
//! and a reply longer than the relay's message limit.

use serde_json::Value;

use super::{Down, Mux, RelayError};
use crate::proto::jsonrpc::{self, Id};
use crate::proto::object::object;

impl Mux {
    /// Request `n`'s reply cannot be delivered: it is answered with an
    /// `invalid_reply` error for its session instead.
    pub(super) fn fail_reply(&mut self, n: i64, message: &str) -> Option<Down> {
        let err = RelayError::InvalidReply;
        let data = object([("kind", Value::from(err.kind()))]);
        self.fail_with(n, err, message, data)
    }

    /// The reply to upstream id `id` was longer than the relay's message
    /// limit and dropped with its bytes: its request is answered
    /// `message_too_large` for its session now (its late reply, if any, is
    /// dropped). `None`: no request of this process has that id.
    pub fn reply_too_large(&mut self, id: &Id, size: usize, limit: usize) -> Option<Down> {
        let Id::Num(n) = id else { return None };
        let err = RelayError::MessageTooLarge;
        let data = object([
            ("kind", Value::from(err.kind())),
            ("size", Value::from(size)),
            ("limit", Value::from(limit)),
        ]);
        let message = "The server's reply exceeds the relay's maximum message size";
        self.fail_with(*n, err, message, data)
    }

    /// Request `n` answered with relay error `err` (`data`: its `data`,
    /// the kind among it), in the client's id as it wrote it.
    fn fail_with(&mut self, n: i64, err: RelayError, message: &str, data: Value) -> Option<Down> {
        let p = self.forget(n)?;
        Some(Down::Reply {
            session: p.session,
            msg: jsonrpc::error_response_spelled(&p.id_text, err.code(), message, data),
            id: p.id,
            modern: false,
        })
    }

    /// A line that is not a valid message (not UTF-8, not JSON): if it names
    /// one of this process's requests in flight, that request is answered
    /// with an error for its session; nothing of the line goes anywhere.
    pub(super) fn down_invalid(&mut self, line: &[u8]) -> Down {
        let Some(Id::Num(n)) = jsonrpc::recover_id(line, line) else {
            return Down::Drop;
        };
        self.fail_reply(
            n,
            "The server's reply is not a valid JSON-RPC message (not UTF-8 or not JSON)",
        )
        .unwrap_or(Down::Drop)
    }
}
