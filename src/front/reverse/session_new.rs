//! Creating sessions: a handshake-era session with its random id, and a
//! 2026-07-28 request's one-shot session, which reuses what the previous
//! one left (`Spare`).

use super::session::{Binding, ReplyTo, Session};
use super::*;

/// What an ended 2026-07-28 one-request session leaves for the next: its
/// id's and version's buffers and its emptied request table (which keeps
/// its capacity), so a stream of stateless requests does not allocate and
/// free them each time (issue 13). One slot (`Reverse::spare_stateless`).
#[derive(Default)]
pub(super) struct Spare {
    id: String,
    version: String,
    inflight: Inflight<ReplyTo>,
}

impl Reverse {
    pub(super) fn new_session(
        &mut self,
        u: usize,
        token: Option<usize>,
        version: &str,
        legacy: bool,
    ) -> Option<SKey> {
        let id = match new_session_id() {
            Ok(id) => id,
            Err(e) => {
                crate::log_error!("no randomness for a session id: {e}");
                return None;
            }
        };
        Some(self.insert_session(u, id, token, version, legacy, false))
    }

    /// A 2026-07-28 request's one-shot session: never named to the client,
    /// so it needs no random id and no idle timer.
    pub(super) fn new_stateless_session(&mut self, u: usize, token: Option<usize>) -> SKey {
        // "stateless-N", written without the formatting machinery (one a
        // request: issue 13).
        // The previous one's emptied parts, if it left them: no allocation
        // for its id, version or request table.
        let Spare {
            mut id,
            mut version,
            inflight,
        } = self.spare_stateless.take().unwrap_or_default();
        id.clear();
        id.push_str("stateless-");
        id.push_str(crate::proto::decimal::Decimal::new(self.next_key).as_str());
        if version != STATELESS_VERSION {
            version.clear();
            version.push_str(STATELESS_VERSION);
        }
        self.insert_session_with(u, id, token, version, inflight, false, true)
    }

    /// Keeps an ending stateless session's containers for the next one, in
    /// the one spare slot (a second left at the same time is freed). Only
    /// an empty request table is kept.
    pub(super) fn keep_spare(&mut self, s: &mut Session) {
        if !s.stateless || !s.inflight.is_empty() || self.spare_stateless.is_some() {
            return;
        }
        // Empty, and so no progress token is left either (`Inflight::check`).
        s.inflight.clear();
        self.spare_stateless = Some(Spare {
            id: std::mem::take(&mut s.id),
            version: std::mem::take(&mut s.version),
            inflight: std::mem::take(&mut s.inflight),
        });
    }

    pub(super) fn insert_session(
        &mut self,
        u: usize,
        id: String,
        token: Option<usize>,
        version: &str,
        legacy: bool,
        stateless: bool,
    ) -> SKey {
        let version = version.to_string();
        self.insert_session_with(
            u,
            id,
            token,
            version,
            Inflight::default(),
            legacy,
            stateless,
        )
    }

    /// `insert_session` with the session's version and (empty) request
    /// table given.
    #[allow(clippy::too_many_arguments)]
    fn insert_session_with(
        &mut self,
        u: usize,
        id: String,
        token: Option<usize>,
        version: String,
        inflight: Inflight<ReplyTo>,
        legacy: bool,
        stateless: bool,
    ) -> SKey {
        let skey = skey_new(u, self.next_key);
        self.next_key += 1;
        let idle = self.ups[u].cfg.session_idle_timeout;
        let idle_timer = (!stateless && !idle.is_zero()).then(|| {
            self.timers
                .insert(self.now + idle, TimerKind::SessionIdle(skey))
        });
        if !stateless {
            self.by_id.insert(id.clone(), skey);
        }
        let replay = if stateless {
            0
        } else {
            self.ups[u].cfg.replay_buffer
        };
        self.sessions.insert(
            skey,
            Session {
                id,
                token,
                version,
                binding: Binding::New,
                inflight,
                stream: None,
                legacy,
                replay: ReplayBuffer::new(replay),
                next_event: 1,
                undelivered: VecDeque::new(),
                cancelled_streams: Vec::new(),
                stamp_input: None,
                stamp_subs: None,
                last_active: self.now,
                idle_timer,
                stateless,
                era: era::SessionEra::Plain,
                stamp: None,
            },
        );
        skey
    }
}
