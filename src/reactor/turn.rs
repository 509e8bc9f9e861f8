//! The loop turn, written once for every mode.
//!
//! ```text
//! loop {
//!     end_of_turn()            // move bytes, handle what was queued; may exit
//!     poll(timeout)            // 0 if work is left over, else the nearest deadline
//!     now = Instant::now()     // the only clock read of the turn
//!     each event → its source: signals are drained and handed over one by
//!                  one (SIGCHLD is where a mode reaps), the rest go to on_event
//!     after_events()           // e.g. sources whose read budget ran out
//!     each due timer → on_timer
//!     after_timers()           // engines with their own deadlines
//! }
//! ```
//!
//! A mode implements [`Driver`]; [`run`] owns the `Events` buffer and the
//! order above. Handlers never close anything the loop does not know about:
//! they record what happened and return, and the next `end_of_turn` acts.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::signals::Signals;
use super::timer::TimerWheel;
use super::token::{self, Source};

/// What the kernel said about a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer hung up (or an error is pending): read to EOF, never stop
    /// at a short read.
    pub hup: bool,
}

impl Readiness {
    pub fn of(ev: &mio::event::Event) -> Readiness {
        let hup = ev.is_read_closed() || ev.is_error();
        Readiness {
            readable: ev.is_readable() || hup,
            writable: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
            hup,
        }
    }
}

/// A mode's side of the loop.
pub trait Driver {
    type Timer;

    fn poll_mut(&mut self) -> &mut Poll;
    fn signals_mut(&mut self) -> &mut Signals;
    fn timers_mut(&mut self) -> &mut TimerWheel<Self::Timer>;
    /// The time of the current turn.
    fn now(&self) -> Instant;
    /// The turn's one clock read.
    fn set_now(&mut self, now: Instant);

    /// Deferred work of the turn (queued clients, output, closes decided by
    /// handlers). `Some(code)`: the mode is done; the loop returns `code`.
    fn end_of_turn(&mut self) -> Option<i32>;
    /// Work is left over (a budget ran out): poll without blocking.
    fn has_more(&self) -> bool;
    /// Deadlines kept outside the timer wheel (pools, HTTP engines).
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn on_signal(&mut self, sig: libc::c_int);
    /// Readiness of a source other than the signal pipe.
    fn on_event(&mut self, token: Token, ready: Readiness);
    fn after_events(&mut self) {}
    fn on_timer(&mut self, timer: Self::Timer);
    fn after_timers(&mut self) {}
}

/// Runs turns until the driver is done; returns its exit code.
pub fn run<D: Driver>(d: &mut D, capacity: usize) -> io::Result<i32> {
    let mut events = Events::with_capacity(capacity);
    let mut sigs = Vec::new();
    loop {
        if let Some(code) = d.end_of_turn() {
            return Ok(code);
        }
        let timeout = poll_timeout(d);
        match d.poll_mut().poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        d.set_now(now);
        for ev in events.iter() {
            if token::source(ev.token()) == Source::Signal {
                d.signals_mut().drain(&mut sigs);
                for s in sigs.drain(..) {
                    d.on_signal(s);
                }
            } else {
                d.on_event(ev.token(), Readiness::of(ev));
            }
        }
        d.after_events();
        while let Some(t) = d.timers_mut().poll(now) {
            d.on_timer(t);
        }
        d.after_timers();
        // "N similar lines suppressed" summaries whose window is over.
        crate::logging::tick(now);
    }
}

fn poll_timeout<D: Driver>(d: &mut D) -> Option<Duration> {
    if d.has_more() {
        return Some(Duration::ZERO);
    }
    let now = d.now();
    let wheel = d.timers_mut().next_timeout(now);
    // A pending log summary is a deadline too: it is written when its
    // window ends even if nothing else happens.
    let deadline = match (d.next_deadline(), crate::logging::next_due()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match deadline.map(|at| at.saturating_duration_since(now)) {
        Some(other) => Some(wheel.map_or(other, |w| w.min(other))),
        None => wheel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the order of the loop's calls; exits after its second timer.
    struct Recorder {
        poll: Poll,
        signals: Signals,
        timers: TimerWheel<u32>,
        now: Instant,
        log: Vec<String>,
        fired: u32,
        more_once: bool,
    }

    impl Driver for Recorder {
        type Timer = u32;
        fn poll_mut(&mut self) -> &mut Poll {
            &mut self.poll
        }
        fn signals_mut(&mut self) -> &mut Signals {
            &mut self.signals
        }
        fn timers_mut(&mut self) -> &mut TimerWheel<u32> {
            &mut self.timers
        }
        fn now(&self) -> Instant {
            self.now
        }
        fn set_now(&mut self, now: Instant) {
            assert!(now >= self.now, "the clock never goes back");
            self.now = now;
            self.log.push("now".into());
        }
        fn end_of_turn(&mut self) -> Option<i32> {
            self.log.push("end".into());
            (self.fired == 2).then_some(7)
        }
        fn has_more(&self) -> bool {
            self.more_once
        }
        fn on_signal(&mut self, _sig: libc::c_int) {
            unreachable!("no signal is sent in this test");
        }
        fn on_event(&mut self, _token: Token, _ready: Readiness) {
            unreachable!("no source is registered in this test");
        }
        fn after_events(&mut self) {
            self.log.push("events".into());
            self.more_once = false;
        }
        fn on_timer(&mut self, t: u32) {
            self.fired += 1;
            self.log.push(format!("timer {t}"));
        }
        fn after_timers(&mut self) {
            self.log.push("timers".into());
        }
    }

    #[test]
    fn a_turn_runs_its_steps_in_order_until_the_driver_is_done() {
        let now = Instant::now();
        let mut timers = TimerWheel::new(now);
        timers.insert(now + Duration::from_millis(2), 1);
        timers.insert(now + Duration::from_millis(4), 2);
        let mut d = Recorder {
            poll: Poll::new().expect("poll"),
            signals: Signals::detached().expect("signal pipe"),
            timers,
            now,
            log: Vec::new(),
            fired: 0,
            more_once: true,
        };
        assert_eq!(run(&mut d, 8).expect("loop"), 7);
        // Turn 1 polls without blocking (work left over): no timer is due
        // yet. Later turns sleep until a timer is due and fire it.
        assert_eq!(&d.log[..4], ["end", "now", "events", "timers"]);
        let steps: Vec<&str> = d.log.iter().map(String::as_str).collect();
        let t1 = steps.iter().position(|s| *s == "timer 1").expect("timer 1");
        let t2 = steps.iter().position(|s| *s == "timer 2").expect("timer 2");
        assert!(t1 < t2);
        assert_eq!(steps[t1 - 1], "events");
        assert_eq!(steps[t2 + 1], "timers");
        assert_eq!(steps.last(), Some(&"end"), "the driver ends the loop");
        assert!(d.now >= now + Duration::from_millis(4));
    }
}
