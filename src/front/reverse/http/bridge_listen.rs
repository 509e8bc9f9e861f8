//! `reverse --url`, relay-owned sessions: `subscriptions/listen` of the
//! 2026-07-28 clients of one identity, over the listen table of
//! `era/listen.rs` (one per bridge, made from the server's capabilities).
//!
//! A listen is acknowledged on its own response stream with what the server
//! can send; each URI the first listener names is sent `resources/subscribe`
//! on the bridge's session, the last listener leaving sends
//! `resources/unsubscribe`. The server's list-changed and
//! `resources/updated` notifications, from the GET stream or any call's
//! stream, go to the listens of that bridge that asked for them, stamped
//! with the listen's id, and nowhere else (none asked: dropped, counted
//! `unattributed_notification`). An open listen has no response timeout: it
//! ends when its client closes the stream (or the relay exits); a bridge
//! whose session is gone ends its listens with their closing result.

use serde_json::Value;

use super::*;
use crate::mcp::era::listen::Listeners;
use crate::proto::jsonrpc::Dropped;

impl Reverse {
    /// A client's `subscriptions/listen` (stateless session `skey`, id `id`)
    /// on ready bridge `key`.
    pub(super) fn http_bridge_listen(
        &mut self,
        skey: SKey,
        key: &str,
        id: &Id,
        params: Option<&str>,
    ) {
        let u = up_of(skey);
        let params: Option<Value> = params.and_then(|p| serde_json::from_str(p).ok());
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let Some(listens) = h.bridges.listens_mut(key) else {
            let e = jsonrpc::error_response(
                Some(id),
                -32603,
                "subscriptions/listen: the relay-owned session is not ready",
                Value::Null,
            );
            self.on_session_line(skey, &e);
            return;
        };
        match listens.open(&skey, id, params.as_ref()) {
            Ok(opened) => {
                h.bridges
                    .listening
                    .insert(skey, (key.to_string(), id.clone()));
                for line in opened.to_server {
                    self.http_bridge_post(u, key, line, None);
                }
                // Open until its client closes it: no response timeout.
                if let Some(t) = self
                    .sessions
                    .get_mut(&skey)
                    .and_then(|s| s.inflight.get_mut(id))
                    .and_then(|r| r.timer.take())
                {
                    self.timers.cancel(t);
                }
                self.push_to_stream(skey, opened.ack);
            }
            Err(refused) => {
                let metric = self.ups[u].metric;
                self.metrics.http_limit(metric, "era_listen_refused", 1);
                let now = self.now;
                if let Some(more) = self.ups[u]
                    .http_mut()
                    .and_then(|h| h.bridges.input_log.hit(now, 1))
                {
                    crate::log_info!(
                        "[{}] a 2026-07-28 client's subscriptions/listen refused: {} ({more} more \
                         since the last line)",
                        self.ups[u].cfg.name,
                        refused.message()
                    );
                }
                let e = jsonrpc::error_response(
                    Some(id),
                    crate::mcp::era::INVALID_PARAMS,
                    refused.message(),
                    Value::Null,
                );
                self.on_session_line(skey, &e);
            }
        }
    }

    /// A notification from bridge `key`'s server: true when it is a listen
    /// event (delivered to the listens that asked, or dropped).
    pub(super) fn http_bridge_listen_event(
        &mut self,
        u: usize,
        key: &str,
        method: &str,
        params: Option<&Value>,
    ) -> bool {
        if !crate::mcp::era::listen::is_listen_event(method) {
            return false;
        }
        let lines = self.ups[u]
            .http_mut()
            .and_then(|h| h.bridges.listens_mut(key))
            .map(|l| l.on_server_notification(method, params))
            .unwrap_or_default();
        if lines.is_empty() {
            self.dropped(u, Dropped::Unattributed);
        }
        for (skey, _, line) in lines {
            self.push_to_stream(skey, line);
        }
        true
    }

    /// Stateless session `skey` ends: its open listen, if any, is closed
    /// (the URIs no other listen holds are unsubscribed). True if it was one.
    pub(super) fn http_bridge_listen_end(&mut self, skey: SKey) -> bool {
        let u = up_of(skey);
        let Some(h) = self.ups[u].http_mut() else {
            return false;
        };
        let Some((key, id)) = h.bridges.listening.remove(&skey) else {
            return false;
        };
        let to_server = h
            .bridges
            .listens_mut(&key)
            .map(|l| l.close(&skey, &id))
            .unwrap_or_default();
        for line in to_server {
            self.http_bridge_post(u, &key, line, None);
        }
        true
    }

    /// The relay begins to drain: every open listen is ended with its
    /// closing result now (a listen is not a request the drain waits for;
    /// its client listens again elsewhere).
    pub(in crate::front::reverse) fn http_bridge_drain(&mut self, u: usize) {
        let keys = self.ups[u]
            .http()
            .map(|h| h.bridges.keys())
            .unwrap_or_default();
        for key in keys {
            self.http_bridge_end_listens(u, &key);
        }
    }

    /// Bridge `key`'s session is gone: each of its listens gets its closing
    /// result.
    pub(super) fn http_bridge_end_listens(&mut self, u: usize, key: &str) {
        let ended = self.ups[u]
            .http_mut()
            .and_then(|h| h.bridges.listens_mut(key))
            .map(Listeners::end_all)
            .unwrap_or_default();
        for (skey, _, line) in ended {
            if let Some(h) = self.ups[u].http_mut() {
                h.bridges.listening.remove(&skey);
            }
            self.on_session_line(skey, &line);
        }
    }
}
