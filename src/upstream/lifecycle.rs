//! The life of one stdio upstream process, from spawn to reap, decided without
//! I/O.
//!
//! Sans-I/O, like the pool: a [`Lifecycle`] never closes a pipe, sends a
//! signal, reaps, or reads the clock. The owner (a front end) reports what it
//! saw, with `now` where time matters, and carries out the returned
//! [`Action`]s in order. Both `forward -- CMD` and `reverse -- CMD` drive their
//! processes through it, so the close sequence (stdin closed → kill grace →
//! SIGTERM → kill grace → SIGKILL, repeated until reaped) is written once,
//! here.
//!
//! # States
//!
//! ```text
//!   Initializing ── initialized ──▶ Ready          (Initializing, Ready and
//!        │                            │             Draining are "open")
//!        └─────────── drain ──────────┴──▶ Draining
//!
//!   open ───────── close, kill_now ───────▶ Closing ◀─┐ next stage at each
//!   Draining ───── its grace expires ─────▶ Closing   │ grace (OnStatus)
//!                                              └──────┘
//!   open, Closing ─ on_lost (OnStatus) ───▶ Lost
//!   open, Closing ─ on_lost (OnLoss) ─────▶ Down ◀─┐ next stage at each
//!   Closing ─────── its grace (OnLoss) ───▶ Down   │ grace
//!   Lost ────────── its grace ────────────▶ Down ──┘
//!   every state but Exited ── on_exit ────▶ Exited (terminal)
//! ```
//!
//! Every state change goes through `transition`, which checks the pair
//! (`debug_assert!`, as the pool does: a release build carries on with the
//! change). States from `Closing` on carry the close [`Stage`] and the
//! deadline of the one grace timer the owner keeps armed for the process;
//! the stage never goes back. `kill_now` (SIGKILL at once) moves an open
//! process to `Closing` at stage `Killed` and keeps a closing one where it is,
//! at stage `Killed`.
//!
//! *In service* means `Initializing`, `Ready`, `Draining` or `Closing`: the
//! process's stdout is still read and its replies still count. `Lost`,
//! `Down` and `Exited` processes serve nobody. *Down* is the moment the owner
//! fails the requests in flight on the process and decides what comes next
//! (restart, exit, tell the pool): it is announced once, by [`Action::Down`],
//! on the way into `Down`, or into `Exited` from any state before `Down`.
//!
//! # Decisions
//!
//! - **When a process is down is the owner's policy** ([`DownPolicy`]). A
//!   single upstream whose exit status the relay mirrors (`forward`) waits for
//!   it: a lost process is down when reaped or a grace after it was lost, and a
//!   closing one keeps answering until its stdout ends. A pooled process
//!   (`reverse`) is down as soon as it is lost, or once a grace of closing has
//!   passed without an exit, so its sessions are not held by a process on its
//!   way out.
//! - **One grace timer per process.** Every [`Action::ArmGrace`] replaces the
//!   one before it; the owner cancels the old timer. A grace is armed whenever
//!   stdin closes and after each signal, so an unreaped process is always
//!   escalated further.
//! - **Losing a process closes its stdin** at once if it was still open.
//! - **A rejected `initialize` is the owner's call**: `initialized` only ends
//!   the wait; the owner closes the process if the reply was an error.
//! - **Reports that do not fit the state are ignored**: a grace expiry for a
//!   process with no grace armed, an exit after `Exited`, a close or a loss of
//!   a process already past it. Events race, and the lifecycle only acts on
//!   what is still ahead. Reaping is the owner's I/O: it polls the child where
//!   it chooses (on SIGCHLD, before handling a grace expiry) and reports
//!   [`Lifecycle::on_exit`].
//! - There is no spawning state: a spawn either succeeds at once (the
//!   lifecycle starts) or fails (there is none).

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::proto::jsonrpc::Id;

/// How far the close sequence has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Stdin closed; waiting for the process to exit by itself.
    StdinClosed,
    /// SIGTERM sent to the group.
    Terminated,
    /// SIGKILL sent to the group.
    Killed,
}

impl Stage {
    /// The step taken when a grace expires at this stage, and the stage after.
    fn escalate(self) -> (Stage, Action) {
        match self {
            Stage::StdinClosed => (Stage::Terminated, Action::Term),
            Stage::Terminated => (Stage::Killed, Action::Kill { after_term: true }),
            Stage::Killed => (Stage::Killed, Action::Kill { after_term: false }),
        }
    }
}

/// Why a process was closed while still in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The owner no longer wants it (the pool closed it, the relay is
    /// shutting down): its exit is expected.
    Asked,
    /// It misbehaved (its stdin broke, it rejected `initialize`).
    Fault,
}

