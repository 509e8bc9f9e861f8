//! `reverse --url`: backpressure and fairness toward the upstream (issue
//! 11, classes 3 and 5). The engine reads at most `READ_BUDGET` per
//! connection per turn; what is left is read next turn (`http_backlog`,
//! from the loop's `after_events`, with `has_more` keeping the poll
//! non-blocking). An exchange whose client holds `PUSH_BACK_AT` of unsent
//! output is not read at all until that client catches up: the bytes wait
//! in the kernel and the upstream's sends block, so a flooding GET stream
//! toward a client that does not read costs the relay at most about
//! `PUSH_BACK_AT` plus one read budget. A GET stream of a session with no
//! client to deliver to is paused once the session keeps `UNDELIVERED_MAX`
//! messages for its next GET, instead of dropping the oldest. Each pause and each budget hit is
//! counted (`mcp_relay_http_upstream_limits_total`) and logged, rate-limited.

use super::super::{ReplyTo, Reverse, SKey, UNDELIVERED_MAX};
use super::PUSH_BACK_AT;
use crate::proto::jsonrpc::Id;
use crate::upstream::http::ExId;

impl Reverse {
    /// Bytes queued toward the clients exchange `ex` feeds: the client
    /// waiting for `request`, or for the GET stream (`None`) the most
    /// behind of the session's stream and waiting POSTs.
    fn sink_backlog(&self, skey: SKey, request: Option<&Id>) -> usize {
        let Some(s) = self.sessions.get(&skey) else {
            return 0;
        };
        let queued = |tok: mio::Token| match self.endpoints.get(tok) {
            Some(super::super::Endpoint::Client(c)) => c.out.len(),
            _ => 0,
        };
        let route = |r: &crate::session::inflight::Request<ReplyTo>| match r.route {
            ReplyTo::Client(t) => Some(t),
            ReplyTo::Stream => None,
        };
        match request {
            Some(id) => s.inflight.get(id).and_then(route).map_or(0, queued),
            None => s
                .stream
                .into_iter()
                .chain(s.inflight.iter().filter_map(|(_, r)| route(r)))
                .map(queued)
                .max()
                .unwrap_or(0),
        }
    }

    /// The clients exchange `ex` feeds cannot take more now: one holds
    /// [`PUSH_BACK_AT`] unsent, or (the GET stream) the session has no
    /// client to deliver to and keeps `UNDELIVERED_MAX` messages already,
    /// so the next would push out the oldest.
    fn sink_full(&self, skey: SKey, request: Option<&Id>) -> bool {
        if self.sink_backlog(skey, request) >= PUSH_BACK_AT {
            return true;
        }
        let Some(s) = self.sessions.get(&skey) else {
            return false;
        };
        request.is_none()
            && s.stream.is_none()
            && !s
                .inflight
                .iter()
                .any(|(_, r)| matches!(r.route, ReplyTo::Client(_)))
            && s.undelivered.len() >= UNDELIVERED_MAX
    }

    /// After a message of exchange `ex` went to its client: if that client
    /// cannot take more (`sink_full`), stop reading the exchange until it
    /// can (`http_backlog` resumes it).
    pub(super) fn http_push_back(&mut self, u: usize, ex: ExId, skey: SKey, request: Option<Id>) {
        if !self.sink_full(skey, request.as_ref()) {
            return;
        }
        if let Some(h) = self.ups[u].http_mut()
            && !h.client.is_paused(ex)
        {
            h.client.pause(ex);
            h.paused.insert(ex, (skey, request));
        }
    }

    /// An upstream connection may have unread bytes and may be read now.
    pub(in crate::front::reverse) fn http_has_backlog(&self) -> bool {
        self.ups
            .iter()
            .any(|up| up.http().is_some_and(|h| h.client.has_backlog()))
    }

    /// Resumes the exchanges whose clients caught up (handing over first
    /// the events read before their pause), then reads what the read budget
    /// or a pause left unread.
    pub(in crate::front::reverse) fn http_backlog(&mut self, u: usize) {
        let paused: Vec<(ExId, SKey, Option<Id>)> = match self.ups[u].http() {
            Some(h) if !h.paused.is_empty() => h
                .paused
                .iter()
                .map(|(ex, (skey, id))| (*ex, *skey, id.clone()))
                .collect(),
            _ => Vec::new(),
        };
        for (ex, skey, request) in paused {
            let live = self.ups[u]
                .http()
                .is_some_and(|h| h.carries.contains_key(&ex));
            if live && self.sink_full(skey, request.as_ref()) {
                continue;
            }
            let deferred = match self.ups[u].http_mut() {
                Some(h) => {
                    h.paused.remove(&ex);
                    h.client.resume(ex);
                    h.deferred.remove(&ex).unwrap_or_default()
                }
                None => Default::default(),
            };
            // What was read before the pause goes first; it may pause the
            // exchange again, and the rest then waits again, in order.
            for ev in deferred {
                self.http_event_one(u, ev);
            }
        }
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        if !h.client.has_backlog() {
            return;
        }
        h.client.read_backlog(reg, now);
        self.http_drain(u);
    }

    /// Metrics and rate-limited log lines for what the engine held back.
    pub(super) fn http_limits(&mut self, u: usize) {
        let now = self.now;
        let metric = self.ups[u].metric;
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let c = h.client.take_limit_counts();
        if c.is_zero() {
            return;
        }
        let paused_line = (c.read_paused > 0)
            .then(|| h.paused_log.hit(now, c.read_paused))
            .flatten();
        let budget_line = (c.read_budget > 0)
            .then(|| h.budget_log.hit(now, c.read_budget))
            .flatten();
        self.metrics
            .http_limit(metric, "read_paused", c.read_paused);
        self.metrics
            .http_limit(metric, "read_budget", c.read_budget);
        // Each one is logged where it is dropped (the message check).
        self.metrics
            .http_limit(metric, "invalid_utf8", c.invalid_utf8);
        let name = &self.ups[u].cfg.name;
        if let Some(more) = paused_line {
            crate::log_info!(
                "[{name}] a client is not reading its stream fast enough: reading its upstream \
                 exchange paused until it catches up ({more} more pauses since the last line)"
            );
        }
        if let Some(more) = budget_line {
            crate::log_debug!(
                "[{name}] an upstream connection had more than its read budget of {} KiB this \
                 turn; the rest is read next turn ({more} more since the last line)",
                crate::upstream::http::READ_BUDGET / 1024
            );
        }
    }
}
