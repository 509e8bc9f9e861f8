//! Per upstream: which era the relay speaks to it (`--upstream-protocol`).
//!
//! `legacy` and `modern` fix the verdict. `auto` probes once with
//! `server/discover` and remembers the answer for the upstream (every process
//! of a command upstream runs the same program; an HTTP upstream is one
//! server):
//!
//! ```text
//!            want()                 answer: modern ─────▶ Modern ──┐
//! Unknown ──────────▶ Probing ───── answer: anything else ─▶ Legacy ──┤ contradicted
//!    ▲                  │  │  ───── answer: -32022, disjoint ▶ Disjoint ┤ (auto, after
//!    │                  │  └─ probe timeout ──▶ Legacy (retire the     │  REPROBE_AFTER)
//!    │                  │        probed connection: it may be modern)  │
//!    └── transport error (no verdict) ◀┘                                │
//!    └──────────────────────────────────────────────────────────────────┘
//! ```
//!
//! A transport error (refused, reset, process gone) is no evidence either
//! way: back to `Unknown`, and the next client that needs the upstream probes
//! again. A settled verdict that the server later contradicts (a modern
//! verdict met with "method not found" for `server/discover`, say, after the
//! server was downgraded) goes back to `Unknown` too, at most once per
//! [`REPROBE_AFTER`] so a confused server cannot make the relay probe before
//! every request.

use std::time::{Duration, Instant};

use super::convert::DiscoverOutcome;
use super::{Era, UpstreamProtocol};

/// How long the relay waits for its `server/discover` probe (the official
/// clients wait about as long before they fall back).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A settled `auto` verdict is not re-opened sooner than this after it was
/// reached.
pub const REPROBE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unknown,
    Probing {
        deadline: Instant,
    },
    Modern {
        since: Instant,
    },
    Legacy {
        since: Instant,
    },
    /// A modern-only server naming no revision the relay speaks.
    Disjoint {
        since: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Unknown,
    Probing,
    Modern,
    Legacy,
    Disjoint,
}

fn tag(s: &State) -> Tag {
    match s {
        State::Unknown => Tag::Unknown,
        State::Probing { .. } => Tag::Probing,
        State::Modern { .. } => Tag::Modern,
        State::Legacy { .. } => Tag::Legacy,
        State::Disjoint { .. } => Tag::Disjoint,
    }
}

/// The transition table (only `auto` ever moves).
fn legal(from: Tag, to: Tag) -> bool {
    use Tag::*;
    matches!(
        (from, to),
        (Unknown, Probing)
            | (Probing, Modern | Legacy | Disjoint | Unknown)
            | (Modern | Legacy | Disjoint, Unknown)
    )
}

/// What the front does for a client message that needs the upstream's era.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Speak this era.
    Speak(Era),
    /// Send the probe now (`convert::discover_request`), hold the message.
    Probe,
    /// A probe is out: hold the message until it is answered.
    Wait,
    /// The server speaks no revision the relay does: answer -32022.
    Refuse,
}

/// What an answer or a timeout settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Held messages go out in this era.
    Era(Era),
    /// As `Era(Handshake)`, and the probed connection (process) is closed
    /// rather than initialized: a server serving both eras may have taken
    /// the late probe and locked that connection to the modern era.
    LegacyRetireProbed,
    /// Held messages are answered -32022.
    Refuse,
    /// No verdict (transport error): held messages are sent again through
    /// `want()`.
    Retry,
    /// Nothing was being probed (a late or stray answer).
    Ignored,
}

/// Counters the front exports as metrics (`era_probes_total{outcome}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub probes: u64,
    pub modern: u64,
    pub legacy: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub reopened: u64,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    knob: UpstreamProtocol,
    state: State,
    probe_timeout: Duration,
    pub stats: Stats,
}

