//! The relay's own lifecycle in `reverse`: from serving to exit.
//!
//! ```text
//!            signal                drain time over          nothing in flight,
//! Serving ─────────▶ Draining ───────────────────▶ Grace ───or grace over────▶ Final ──▶ Exit
//!                       │ (healthz 503, new           │                      ▲  │ forced on a 2nd
//!                       │  sessions 503, existing     │ 2nd signal           │  │ signal or the
//!                       │  ones served)               └──────────────────────┘  │ hard stop
//!                       └─────────────── 2nd signal ───────────────────────────┘
//! ```
//!
//! - *Draining*: the relay stays visible to a load balancer (`/healthz` 503)
//!   for `--drain-time`, even when idle, so it is taken out of rotation
//!   before the listeners close.
//! - *Grace*: waiting for requests in flight, up to `--shutdown-grace` from
//!   the signal.
//! - *Final*: listeners closed, sessions ended, processes closing; when the
//!   processes are reaped and the clients have their output (or the stop is
//!   forced), the relay exits.
//!
//! Sans-I/O: the owner reports signals, timers and "nothing is in flight";
//! the machine answers with [`Verdict`]s and never reads the clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining {
        drain_until: Instant,
        grace_until: Instant,
    },
    Grace {
        grace_until: Instant,
    },
    /// `forced`: exit once the processes are reaped, whatever the clients.
    Final {
        forced: bool,
    },
    Exit,
}

/// What the owner must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stop new sessions (the pools stop spawning), and wake up at each of
    /// these instants.
    BeginDrain { wake: [Instant; 2] },
    /// Close the listeners, end every session, close every process, and
    /// wake up at `hard_stop` in case something never goes away.
    EnterFinal { hard_stop: Instant },
    /// Kill every process now (SIGKILL).
    KillAll,
}

#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// `--drain-time` (capped by the grace).
    pub drain_time: Duration,
    /// `--shutdown-grace`.
    pub grace: Duration,
    /// From the final phase to the hard stop.
    pub hard_stop: Duration,
}

#[derive(Debug)]
pub struct Shutdown {
    cfg: ShutdownConfig,
    phase: Phase,
}