/// When a process that stops serving is *down* (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownPolicy {
    /// Down as soon as it is lost, or when the first grace of closing expires.
    OnLoss,
    /// Down when reaped, or when a grace expires after it was lost; a closing
    /// process still answers until it is lost.
    OnStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `--kill-grace`: the wait before each escalation step.
    pub grace: Duration,
    pub down: DownPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Spawned; client traffic waits for the reply to `init`, an
    /// `initialize` the relay sent.
    Initializing { init: Id },
    /// Serving.
    Ready,
    /// Stdin closes once what is queued for it is written, or at `deadline`.
    /// `init`: still awaited, if it was when draining began.
    Draining { deadline: Instant, init: Option<Id> },
    /// Stdin closed; stdout still read. The next step is due at `deadline`.
    Closing {
        stage: Stage,
        deadline: Instant,
        cause: Cause,
        init: Option<Id>,
    },
    /// Out of service (stdout ended, or stdin broke); down at `deadline` if
    /// not reaped first. `asked`: it had been closed with [`Cause::Asked`].
    Lost {
        stage: Stage,
        deadline: Instant,
        asked: bool,
    },
    /// Its requests were failed; still unreaped, escalated at `deadline`.
    Down { stage: Stage, deadline: Instant },
    /// Reaped. Terminal.
    Exited { status: ExitStatus },
}

impl State {
    fn stage(&self) -> Option<Stage> {
        match self {
            State::Closing { stage, .. }
            | State::Lost { stage, .. }
            | State::Down { stage, .. } => Some(*stage),
            _ => None,
        }
    }
}

/// What the owner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Close the process's stdin and drop what was queued for it.
    CloseStdin,
    /// Arm the process's grace timer for this instant, replacing (cancelling)
    /// the one armed before; report [`Lifecycle::on_grace_expired`] when it
    /// fires.
    ArmGrace(Instant),
    /// SIGTERM to the process group: stdin has been closed a whole grace.
    Term,
    /// SIGKILL to the process group. `after_term`: SIGTERM was ignored a
    /// whole grace (otherwise: a repeat after an earlier SIGKILL, or
    /// [`Lifecycle::kill_now`]).
    Kill { after_term: bool },
    /// The process is down: fail its requests in flight and decide what comes
    /// next. `status` if reaped; `asked`: it was closed with [`Cause::Asked`]
    /// before it stopped serving, so its end is no news.
    Down {
        status: Option<ExitStatus>,
        asked: bool,
    },
    /// Reaped and down: release its pipes and forget it.
    Release,
}

#[derive(Debug, Clone)]
pub struct Lifecycle {
    cfg: Config,
    state: State,
}

