//! Both pools: a handshake-era session stamped toward a modern process
//! subscribes to resources. A modern server has no `resources/subscribe`:
//! the relay answers it (and `unsubscribe`) `{}` itself and folds the
//! session's URIs into one `subscriptions/listen` of that session on the
//! process (ids `mcp-relay-listen-N`; the union of its URIs and every
//! list-changed kind, stamped with the session's envelope), as
//! `mcp::era::stamper` does over HTTP. When the set changes the listen is
//! cancelled (`notifications/cancelled`) and, if anything is left, opened
//! again under a new id. The listen is the session's own request: in the
//! shared pool the mux maps its id and routes the notifications that name
//! it (`_meta["io.modelcontextprotocol/subscriptionId"]`) to this session
//! alone, so they reach this session's stream and no other; its
//! acknowledgement and its end stay with the relay. It has no response
//! timeout and ends with the session (the mux cancels it, or the session's
//! process goes). At most `stamper::MAX_SUBSCRIPTIONS` URIs per session
//! (past it -32602, counted in `mcp_relay_era_listens_total{what="refused"}`).

use super::*;
use crate::mcp::era::listen::LegacySubscriptions;
use crate::mcp::era::stamper::{LISTEN_ID_PREFIX, MAX_SUBSCRIPTIONS, Stamper, is_listen_ack};

#[derive(Default)]
pub(in crate::front::reverse) struct StampedSubs {
    subs: LegacySubscriptions,
    /// The relay's listen open on the session's behalf.
    listen: Option<Id>,
    listens: u64,
}

impl Reverse {
    /// `resources/subscribe` (`subscribe`) or `unsubscribe`, request `id` of
    /// stamped session `skey`, with its `params`.
    pub(super) fn stamped_subscription(
        &mut self,
        skey: SKey,
        id: &Id,
        subscribe: bool,
        params: Option<&serde_json::Value>,
    ) {
        let Some(uri) = params
            .and_then(|p| p.get("uri"))
            .and_then(|u| u.as_str())
            .map(str::to_string)
        else {
            let b = jsonrpc::error_response(
                Some(id),
                crate::mcp::era::INVALID_PARAMS,
                "params.uri must be a string",
                json!({}),
            );
            self.answer_bytes(skey, id, b);
            return;
        };
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let ctx = s.stamp.clone();
        let ss = s.stamp_subs.get_or_insert_with(Box::default);
        let changed = if subscribe {
            match ss.subs.subscribe(&uri, MAX_SUBSCRIPTIONS) {
                Ok(c) => c,
                Err(r) => {
                    self.ups[up_of(skey)].era.listens_refused += 1;
                    let b = jsonrpc::error_response(
                        Some(id),
                        crate::mcp::era::INVALID_PARAMS,
                        r.message(),
                        json!({}),
                    );
                    self.answer_bytes(skey, id, b);
                    return;
                }
            }
        } else {
            ss.subs.unsubscribe(&uri)
        };
        let mut close = None;
        let mut open = None;
        if changed {
            close = ss.listen.take();
            if !ss.subs.is_empty()
                && let Some(ctx) = &ctx
            {
                // An id none of the client's requests in flight has (the
                // client chooses its ids, and may choose one like these):
                // the listen's answer is then told from theirs.
                let lid = loop {
                    ss.listens += 1;
                    let lid = format!("{LISTEN_ID_PREFIX}{}", ss.listens);
                    if !s.inflight.contains(&Id::Str(lid.as_str().into())) {
                        break lid;
                    }
                };
                let req = json!({"jsonrpc": "2.0", "id": lid, "method": "subscriptions/listen",
                                 "params": {"notifications": ss.subs.filter()}});
                if let Ok((bytes, _)) = stamp::stamp_modern(req.to_string().as_bytes(), ctx) {
                    let lid = Id::Str(lid.into());
                    ss.listen = Some(lid.clone());
                    open = Some((lid, bytes));
                }
            }
        }
        self.answer_result(skey, id, &json!({}));
        if let Some(old) = close {
            let line = jsonrpc::cancelled(&old, "mcp-relay: the client's subscriptions changed");
            if let Ok(Message::Single(env)) = jsonrpc::peek(&line) {
                self.send_up(skey, &line, &env, None);
            }
        }
        if let Some((lid, bytes)) = open {
            if let Ok(Message::Single(env)) = jsonrpc::peek(&bytes) {
                self.send_up(skey, &bytes, &env, Some(&lid));
            }
            self.ups[up_of(skey)].era.listens += 1;
        }
        if let Some(conn) = self.sessions.get(&skey).and_then(|s| s.binding.conn()) {
            self.proc_flush(conn);
        }
    }

    /// The end (or refusal) of the relay's own listen of stamped session
    /// `skey`: true when `id` is one (the answer stays with the relay). An
    /// id like the relay's that one of the client's own requests in flight
    /// has is the client's: its answer goes to the client.
    pub(in crate::front::reverse) fn stamped_listen_reply(&mut self, skey: SKey, id: &Id) -> bool {
        if !Stamper::is_own_listen(id) {
            return false;
        }
        let Some(s) = self.sessions.get_mut(&skey) else {
            return false;
        };
        if s.stamp.is_none() || s.inflight.contains(id) {
            return false;
        }
        if let Some(ss) = s.stamp_subs.as_mut()
            && ss.listen.as_ref() == Some(id)
        {
            // The server ended it: opened again at the next change.
            ss.listen = None;
            crate::log_debug!("session {}: the server ended the relay's listen {id}", s.id);
        }
        true
    }

    /// Whether `id` is the relay's listen open for stamped session `s`: a
    /// client request with that id is one already in flight.
    pub(in crate::front::reverse) fn is_open_listen(s: &Session, id: &Id) -> bool {
        s.stamp_subs
            .as_ref()
            .is_some_and(|ss| ss.listen.as_ref() == Some(id))
    }

    /// A message for stamped session `skey`'s stream: the acknowledgement
    /// of the relay's listen stays with the relay (`None`).
    pub(super) fn stamped_push(&self, skey: SKey, msg: Vec<u8>) -> Option<Vec<u8>> {
        let stamped = self.sessions.get(&skey).is_some_and(|s| s.stamp.is_some());
        if stamped && is_listen_ack(&msg) {
            return None;
        }
        Some(msg)
    }
}
