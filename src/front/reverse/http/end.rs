//! `reverse --url`: the end of a request (its response timeout cancels it
//! upstream) and of a session (its stream stopped, its upstream session
//! ended with DELETE), and a failed `initialize` answered without a
//! session id.

use super::*;

impl Reverse {
    /// A failed `initialize` is answered without an `Mcp-Session-Id`: the
    /// session it would have named is gone.
    pub(super) fn no_session_header(&mut self, skey: SKey, id: &Id) {
        let reply_to = self
            .sessions
            .get(&skey)
            .and_then(|s| s.inflight.get(id))
            .map(|r| r.route);
        if let Some(ReplyTo::Client(tok)) = reply_to
            && let Some(c) = self.client(tok)
            && let crate::front::reverse::ClientState::Waiting(ex) = &mut c.state
        {
            ex.session_header = None;
        }
    }

    /// Lets request `id`'s exchange toward the server go (its reply, if
    /// any, is not read); false when the request was still held for the
    /// GET stream and the server never saw it.
    pub(in crate::front::reverse) fn http_abandon(&mut self, skey: SKey, id: &Id) -> bool {
        let reg = self.poll.registry();
        let Some(h) = self.ups[up_of(skey)].http_mut() else {
            return true;
        };
        if h.sessions.get_mut(&skey).is_some_and(|up| up.unhold(id)) {
            return false;
        }
        if let Some(ex) = h
            .sessions
            .get_mut(&skey)
            .and_then(|up| up.requests.remove(id))
        {
            h.client.cancel(ex, reg);
            h.carries.remove(&ex);
        }
        true
    }

    /// The response timeout of a request fired: stop its exchange and cancel
    /// it upstream.
    pub(in crate::front::reverse) fn http_cancel(&mut self, skey: SKey, id: &Id, initialize: bool) {
        let Some(h) = self.ups[up_of(skey)].http_mut() else {
            return;
        };
        if h.stateless.contains_key(&skey) {
            // 2026-07-28: closing the request's stream is its cancellation;
            // the exchange is abandoned when the session ends, right after
            // this answer.
            return;
        }
        if !self.http_abandon(skey, id) {
            // Held for the GET stream: the upstream never saw it.
            return;
        }
        if !initialize {
            let msg = jsonrpc::cancelled(id, "mcp-relay: response timeout");
            if !self.http_hold(skey, &msg, None) {
                self.http_post(skey, &msg, None, None, false);
            }
        }
    }

    /// The client session ended: stop its stream and end the upstream
    /// session too (DELETE, best effort).
    pub(in crate::front::reverse) fn http_end(&mut self, skey: SKey) {
        self.http_bridge_end(skey);
        let u = up_of(skey);
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        h.param_headers.remove(&skey);
        if let Some(ex) = h.stateless.remove(&skey) {
            // A stateless request whose session ends unanswered (client
            // gone, timeout, shutdown): abandoning it cancels it.
            h.client.cancel(ex, reg);
            h.carries.remove(&ex);
            return;
        }
        let Some(mut up) = h.sessions.remove(&skey) else {
            return;
        };
        up.get.stop();
        for ex in up
            .get_ex
            .take()
            .into_iter()
            .chain(up.requests.drain().map(|(_, ex)| ex))
        {
            h.client.cancel(ex, reg);
            h.carries.remove(&ex);
        }
        for t in [up.get_timer.take(), up.hold_timer.take()]
            .into_iter()
            .flatten()
        {
            self.timers.cancel(t);
        }
        if let Some(sid) = up.phase.session_id() {
            let mut headers = vec![("mcp-session-id".to_string(), sid.to_string())];
            if let Some(v) = up.phase.version() {
                headers.push(("mcp-protocol-version".into(), v.to_string()));
            }
            let req = Request::delete(h.url.target.clone(), headers);
            let ex = h.client.submit(req, reg, now);
            h.carries.insert(ex, (skey, Carry::Delete));
        }
    }
}