impl Lifecycle {
    /// A process just spawned. `init`: the id of an `initialize` the relay
    /// sent it, whose reply client traffic waits for; `None`: ready at once.
    pub fn spawned(cfg: Config, init: Option<Id>) -> Lifecycle {
        let state = match init {
            Some(init) => State::Initializing { init },
            None => State::Ready,
        };
        Lifecycle { cfg, state }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The `initialize` whose reply is still awaited, if any.
    pub fn awaiting_init(&self) -> Option<&Id> {
        match &self.state {
            State::Initializing { init } => Some(init),
            State::Draining { init, .. } | State::Closing { init, .. } => init.as_ref(),
            _ => None,
        }
    }

    /// Its stdout is still read and its replies still count.
    pub fn in_service(&self) -> bool {
        matches!(
            self.state,
            State::Initializing { .. }
                | State::Ready
                | State::Draining { .. }
                | State::Closing { .. }
        )
    }

    /// Waiting for its stdin queue to drain before closing stdin.
    pub fn is_draining(&self) -> bool {
        matches!(self.state, State::Draining { .. })
    }

    /// When the armed grace expires, if one is armed.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Draining { deadline, .. }
            | State::Closing { deadline, .. }
            | State::Lost { deadline, .. }
            | State::Down { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// The reply to the awaited `initialize` arrived (an error reply too:
    /// closing over it is the owner's call). Returns nothing to do today and
    /// is a `Vec` for uniformity.
    pub fn initialized(&mut self) -> Vec<Action> {
        let to = match &self.state {
            State::Initializing { .. } => State::Ready,
            State::Draining {
                deadline,
                init: Some(_),
            } => State::Draining {
                deadline: *deadline,
                init: None,
            },
            State::Closing {
                stage,
                deadline,
                cause,
                init: Some(_),
            } => State::Closing {
                stage: *stage,
                deadline: *deadline,
                cause: *cause,
                init: None,
            },
            _ => return Vec::new(),
        };
        self.transition(to);
        Vec::new()
    }

    /// Close it once what is queued for its stdin is written (the owner then
    /// calls [`close`](Self::close)), or when the grace armed now expires.
    pub fn drain(&mut self, now: Instant) -> Vec<Action> {
        let init = match &self.state {
            State::Initializing { init } => Some(init.clone()),
            State::Ready => None,
            _ => return Vec::new(),
        };
        let deadline = now + self.cfg.grace;
        self.transition(State::Draining { deadline, init });
        vec![Action::ArmGrace(deadline)]
    }

    /// Close its stdin now (MCP stdio shutdown). A process already closing
    /// stays where it is; `Cause::Asked` then marks its exit as expected.
    pub fn close(&mut self, now: Instant, cause: Cause) -> Vec<Action> {
        let (cause, init) = match &self.state {
            State::Initializing { init } => (cause, Some(init.clone())),
            State::Ready => (cause, None),
            // The owner asked first; whatever broke since is on the way out.
            State::Draining { init, .. } => (Cause::Asked, init.clone()),
            State::Closing {
                stage,
                deadline,
                cause: Cause::Fault,
                init,
            } if cause == Cause::Asked => {
                let to = State::Closing {
                    stage: *stage,
                    deadline: *deadline,
                    cause,
                    init: init.clone(),
                };
                self.transition(to);
                return Vec::new();
            }
            _ => return Vec::new(),
        };
        let deadline = now + self.cfg.grace;
        self.transition(State::Closing {
            stage: Stage::StdinClosed,
            deadline,
            cause,
            init,
        });
        vec![Action::CloseStdin, Action::ArmGrace(deadline)]
    }

    /// It serves no one from now: its stdout ended, or (the owner's call) its
    /// stdin broke. Stdin is closed if still open.
    pub fn on_lost(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let (stage, deadline, asked) = match &self.state {
            State::Initializing { .. } | State::Ready | State::Draining { .. } => {
                let deadline = now + self.cfg.grace;
                out.push(Action::CloseStdin);
                out.push(Action::ArmGrace(deadline));
                (Stage::StdinClosed, deadline, self.is_draining())
            }
            State::Closing {
                stage,
                deadline,
                cause,
                ..
            } => (*stage, *deadline, *cause == Cause::Asked),
            _ => return out,
        };
        match self.cfg.down {
            DownPolicy::OnStatus => self.transition(State::Lost {
                stage,
                deadline,
                asked,
            }),
            DownPolicy::OnLoss => {
                self.transition(State::Down { stage, deadline });
                out.push(Action::Down {
                    status: None,
                    asked,
                });
            }
        }
        out
    }

    /// The grace timer fired. The owner has polled the child first: had it
    /// exited, it would report [`on_exit`](Self::on_exit) instead.
    pub fn on_grace_expired(&mut self, now: Instant) -> Vec<Action> {
        let deadline = now + self.cfg.grace;
        let (to, down) = match &self.state {
            // Stdin never drained: close it now.
            State::Draining { init, .. } => {
                self.transition(State::Closing {
                    stage: Stage::StdinClosed,
                    deadline,
                    cause: Cause::Asked,
                    init: init.clone(),
                });
                return vec![Action::CloseStdin, Action::ArmGrace(deadline)];
            }
            State::Closing {
                stage, cause, init, ..
            } => {
                let (stage, step) = stage.escalate();
                let asked = *cause == Cause::Asked;
                match self.cfg.down {
                    DownPolicy::OnStatus => (
                        State::Closing {
                            stage,
                            deadline,
                            cause: *cause,
                            init: init.clone(),
                        },
                        (step, None),
                    ),
                    DownPolicy::OnLoss => (State::Down { stage, deadline }, (step, Some(asked))),
                }
            }
            State::Lost { stage, asked, .. } => {
                let (stage, step) = stage.escalate();
                (State::Down { stage, deadline }, (step, Some(*asked)))
            }
            State::Down { stage, .. } => {
                let (stage, step) = stage.escalate();
                (State::Down { stage, deadline }, (step, None))
            }
            // No grace is armed in these: a stale report.
            State::Initializing { .. } | State::Ready | State::Exited { .. } => return Vec::new(),
        };
        self.transition(to);
        let (step, down) = down;
        let mut out = vec![step, Action::ArmGrace(deadline)];
        if let Some(asked) = down {
            out.push(Action::Down {
                status: None,
                asked,
            });
        }
        out
    }

    /// The owner reaped it. Down (if it was not yet), then released.
    pub fn on_exit(&mut self, status: ExitStatus) -> Vec<Action> {
        let asked = match &self.state {
            State::Exited { .. } => return Vec::new(),
            State::Down { .. } => None,
            State::Initializing { .. } | State::Ready => Some(false),
            State::Draining { .. } => Some(true),
            State::Closing { cause, .. } => Some(*cause == Cause::Asked),
            State::Lost { asked, .. } => Some(*asked),
        };
        self.transition(State::Exited { status });
        let mut out = Vec::new();
        if let Some(asked) = asked {
            out.push(Action::Down {
                status: Some(status),
                asked,
            });
        }
        out.push(Action::Release);
        out
    }

    /// Skip the grace: SIGKILL now (a second signal, the relay's hard stop).
    /// A grace is armed again, so an unreaped process is killed again.
    pub fn kill_now(&mut self, now: Instant) -> Vec<Action> {
        let deadline = now + self.cfg.grace;
        let stage = Stage::Killed;
        let mut out = Vec::new();
        let to = match &self.state {
            State::Initializing { .. } | State::Ready | State::Draining { .. } => {
                out.push(Action::CloseStdin);
                State::Closing {
                    stage,
                    deadline,
                    cause: Cause::Asked,
                    init: self.awaiting_init().cloned(),
                }
            }
            State::Closing { cause, init, .. } => State::Closing {
                stage,
                deadline,
                cause: *cause,
                init: init.clone(),
            },
            State::Lost { asked, .. } => State::Lost {
                stage,
                deadline,
                asked: *asked,
            },
            State::Down { .. } => State::Down { stage, deadline },
            State::Exited { .. } => return out,
        };
        self.transition(to);
        out.push(Action::Kill { after_term: false });
        out.push(Action::ArmGrace(deadline));
        out
    }

    // ---- transitions ----------------------------------------------------

    fn transition(&mut self, to: State) {
        let from = &self.state;
        let ok = legal(from, &to);
        debug_assert!(ok, "illegal transition {from:?} → {to:?}");
        if !ok {
            // A release build carries on (the stage only moves forward, so
            // the process is still escalated and reaped), but says so.
            log::error!("process lifecycle: illegal transition {from:?} → {to:?}");
        }
        self.state = to;
        self.debug_check();
    }

    // ---- invariants -----------------------------------------------------

    fn debug_check(&self) {
        if cfg!(any(test, debug_assertions)) {
            self.check_invariants();
        }
    }

    fn check_invariants(&self) {
        if self.cfg.down == DownPolicy::OnLoss {
            assert!(
                !matches!(self.state, State::Lost { .. }),
                "OnLoss: a lost process is down at once"
            );
        }
    }
}

/// Whether `from → to` is an edge of the diagram in the module docs. Changes
/// within a state (an escalation step, the awaited `initialize` answered, a
/// close asked for) are edges too; the close stage never goes back.
fn legal(from: &State, to: &State) -> bool {
    use State::*;
    let forward = match (from.stage(), to.stage()) {
        (Some(a), Some(b)) => a <= b,
        _ => true,
    };
    forward
        && matches!(
            (from, to),
            (
                Initializing { .. },
                Ready
                    | Draining { .. }
                    | Closing { .. }
                    | Lost { .. }
                    | Down { .. }
                    | Exited { .. }
            ) | (
                Ready,
                Draining { .. } | Closing { .. } | Lost { .. } | Down { .. } | Exited { .. }
            ) | (
                Draining { .. },
                Draining { .. } | Closing { .. } | Lost { .. } | Down { .. } | Exited { .. }
            ) | (
                Closing { .. },
                Closing { .. } | Lost { .. } | Down { .. } | Exited { .. }
            ) | (Lost { .. }, Lost { .. } | Down { .. } | Exited { .. })
                | (Down { .. }, Down { .. } | Exited { .. })
        )
}

#[cfg(test)]
mod tests {
    use super::Action::{ArmGrace, CloseStdin, Kill, Release, Term};
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const GRACE: Duration = Duration::from_millis(2_000);

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn killed(sig: i32) -> ExitStatus {
        ExitStatus::from_raw(sig)
    }

    fn life(down: DownPolicy, init: Option<&str>) -> Lifecycle {
        let cfg = Config { grace: GRACE, down };
        Lifecycle::spawned(cfg, init.map(|i| Id::Str(i.into())))
    }

    fn id(s: &str) -> Id {
        Id::Str(s.into())
    }

    fn down(status: Option<ExitStatus>, asked: bool) -> Action {
        Action::Down { status, asked }
    }

    fn closing(stage: Stage, deadline: Instant, cause: Cause) -> State {
        State::Closing {
            stage,
            deadline,
            cause,
            init: None,
        }
    }

    // ---- opening ---------------------------------------------------------

    #[test]
    fn spawned_without_an_initialize_is_ready() {
        let l = life(DownPolicy::OnStatus, None);
        assert_eq!(l.state(), &State::Ready);
        assert_eq!(l.awaiting_init(), None);
        assert!(l.in_service());
        assert_eq!(l.deadline(), None);
    }

    #[test]
    fn an_answered_initialize_makes_it_ready() {
        let mut l = life(DownPolicy::OnStatus, Some("replay-2"));
        assert_eq!(
            l.state(),
            &State::Initializing {
                init: id("replay-2")
            }
        );
        assert_eq!(l.awaiting_init(), Some(&id("replay-2")));
        assert_eq!(l.initialized(), vec![]);
        assert_eq!(l.state(), &State::Ready);
        // A second answer changes nothing.
        assert_eq!(l.initialized(), vec![]);
        assert_eq!(l.state(), &State::Ready);
    }

    #[test]
    fn a_rejected_replayed_initialize_still_ends_the_wait() {
        // forward: an error reply to the replay is logged and traffic flows.
        let mut l = life(DownPolicy::OnStatus, Some("replay-3"));
        l.initialized();
        assert_eq!(l.state(), &State::Ready);
        assert_eq!(l.awaiting_init(), None);
    }

    #[test]
    fn a_rejected_relay_initialize_is_closed_as_a_fault() {
        // reverse: the owner closes a shared process that rejects the relay's
        // initialize; it went away, nobody asked it to.
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnLoss, Some("mcp-relay-init"));
        assert_eq!(
            l.close(t0, Cause::Fault),
            vec![CloseStdin, ArmGrace(t0 + GRACE)]
        );
        assert_eq!(
            l.state(),
            &State::Closing {
                stage: Stage::StdinClosed,
                deadline: t0 + GRACE,
                cause: Cause::Fault,
                init: Some(id("mcp-relay-init")),
            }
        );
        assert_eq!(
            l.on_grace_expired(t0 + GRACE),
            vec![Term, ArmGrace(t0 + GRACE * 2), down(None, false)]
        );
    }

    // ---- the escalation --------------------------------------------------

    #[test]
    fn full_escalation_timeline_waiting_for_the_status() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        let t1 = t0 + ms(500);
        assert_eq!(
            l.close(t1, Cause::Asked),
            vec![CloseStdin, ArmGrace(t1 + GRACE)]
        );
        assert_eq!(
            l.state(),
            &closing(Stage::StdinClosed, t1 + GRACE, Cause::Asked)
        );
        assert_eq!(l.deadline(), Some(t1 + GRACE));
        let t2 = t1 + GRACE;
        assert_eq!(l.on_grace_expired(t2), vec![Term, ArmGrace(t2 + GRACE)]);
        assert_eq!(
            l.state(),
            &closing(Stage::Terminated, t2 + GRACE, Cause::Asked)
        );
        let t3 = t2 + GRACE;
        assert_eq!(
            l.on_grace_expired(t3),
            vec![Kill { after_term: true }, ArmGrace(t3 + GRACE)]
        );
        assert_eq!(l.state(), &closing(Stage::Killed, t3 + GRACE, Cause::Asked));
        // Still unreaped after SIGKILL: SIGKILL again, a grace apart, quietly.
        let t4 = t3 + GRACE;
        assert_eq!(
            l.on_grace_expired(t4),
            vec![Kill { after_term: false }, ArmGrace(t4 + GRACE)]
        );
        // Closing keeps serving under OnStatus: down only when reaped.
        assert!(l.in_service());
        assert_eq!(
            l.on_exit(killed(9)),
            vec![down(Some(killed(9)), true), Release]
        );
        assert_eq!(l.state(), &State::Exited { status: killed(9) });
        assert!(!l.in_service());
        assert_eq!(l.deadline(), None);
    }

