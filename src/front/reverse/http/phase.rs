//! The upstream side of one `reverse --url` client session: its lifecycle
//! ([`UpPhase`], changed only by [`UpSession::set_phase`]) and what it holds.

use std::collections::HashMap;

use crate::proto::jsonrpc::Id;
use crate::reactor::TimerId;
use crate::upstream::hold::Held;
use crate::upstream::http::ExId;
use crate::upstream::reconnect::SseStream;

/// The life of the upstream side of one client session:
///
/// ```text
///  Initializing ──2xx to initialize──▶ Open ──client's notifications/initialized──▶ Live
///        └──────────── notifications/initialized first (rare) ──────────────────▶ Live
///
///  Live (with a session id) ──the GET stream is sent──▶ GetOpening { held }
///  GetOpening ──200 head; refused, failed or retrying; GET_HOLD; HOLD_CAP──▶ Live
/// ```
///
/// A `Live` phase learns its session id when the 2xx head comes after all.
/// `GetOpening` holds the session's POSTs so none overtakes the GET stream
/// (a server may send requests on it in answer to the first call); leaving
/// it hands them back to be sent in order.
///
/// It leaves the table from any phase when the client session ends (with a
/// DELETE when the upstream named a session; held messages are dropped, the
/// session's requests are answered by its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UpPhase {
    /// The client's `initialize` is on its way; no upstream session yet.
    Initializing,
    /// The upstream accepted `initialize`: its session id (none for a
    /// server without sessions) and, once the reply came, its version.
    Open {
        session_id: Option<String>,
        version: Option<String>,
    },
    /// Live, and the session's first GET stream is opening: the session's
    /// messages wait in `held` (at most `HOLD_CAP`, for at most `GET_HOLD`).
    GetOpening {
        session_id: String,
        version: Option<String>,
        held: Held,
    },
    /// The client sent `notifications/initialized`: the GET stream is
    /// wanted (when there is a session to hold it).
    Live {
        session_id: Option<String>,
        version: Option<String>,
    },
}

impl UpPhase {
    pub(super) fn name(&self) -> &'static str {
        match self {
            UpPhase::Initializing => "initializing",
            UpPhase::Open { .. } => "open",
            UpPhase::GetOpening { .. } => "get-opening",
            UpPhase::Live { .. } => "live",
        }
    }

    pub(super) fn can_become(&self, to: &UpPhase) -> bool {
        use UpPhase::*;
        matches!(
            (self, to),
            (Initializing, Open { .. } | Live { .. })
                | (Open { .. }, Open { .. } | Live { .. })
                | (
                    Live {
                        session_id: Some(_),
                        ..
                    },
                    GetOpening { .. }
                )
                | (GetOpening { .. }, GetOpening { .. } | Live { .. })
                | (Live { .. }, Live { .. })
        )
    }

    pub(super) fn session_id(&self) -> Option<&str> {
        match self {
            UpPhase::Open { session_id, .. } | UpPhase::Live { session_id, .. } => {
                session_id.as_deref()
            }
            UpPhase::GetOpening { session_id, .. } => Some(session_id),
            UpPhase::Initializing => None,
        }
    }

    pub(super) fn version(&self) -> Option<&str> {
        match self {
            UpPhase::Open { version, .. }
            | UpPhase::GetOpening { version, .. }
            | UpPhase::Live { version, .. } => version.as_deref(),
            UpPhase::Initializing => None,
        }
    }

    fn held_mut(&mut self) -> Option<&mut Held> {
        match self {
            UpPhase::GetOpening { held, .. } => Some(held),
            _ => None,
        }
    }
}

/// The upstream side of one client session.
pub(in crate::front::reverse) struct UpSession {
    pub(super) phase: UpPhase,
    pub(super) get: SseStream,
    pub(super) get_ex: Option<ExId>,
    pub(super) get_timer: Option<TimerId>,
    /// `GET_HOLD` of a `GetOpening` phase.
    pub(super) hold_timer: Option<TimerId>,
    /// Exchange carrying each request in flight, to cancel it on timeout.
    pub(super) requests: HashMap<Id, ExId>,
    /// A handshake-era client in front of a modern-only upstream
    /// (`era.rs`): answers `initialize` from `server/discover`, stamps.
    pub(super) stamper: Option<crate::mcp::era::stamper::Stamper>,
    /// `auto`: the client's `initialize`, until the upstream accepts it
    /// (a 400 refusal starts the stamper with it).
    pub(super) init_line: Option<Vec<u8>>,
}

