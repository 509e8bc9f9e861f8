//! `forward --url`: the session's GET stream. Opened after the client's
//! `notifications/initialized` (the client's next messages wait in
//! `Phase::GetOpening` until it is open, refused or failed, at most
//! `GET_HOLD`), kept open with backoff, given up by starting a new session
//! (through `ReinitBackoff`). A GET refused with 405, 400, 403 or any other
//! status that is neither 404 nor transient means the server has no GET
//! stream: it is not asked for again, and the session goes on.

use super::*;

impl Forward {
    /// Opens the GET stream if it is wanted and not already open or pending.
    pub(super) fn want_get(&mut self) {
        let now = self.now;
        let Some(h) = self.http() else { return };
        if !h.initialized || h.legacy.is_some() || !h.phase.is_ready() || h.session_id.is_none() {
            return;
        }
        let actions = h.get.want(now);
        let connect = actions
            .iter()
            .any(|a| matches!(a, reconnect::Action::Connect { .. }));
        if connect {
            // The session's first GET stream: its next POSTs wait for it.
            h.set_phase(Phase::GetOpening {
                held: Held::default(),
            });
            let t = self.timers.insert(now + GET_HOLD, TimerKind::GetHold);
            if let Some(h) = self.http()
                && let Some(old) = h.hold_timer.replace(t)
            {
                self.timers.cancel(old);
            }
        }
        self.get_actions(actions);
    }

    /// The GET stream opened, was refused or failed, or the hold is over:
    /// what waited goes out, in order.
    pub(super) fn get_settled(&mut self) {
        let Some(h) = self.http() else { return };
        if !matches!(h.phase, Phase::GetOpening { .. }) {
            return;
        }
        let held = h.set_phase(Phase::Ready);
        if let Some(t) = h.hold_timer.take() {
            self.timers.cancel(t);
        }
        self.send_held(held);
    }

    /// Sends what a phase held, in order; a request that timed out while
    /// held is not sent.
    pub(super) fn send_held(&mut self, held: Held) {
        for (line, request) in held {
            if let Some(id) = &request
                && !self.pending.contains(id)
            {
                continue;
            }
            self.http_send(&line, request);
        }
    }

    /// `GET_HOLD` is over and the GET stream is still not open.
    pub(in crate::front::forward) fn on_get_hold_timer(&mut self) {
        let Some(h) = self.http() else { return };
        h.hold_timer = None;
        if matches!(h.phase, Phase::GetOpening { .. }) {
            crate::log_debug!(
                "[{}] GET stream not open within {GET_HOLD:?}; sending what waited",
                self.cfg.name
            );
            self.get_settled();
        }
    }

    pub(super) fn get_actions(&mut self, actions: Vec<reconnect::Action>) {
        for a in actions {
            match a {
                reconnect::Action::Connect { last_event_id } => {
                    let now = self.now;
                    let reg = self.poll.registry();
                    let Some(h) = self.server.http_mut() else {
                        return;
                    };
                    let mut headers = h.headers(true);
                    if let Some(id) = last_event_id {
                        headers.push(("last-event-id".into(), id));
                    }
                    let req = Request::stream(h.url.target.clone(), headers);
                    let ex = h.client.submit(req, reg, now);
                    h.get_ex = Some(ex);
                    h.carries.insert(ex, Carry::Get);
                }
                reconnect::Action::Wait(at) => {
                    let t = self.timers.insert(at, TimerKind::Reconnect);
                    if let Some(h) = self.http()
                        && let Some(old) = h.get_timer.replace(t)
                    {
                        self.timers.cancel(old);
                    }
                }
                reconnect::Action::GiveUp => {
                    crate::log_warn!(
                        "[{}] GET stream could not be restored; starting a new session",
                        self.cfg.name
                    );
                    let floor = self.http().and_then(|h| h.get_floor.take());
                    self.session_lost(floor);
                }
            }
        }
    }

    pub(in crate::front::forward) fn on_reconnect_timer(&mut self) {
        let now = self.now;
        let Some(h) = self.http() else { return };
        h.get_timer = None;
        let actions = h.get.on_timer(now);
        self.get_actions(actions);
    }
}
