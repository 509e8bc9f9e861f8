//! `reverse --url`, relay-owned sessions: each ready bridge holds the GET
//! stream of its upstream session, as a client session does: opened once
//! the relay's `initialize` is answered, reconnected with the stream's
//! backoff and `Last-Event-ID` (`upstream/reconnect`), none when the server
//! refuses it (4xx other than 404). A 404, or a stream that cannot be
//! restored, means the session is gone: the bridge is forgotten and the
//! next request of its identity initializes a new one. What arrives is
//! routed by `bridge_calls.rs` (deferred replies, server requests,
//! notifications).
//!
//! The reconnection waits and the input bridges' waits are deadlines the
//! engine's poll honours (`Bridges::next_deadline`, `http_bridge_poll`), so
//! no timer of the loop is needed.

use std::time::SystemTime;

use super::*;

impl Reverse {
    /// Bridge `key` may want its GET stream (again).
    pub(super) fn http_bridge_want_get(&mut self, u: usize, key: &str) {
        let now = self.now;
        let Some(get) = self.ups[u].http_mut().and_then(|h| h.bridges.get_mut(key)) else {
            return;
        };
        let actions = get.stream.want(now);
        self.http_bridge_get_actions(u, key, actions);
    }

    fn http_bridge_get_actions(&mut self, u: usize, key: &str, actions: Vec<reconnect::Action>) {
        for a in actions {
            match a {
                reconnect::Action::Connect { last_event_id } => {
                    let Some((sid, version)) =
                        self.ups[u].http().and_then(|h| h.bridges.session_of(key))
                    else {
                        return;
                    };
                    let mut headers = vec![("accept".to_string(), "text/event-stream".to_string())];
                    if let Some(s) = sid {
                        headers.push(("mcp-session-id".into(), s));
                    }
                    headers.push(("mcp-protocol-version".into(), version));
                    if let Some(id) = last_event_id {
                        headers.push(("last-event-id".into(), id));
                    }
                    let now = self.now;
                    let reg = self.poll.registry();
                    let Some(h) = self.ups[u].http_mut() else {
                        return;
                    };
                    let req = Request::stream(h.url.target.clone(), headers);
                    let ex = h.client.submit(req, reg, now);
                    let skey = crate::front::reverse::session::skey_new(u, 0);
                    h.carries.insert(
                        ex,
                        (
                            skey,
                            Carry::BridgeGet {
                                key: key.to_string(),
                            },
                        ),
                    );
                    if let Some(get) = h.bridges.get_mut(key) {
                        get.ex = Some(ex);
                        get.wait = None;
                    }
                }
                reconnect::Action::Wait(at) => {
                    if let Some(get) = self.ups[u].http_mut().and_then(|h| h.bridges.get_mut(key)) {
                        get.wait = Some(at);
                    }
                }
                reconnect::Action::GiveUp => {
                    crate::log_warn!(
                        "[{}] the GET stream of a relay-owned session could not be restored; \
                         forgetting the session",
                        self.ups[u].cfg.name
                    );
                    self.http_bridge_gone(u, key);
                }
            }
        }
    }

    /// The head of bridge `key`'s GET.
    pub(super) fn http_bridge_get_head(
        &mut self,
        u: usize,
        key: &str,
        ex: ExId,
        status: u16,
        retry_after: Option<&str>,
    ) {
        let now = self.now;
        if status == 200 {
            if let Some(get) = self.ups[u].http_mut().and_then(|h| h.bridges.get_mut(key)) {
                get.stream.on_connected(now);
            }
            return;
        }
        self.forget(u, ex);
        let retry_after =
            retry_after.and_then(|v| reconnect::parse_retry_after(v, SystemTime::now()));
        self.http_bridge_get_failed(u, key, reconnect::Failure::Status(status), retry_after);
        let refused = self.ups[u]
            .http_mut()
            .and_then(|h| h.bridges.get_mut(key))
            .and_then(|g| g.stream.refused());
        if let Some(status) = refused {
            crate::log_debug!(
                "[{}] no GET stream on a relay-owned session (HTTP {status}): server messages \
                 come only on call responses",
                self.ups[u].cfg.name
            );
        }
    }

    /// An event on bridge `key`'s GET stream.
    pub(super) fn http_bridge_get_message(
        &mut self,
        u: usize,
        key: &str,
        data: &[u8],
        id: Option<&str>,
        retry: Option<u64>,
    ) {
        let now = self.now;
        let Some(get) = self.ups[u].http_mut().and_then(|h| h.bridges.get_mut(key)) else {
            return;
        };
        // Never an event twice across reconnects.
        if !get.stream.on_event(id, retry, now) || data.is_empty() {
            return;
        }
        self.http_bridge_up_message(u, key, None, data);
    }

    /// Bridge `key`'s GET stream failed or ended.
    pub(super) fn http_bridge_get_failed(
        &mut self,
        u: usize,
        key: &str,
        kind: reconnect::Failure,
        retry_after: Option<std::time::Duration>,
    ) {
        let now = self.now;
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let Some(get) = h.bridges.get_mut(key) else {
            return;
        };
        get.ex = None;
        let actions = get.stream.on_failure(kind, retry_after, &mut h.drops, now);
        self.http_bridge_get_actions(u, key, actions);
    }

    /// The bridges' deadlines: the exit's wait, GET streams to reconnect,
    /// calls waiting for a client's retry.
    pub(super) fn http_bridge_poll(&mut self, u: usize) {
        let now = self.now;
        self.http_bridge_exit_poll(u);
        let due = self.ups[u]
            .http()
            .map(|h| h.bridges.gets_due(now))
            .unwrap_or_default();
        for key in due {
            let Some(get) = self.ups[u].http_mut().and_then(|h| h.bridges.get_mut(&key)) else {
                continue;
            };
            get.wait = None;
            let actions = get.stream.on_timer(now);
            self.http_bridge_get_actions(u, &key, actions);
        }
        self.http_bridge_input_tick(u);
    }
}
