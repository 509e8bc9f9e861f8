//! The upstream side of one `reverse --url` client session: its lifecycle
//! ([`UpPhase`], changed only by [`UpSession::set_phase`]) and what it holds.

use std::collections::HashMap;

use crate::proto::jsonrpc::Id;
use crate::reactor::TimerId;
use crate::upstream::http::ExId;
use crate::upstream::reconnect::SseStream;

/// The life of the upstream side of one client session:
///
/// ```text
///  Initializing ──2xx to initialize──▶ Open ──client's notifications/initialized──▶ Live
///        └──────────── notifications/initialized first (rare) ──────────────────▶ Live
/// ```
///
/// A `Live` phase learns its session id when the 2xx head comes after all.
///
/// It leaves the table from any phase when the client session ends (with a
/// DELETE when the upstream named a session).
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
            UpPhase::Live { .. } => "live",
        }
    }

    pub(super) fn can_become(&self, to: &UpPhase) -> bool {
        use UpPhase::*;
        matches!(
            (self, to),
            (Initializing, Open { .. } | Live { .. })
                | (Open { .. }, Open { .. } | Live { .. })
                | (Live { .. }, Live { .. })
        )
    }

    pub(super) fn session_id(&self) -> Option<&str> {
        match self {
            UpPhase::Open { session_id, .. } | UpPhase::Live { session_id, .. } => {
                session_id.as_deref()
            }
            UpPhase::Initializing => None,
        }
    }

    pub(super) fn version(&self) -> Option<&str> {
        match self {
            UpPhase::Open { version, .. } | UpPhase::Live { version, .. } => version.as_deref(),
            UpPhase::Initializing => None,
        }
    }
}

/// The upstream side of one client session.
pub(in crate::front::reverse) struct UpSession {
    pub(super) phase: UpPhase,
    pub(super) get: SseStream,
    pub(super) get_ex: Option<ExId>,
    pub(super) get_timer: Option<TimerId>,
    /// Exchange carrying each request in flight, to cancel it on timeout.
    pub(super) requests: HashMap<Id, ExId>,
}

impl UpSession {
    /// The one place the phase changes.
    pub(super) fn set_phase(&mut self, to: UpPhase) {
        let legal = self.phase.can_become(&to);
        debug_assert!(
            legal,
            "upstream session: illegal transition {} → {}",
            self.phase.name(),
            to.name()
        );
        if legal {
            self.phase = to;
        } else {
            log::error!(
                "upstream session: illegal transition {} → {} refused",
                self.phase.name(),
                to.name()
            );
        }
    }

    /// The upstream accepted `initialize` (its session id, if it named one).
    pub(super) fn opened(&mut self, session_id: Option<String>) {
        let to = match &self.phase {
            UpPhase::Live { version, .. } => UpPhase::Live {
                session_id,
                version: version.clone(),
            },
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
            UpPhase::Live { .. } => return,
        };
        self.set_phase(UpPhase::Live {
            session_id,
            version,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let all = [UpPhase::Initializing, open(Some("s")), live(Some("s"))];
        let mut legal = Vec::new();
        for from in &all {
            for to in &all {
                if from.can_become(to) {
                    legal.push(format!("{} → {}", from.name(), to.name()));
                }
            }
        }
        assert_eq!(
            legal,
            [
                "initializing → open",
                "initializing → live",
                "open → open",
                "open → live",
                "live → live"
            ]
        );
        assert_eq!(UpPhase::Initializing.session_id(), None);
        assert_eq!(live(Some("s")).session_id(), Some("s"));
        assert_eq!(live(None).version(), Some("2025-11-25"));
    }
}
