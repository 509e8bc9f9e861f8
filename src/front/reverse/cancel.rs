//! A handshake-era client's `notifications/cancelled` for one of its
//! session's requests in flight (both pools and `reverse --url`).
//!
//! MCP: the receiver of a cancellation does not answer the cancelled
//! request, and the client has stopped waiting for it. The relay forwards
//! the notification to the server as before, and ends the request's own
//! exchange at once, without a JSON-RPC answer:
//!
//! - nothing sent on its POST yet: the POST is answered with an empty event
//!   stream (`200`, `text/event-stream`, no event). No client sees an
//!   answer, and none resumes it (it carries no event id);
//! - its POST already turned into an event stream (progress, a server
//!   request): nothing more is sent on it, and the stream is left open
//!   until the session ends (then it ends, still without an answer). Ending
//!   it at once would make the 1.x clients resume it with `Last-Event-ID`
//!   on a GET, which takes the session's GET stream over, whose own client
//!   resumes in turn: the two would displace each other for ever. At most
//!   [`CANCELLED_STREAMS_MAX`] such streams per session; past it the oldest
//!   is ended at once (counted and logged).
//!
//! The request leaves the session's table: the server's late reply, if it
//! sends one, finds nothing and is dropped (`late_reply`), and at session
//! end it is not answered `upstream_closed`. A cancel naming no request of
//! the session in flight, `initialize` (never cancelled) or a request of a
//! 2025-03-26 batch changes nothing here.

use super::*;
use crate::mcp::shared::member;

/// Event streams of cancelled requests one session keeps open.
pub(super) const CANCELLED_STREAMS_MAX: usize = 16;

impl Reverse {
    /// The client sent `notifications/cancelled` (`env`) on session `skey`;
    /// called once the notification went to the server.
    pub(super) fn client_cancelled(&mut self, skey: SKey, env: &Envelope) {
        let Some(raw) = env.params.and_then(|p| member(p, "requestId")) else {
            return;
        };
        let id = Id::from_raw(raw);
        let Some(req) = self.sessions.get(&skey).and_then(|s| s.inflight.get(&id)) else {
            return;
        };
        if req.initialize {
            return;
        }
        let route = req.route;
        if let ReplyTo::Client(tok) = route {
            let single = self.client(tok).is_some_and(|c| {
                matches!(&c.state, ClientState::Waiting(ex)
                    if ex.session == skey && !ex.batch && ex.expect.contains(&id))
            });
            if !single {
                return;
            }
        }
        let Some(req) = self.untrack(skey, &id) else {
            return;
        };
        self.stamped_input_cancel(skey, &id);
        self.metrics.request_done(
            "cancelled",
            self.now.duration_since(req.started).as_secs_f64(),
        );
        if self.ups[up_of(skey)].is_http() {
            // `reverse --url`: the exchange toward the server is let go too
            // (its reply would be dropped anyway).
            self.http_abandon(skey, &id);
        }
        let ReplyTo::Client(tok) = route else {
            // The legacy HTTP+SSE transport: replies go on the session's
            // stream, which stays; nothing of this request will.
            return;
        };
        let Some(c) = self.client(tok) else { return };
        let ClientState::Waiting(ex) = &mut c.state else {
            return;
        };
        ex.expect.retain(|x| *x != id);
        if ex.sse {
            self.keep_cancelled_stream(skey, tok);
            return;
        }
        let ka = ex.keep_alive;
        self.respond(
            tok,
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
            b"",
            ka,
        );
    }

    /// A cancelled request's event stream stays open (silent) until its
    /// session ends; the oldest is ended past the cap.
    fn keep_cancelled_stream(&mut self, skey: SKey, tok: Token) {
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        s.cancelled_streams.push(tok);
        if s.cancelled_streams.len() <= CANCELLED_STREAMS_MAX {
            return;
        }
        let oldest = s.cancelled_streams.remove(0);
        let id = s.id.clone();
        self.metrics.message_dropped("cancelled_stream_ended");
        if let Some(suppressed) = self.drop_log.check(self.now) {
            crate::log_info!(
                "session {id}: more than {CANCELLED_STREAMS_MAX} streams of cancelled requests open; the oldest ended{}",
                if suppressed > 0 {
                    format!(" ({suppressed} similar lines suppressed)")
                } else {
                    String::new()
                }
            );
        }
        self.end_cancelled_stream(skey, oldest);
    }

    /// Ends the silent stream of a cancelled request (its session ends,
    /// or past the cap). A token whose connection now carries another
    /// exchange is left alone.
    pub(super) fn end_cancelled_stream(&mut self, skey: SKey, tok: Token) {
        let now = self.now;
        let Some(c) = self.client(tok) else { return };
        let ClientState::Waiting(ex) = &c.state else {
            return;
        };
        if ex.session != skey || !ex.expect.is_empty() || !ex.sse {
            return;
        }
        let ka = ex.keep_alive;
        c.end_stream(ka, now);
        self.work.dirty.push(tok);
        self.work.to_drive.push(tok);
    }
}
