//! `reverse --url`: an exchange that ended, with its whole answer (`Done`)
//! or without (`Failed`): what follows for the request, the GET stream, the
//! era probe and the bridge sessions.

use super::*;

impl Reverse {
    pub(super) fn http_done(&mut self, u: usize, ex: ExId) {
        let Some((skey, carry)) = self.carry(u, ex) else {
            return;
        };
        let now = self.now;
        self.forget(u, ex);
        match &carry {
            // Ended without an answer.
            Carry::Probe => return self.http_probe_answered(u, None),
            Carry::BridgeInit { key } => {
                return self.http_bridge_init_failed(u, key, "no answer to initialize");
            }
            _ => {}
        }
        if let Carry::BridgeGet { key } = &carry {
            return self.http_bridge_get_failed(u, key, reconnect::Failure::Dropped, None);
        }
        if let Carry::Get = carry {
            let kind = reconnect::Failure::Dropped;
            let Some(h) = self.ups[u].http_mut() else {
                return;
            };
            if let Some(actions) = h.get_failed(skey, kind, None, now) {
                self.http_get_actions(skey, actions);
            }
            self.http_get_settled(skey);
        } else if let Carry::Post {
            request: Some(id), ..
        } = carry
            && self
                .sessions
                .get(&skey)
                .is_some_and(|s| s.inflight.contains(&id))
        {
            // The POST stream ended before its reply (2025-11-25 polling):
            // the reply comes on the GET stream.
            self.http_want_get(skey);
        }
    }

    pub(super) fn http_failed(&mut self, u: usize, ex: ExId, failure: Failure) {
        let Some((skey, carry)) = self.carry(u, ex) else {
            return;
        };
        let now = self.now;
        self.forget(u, ex);
        match carry {
            Carry::Post {
                request: Some(id),
                initialize,
            } => {
                crate::log_warn!(
                    "[{}] request {id}: {}",
                    self.ups[u].cfg.name,
                    failure.detail()
                );
                if crate::mcp::era::stamper::Stamper::is_own(&id) {
                    let line = jsonrpc::error_response(
                        Some(&id),
                        RelayError::from_http_kind(failure.kind()).code(),
                        &format!("server/discover failed: {}", failure.detail()),
                        json!({}),
                    );
                    self.http_discovered(skey, &line);
                    return;
                }
                if initialize {
                    self.no_session_header(skey, &id);
                }
                self.fail_request(
                    skey,
                    &id,
                    RelayError::from_http_kind(failure.kind()),
                    &format!("Upstream request failed: {}", failure.detail()),
                    json!({}),
                );
                if initialize {
                    self.end_session(skey, "initialize could not reach the upstream");
                }
            }
            Carry::Get => {
                let kind = failure.for_reconnect();
                let Some(h) = self.ups[u].http_mut() else {
                    return;
                };
                if let Some(actions) = h.get_failed(skey, kind, None, now) {
                    self.http_get_actions(skey, actions);
                }
                self.http_get_settled(skey);
            }
            Carry::Probe => self.http_probe_failed(u),
            Carry::BridgeInit { key } => self.http_bridge_init_failed(u, &key, &failure.detail()),
            Carry::BridgePost {
                request: Some(up), ..
            } => self.http_bridge_post_failed(
                u,
                &up,
                RelayError::from_http_kind(failure.kind()),
                &format!("Upstream request failed: {}", failure.detail()),
                json!({}),
            ),
            Carry::BridgeGet { key } => {
                self.http_bridge_get_failed(u, &key, failure.for_reconnect(), None)
            }
            Carry::BridgePost { request: None, .. }
            | Carry::Post { request: None, .. }
            | Carry::Delete => {
                crate::log_debug!(
                    "[{}] upstream notification or DELETE failed: {}",
                    self.ups[u].cfg.name,
                    failure.detail()
                );
            }
        }
    }
}