impl UpSession {
    pub(super) fn new(get: SseStream) -> UpSession {
        UpSession {
            phase: UpPhase::Initializing,
            get,
            get_ex: None,
            get_timer: None,
            hold_timer: None,
            requests: HashMap::new(),
            stamper: None,
            init_line: None,
        }
    }

    /// The one place the phase changes. Held messages move with it: a phase
    /// that holds takes over the old phase's queue (ahead of its own); one
    /// that does not gets them returned, to be sent now, in order. A refused
    /// move returns nothing and keeps what the phase holds.
    pub(super) fn set_phase(&mut self, to: UpPhase) -> Held {
        let legal = self.phase.can_become(&to);
        debug_assert!(
            legal,
            "upstream session: illegal transition {} → {}",
            self.phase.name(),
            to.name()
        );
        if !legal {
            crate::log_error!(
                "upstream session: illegal transition {} → {} refused",
                self.phase.name(),
                to.name()
            );
            return Held::default();
        }
        let mut old = std::mem::replace(&mut self.phase, to);
        let taken = old.held_mut().map(std::mem::take).unwrap_or_default();
        match self.phase.held_mut() {
            Some(held) => {
                held.prepend(taken);
                Held::default()
            }
            None => taken,
        }
    }

    /// The upstream accepted `initialize` (its session id, if it named one).
    pub(super) fn opened(&mut self, session_id: Option<String>) {
        let to = match &self.phase {
            UpPhase::Live { version, .. } => UpPhase::Live {
                session_id,
                version: version.clone(),
            },
            // Its GET stream is already opening under the id it has.
            UpPhase::GetOpening { .. } => return,
            _ => UpPhase::Open {
                session_id,
                version: None,
            },
        };
        self.set_phase(to);
    }

    /// The version the upstream answered `initialize` with.
    pub(super) fn learned_version(&mut self, v: String) {
        let to = match &self.phase {
            UpPhase::Open { session_id, .. } => UpPhase::Open {
                session_id: session_id.clone(),
                version: Some(v),
            },
            UpPhase::GetOpening { session_id, .. } => UpPhase::GetOpening {
                session_id: session_id.clone(),
                version: Some(v),
                held: Held::default(),
            },
            UpPhase::Live { session_id, .. } => UpPhase::Live {
                session_id: session_id.clone(),
                version: Some(v),
            },
            UpPhase::Initializing => return,
        };
        self.set_phase(to);
    }

    /// The client sent `notifications/initialized`.
    pub(super) fn went_live(&mut self) {
        let (session_id, version) = match &self.phase {
            UpPhase::Open {
                session_id,
                version,
            } => (session_id.clone(), version.clone()),
            UpPhase::Initializing => (None, None),
            UpPhase::GetOpening { .. } | UpPhase::Live { .. } => return,
        };
        self.set_phase(UpPhase::Live {
            session_id,
            version,
        });
    }

    /// The session's first GET stream was sent: hold its messages until it
    /// opens. False (nothing changes) unless `Live` with a session id.
    pub(super) fn get_opening(&mut self) -> bool {
        let UpPhase::Live {
            session_id: Some(session_id),
            version,
        } = &self.phase
        else {
            return false;
        };
        let to = UpPhase::GetOpening {
            session_id: session_id.clone(),
            version: version.clone(),
            held: Held::default(),
        };
        self.set_phase(to);
        true
    }

    /// The GET stream opened, was refused or failed, or the hold is over:
    /// back to `Live`, with what was held, to be sent in order (None when
    /// nothing was held back).
    pub(super) fn get_settled(&mut self) -> Option<Held> {
        let UpPhase::GetOpening {
            session_id,
            version,
            ..
        } = &self.phase
        else {
            return None;
        };
        let to = UpPhase::Live {
            session_id: Some(session_id.clone()),
            version: version.clone(),
        };
        Some(self.set_phase(to))
    }

    /// Holds a message while the GET stream opens: true if held; false when
    /// it is to be sent now (not holding, or the hold is full).
    pub(super) fn hold(&mut self, line: &[u8], request: Option<&Id>) -> bool {
        match self.phase.held_mut() {
            Some(held) if !held.is_full() => {
                held.push(line.to_vec(), request.cloned());
                true
            }
            _ => false,
        }
    }

