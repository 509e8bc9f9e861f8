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
            crate::log_error!("process lifecycle: illegal transition {from:?} → {to:?}");
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
mod tests;
