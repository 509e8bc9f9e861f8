//! The upstream's tool filter (`mcp::tools_filter`) at the reverse front,
//! one hook per direction: `tool_gate` before a client message goes up
//! (`session::send_up_as`, which every client message to any upstream kind
//! passes), `tools_reply` when a reply completes its request
//! (`deliver::complete`, which every upstream reply passes).

use super::*;
use crate::mcp::tools_filter::{ListReply, Verdict};

/// The client's error when a `tools/list` reply cannot be filtered.
const LIST_UNREADABLE: &str = "The server's tools/list reply cannot be filtered without doubt \
     (a member given twice); it was dropped";

impl Reverse {
    /// Whether a client message may go up. A `tools/call` the filter denies
    /// does not: a request is answered `tool_denied`, a notification is
    /// dropped; both are counted and logged (rate-limited). A `tools/list`
    /// is marked so that its reply is filtered. Costs nothing without a
    /// filter.
    pub(super) fn tool_gate(&mut self, skey: SKey, line: &[u8], request: Option<&Id>) -> bool {
        let u = up_of(skey);
        if !self.ups[u].cfg.tools.is_active() {
            return true;
        }
        let denied = match self.ups[u].cfg.tools.inspect(line) {
            Verdict::Pass => return true,
            Verdict::List => {
                if let Some(id) = request
                    && let Some(r) = self
                        .sessions
                        .get_mut(&skey)
                        .and_then(|s| s.inflight.get_mut(id))
                {
                    r.tools_list = true;
                }
                return true;
            }
            Verdict::Deny(d) => d,
        };
        self.metrics.tool_call_denied(self.ups[u].metric);
        let session = self.sessions.get(&skey).map_or("?", |s| s.id.as_str());
        if let Some(n) = self.logs.tool_denied.check(self.now) {
            crate::log_info!(
                "[{}] session {session}: {} (tool_denied){}",
                self.ups[u].cfg.name,
                denied.message(),
                suppressed_note(n)
            );
        }
        if let Some(id) = request {
            let data = match &denied.tool {
                Some(t) => {
                    crate::proto::object::object([("tool", serde_json::Value::from(t.as_str()))])
                }
                None => json!({}),
            };
            self.fail_request(skey, id, RelayError::ToolDenied, &denied.message(), data);
        }
        false
    }

    /// A reply that completes request `id`: a `tools/list` reply loses the
    /// tools the filter hides. `None`: the reply could not be filtered, and
    /// the request was answered `invalid_reply` instead.
    pub(super) fn tools_reply(
        &mut self,
        skey: SKey,
        id: &Id,
        req: Req,
        msg: Vec<u8>,
    ) -> Option<(Req, Vec<u8>)> {
        if !req.tools_list {
            return Some((req, msg));
        }
        let u = up_of(skey);
        match self.ups[u].cfg.tools.filter_list_reply(&msg) {
            ListReply::Unchanged => Some((req, msg)),
            ListReply::Rewritten { bytes, hidden } => {
                crate::log_debug!(
                    "[{}] tools/list {id}: {hidden} tools hidden",
                    self.ups[u].cfg.name
                );
                Some((req, bytes))
            }
            ListReply::Unreadable => {
                crate::log_warn!(
                    "[{}] tools/list reply to {id} dropped: {LIST_UNREADABLE}",
                    self.ups[u].cfg.name
                );
                self.answer_failed(
                    skey,
                    id,
                    req,
                    RelayError::InvalidReply,
                    LIST_UNREADABLE,
                    json!({}),
                );
                None
            }
        }
    }
}