impl Shutdown {
    pub fn new(cfg: ShutdownConfig) -> Shutdown {
        Shutdown {
            cfg,
            phase: Phase::Serving,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// New sessions are refused and keep-alive is off from the first signal.
    pub fn is_stopping(&self) -> bool {
        self.phase != Phase::Serving
    }

    /// The listeners are closed and sessions are over.
    pub fn is_final(&self) -> bool {
        matches!(self.phase, Phase::Final { .. } | Phase::Exit)
    }

    /// SIGTERM or SIGINT. The first starts the drain; any later one forces
    /// the stop.
    pub fn on_signal(&mut self, now: Instant) -> Vec<Verdict> {
        match self.phase {
            Phase::Serving => {
                let grace_until = now + self.cfg.grace;
                let drain_until = now + self.cfg.drain_time.min(self.cfg.grace);
                self.set(Phase::Draining {
                    drain_until,
                    grace_until,
                });
                vec![Verdict::BeginDrain {
                    wake: [drain_until, grace_until],
                }]
            }
            Phase::Draining { .. } | Phase::Grace { .. } => {
                let hard_stop = self.enter_final(now, true);
                vec![Verdict::KillAll, Verdict::EnterFinal { hard_stop }]
            }
            Phase::Final { .. } => {
                self.set(Phase::Final { forced: true });
                vec![Verdict::KillAll]
            }
            Phase::Exit => vec![],
        }
    }

    /// Called at the end of every loop turn and when a shutdown timer
    /// fires: moves on when the time has come. `drained`: no request is in
    /// flight anywhere.
    pub fn tick(&mut self, now: Instant, drained: bool) -> Option<Verdict> {
        if let Phase::Draining {
            drain_until,
            grace_until,
        } = self.phase
            && now >= drain_until
        {
            self.set(Phase::Grace { grace_until });
        }
        match self.phase {
            Phase::Grace { grace_until } if drained || now >= grace_until => {
                if !drained {
                    crate::log_warn!(
                        "shutdown grace over with requests in flight; answering them with errors"
                    );
                }
                Some(Verdict::EnterFinal {
                    hard_stop: self.enter_final(now, false),
                })
            }
            _ => None,
        }
    }

    /// The hard stop fired: processes are still there. Exit as soon as they
    /// are reaped, even if some client never reads the rest of its output.
    pub fn on_hard_stop(&mut self) -> Option<Verdict> {
        match self.phase {
            Phase::Final { .. } => {
                self.set(Phase::Final { forced: true });
                Some(Verdict::KillAll)
            }
            _ => None,
        }
    }

    /// Whether the relay may exit now: in the final phase, every process
    /// reaped, and the clients done (or the stop forced).
    pub fn try_exit(&mut self, processes_left: bool, clients_left: bool) -> bool {
        match self.phase {
            Phase::Final { forced } if !processes_left && (forced || !clients_left) => {
                self.set(Phase::Exit);
                true
            }
            Phase::Exit => true,
            _ => false,
        }
    }

    fn enter_final(&mut self, now: Instant, forced: bool) -> Instant {
        self.set(Phase::Final { forced });
        now + self.cfg.hard_stop
    }

    /// The one place the phase changes.
    fn set(&mut self, to: Phase) {
        use Phase::*;
        let from = self.phase;
        let legal = matches!(
            (from, to),
            (Serving, Draining { .. })
                | (Draining { .. }, Grace { .. } | Final { forced: true })
                | (Grace { .. }, Final { .. })
                | (Final { .. }, Final { forced: true } | Exit)
        );
        debug_assert!(legal, "shutdown: illegal transition {from:?} → {to:?}");
        if !legal {
            crate::log_error!("shutdown: illegal transition {from:?} → {to:?}");
        }
        self.phase = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn machine(drain: u64, grace: u64) -> Shutdown {
        Shutdown::new(ShutdownConfig {
            drain_time: ms(drain),
            grace: ms(grace),
            hard_stop: ms(3_000),
        })
    }

    #[test]
    fn idle_relay_without_drain_time_goes_final_at_once() {
        let t0 = Instant::now();
        let mut s = machine(0, 10_000);
        assert!(!s.is_stopping());
        assert_eq!(
            s.on_signal(t0),
            vec![Verdict::BeginDrain {
                wake: [t0, t0 + ms(10_000)]
            }]
        );
        assert!(s.is_stopping() && !s.is_final());
        assert_eq!(
            s.tick(t0, true),
            Some(Verdict::EnterFinal {
                hard_stop: t0 + ms(3_000)
            })
        );
        assert!(s.is_final());
        assert!(!s.try_exit(true, false), "processes still there");
        assert!(!s.try_exit(false, true), "a client still has output");
        assert!(s.try_exit(false, false));
        assert_eq!(s.phase(), Phase::Exit);
    }

    #[test]
    fn drain_time_keeps_an_idle_relay_visible() {
        let t0 = Instant::now();
        let mut s = machine(500, 10_000);
        s.on_signal(t0);
        assert_eq!(s.tick(t0 + ms(499), true), None);
        assert!(matches!(s.phase(), Phase::Draining { .. }));
        assert!(s.tick(t0 + ms(500), true).is_some());
        assert!(s.is_final());
    }

    #[test]
    fn requests_in_flight_hold_the_grace_until_it_ends() {
        let t0 = Instant::now();
        let mut s = machine(100, 1_000);
        s.on_signal(t0);
        assert_eq!(s.tick(t0 + ms(200), false), None);
        assert_eq!(
            s.phase(),
            Phase::Grace {
                grace_until: t0 + ms(1_000)
            }
        );
        assert_eq!(s.tick(t0 + ms(999), false), None);
        assert_eq!(
            s.tick(t0 + ms(1_000), false),
            Some(Verdict::EnterFinal {
                hard_stop: t0 + ms(4_000)
            })
        );
        assert_eq!(s.phase(), Phase::Final { forced: false });
    }

    #[test]
    fn drain_time_is_capped_by_the_grace() {
        let t0 = Instant::now();
        let mut s = machine(5_000, 1_000);
        assert_eq!(
            s.on_signal(t0),
            vec![Verdict::BeginDrain {
                wake: [t0 + ms(1_000), t0 + ms(1_000)]
            }]
        );
        assert!(s.tick(t0 + ms(1_000), false).is_some());
    }

    #[test]
    fn second_signal_forces_the_stop_in_every_phase() {
        let t0 = Instant::now();
        // While draining.
        let mut s = machine(1_000, 5_000);
        s.on_signal(t0);
        assert_eq!(
            s.on_signal(t0 + ms(10)),
            vec![
                Verdict::KillAll,
                Verdict::EnterFinal {
                    hard_stop: t0 + ms(3_010)
                }
            ]
        );
        assert_eq!(s.phase(), Phase::Final { forced: true });
        assert!(
            s.try_exit(false, true),
            "forced: clients are not waited for"
        );
        // In the grace.
        let mut s = machine(0, 5_000);
        s.on_signal(t0);
        s.tick(t0, false);
        assert!(matches!(s.phase(), Phase::Grace { .. }));
        assert_eq!(s.on_signal(t0 + ms(1)).first(), Some(&Verdict::KillAll));
        assert_eq!(s.phase(), Phase::Final { forced: true });
        // In the final phase.
        let mut s = machine(0, 5_000);
        s.on_signal(t0);
        s.tick(t0, true);
        assert_eq!(s.on_signal(t0 + ms(1)), vec![Verdict::KillAll]);
        assert_eq!(s.phase(), Phase::Final { forced: true });
        // After exit, nothing.
        assert!(s.try_exit(false, false));
        assert_eq!(s.on_signal(t0 + ms(2)), vec![]);
    }

    #[test]
    fn hard_stop_forces_only_in_the_final_phase() {
        let t0 = Instant::now();
        let mut s = machine(0, 5_000);
        assert_eq!(s.on_hard_stop(), None);
        s.on_signal(t0);
        assert_eq!(s.on_hard_stop(), None);
        s.tick(t0, true);
        assert_eq!(s.on_hard_stop(), Some(Verdict::KillAll));
        assert!(!s.try_exit(true, true));
        assert!(s.try_exit(false, true));
    }

    #[test]
    fn ticks_before_a_signal_do_nothing() {
        let t0 = Instant::now();
        let mut s = machine(0, 0);
        for n in 0..5 {
            assert_eq!(s.tick(t0 + ms(n), n % 2 == 0), None);
        }
        assert!(!s.try_exit(false, false));
        assert_eq!(s.phase(), Phase::Serving);
    }

    /// Release builds log an illegal transition instead (the check is a
    /// `debug_assert`), so this runs where the suite does: debug builds.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "illegal transition")]
    fn illegal_transitions_are_caught() {
        let mut s = machine(0, 0);
        s.set(Phase::Exit);
    }
}
