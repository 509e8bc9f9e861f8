//! Fake-clock tests of the process lifecycle: every legal move, the close
//! sequence under both policies, and illegal moves caught.

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
