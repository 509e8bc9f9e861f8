//! The `forward --url` session's phase ([`Phase`]), changed only by
//! [`HttpUpstream::set_phase`], and the client messages each phase holds.

use super::HttpUpstream;
use crate::proto::jsonrpc::Id;
use crate::upstream::hold::Held;

/// Where the upstream session stands, for the client messages that arrive:
///
/// ```text
///  Ready ──client's initialize──▶ Initializing ──its answer (or failure)──▶ Ready
///  Ready ──the GET stream is sent──▶ GetOpening ──200 head; refused, failed
///                                                 or retrying; GET_HOLD; HOLD_CAP──▶ Ready
///  Ready, Initializing, GetOpening ──session lost (404, GET gave up)──▶ Reinit
///  Reinit ──the new session's initialize answered (or failed)──▶ Ready
/// ```
///
/// Every phase but `Ready` holds the client's messages, in order; they move
/// with the phase (into `Reinit`) or are handed back on `Ready`, to be sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Messages go straight through.
    Ready,
    /// The client's `initialize` is on its way: what follows waits for the
    /// session id it brings back (HTTP requests may overtake each other).
    Initializing { held: Held },
    /// The GET stream of a new session is opening: what follows waits for
    /// it, so that a server sending requests on it in answer to the next
    /// call finds it (at most `HOLD_CAP` messages, for at most `GET_HOLD`).
    GetOpening { held: Held },
    /// Creating a new session after the old one ended; client messages wait.
    Reinit { held: Held },
}

impl Phase {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Phase::Ready => "ready",
            Phase::Initializing { .. } => "initializing",
            Phase::GetOpening { .. } => "get-opening",
            Phase::Reinit { .. } => "reinit",
        }
    }

    pub(super) fn can_become(&self, to: &Phase) -> bool {
        use Phase::*;
        matches!(
            (self, to),
            (
                Ready,
                Initializing { .. } | GetOpening { .. } | Reinit { .. }
            ) | (
                Initializing { .. } | GetOpening { .. },
                Ready | Reinit { .. }
            ) | (Reinit { .. }, Ready)
        )
    }

    fn held_mut(&mut self) -> Option<&mut Held> {
        match self {
            Phase::Ready => None,
            Phase::Initializing { held } | Phase::GetOpening { held } | Phase::Reinit { held } => {
                Some(held)
            }
        }
    }

    pub(super) fn is_ready(&self) -> bool {
        matches!(self, Phase::Ready)
    }

    /// Holds a client message unless `Ready` (true: held). `GetOpening`
    /// takes at most `HOLD_CAP`; past it, false.
    pub(super) fn hold(&mut self, line: &[u8], request: Option<&Id>) -> bool {
        let capped = matches!(self, Phase::GetOpening { .. });
        match self.held_mut() {
            Some(held) if !(capped && held.is_full()) => {
                held.push(line.to_vec(), request.cloned());
                true
            }
            _ => false,
        }
    }

    /// Takes held request `id` out (it timed out before being sent).
    pub(super) fn unhold(&mut self, id: &Id) -> bool {
        self.held_mut().is_some_and(|h| h.remove_request(id))
    }

    /// Replaces `self` with `to`, moving what it held: into `to` if it
    /// holds (ahead of its own), else returned.
    fn replace(&mut self, to: Phase) -> Held {
        let mut old = std::mem::replace(self, to);
        let taken = old.held_mut().map(std::mem::take).unwrap_or_default();
        match self.held_mut() {
            Some(held) => {
                held.prepend(taken);
                Held::default()
            }
            None => taken,
        }
    }
}

impl HttpUpstream {
    /// The one place the phase changes. Held messages move with it: a phase
    /// that holds takes over the old phase's queue (ahead of its own);
    /// `Ready` gets them returned, to be sent now, in order. A refused move
    /// returns nothing and keeps what the phase holds.
    pub(super) fn set_phase(&mut self, to: Phase) -> Held {
        let legal = self.phase.can_become(&to);
        debug_assert!(
            legal,
            "forward --url: illegal transition {} → {}",
            self.phase.name(),
            to.name()
        );
        if !legal {
            crate::log_error!(
                "forward --url: illegal transition {} → {} refused",
                self.phase.name(),
                to.name()
            );
            return Held::default();
        }
        self.phase.replace(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::hold::HOLD_CAP;

    fn all() -> [Phase; 4] {
        [
            Phase::Ready,
            Phase::Initializing {
                held: Held::default(),
            },
            Phase::GetOpening {
                held: Held::default(),
            },
            Phase::Reinit {
                held: Held::default(),
            },
        ]
    }

    #[test]
    fn the_phase_moves_only_along_its_lifecycle() {
        let mut legal = Vec::new();
        for from in &all() {
            for to in &all() {
                if from.can_become(to) {
                    legal.push(format!("{} → {}", from.name(), to.name()));
                }
            }
        }
        assert_eq!(
            legal,
            [
                "ready → initializing",
                "ready → get-opening",
                "ready → reinit",
                "initializing → ready",
                "initializing → reinit",
                "get-opening → ready",
                "get-opening → reinit",
                "reinit → ready",
            ]
        );
    }

    #[test]
    fn held_messages_move_with_the_phase_and_come_back_on_ready() {
        let mut p = Phase::GetOpening {
            held: Held::default(),
        };
        assert!(p.hold(b"a", Some(&Id::Num(1))));
        assert!(p.hold(b"x", Some(&Id::Num(9))));
        assert!(p.unhold(&Id::Num(9)), "timed out while held");
        let back = p.replace(Phase::Reinit {
            held: Held::default(),
        });
        assert!(back.is_empty(), "carried into Reinit, not handed back");
        assert!(p.hold(b"b", None));
        let back = p.replace(Phase::Ready);
        let lines: Vec<Vec<u8>> = back.into_iter().map(|(l, _)| l).collect();
        assert_eq!(lines, [b"a".to_vec(), b"b".to_vec()]);
        assert!(p.is_ready());
        assert!(!p.hold(b"c", None), "ready: sent at once");
    }

    #[test]
    fn only_get_opening_is_capped() {
        let mut opening = Phase::GetOpening {
            held: Held::default(),
        };
        let mut reinit = Phase::Reinit {
            held: Held::default(),
        };
        for _ in 0..HOLD_CAP {
            assert!(opening.hold(b"m", None));
            assert!(reinit.hold(b"m", None));
        }
        assert!(!opening.hold(b"one more", None), "past HOLD_CAP: send");
        assert!(reinit.hold(b"one more", None));
        assert_eq!(opening.replace(Phase::Ready).len(), HOLD_CAP);
    }
}