    #[test]
    fn full_escalation_timeline_failing_fast() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnLoss, None);
        assert_eq!(
            l.close(t0, Cause::Asked),
            vec![CloseStdin, ArmGrace(t0 + GRACE)]
        );
        let t1 = t0 + GRACE;
        // The first grace over: SIGTERM, and its requests are failed now.
        assert_eq!(
            l.on_grace_expired(t1),
            vec![Term, ArmGrace(t1 + GRACE), down(None, true)]
        );
        assert_eq!(
            l.state(),
            &State::Down {
                stage: Stage::Terminated,
                deadline: t1 + GRACE
            }
        );
        assert!(!l.in_service());
        let t2 = t1 + GRACE;
        assert_eq!(
            l.on_grace_expired(t2),
            vec![Kill { after_term: true }, ArmGrace(t2 + GRACE)]
        );
        let t3 = t2 + GRACE;
        assert_eq!(
            l.on_grace_expired(t3),
            vec![Kill { after_term: false }, ArmGrace(t3 + GRACE)]
        );
        // Down was announced once: the exit only releases it.
        assert_eq!(l.on_exit(killed(9)), vec![Release]);
    }

    #[test]
    fn draining_closes_stdin_once_flushed() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        assert_eq!(l.drain(t0), vec![ArmGrace(t0 + GRACE)]);
        assert!(l.is_draining());
        assert!(l.in_service());
        // Draining twice arms nothing more.
        assert_eq!(l.drain(t0 + ms(1)), vec![]);
        let t1 = t0 + ms(30);
        // The owner saw the queue drain; a fault reported now does not undo
        // the owner's request.
        assert_eq!(
            l.close(t1, Cause::Fault),
            vec![CloseStdin, ArmGrace(t1 + GRACE)]
        );
        assert_eq!(
            l.state(),
            &closing(Stage::StdinClosed, t1 + GRACE, Cause::Asked)
        );
        assert_eq!(
            l.on_exit(exited(0)),
            vec![down(Some(exited(0)), true), Release]
        );
    }

    #[test]
    fn draining_that_never_flushes_is_closed_at_its_grace() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        l.drain(t0);
        let t1 = t0 + GRACE;
        // Stdin closes first; the signals follow a grace apart.
        assert_eq!(
            l.on_grace_expired(t1),
            vec![CloseStdin, ArmGrace(t1 + GRACE)]
        );
        assert_eq!(
            l.state(),
            &closing(Stage::StdinClosed, t1 + GRACE, Cause::Asked)
        );
        let t2 = t1 + GRACE;
        assert_eq!(l.on_grace_expired(t2), vec![Term, ArmGrace(t2 + GRACE)]);
    }

    #[test]
    fn an_awaited_initialize_survives_draining_and_closing() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, Some("replay-4"));
        l.drain(t0);
        assert_eq!(
            l.state(),
            &State::Draining {
                deadline: t0 + GRACE,
                init: Some(id("replay-4"))
            }
        );
        assert_eq!(l.awaiting_init(), Some(&id("replay-4")));
        l.close(t0 + ms(5), Cause::Asked);
        assert_eq!(l.awaiting_init(), Some(&id("replay-4")));
        l.initialized();
        assert_eq!(l.awaiting_init(), None);
        assert_eq!(
            l.state(),
            &closing(Stage::StdinClosed, t0 + ms(5) + GRACE, Cause::Asked)
        );
        // Answered while draining, too.
        let mut l = life(DownPolicy::OnStatus, Some("replay-5"));
        l.drain(t0);
        l.initialized();
        assert_eq!(
            l.state(),
            &State::Draining {
                deadline: t0 + GRACE,
                init: None
            }
        );
    }

    #[test]
    fn closing_twice_changes_nothing_but_an_asked_close_marks_it_expected() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnLoss, None);
        l.close(t0, Cause::Fault);
        assert_eq!(l.close(t0 + ms(10), Cause::Fault), vec![]);
        assert_eq!(
            l.state(),
            &closing(Stage::StdinClosed, t0 + GRACE, Cause::Fault)
        );
        assert_eq!(l.close(t0 + ms(20), Cause::Asked), vec![]);
        assert_eq!(
            l.state(),
            &closing(Stage::StdinClosed, t0 + GRACE, Cause::Asked)
        );
        // Never back from Asked to Fault.
        assert_eq!(l.close(t0 + ms(30), Cause::Fault), vec![]);
        assert_eq!(
            l.state(),
            &closing(Stage::StdinClosed, t0 + GRACE, Cause::Asked)
        );
    }

    // ---- lost and exited -------------------------------------------------

    #[test]
    fn exit_before_stdout_eof() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        assert_eq!(
            l.on_exit(exited(3)),
            vec![down(Some(exited(3)), false), Release]
        );
        // The EOF and a stale timer that follow are no news.
        assert_eq!(l.on_lost(t0), vec![]);
        assert_eq!(l.on_grace_expired(t0 + GRACE), vec![]);
        assert_eq!(l.on_exit(exited(3)), vec![]);
        assert_eq!(l.close(t0, Cause::Asked), vec![]);
        assert_eq!(l.kill_now(t0), vec![]);
        assert_eq!(l.state(), &State::Exited { status: exited(3) });
    }

    #[test]
    fn exit_after_stdout_eof_waiting_for_the_status() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        let t1 = t0 + ms(100);
        assert_eq!(l.on_lost(t1), vec![CloseStdin, ArmGrace(t1 + GRACE)]);
        assert_eq!(
            l.state(),
            &State::Lost {
                stage: Stage::StdinClosed,
                deadline: t1 + GRACE,
                asked: false
            }
        );
        assert!(!l.in_service());
        // A second report of the loss is ignored.
        assert_eq!(l.on_lost(t1 + ms(1)), vec![]);
        assert_eq!(
            l.on_exit(exited(2)),
            vec![down(Some(exited(2)), false), Release]
        );
    }

    #[test]
    fn exit_after_stdout_eof_failing_fast() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnLoss, None);
        assert_eq!(
            l.on_lost(t0),
            vec![CloseStdin, ArmGrace(t0 + GRACE), down(None, false)]
        );
        assert_eq!(
            l.state(),
            &State::Down {
                stage: Stage::StdinClosed,
                deadline: t0 + GRACE
            }
        );
        assert_eq!(l.on_exit(exited(0)), vec![Release]);
    }

    #[test]
    fn lost_and_unreaped_for_a_grace_is_down() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        l.on_lost(t0);
        let t1 = t0 + GRACE;
        assert_eq!(
            l.on_grace_expired(t1),
            vec![Term, ArmGrace(t1 + GRACE), down(None, false)]
        );
        assert_eq!(
            l.state(),
            &State::Down {
                stage: Stage::Terminated,
                deadline: t1 + GRACE
            }
        );
        let t2 = t1 + GRACE;
        assert_eq!(
            l.on_grace_expired(t2),
            vec![Kill { after_term: true }, ArmGrace(t2 + GRACE)]
        );
        assert_eq!(l.on_exit(killed(9)), vec![Release]);
    }

    #[test]
    fn lost_while_closing_keeps_the_stage_and_the_deadline() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        l.close(t0, Cause::Asked);
        let t1 = t0 + GRACE;
        l.on_grace_expired(t1);
        // Stdout ends after SIGTERM: no new grace, no new step.
        assert_eq!(l.on_lost(t1 + ms(10)), vec![]);
        assert_eq!(
            l.state(),
            &State::Lost {
                stage: Stage::Terminated,
                deadline: t1 + GRACE,
                asked: true
            }
        );
        let t2 = t1 + GRACE;
        assert_eq!(
            l.on_grace_expired(t2),
            vec![
                Kill { after_term: true },
                ArmGrace(t2 + GRACE),
                down(None, true)
            ]
        );
    }

    #[test]
    fn lost_while_closing_failing_fast_is_down_at_once() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnLoss, None);
        l.close(t0, Cause::Asked);
        assert_eq!(l.on_lost(t0 + ms(5)), vec![down(None, true)]);
        assert_eq!(
            l.state(),
            &State::Down {
                stage: Stage::StdinClosed,
                deadline: t0 + GRACE
            }
        );
        // The grace it armed still escalates, without a second Down.
        assert_eq!(
            l.on_grace_expired(t0 + GRACE),
            vec![Term, ArmGrace(t0 + GRACE * 2)]
        );
    }

    #[test]
    fn lost_while_draining_was_asked_to_close() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnLoss, None);
        l.drain(t0);
        let t1 = t0 + ms(7);
        assert_eq!(
            l.on_lost(t1),
            vec![CloseStdin, ArmGrace(t1 + GRACE), down(None, true)]
        );
    }

    #[test]
    fn reaped_while_closing_at_every_stage() {
        for down_policy in [DownPolicy::OnStatus, DownPolicy::OnLoss] {
            for steps in 0..4u32 {
                let t0 = Instant::now();
                let mut l = life(down_policy, None);
                l.close(t0, Cause::Fault);
                let mut announced = false;
                for k in 1..=steps {
                    let out = l.on_grace_expired(t0 + GRACE * k);
                    announced |= out.iter().any(|a| matches!(a, Action::Down { .. }));
                }
                let out = l.on_exit(exited(1));
                let expect = if announced {
                    vec![Release]
                } else {
                    vec![down(Some(exited(1)), false), Release]
                };
                assert_eq!(out, expect, "{down_policy:?}, {steps} steps");
                // Down is announced exactly once either way.
                assert_eq!(announced, down_policy == DownPolicy::OnLoss && steps > 0);
            }
        }
    }

    #[test]
    fn exit_from_every_open_state_is_down_then_release() {
        let t0 = Instant::now();
        let status = exited(4);
        let mut initializing = life(DownPolicy::OnStatus, Some("i"));
        assert_eq!(
            initializing.on_exit(status),
            vec![down(Some(status), false), Release]
        );
        let mut draining = life(DownPolicy::OnLoss, None);
        draining.drain(t0);
        assert_eq!(
            draining.on_exit(status),
            vec![down(Some(status), true), Release]
        );
    }

    // ---- killing at once -------------------------------------------------

    #[test]
    fn kill_now_from_open_closes_stdin_and_kills() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, Some("r"));
        assert_eq!(
            l.kill_now(t0),
            vec![CloseStdin, Kill { after_term: false }, ArmGrace(t0 + GRACE)]
        );
        assert_eq!(
            l.state(),
            &State::Closing {
                stage: Stage::Killed,
                deadline: t0 + GRACE,
                cause: Cause::Asked,
                init: Some(id("r")),
            }
        );
        // Not reaped a grace later: killed again.
        assert_eq!(
            l.on_grace_expired(t0 + GRACE),
            vec![Kill { after_term: false }, ArmGrace(t0 + GRACE * 2)]
        );
    }

    #[test]
    fn kill_now_while_closing_skips_the_rest_of_the_grace() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        l.close(t0, Cause::Fault);
        let t1 = t0 + ms(300);
        assert_eq!(
            l.kill_now(t1),
            vec![Kill { after_term: false }, ArmGrace(t1 + GRACE)]
        );
        assert_eq!(l.state(), &closing(Stage::Killed, t1 + GRACE, Cause::Fault));
        // Killing again (a hard stop after a second signal) kills again.
        assert_eq!(
            l.kill_now(t1 + ms(1)),
            vec![Kill { after_term: false }, ArmGrace(t1 + ms(1) + GRACE)]
        );
        // Lost and Down stay what they are.
        let mut lost = life(DownPolicy::OnStatus, None);
        lost.on_lost(t0);
        lost.kill_now(t1);
        assert_eq!(
            lost.state(),
            &State::Lost {
                stage: Stage::Killed,
                deadline: t1 + GRACE,
                asked: false
            }
        );
        let mut gone = life(DownPolicy::OnLoss, None);
        gone.on_lost(t0);
        gone.kill_now(t1);
        assert_eq!(
            gone.state(),
            &State::Down {
                stage: Stage::Killed,
                deadline: t1 + GRACE
            }
        );
    }

    // ---- reports that do not fit -----------------------------------------

    #[test]
    fn a_grace_expiry_with_no_grace_armed_is_ignored() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, Some("i"));
        assert_eq!(l.on_grace_expired(t0), vec![]);
        l.initialized();
        assert_eq!(l.on_grace_expired(t0), vec![]);
        assert_eq!(l.state(), &State::Ready);
    }

    #[test]
    fn drain_after_close_changes_nothing() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        l.close(t0, Cause::Fault);
        assert_eq!(l.drain(t0 + ms(1)), vec![]);
        assert_eq!(
            l.state(),
            &closing(Stage::StdinClosed, t0 + GRACE, Cause::Fault)
        );
    }

    // ---- the transition table --------------------------------------------

    /// One state of each kind (two stages for the closing ones).
    fn samples(t: Instant) -> Vec<State> {
        vec![
            State::Initializing { init: id("i") },
            State::Ready,
            State::Draining {
                deadline: t,
                init: None,
            },
            closing(Stage::StdinClosed, t, Cause::Asked),
            closing(Stage::Terminated, t, Cause::Asked),
            State::Lost {
                stage: Stage::StdinClosed,
                deadline: t,
                asked: false,
            },
            State::Lost {
                stage: Stage::Terminated,
                deadline: t,
                asked: false,
            },
            State::Down {
                stage: Stage::StdinClosed,
                deadline: t,
            },
            State::Down {
                stage: Stage::Terminated,
                deadline: t,
            },
            State::Exited { status: exited(0) },
        ]
    }

    fn rank(s: &State) -> u8 {
        match s {
            State::Initializing { .. } => 0,
            State::Ready => 1,
            State::Draining { .. } => 2,
            State::Closing { .. } => 3,
            State::Lost { .. } => 4,
            State::Down { .. } => 5,
            State::Exited { .. } => 6,
        }
    }

    #[test]
    fn every_legal_transition_and_no_other() {
        let t = Instant::now();
        for from in samples(t) {
            for to in samples(t) {
                // The diagram, row by row: from → the kinds it may become.
                let targets: &[u8] = match rank(&from) {
                    0 => &[1, 2, 3, 4, 5, 6],
                    1 => &[2, 3, 4, 5, 6],
                    // A state may change within itself (an answered
                    // initialize, an escalation step, a close asked for).
                    2 => &[2, 3, 4, 5, 6],
                    3 => &[3, 4, 5, 6],
                    4 => &[4, 5, 6],
                    5 => &[5, 6],
                    _ => &[],
                };
                let stage_forward = match (from.stage(), to.stage()) {
                    (Some(a), Some(b)) => a <= b,
                    _ => true,
                };
                let expect = targets.contains(&rank(&to)) && stage_forward;
                assert_eq!(legal(&from, &to), expect, "{from:?} → {to:?}");
            }
        }
    }

    #[cfg(debug_assertions)]
    fn forced(mut l: Lifecycle, to: State) {
        l.transition(to);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "illegal transition")]
    fn ready_cannot_go_back_to_initializing() {
        forced(
            life(DownPolicy::OnStatus, None),
            State::Initializing { init: id("x") },
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "illegal transition")]
    fn nothing_leaves_exited() {
        let mut l = life(DownPolicy::OnStatus, None);
        l.on_exit(exited(0));
        forced(l, State::Ready);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "illegal transition")]
    fn down_cannot_become_lost_again() {
        let mut l = life(DownPolicy::OnLoss, None);
        let t0 = Instant::now();
        l.on_lost(t0);
        forced(
            l,
            State::Lost {
                stage: Stage::StdinClosed,
                deadline: t0,
                asked: false,
            },
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "illegal transition")]
    fn the_stage_never_goes_back() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        l.close(t0, Cause::Asked);
        l.on_grace_expired(t0 + GRACE);
        forced(l, closing(Stage::StdinClosed, t0, Cause::Asked));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "illegal transition")]
    fn closing_cannot_reopen_its_stdin() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnStatus, None);
        l.close(t0, Cause::Asked);
        forced(
            l,
            State::Draining {
                deadline: t0,
                init: None,
            },
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a lost process is down at once")]
    fn fail_fast_never_rests_in_lost() {
        let t0 = Instant::now();
        let mut l = life(DownPolicy::OnLoss, None);
        l.state = State::Lost {
            stage: Stage::StdinClosed,
            deadline: t0,
            asked: false,
        };
        l.check_invariants();
    }
}
