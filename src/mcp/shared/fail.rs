//! Requests the mux answers itself because their reply cannot be passed
//! on: a line from the process that is no message but names one of them,
//! and a reply longer than the relay's message limit.

use super::{Down, Mux, RelayError};
use crate::proto::jsonrpc::{self, Id};

impl Mux {
    /// Request `n`'s reply cannot be delivered: it is answered with an
    /// `invalid_reply` error for its session instead.
    pub(super) fn fail_reply(&mut self, n: i64, message: &str) -> Option<Down> {
        self.fail_with(n, RelayError::InvalidReply, message, serde_json::Map::new())
    }

    /// The reply to upstream id `id` was longer than the relay's message
    /// limit and dropped with its bytes: its request is answered
    /// `message_too_large` for its session now (its late reply, if any, is
    /// dropped). `None`: no request of this process has that id.
    pub fn reply_too_large(&mut self, id: &Id, size: usize, limit: usize) -> Option<Down> {
        let Id::Num(n) = id else { return None };
        self.fail_with(
            *n,
            RelayError::MessageTooLarge,
            "The server's reply exceeds the relay's maximum message size",
            serde_json::Map::from_iter([
                ("size".to_string(), serde_json::Value::from(size)),
                ("limit".to_string(), serde_json::Value::from(limit)),
            ]),
        )
    }

    /// Request `n` answered with relay error `err` (its `data`: the kind
    /// and `data`), in the client's id as it wrote it.
    fn fail_with(
        &mut self,
        n: i64,
        err: RelayError,
        message: &str,
        mut data: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Down> {
        let p = self.forget(n)?;
        data.insert("kind".into(), serde_json::Value::from(err.kind()));
        Some(Down::Reply {
            session: p.session,
            msg: jsonrpc::error_response_spelled(
                &p.id_text,
                err.code(),
                message,
                serde_json::Value::Object(data),
            ),
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
