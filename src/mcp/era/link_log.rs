//! Log messages on a bridged link (`forward`, a 2026-07-28 client, a
//! handshake-era server): a modern client hears `notifications/message`
//! only for requests that carried `io.modelcontextprotocol/logLevel`, and
//! only at or above that level (`era/loglevel.rs`).
//!
//! The server's log message names no request (stdio, and the relay's
//! `forward --url` reads every stream alike), so it is read as belonging to
//! the client's requests in flight: with one in flight, that one's opt-in
//! decides; with several (one client: they are all its own), it passes if
//! any of them asked for its level; with none, it is dropped, as a modern
//! server sends no log outside a request. A call whose first leg was
//! answered `input_required` keeps its opt-in while the call goes on.

use serde_json::Value;

use super::{Link, LinkState, MAX_CALLS};
use crate::mcp::era::classify::Envelope;
use crate::mcp::era::loglevel;
use crate::proto::jsonrpc::Id;

impl Link {
    /// A bridged request `id` goes to the server with this envelope: its log
    /// opt-in is remembered until the front forgets it (past [`MAX_CALLS`]
    /// requests in flight it is not, and its logs are dropped).
    pub(super) fn remember_log(&mut self, id: &Id, envelope: Option<&Envelope>) {
        if self.logs.len() < MAX_CALLS || self.logs.contains_key(id) {
            let level = loglevel::opt_in(envelope.and_then(|e| e.log_level.as_deref()));
            self.logs.insert(id.clone(), level);
        }
    }

    /// A `notifications/message` from the server (`params` raw): whether it
    /// goes to the client. Always true on a link that does not bridge.
    pub fn deliver_log(&self, params: Option<&str>) -> bool {
        if !matches!(self.state, LinkState::Bridged { .. }) {
            return true;
        }
        let params: Option<Value> = params.and_then(|p| serde_json::from_str(p).ok());
        let level = loglevel::message_level(params.as_ref());
        self.logs
            .values()
            .any(|opt_in| loglevel::deliver(*opt_in, level))
    }
}
