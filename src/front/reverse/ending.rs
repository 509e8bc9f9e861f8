//! How client sessions end: their idle timeout, a client that left while
//! its session was being set up (`client_gone`), reclaiming idle sessions
//! for sessions waiting on a full pool, and `end_session` itself, the one
//! place a session leaves the table.

use super::*;

impl Reverse {
    pub(super) fn session_idle(&mut self, skey: SKey) {
        let timeout = self.ups[up_of(skey)].cfg.session_idle_timeout;
        let now = self.now;
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        s.idle_timer = None;
        let busy = !s.inflight.is_empty() || s.stream.is_some() || s.binding.is_waiting();
        let due = s.last_active + timeout;
        if !busy && now >= due {
            crate::log_info!("session {} idle for {timeout:?}; ending it", s.id);
            self.end_session(skey, "session idle timeout");
            return;
        }
        let next = if busy { now + timeout } else { due };
        let t = self.timers.insert(next, TimerKind::SessionIdle(skey));
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.idle_timer = Some(t);
        }
    }

    /// Ends a session: its requests in flight get `upstream_closed`, its
    /// stream ends, and its process is released (closed in session mode).
    pub(super) fn end_session(&mut self, skey: SKey, why: &str) {
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        crate::log_debug!("ending session {}: {why}", s.id);
        // A call waiting for its client's input is given up at the server.
        self.era_session_ending(skey);
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        // Every request in flight leaves the table first, then gets its one
        // answer; answering never ends a session (see `deliver`), so this
        // does not re-enter.
        let mut cancel = Vec::new();
        for (id, req) in s.inflight.drain() {
            if let Some(t) = req.timer {
                self.timers.cancel(t);
            }
            if !req.initialize {
                // MCP: initialize is never cancelled.
                let text = req
                    .id_text
                    .as_deref()
                    .map_or_else(|| id.to_json(), str::to_string);
                cancel.push(jsonrpc::cancelled_spelled(
                    &text,
                    &format!("mcp-relay: the session ended: {why}"),
                ));
            }
            self.answer_failed(
                skey,
                &id,
                req,
                RelayError::UpstreamClosed,
                &format!("The session ended: {why}"),
                json!({}),
            );
        }
        let Some(mut s) = self.sessions.remove(&skey) else {
            return;
        };
        if !s.stateless {
            // A stateless session was never named (`new_stateless_session`).
            self.by_id.remove(&s.id);
        }
        if let Some(t) = s.idle_timer.take() {
            self.timers.cancel(t);
        }
        if let Binding::Waiting {
            reply_to: ReplyTo::Client(tok),
            ..
        } = s.binding
        {
            let ka = self.waiting_keep_alive(tok);
            self.respond(
                tok,
                503,
                &[("retry-after", "1")],
                format!("{why}\n").as_bytes(),
                ka,
            );
        }
        if let Some(stream) = s.stream.take() {
            self.end_stream(stream);
        }
        for tok in std::mem::take(&mut s.cancelled_streams) {
            self.end_cancelled_stream(skey, tok);
        }
        let u = up_of(skey);
        match s.binding {
            Binding::Upstream => self.http_end(skey),
            Binding::Bound(conn) => {
                if let Some(p) = self.procs.get_mut(&conn) {
                    match &mut p.kind {
                        ProcKind::Session { session } => {
                            // Its requests are cancelled before the process
                            // is let go (a closed 2026-07-28 request above
                            // all: issue 11, class 8); a reply still on its
                            // way finds no session and is dropped.
                            *session = None;
                            if p.io.accepts_input() {
                                for c in &cancel {
                                    p.io.to_child.push_line(c);
                                }
                                self.work.dirty_procs.push(conn);
                            }
                            if !cancel.is_empty() {
                                self.proc_flush(conn);
                            }
                        }
                        ProcKind::Shared { mux, sessions, .. } => {
                            sessions.retain(|k| *k != skey);
                            for msg in mux.end_session(skey) {
                                if p.io.accepts_input() {
                                    p.io.to_child.push_line(&msg);
                                    self.work.dirty_procs.push(conn);
                                }
                            }
                        }
                    }
                }
                let actions = self.ups[u].pool(|p| p.release(conn.id, self.now));
                self.apply(u, actions);
            }
            Binding::Waiting { .. } => {
                let actions = self.ups[u].pool(|p| p.cancel_wait(skey));
                self.apply(u, actions);
            }
            // The pool hears about a process that went away through its
            // exit, not from here.
            Binding::New | Binding::Orphaned => {}
        }
        self.keep_spare(&mut s);
    }

    /// An answered 2026-07-28 session (the end-of-turn queue). When
    /// nothing of it is left but its binding to a shared process (no
    /// request in flight, no stream, no listen, no input round: what a
    /// plain or bridged call leaves), it leaves the table in one lookup:
    /// out of its process's list and the mux, its place on the process
    /// given back (`Pool::release`), its containers kept (`keep_spare`).
    /// Anything else takes `end_session`, which does the same and more.
    pub(super) fn end_answered(&mut self, skey: SKey) {
        const WHY: &str = "stateless request answered";
        let conn = match self.sessions.get(&skey) {
            Some(s)
                if s.stateless
                    && s.inflight.is_empty()
                    && s.stream.is_none()
                    && s.cancelled_streams.is_empty()
                    && s.stamp_input.is_none()
                    && s.stamp_subs.is_none()
                    && s.era.quiet() =>
            {
                s.binding.conn()
            }
            _ => None,
        };
        let Some(conn) = conn else {
            self.end_session(skey, WHY);
            return;
        };
        let Some(p) = self.procs.get_mut(&conn) else {
            self.end_session(skey, WHY);
            return;
        };
        let ProcKind::Shared { mux, sessions, .. } = &mut p.kind else {
            self.end_session(skey, WHY);
            return;
        };
        let Some(mut s) = self.sessions.remove(&skey) else {
            return;
        };
        crate::log_debug!("ending session {}: {WHY}", s.id);
        if let Some(at) = sessions.iter().position(|k| *k == skey) {
            sessions.remove(at);
        }
        for msg in mux.end_session(skey) {
            if p.io.accepts_input() {
                p.io.to_child.push_line(&msg);
                self.work.dirty_procs.push(conn);
            }
        }
        let u = conn.up;
        let actions = self.ups[u].pool(|p| p.release(conn.id, self.now));
        self.apply(u, actions);
        self.keep_spare(&mut s);
    }

    /// A client that closed its connection (EOF) while its POST waits for a
    /// process, for the answer to a 2026-07-28 request, or for the answer
    /// to its `initialize` is gone: nobody can use what it waits for. Its
    /// connection is closed now, which ends the session (`close_client`): a
    /// waiter leaves the queue, a bound session gives its process back, a
    /// stateless request is cancelled upstream (issue 11, classes 7 and 8).
    /// A half-close counts as leaving here, as in Go's net/http; any other
    /// request keeps its answer coming (MCP: a dropped connection is no
    /// cancellation). True if the connection was closed.
    pub(super) fn client_gone(&mut self, tok: Token) -> bool {
        let Some(c) = self.client(tok) else {
            return false;
        };
        let ClientState::Waiting(ex) = &c.state else {
            return false;
        };
        if !c.peer_closed {
            return false;
        }
        let (skey, initializing) = (ex.session, ex.session_header.is_some());
        let Some(s) = self.sessions.get(&skey) else {
            return false;
        };
        let what = if s.binding.is_waiting() {
            "waiting for a process"
        } else if s.stateless {
            "waiting for a 2026-07-28 answer"
        } else if initializing {
            "waiting for its initialize answer"
        } else {
            return false;
        };
        self.metrics.request("client_gone");
        if let Some(suppressed) = self.drop_log.check(self.now) {
            crate::log_debug!(
                "[{}] session {}: the client left while {what}; ending it{}",
                self.ups[up_of(skey)].cfg.name,
                s.id,
                if suppressed > 0 {
                    format!(" ({suppressed} similar lines suppressed)")
                } else {
                    String::new()
                }
            );
        }
        self.close_client(tok);
        true
    }

    /// Session mode, for each pool with starved waiters (full, nothing idle
    /// or starting for them): ends the least recently active idle sessions
    /// that have been idle `--session-reclaim-age`, one per starved waiter;
    /// each release frees the slot the waiter's process is spawned in. If
    /// none is old enough yet, a timer brings the loop back when one will
    /// be. Runs at the end of every turn, so a session that stops being busy
    /// counts from then; the waiter's queue timeout still bounds the wait.
    pub(super) fn reclaim_sessions(&mut self) {
        for u in 0..self.ups.len() {
            let min_age = self.ups[u].cfg.session_reclaim_age;
            if self.ups[u].starved() == 0 || min_age.is_none() {
                continue;
            }
            let mut candidates: Vec<Candidate<SKey>> = self
                .procs
                .iter()
                .filter(|(k, p)| k.up == u && p.life.in_service())
                .filter_map(|(_, p)| match p.kind {
                    ProcKind::Session { session } => session,
                    ProcKind::Shared { .. } => None,
                })
                .filter_map(|skey| {
                    let s = self.sessions.get(&skey)?;
                    Some(Candidate {
                        key: skey,
                        last_active: s.last_active,
                        busy: !s.inflight.is_empty() || s.stream.is_some() || s.stateless,
                    })
                })
                .collect();
            while self.ups[u].starved() > 0 {
                match reclaim::choose(&candidates, self.now, min_age) {
                    Choice::Reclaim(skey) => {
                        candidates.retain(|c| c.key != skey);
                        self.reclaim_session(skey);
                    }
                    Choice::RecheckAt(at) => {
                        self.arm_reclaim_timer(u, at);
                        break;
                    }
                    Choice::Nobody => break,
                }
            }
        }
    }

    fn reclaim_session(&mut self, skey: SKey) {
        let u = up_of(skey);
        let Some(s) = self.sessions.get(&skey) else {
            return;
        };
        let idle = self.now.saturating_duration_since(s.last_active);
        let idle = Duration::from_millis(idle.as_millis() as u64);
        crate::log_info!(
            "[{}] session {} reclaimed after {idle:?} idle (--session-reclaim-age {:?}): \
             its process goes to a session waiting for one; its client gets 404",
            self.ups[u].cfg.name,
            s.id,
            self.ups[u].cfg.session_reclaim_age.unwrap_or_default(),
        );
        self.metrics.session_reclaimed(self.ups[u].metric);
        self.end_session(skey, "reclaimed for a session waiting for a process");
    }

    fn arm_reclaim_timer(&mut self, u: usize, at: Instant) {
        match self.ups[u].reclaim_timer {
            Some((t, _)) if t == at => return,
            Some((_, old)) => {
                self.timers.cancel(old);
            }
            None => {}
        }
        let id = self.timers.insert(at, TimerKind::Reclaim(u));
        self.ups[u].reclaim_timer = Some((at, id));
    }

    /// Ends a session whose process went away: nothing is given back to
    /// the pool (it learns of the exit itself).
    pub(super) fn end_orphaned_session(&mut self, skey: SKey) {
        if let Some(s) = self.sessions.get_mut(&skey)
            && matches!(s.binding, Binding::Bound(_))
        {
            s.set_binding(Binding::Orphaned);
        }
        self.end_session(skey, "its server went away");
    }
}
