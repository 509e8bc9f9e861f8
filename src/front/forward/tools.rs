//! The upstream's tool filter (`mcp::tools_filter`) at the forward front,
//! stdio and `--url` alike, one hook per direction: `tool_gate` at the top
//! of `host::send_to_server` (every client message, batches included) and
//! `tools_reply` where `child::on_server_line` completes a request.
//!
//! Forward mode has no metrics endpoint: denials are logged at info, one
//! line per 10 s at most (`RateLog`), with the running total.

use std::borrow::Cow;

use super::*;
use crate::io::ratelog::{RateLog, suppressed_note};
use crate::mcp::tools_filter::{ListReply, Verdict};

/// The client's error when a `tools/list` reply cannot be filtered.
const LIST_UNREADABLE: &str = "The server's tools/list reply cannot be filtered without doubt \
     (a member given twice); it was dropped";

/// Denied calls: the log's rate limit and the running total it reports.
#[derive(Debug, Default)]
pub(super) struct ToolLog {
    log: RateLog,
    total: u64,
}

impl Forward {
    /// A client message on its way up, with the request it carries (a
    /// batch: its first request). `None`: nothing is left to send. Denied
    /// `tools/call`s are taken out (a batch is rebuilt from the other
    /// elements' own bytes), requests among them answered `tool_denied`;
    /// `tools/list` requests are marked so their replies get filtered.
    pub(super) fn tool_gate<'a>(
        &mut self,
        line: &'a [u8],
        request: Option<Id>,
    ) -> Option<(Cow<'a, [u8]>, Option<Id>)> {
        if !self.cfg.tools.is_active() {
            return Some((Cow::Borrowed(line), request));
        }
        let Ok(Message::Batch(items)) = jsonrpc::peek(line) else {
            return self
                .tool_item(line, request.as_ref())
                .then_some((Cow::Borrowed(line), request));
        };
        let mut kept: Vec<&str> = Vec::with_capacity(items.len());
        let mut first = None;
        for raw in &items {
            let id = jsonrpc::peek_raw(raw)
                .filter(|env| env.kind() == Kind::Request)
                .and_then(|env| env.id())
                .filter(|id| self.pending.contains(id));
            if self.tool_item(raw.get().as_bytes(), id.as_ref()) {
                kept.push(raw.get());
                if first.is_none() {
                    first = id;
                }
            }
        }
        if kept.len() == items.len() {
            return Some((Cow::Borrowed(line), request));
        }
        if kept.is_empty() {
            return None;
        }
        let rebuilt = format!("[{}]", kept.join(","));
        Some((Cow::Owned(rebuilt.into_bytes()), first))
    }

    /// One message (or batch element): whether it may go up.
    fn tool_item(&mut self, msg: &[u8], request: Option<&Id>) -> bool {
        let denied = match self.cfg.tools.inspect(msg) {
            Verdict::Pass => return true,
            Verdict::List => {
                if let Some(p) = request.and_then(|id| self.pending.get_mut(id)) {
                    p.tools_list = true;
                }
                return true;
            }
            Verdict::Deny(d) => d,
        };
        self.tool_log.total += 1;
        if let Some(n) = self.tool_log.log.check(self.now) {
            crate::log_info!(
                "[{}] {} (tool_denied; {} denied so far){}",
                self.cfg.name,
                denied.message(),
                self.tool_log.total,
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
            self.fail_request(id, RelayError::ToolDenied, &denied.message(), data);
        }
        false
    }

    /// The reply that completes request `p` (`id`): a `tools/list` reply
    /// loses the tools the filter hides. `None`: the reply could not be
    /// filtered and the request was answered `invalid_reply` instead.
    pub(super) fn tools_reply<'a>(
        &mut self,
        id: &Id,
        p: &Pending,
        line: &'a [u8],
    ) -> Option<Cow<'a, [u8]>> {
        if !p.tools_list {
            return Some(Cow::Borrowed(line));
        }
        match self.cfg.tools.filter_list_reply(line) {
            ListReply::Unchanged => Some(Cow::Borrowed(line)),
            ListReply::Rewritten { bytes, hidden } => {
                crate::log_debug!("[{}] tools/list {id}: {hidden} tools hidden", self.cfg.name);
                Some(Cow::Owned(bytes))
            }
            ListReply::Unreadable => {
                crate::log_warn!(
                    "[{}] tools/list reply to {id} dropped: {LIST_UNREADABLE}",
                    self.cfg.name
                );
                self.reply_error(
                    Some(id),
                    RelayError::InvalidReply,
                    LIST_UNREADABLE,
                    json!({}),
                );
                None
            }
        }
    }
}
