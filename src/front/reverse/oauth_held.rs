//! Requests held while their bearer token is introspected
//! (`--oauth-introspection-url`, issue 14). A held request's connection is
//! `Authorizing`: nothing after it is parsed (HTTP/1.1 answers in order)
//! and it has no timer of its own; the introspection's deadline
//! (`auth::INTROSPECTION_MAX_TIME`) bounds the wait, and every held request
//! is answered when it ends: served, 401/403, or 503 with `Retry-After`.
//! How many are held at once is bounded in `auth::introspect` (beyond it:
//! 503 at once).

use super::*;
use crate::auth::Verdict;

impl Reverse {
    /// Requests waiting for an introspection: in flight for the shutdown,
    /// which gives them the grace like any other.
    pub(super) fn held_requests(&self) -> usize {
        self.oauth
            .as_ref()
            .and_then(|o| o.auth.introspection.as_ref())
            .map_or(0, |i| i.held())
    }

    /// The requests of `waiters` (client tokens) get `verdict`: each goes on
    /// where routing stopped for it, or is answered.
    pub(super) fn resume_held(&mut self, waiters: Vec<usize>, verdict: Verdict) {
        for w in waiters {
            let tok = Token(w);
            // A connection gone meanwhile (or its slot reused: the token's
            // generation differs) is skipped.
            let Some(held) = self.client(tok).and_then(Client::take_held) else {
                continue;
            };
            let Held {
                req,
                ops_here,
                path,
            } = *held;
            let ka = req.keep_alive;
            if let Some(principal) = self.oauth_answer(tok, ka, verdict.clone()) {
                self.serve(tok, req, Some(principal), ops_here, &path);
            }
            // Pipelined requests behind it, and its timers.
            self.work.to_drive.push(tok);
        }
    }

    /// The relay stops: a held request is answered 503 now rather than
    /// left without an answer when its connection closes.
    pub(super) fn refuse_held_for_shutdown(&mut self, toks: &[Token]) {
        for &tok in toks {
            let Some(held) = self.client(tok).and_then(Client::take_held) else {
                continue;
            };
            if let Some(i) = self
                .oauth
                .as_mut()
                .and_then(|o| o.auth.introspection.as_mut())
            {
                i.forget(tok.0);
            }
            self.respond(
                tok,
                503,
                &[("retry-after", "1"), ("content-type", "text/plain")],
                b"shutting down\n",
                held.req.keep_alive,
            );
        }
    }
}