    /// Whether messages are held now.
    pub(super) fn holding(&self) -> bool {
        matches!(self.phase, UpPhase::GetOpening { .. })
    }

    /// Takes held request `id` out (it timed out before being sent).
    pub(super) fn unhold(&mut self, id: &Id) -> bool {
        self.phase.held_mut().is_some_and(|h| h.remove_request(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::backoff::Rng;
    use crate::upstream::reconnect::ReconnectConfig;

    fn opening(sid: &str) -> UpPhase {
        UpPhase::GetOpening {
            session_id: sid.to_string(),
            version: None,
            held: Held::default(),
        }
    }

    fn session(phase: UpPhase) -> UpSession {
        let mut up = UpSession::new(SseStream::new(ReconnectConfig::default(), Rng::seeded(1)));
        up.phase = phase;
        up
    }

    #[test]
    fn an_upstream_session_moves_only_along_its_lifecycle() {
        let open = |sid: Option<&str>| UpPhase::Open {
            session_id: sid.map(str::to_string),
            version: None,
        };
        let live = |sid: Option<&str>| UpPhase::Live {
            session_id: sid.map(str::to_string),
            version: Some("2025-11-25".into()),
        };
        let all = [
            UpPhase::Initializing,
            open(Some("s")),
            opening("s"),
            live(Some("s")),
            live(None),
        ];
        let mut legal = Vec::new();
        for from in &all {
            for to in &all {
                if from.can_become(to) {
                    let sid = |p: &UpPhase| {
                        if p.session_id().is_some() {
                            ""
                        } else {
                            "(no id)"
                        }
                    };
                    legal.push(format!(
                        "{}{} → {}{}",
                        from.name(),
                        sid(from),
                        to.name(),
                        sid(to)
                    ));
                }
            }
        }
        assert_eq!(
            legal,
            [
                "initializing(no id) → open",
                "initializing(no id) → live",
                "initializing(no id) → live(no id)",
                "open → open",
                "open → live",
                "open → live(no id)",
                "get-opening → get-opening",
                "get-opening → live",
                "get-opening → live(no id)",
                "live → get-opening",
                "live → live",
                "live → live(no id)",
                "live(no id) → live",
                "live(no id) → live(no id)",
            ]
        );
        assert_eq!(UpPhase::Initializing.session_id(), None);
        assert_eq!(live(Some("s")).session_id(), Some("s"));
        assert_eq!(opening("s").session_id(), Some("s"));
        assert_eq!(live(None).version(), Some("2025-11-25"));
    }

    #[test]
    fn get_opening_holds_messages_and_hands_them_back_in_order() {
        let mut up = session(UpPhase::Live {
            session_id: None,
            version: None,
        });
        assert!(!up.get_opening(), "no session, no GET stream, no hold");
        assert!(!up.hold(b"x", None));

        let mut up = session(UpPhase::Live {
            session_id: Some("s".into()),
            version: None,
        });
        assert!(up.get_opening());
        assert!(up.holding());
        assert!(up.hold(b"a", Some(&Id::Num(1))));
        assert!(up.hold(b"b", None));
        // The version learned while opening keeps what is held.
        up.learned_version("2025-11-25".into());
        assert!(up.hold(b"c", Some(&Id::Num(3))));
        assert!(up.unhold(&Id::Num(3)), "timed out while held");
        up.went_live();
        up.opened(Some("other".into()));
        assert_eq!(up.phase.session_id(), Some("s"));
        let held = up.get_settled().expect("was holding");
        let lines: Vec<Vec<u8>> = held.into_iter().map(|(l, _)| l).collect();
        assert_eq!(lines, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            up.phase,
            UpPhase::Live {
                session_id: Some("s".into()),
                version: Some("2025-11-25".into())
            }
        );
        assert!(up.get_settled().is_none(), "settled once");
        assert!(!up.hold(b"d", None), "live: sent at once");
    }

    #[test]
    fn a_full_hold_takes_no_more() {
        let mut up = session(UpPhase::Live {
            session_id: Some("s".into()),
            version: None,
        });
        assert!(up.get_opening());
        for _ in 0..crate::upstream::hold::HOLD_CAP {
            assert!(up.hold(b"m", None));
        }
        assert!(!up.hold(b"one more", None));
        assert_eq!(
            up.get_settled().map(|h| h.len()),
            Some(crate::upstream::hold::HOLD_CAP)
        );
    }
}
