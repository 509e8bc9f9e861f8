//! `subscriptions/listen` from a 2026-07-28 client in front of a
//! handshake-era stdio server, both pools, with the sans-I/O table of
//! `mcp::era::listen` (the one `forward` uses).
//!
//! A listen is a stateless session of its own that stays open: the relay
//! answers it with the acknowledgement (what the server's capabilities can
//! honor) as the first event of its SSE response, and sends the server
//! `resources/subscribe` for each URI as the session's own requests (ids
//! `mcp-relay-sub-N`, their answers swallowed). In the shared pool they go
//! through the mux, whose per-process table (who subscribed to what)
//! already keeps a URI subscribed while any session holds it; in the session
//! pool the process is the listen's alone. The server's list-changed and
//! `resources/updated` notifications reach the listen when it asked for
//! them, stamped with its id (`_meta["io.modelcontextprotocol/subscriptionId"]`);
//! a modern request that is no listen never gets them. Closing the stream
//! ends the session: its URIs are unsubscribed (shared: only those no other
//! session holds). A listen has no response timeout.

use super::*;
use crate::mcp::era::listen::{self, Listeners, ServerCaps};

/// A listen session's table (`SessionEra::Listening`).
pub(in crate::front::reverse) struct Listening {
    id: Id,
    table: Listeners<()>,
}

impl Listening {
    /// A listen of nothing (the transition tests).
    #[cfg(test)]
    pub(super) fn empty(id: Id) -> Listening {
        Listening {
            id,
            table: Listeners::new(ServerCaps::default(), listen::Limits::default()),
        }
    }
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening").field("id", &self.id).finish()
    }
}

impl Reverse {
    /// The modern listen `held` of session `skey` on a handshake-era
    /// process (`init`: its `InitializeResult`): acknowledged, its URIs
    /// subscribed; refused (-32602) past the table's limits.
    pub(super) fn open_listen(&mut self, skey: SKey, held: Held, init: Option<&serde_json::Value>) {
        let u = up_of(skey);
        let caps = init
            .and_then(|r| r.get("capabilities"))
            .map(ServerCaps::from_capabilities)
            .unwrap_or_default();
        let limits = listen::Limits::default();
        let open = self
            .sessions
            .iter()
            .filter(|(k, s)| up_of(**k) == u && matches!(s.era, SessionEra::Listening(_)))
            .count();
        let params: Option<serde_json::Value> =
            serde_json::from_slice::<serde_json::Value>(&held.line)
                .ok()
                .and_then(|v| v.get("params").cloned());
        let mut table = Listeners::new(caps, limits);
        let opened = if open >= limits.max_listeners {
            Err(listen::Refused::TooManyListeners)
        } else {
            table.open(&(), &held.id, params.as_ref())
        };
        let opened = match opened {
            Ok(o) => o,
            Err(why) => {
                self.ups[u].era.listens_refused += 1;
                let b = jsonrpc::error_response(
                    Some(&held.id),
                    crate::mcp::era::INVALID_PARAMS,
                    why.message(),
                    json!({}),
                );
                self.answer_bytes(skey, &held.id, b);
                return;
            }
        };
        // An open listen has no response timeout.
        let timer = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.inflight.get_mut(&held.id))
            .and_then(|r| r.timer.take());
        if let Some(t) = timer {
            self.timers.cancel(t);
        }
        self.ups[u].era.listens += 1;
        let state = Listening {
            id: held.id.clone(),
            table,
        };
        self.set_era(skey, SessionEra::Listening(Box::new(state)));
        self.push_to_stream(skey, opened.ack);
        for line in &opened.to_server {
            self.era_to_server(skey, line);
        }
    }

    /// A message from the server on its way to session `skey`'s stream:
    /// list-changed and `resources/updated` notifications go to a listen
    /// that asked for them (stamped with its id) and to no other modern
    /// request; a log message goes to a modern request that opted in at its
    /// level (`mcp::era::loglevel`), never to a listen. `None`: dropped.
    pub(in crate::front::reverse) fn era_push(
        &mut self,
        skey: SKey,
        msg: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let (listening, log) = match self.sessions.get_mut(&skey).map(|s| &mut s.era) {
            Some(SessionEra::Listening(_)) => (true, None),
            Some(SessionEra::Bridged(b)) => (false, b.log()),
            _ => return self.stamped_push(skey, msg),
        };
        let (method, level) = match jsonrpc::peek(&msg) {
            Ok(Message::Single(env)) if env.kind() == Kind::Notification => {
                let method = env.method().map(|m| m.into_owned());
                let level = match method.as_deref() {
                    Some("notifications/message") => env.param_str("level"),
                    _ => None,
                };
                (method, level)
            }
            _ => (None, None),
        };
        if method.as_deref() == Some("notifications/message") {
            let deliver = crate::mcp::era::loglevel::deliver(log, level.as_deref());
            let c = &mut self.ups[up_of(skey)].era;
            if deliver {
                c.logs_delivered += 1;
            } else {
                c.logs_dropped += 1;
            }
            return deliver.then_some(msg);
        }
        let Some(method) = method.filter(|m| crate::mcp::era::listen::is_listen_event(m)) else {
            return Some(msg);
        };
        let stamped = if listening {
            let params = serde_json::from_slice::<serde_json::Value>(&msg)
                .ok()
                .and_then(|v| v.get("params").cloned());
            match self.sessions.get(&skey).map(|s| &s.era) {
                Some(SessionEra::Listening(l)) => l
                    .table
                    .on_server_notification(&method, params.as_ref())
                    .into_iter()
                    .next()
                    .map(|(_, _, line)| line),
                _ => None,
            }
        } else {
            None
        };
        if stamped.is_none() {
            self.ups[up_of(skey)].era.listen_dropped += 1;
        }
        stamped
    }

    /// The answer to one of a listen's own `resources/subscribe` or
    /// `unsubscribe` requests: swallowed (true).
    pub(in crate::front::reverse) fn era_listen_reply(&self, skey: SKey, id: &Id) -> bool {
        Listeners::<()>::is_own(id)
            && matches!(
                self.sessions.get(&skey).map(|s| &s.era),
                Some(SessionEra::Listening(_))
            )
    }

    /// A listen session is ending: its URIs are unsubscribed. In the
    /// shared pool the mux does it as the session ends (`Mux::end_session`,
    /// for the URIs no other session holds, with the relay's own ids: sent
    /// here as the session's requests they would be cancelled with it).
    pub(in crate::front::reverse) fn era_listen_ending(&mut self, skey: SKey) {
        let shared = self
            .sessions
            .get(&skey)
            .and_then(|s| s.binding.conn())
            .and_then(|c| self.procs.get(&c))
            .is_some_and(|p| matches!(p.kind, ProcKind::Shared { .. }));
        let lines = match self.sessions.get_mut(&skey).map(|s| &mut s.era) {
            Some(SessionEra::Listening(l)) => l.table.drop_owner(&()),
            _ => return,
        };
        if shared {
            return;
        }
        for line in &lines {
            self.era_to_server(skey, line);
        }
    }
}