impl Verdict {
    pub fn new(knob: UpstreamProtocol, probe_timeout: Duration, now: Instant) -> Verdict {
        let state = match knob {
            UpstreamProtocol::Legacy => State::Legacy { since: now },
            UpstreamProtocol::Modern => State::Modern { since: now },
            UpstreamProtocol::Auto => State::Unknown,
        };
        Verdict {
            knob,
            state,
            probe_timeout,
            stats: Stats::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn knob(&self) -> UpstreamProtocol {
        self.knob
    }

    /// The settled era, if any.
    pub fn era(&self) -> Option<Era> {
        match self.state {
            State::Modern { .. } => Some(Era::Modern),
            State::Legacy { .. } => Some(Era::Handshake),
            _ => None,
        }
    }

    /// When the probe out gives up (for the front's timer).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Probing { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// A client message needs the era.
    pub fn want(&mut self, now: Instant) -> Want {
        match self.state {
            State::Modern { .. } => Want::Speak(Era::Modern),
            State::Legacy { .. } => Want::Speak(Era::Handshake),
            State::Disjoint { .. } => Want::Refuse,
            State::Probing { .. } => Want::Wait,
            State::Unknown => {
                self.stats.probes += 1;
                self.set(State::Probing {
                    deadline: now + self.probe_timeout,
                });
                Want::Probe
            }
        }
    }

    /// The probe's answer.
    pub fn on_answer(&mut self, outcome: &DiscoverOutcome, now: Instant) -> Settled {
        if !matches!(self.state, State::Probing { .. }) {
            return Settled::Ignored;
        }
        match outcome {
            DiscoverOutcome::Modern { .. } => {
                self.stats.modern += 1;
                self.set(State::Modern { since: now });
                Settled::Era(Era::Modern)
            }
            DiscoverOutcome::Legacy => {
                self.stats.legacy += 1;
                self.set(State::Legacy { since: now });
                Settled::Era(Era::Handshake)
            }
            DiscoverOutcome::Incompatible { .. } => {
                self.set(State::Disjoint { since: now });
                Settled::Refuse
            }
        }
    }

    /// The probe failed below MCP (connection refused or reset, the
    /// process exited): no verdict.
    pub fn on_transport_error(&mut self) -> Settled {
        if !matches!(self.state, State::Probing { .. }) {
            return Settled::Ignored;
        }
        self.stats.errors += 1;
        self.set(State::Unknown);
        Settled::Retry
    }

    /// The timer: a probe past its deadline settles on the handshake era.
    pub fn on_tick(&mut self, now: Instant) -> Settled {
        match self.state {
            State::Probing { deadline } if now >= deadline => {
                self.stats.timeouts += 1;
                self.stats.legacy += 1;
                self.set(State::Legacy { since: now });
                Settled::LegacyRetireProbed
            }
            _ => Settled::Ignored,
        }
    }

    /// The server answered as the other era would (see the module doc).
    /// True when the verdict was re-opened (the next `want()` probes).
    pub fn on_contradiction(&mut self, now: Instant) -> bool {
        if self.knob != UpstreamProtocol::Auto {
            return false;
        }
        let since = match self.state {
            State::Modern { since } | State::Legacy { since } | State::Disjoint { since } => since,
            _ => return false,
        };
        if now.saturating_duration_since(since) < REPROBE_AFTER {
            return false;
        }
        self.stats.reopened += 1;
        self.set(State::Unknown);
        true
    }

    /// The one place the state changes.
    fn set(&mut self, to: State) {
        let (from, t) = (tag(&self.state), tag(&to));
        let ok = self.knob == UpstreamProtocol::Auto && legal(from, t);
        debug_assert!(
            ok,
            "era verdict: illegal move {from:?} → {t:?} ({:?})",
            self.knob
        );
        if !ok {
            crate::log_error!("era verdict: illegal move {from:?} → {t:?} refused");
            return;
        }
        self.state = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const ALL: [Tag; 5] = [
        Tag::Unknown,
        Tag::Probing,
        Tag::Modern,
        Tag::Legacy,
        Tag::Disjoint,
    ];

    fn modern() -> DiscoverOutcome {
        DiscoverOutcome::Modern {
            version: "2026-07-28".into(),
            result: Value::Null,
        }
    }

    #[test]
    fn the_table_allows_exactly_the_documented_moves() {
        let mut allowed = Vec::new();
        for from in ALL {
            for to in ALL {
                if legal(from, to) {
                    allowed.push((from, to));
                }
            }
        }
        use Tag::*;
        assert_eq!(
            allowed,
            vec![
                (Unknown, Probing),
                (Probing, Unknown),
                (Probing, Modern),
                (Probing, Legacy),
                (Probing, Disjoint),
                (Modern, Unknown),
                (Legacy, Unknown),
                (Disjoint, Unknown),
            ]
        );
    }

    #[test]
    fn fixed_knobs_never_probe_and_never_move() {
        let t0 = Instant::now();
        for (knob, era) in [
            (UpstreamProtocol::Legacy, Era::Handshake),
            (UpstreamProtocol::Modern, Era::Modern),
        ] {
            let mut v = Verdict::new(knob, PROBE_TIMEOUT, t0);
            assert_eq!(v.want(t0), Want::Speak(era));
            assert_eq!(v.on_answer(&DiscoverOutcome::Legacy, t0), Settled::Ignored);
            assert_eq!(v.on_answer(&modern(), t0), Settled::Ignored);
            assert_eq!(v.on_tick(t0 + Duration::from_secs(3600)), Settled::Ignored);
            assert!(!v.on_contradiction(t0 + Duration::from_secs(3600)));
            assert_eq!(v.on_transport_error(), Settled::Ignored);
            assert_eq!(v.era(), Some(era));
            assert_eq!(v.stats, Stats::default());
        }
    }

    #[test]
    fn auto_probes_once_and_remembers() {
        let t0 = Instant::now();
        let mut v = Verdict::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
        assert_eq!(v.era(), None);
        assert_eq!(v.want(t0), Want::Probe);
        assert_eq!(v.deadline(), Some(t0 + PROBE_TIMEOUT));
        // Everyone else waits for the one probe.
        for _ in 0..5 {
            assert_eq!(v.want(t0), Want::Wait);
        }
        assert_eq!(v.on_answer(&modern(), t0), Settled::Era(Era::Modern));
        assert_eq!(v.want(t0), Want::Speak(Era::Modern));
        assert_eq!(v.deadline(), None);
        assert_eq!(v.stats.probes, 1);
        // A second (late) answer changes nothing.
        assert_eq!(v.on_answer(&DiscoverOutcome::Legacy, t0), Settled::Ignored);
        assert_eq!(v.era(), Some(Era::Modern));
    }

    #[test]
    fn a_handshake_era_answer_settles_legacy_and_a_disjoint_one_refuses() {
        let t0 = Instant::now();
        let mut v = Verdict::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
        v.want(t0);
        assert_eq!(
            v.on_answer(&DiscoverOutcome::Legacy, t0),
            Settled::Era(Era::Handshake)
        );
        assert_eq!(v.want(t0), Want::Speak(Era::Handshake));
        let mut v = Verdict::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
        v.want(t0);
        let d = DiscoverOutcome::Incompatible {
            supported: vec!["2099-01-01".into()],
        };
        assert_eq!(v.on_answer(&d, t0), Settled::Refuse);
        assert_eq!(v.want(t0), Want::Refuse);
    }

    #[test]
    fn a_probe_times_out_on_the_fake_clock_into_legacy_and_retires_the_connection() {
        let t0 = Instant::now();
        let mut v = Verdict::new(UpstreamProtocol::Auto, Duration::from_secs(2), t0);
        v.want(t0);
        assert_eq!(
            v.on_tick(t0 + Duration::from_millis(1999)),
            Settled::Ignored
        );
        assert_eq!(v.want(t0 + Duration::from_millis(1999)), Want::Wait);
        assert_eq!(
            v.on_tick(t0 + Duration::from_secs(2)),
            Settled::LegacyRetireProbed
        );
        assert_eq!(v.era(), Some(Era::Handshake));
        assert_eq!((v.stats.timeouts, v.stats.legacy), (1, 1));
        // The answer arriving after the timeout is ignored.
        assert_eq!(
            v.on_answer(&modern(), t0 + Duration::from_secs(3)),
            Settled::Ignored
        );
    }

    #[test]
    fn a_transport_error_is_no_verdict() {
        let t0 = Instant::now();
        let mut v = Verdict::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
        v.want(t0);
        assert_eq!(v.on_transport_error(), Settled::Retry);
        assert_eq!(v.state(), State::Unknown);
        assert_eq!(v.want(t0), Want::Probe);
        assert_eq!(v.stats.probes, 2);
    }

    #[test]
    fn a_contradiction_reopens_the_verdict_at_most_once_per_window() {
        let t0 = Instant::now();
        let mut v = Verdict::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
        v.want(t0);
        v.on_answer(&modern(), t0);
        assert!(!v.on_contradiction(t0 + REPROBE_AFTER - Duration::from_millis(1)));
        assert_eq!(v.era(), Some(Era::Modern));
        assert!(v.on_contradiction(t0 + REPROBE_AFTER));
        assert_eq!(v.state(), State::Unknown);
        assert!(!v.on_contradiction(t0 + REPROBE_AFTER));
        assert_eq!(v.want(t0 + REPROBE_AFTER), Want::Probe);
        assert_eq!(v.stats.reopened, 1);
    }

    /// Seeded random drive of every public method: no illegal move (the
    /// `debug_assert!` in `set` would fire), the deadline exists exactly
    /// while probing, and a settled era agrees with `want`.
    #[test]
    fn random_drives_never_make_an_illegal_move() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let t0 = Instant::now();
        for _ in 0..200 {
            let mut v = Verdict::new(UpstreamProtocol::Auto, Duration::from_secs(1), t0);
            let mut now = t0;
            for _ in 0..100 {
                now += Duration::from_millis(next() % 40_000);
                match next() % 7 {
                    0 | 1 => {
                        v.want(now);
                    }
                    2 => {
                        v.on_answer(&modern(), now);
                    }
                    3 => {
                        v.on_answer(&DiscoverOutcome::Legacy, now);
                    }
                    4 => {
                        v.on_tick(now);
                    }
                    5 => {
                        v.on_transport_error();
                    }
                    _ => {
                        v.on_contradiction(now);
                    }
                }
                assert_eq!(
                    v.deadline().is_some(),
                    matches!(v.state(), State::Probing { .. })
                );
                if let Some(era) = v.era() {
                    assert_eq!(v.clone().want(now), Want::Speak(era));
                }
            }
        }
    }
}
