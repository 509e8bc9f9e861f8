//! `forward --url`: the upstream ended the session (404), or its GET stream
//! could not be restored. A new session is initialized from the client's
//! cached `initialize`, no sooner than `ReinitBackoff` allows (issue 11,
//! class 6: a server that 404s every GET, or answers it 429 with a long
//! `Retry-After`, made the relay re-initialize and GET again at once, tens
//! of thousands of times in seconds). The delay is logged with each new
//! session; the backoff itself bounds how often that line can come.

use super::*;

impl Forward {
    /// The upstream session is gone (404, or its stream could not be
    /// restored): a new one is initialized, through the backoff
    /// (`ReinitBackoff`: issue 11, class 6), no sooner than the server's
    /// `Retry-After` (`floor`). Until then the relay carries on with what it
    /// has: if the session is really gone, what it sends is answered 404 and
    /// failed; nothing waits for the timer.
    pub(super) fn session_lost(&mut self, floor: Option<std::time::Duration>) {
        let now = self.now;
        let Some(h) = self.server.http_mut() else {
            return;
        };
        if matches!(h.phase, Phase::Reinit { .. }) || h.reinit_timer.is_some() {
            return;
        }
        let at = h.reinit.on_lost(floor, now);
        if at <= now {
            self.reinit_now();
            return;
        }
        crate::log_info!(
            "[{}] upstream session ended; initializing a new one in {:?} (backoff, attempt {})",
            self.cfg.name,
            at - now,
            h.reinit.attempt()
        );
        let t = self.timers.insert(at, TimerKind::Reinit);
        if let Some(h) = self.http() {
            h.reinit_timer = Some(t);
        }
    }

    /// The backoff before a new session is over.
    pub(in crate::front::forward) fn on_reinit_timer(&mut self) {
        let Some(h) = self.http() else { return };
        h.reinit_timer = None;
        self.reinit_now();
    }

    /// Requests in flight fail, and a new session is initialized from the
    /// client's cached `initialize`.
    pub(super) fn reinit_now(&mut self) {
        let Some(h) = self.server.http_mut() else {
            return;
        };
        let reg = self.poll.registry();
        if matches!(h.phase, Phase::Reinit { .. }) {
            return;
        }
        h.session_id = None;
        h.get.stop();
        if let Some(ex) = h.get_ex.take() {
            h.client.cancel(ex, reg);
            h.carries.remove(&ex);
        }
        let caught: Vec<Id> = h.by_request.keys().cloned().collect();
        for id in caught {
            self.http_fail(
                &id,
                RelayError::UpstreamClosed,
                "The upstream session ended; the relay is starting a new one",
                json!({}),
            );
        }
        let Some(init) = self.cached_initialize.clone() else {
            crate::log_warn!(
                "[{}] upstream session ended before the client initialized",
                self.cfg.name
            );
            return;
        };
        let Some(line) = crate::front::forward::with_id(&init, &Id::Str(REINIT_ID.into())) else {
            return;
        };
        crate::log_info!(
            "[{}] upstream session ended; initializing a new one",
            self.cfg.name
        );
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        // What the old phase held waits on for the new session.
        h.set_phase(Phase::Reinit {
            held: Held::default(),
        });
        if let Some(t) = h.hold_timer.take() {
            self.timers.cancel(t);
        }
        let Some(h) = self.server.http_mut() else {
            return;
        };
        let req = Request::post(h.url.target.clone(), h.headers(false), line.clone());
        let ex = h.client.submit(req, reg, now);
        h.carries.insert(ex, Carry::Reinit);
        self.record(Direction::RelayToServer, &line);
    }

    pub(super) fn reinit_done(&mut self, ok: bool) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        if !matches!(h.phase, Phase::Reinit { .. }) {
            return;
        }
        let held = h.set_phase(Phase::Ready);
        if !ok {
            crate::log_error!(
                "[{}] could not initialize a new upstream session",
                self.cfg.name
            );
            for (_, request) in held {
                if let Some(id) = request {
                    self.http_fail(
                        &id,
                        RelayError::UpstreamClosed,
                        "The upstream session could not be re-created",
                        json!({}),
                    );
                }
            }
            return;
        }
        if let Some(n) = self.cached_initialized.clone() {
            let Some(h) = self.server.http_mut() else {
                return;
            };
            let req = Request::post(h.url.target.clone(), h.headers(false), n.clone());
            let ex = h.client.submit(req, reg, now);
            h.carries.insert(ex, Carry::Initialized);
            self.record(Direction::RelayToServer, &n);
        }
        // The new session's GET stream first: what waited is held again
        // until it is open.
        self.want_get();
        self.send_held(held);
    }
}
