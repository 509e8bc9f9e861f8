//! Reconnecting an upstream SSE stream: when to connect again, with which
//! `Last-Event-ID`, when to stop trying, and which replayed events to drop.
//!
//! Per upstream session the relay keeps at most one GET stream for
//! server-initiated messages, and resumes POST response streams that ended
//! before their reply (MCP 2025-11-25 polling). Each of them is one
//! [`SseStream`]. A dropped connection is not a cancellation
//! (MCP, Streamable HTTP transport): the stream is resumed with a GET
//! carrying `Last-Event-ID`, and the server replays what that stream missed.
//!
//! Sans-I/O, like [`super::pool`]: no sockets, no clock. Every method takes
//! `now`; the owner carries out the returned [`Action`]s (send the GET, arm a
//! timer, end the session) and reports back with [`SseStream::on_connected`],
//! [`SseStream::on_event`], [`SseStream::on_failure`] and
//! [`SseStream::on_timer`].
//!
//! # States
//!
//! ```text
//! state         report                             → state               action
//! Idle          want                               → Connecting          Connect
//! Idle          want, resuming, `retry:` known     → Backoff{now+retry}  Wait
//! Connecting    on_connected (or a first event)    → Open
//! Connecting    on_failure Status(404)             → GaveUp              GiveUp
//! Connecting    on_failure Status(405), any other  → Idle, refused       (none)
//!                 status not transient (400, 403…)
//! Connecting,   on_failure, transient, and the     → Backoff{until}      Wait(until)
//!   Open          attempt starts within the budget
//! Connecting,   on_failure, transient, and the     → GaveUp              GiveUp
//!   Open          attempt would start past it
//! Backoff       on_timer, now ≥ until              → Connecting          Connect{last_event_id}
//! any           stop                               → Idle
//! ```
//!
//! Reports that do not fit the state (a failure while in Backoff, a timer
//! while Connecting, a timer firing before `until`) come from a connection or
//! timer the stream no longer tracks; they change nothing and return no
//! action.
//!
//! # Decisions
//!
//! - **Full jitter, above a floor.** The n-th delay of a failure run is
//!   `floor + jitter`, `jitter` uniform in `[0, min(cap, base·2^n)]`
//!   ([`Backoff`]). `floor` is the larger of the server's last `retry:`
//!   (2025-11-25: the client must wait it before reconnecting) and the
//!   failure's `Retry-After` (429/503, capped at `cap`). The jitter is added
//!   to the floor rather than taking `max(floor, jitter)`: with `max`, every
//!   stream whose draw fell below the floor would reconnect at the very same
//!   instant, which is the herd the jitter exists to break. So a delay is
//!   never shorter than the floor and never longer than `floor + cap`; it
//!   passes `cap` only when a floor is present.
//! - **A lone drop reconnects at once; a herd is spread.** When a stream
//!   that was Open fails (dropped, reset, stalled), it records the drop in
//!   its upstream's [`RecentDrops`], which the owner keeps (one per upstream)
//!   and passes in, and gets back `n`: the drops of that upstream's open
//!   streams in the last [`DROP_WINDOW`] (10 s), this one and the stream's
//!   own earlier ones included. The run then draws from a window at least
//!   [`drop_window`]`(base, n) = min(base·n, HERD_SPREAD)` wide: the backoff
//!   skips ahead to the first attempt `k` with `base·2^k` that wide.
//!   - A lone drop (`n` = 1) keeps the run's window: `base` after progress,
//!     so one flaky stream is back within 250 ms (default base) and its
//!     server's notifications are not held up for seconds.
//!   - A herd: open streams drop together when their upstream restarts, and
//!     then every session of the relay reconnects at once; at most 15% of
//!     them may land in any 100 ms. The plain 250 ms window puts ~40% there.
//!     A 1 s window puts 10% there on average, but the densest 100 ms of a
//!     herd of 1,000 sits well above the average (up to 14.4% over 200
//!     simulated herds: too close to the limit); a 2 s window
//!     ([`HERD_SPREAD`]; `base·2^k` is in [2 s, 4 s) for every valid base)
//!     gives 5% on average. The first streams of a herd see fewer drops
//!     before them and draw from narrower windows (250 ms, 500 ms, 1 s, 1 s
//!     at the default base, then 2 s from the 5th on): at most
//!     ⌈2 s / base⌉ − 1 of them, 19 at the smallest base. Even if all of
//!     those landed in the densest 100 ms of the others, the bound holds:
//!     over 1,000 simulated herds of 1,000 at the default base the densest
//!     100 ms held at most 8.4% (8.7% in that worst case), and over 200
//!     herds at each of the bases 100, 126, 130, 260, 400 and 500 ms at most
//!     8.2% (9.0%). The unit tests check 20 seeded herds per base.
//!   - Unrelated drops seconds apart widen each other's window by one
//!     `base` each: a busy upstream whose streams drop now and then gets
//!     them back sooner than a herd, later than a lone drop.
//!   - Flapping is not a lone drop. A stream that drops again within
//!     [`DROP_WINDOW`] counts its own earlier drops: when each connection
//!     delivers events (so each drop starts a new run) its windows go
//!     250 ms, 500 ms, 1 s, 1 s, then 2 s for as long as it keeps dropping
//!     (about one reconnect a second); when they deliver nothing the run
//!     doubles from `base` as for failed connects, and gives up after
//!     `max_elapsed`. Once a connection outlives [`DROP_WINDOW`], its next
//!     drop is lone again.
//!   - A failure to connect (the stream was not Open) is not a drop and
//!     keeps the plain window: those come in herds only after a herd was
//!     already spread. Later failures keep doubling from `k`.
//! - **What ends a failure run.** A delivered event (a new id, or no id):
//!   the server is making progress, so the backoff starts over and the
//!   give-up clock stops. Also a connection that stayed open for at least
//!   `cap` before dropping, even without events: a quiet GET stream is normal
//!   (servers rarely push) and an idle-timeout in some proxy may cut it every
//!   few minutes; counting that as continuous failure would end a healthy
//!   session after `max_elapsed`. Reconnecting after such a stream costs at
//!   most one connection per `cap`, which is what the slowest backoff costs.
//!   A connection that opens and drops sooner without a new event does *not*
//!   end the run, so a server that accepts and drops is retried ever more
//!   slowly and eventually given up; a replayed duplicate is not progress
//!   either.
//! - **Budget: give up early, never gather at the deadline.** A run starts at
//!   its first failure. A reconnect is scheduled only if it would start at or
//!   before `run start + max_elapsed`; otherwise the stream gives up at that
//!   failure, up to `floor + cap` before the deadline. Clamping the last
//!   attempt to the deadline would use the whole budget, but streams that
//!   failed together share their deadline, so they would all reconnect in
//!   the same instant. The same rule covers a floor larger than what is left:
//!   the server's wait must be honoured, so the stream gives up.
//! - **Statuses** (MCP, Streamable HTTP transport): 404 means the session
//!   is gone (the owner starts a new one, through its own backoff:
//!   [`ReinitBackoff`]) → give up now. 408, 429 and 5xx are transient →
//!   back off, like connect failures, timeouts and drops. 405 means the
//!   server has no GET stream, and so does every other status, which will
//!   not change by waiting: many servers answer 400 or 403 (or 401, a
//!   redirect, an unexpected 2xx) where MCP says 405. → Idle and *refused*:
//!   not an error, the session goes on, and later `want`s do nothing
//!   (asking again would only be refused again; [`SseStream::refused`]
//!   names the status, for the owner's one log line). Giving up on these
//!   made the owner create a new session and GET again, at once and for
//!   ever: the retry storm of issue 11, class 6.
//! - **Dedupe.** Event ids are unique across a session's streams, and a
//!   resumed stream may replay some it already sent. The last `recent_ids`
//!   delivered ids are remembered (a set plus a FIFO queue that evicts the
//!   oldest); an event with a remembered id is dropped and does not move
//!   `last_event_id` back. Events without an id are always delivered. An
//!   empty id resets `last_event_id` (WHATWG HTML §9.2.6), so the next
//!   reconnect sends none.
//!
//! The policy is this file; `drops` counts an upstream's recent drops
//! ([`RecentDrops`]), `retry_after` parses the `Retry-After` header
//! ([`parse_retry_after`]); the owner passes both to `on_failure`. The unit
//! tests are in `tests` (and `drops`).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::backoff::{Backoff, Rng};

mod drops;
mod reinit;
mod retry_after;

pub use drops::{DROP_WINDOW, MAX_REMEMBERED, RecentDrops, drop_window};
pub use reinit::ReinitBackoff;
pub use retry_after::parse_retry_after;

/// The narrowest jitter window a reconnect after losing an open stream draws
/// from once many streams of its upstream dropped together (a lone drop
/// draws from `base`). At most 15% of a herd may land in one 100 ms window;
/// uniform over 2 s gives 5% on average, leaving room for chance (see the
/// module docs).
pub const HERD_SPREAD: Duration = Duration::from_secs(2);

/// Reconnect policy, shared by every stream of the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectConfig {
    /// `--reconnect-base`: the first jitter window. Default 250 ms, valid
    /// 100 ms..=500 ms.
    pub base: Duration,
    /// The widest jitter window. Default 30 s.
    pub cap: Duration,
    /// `--reconnect-max-elapsed`: how long a run of failures may last before
    /// the stream gives up. Default 5 min.
    pub max_elapsed: Duration,
    /// How many delivered event ids are remembered to drop replays. Default
    /// 1024; 0 turns dedupe off.
    pub recent_ids: usize,
}

impl ReconnectConfig {
    pub const MIN_BASE: Duration = Duration::from_millis(100);
    pub const MAX_BASE: Duration = Duration::from_millis(500);

    pub fn validate(&self) -> Result<(), String> {
        if !(Self::MIN_BASE..=Self::MAX_BASE).contains(&self.base) {
            return Err(format!(
                "--reconnect-base: must be between 100ms and 500ms, got {:?}",
                self.base
            ));
        }
        if self.cap < self.base {
            return Err(format!(
                "reconnect cap ({:?}) must be at least --reconnect-base ({:?})",
                self.cap, self.base
            ));
        }
        Ok(())
    }
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
            recent_ids: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Not wanted, or the server has no such stream (405, 400, 403…).
    Idle,
    /// A `Connect` is out; waiting for the response headers.
    Connecting,
    /// 200 `text/event-stream` received; events flow.
    Open,
    /// Waiting for the timer armed at `until` before connecting again.
    Backoff { until: Instant },
    /// Reconnecting is hopeless or over budget; the owner ends the session.
    GaveUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the GET (`Accept: text/event-stream`), with this `Last-Event-ID`
    /// if any.
    Connect { last_event_id: Option<String> },
    /// Arm a timer for this instant and call `on_timer` when it fires.
    Wait(Instant),
    /// End the session: the owner answers pending requests and treats the
    /// session as ended.
    GiveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection (refused, DNS, TLS).
    ConnectFailed,
    /// A response other than 200 `text/event-stream`.
    Status(u16),
    /// The stream ended or was reset after being open.
    Dropped,
    /// Connecting, or waiting for the headers, took too long; or an open
    /// stream stalled.
    Timeout,
}

/// The last `cap` delivered event ids, oldest first out.
#[derive(Debug, Clone)]
struct RecentIds {
    cap: usize,
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl RecentIds {
    fn new(cap: usize) -> Self {
        RecentIds {
            cap,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.cap == 0 {
            return;
        }
        if self.order.len() >= self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(id);
        self.set.insert(id.clone());
        self.order.push_back(id);
    }
}

/// One upstream SSE stream of one session: its connection state, resume
/// point and backoff.
#[derive(Debug, Clone)]
pub struct SseStream {
    cfg: ReconnectConfig,
    state: StreamState,
    backoff: Backoff,
    /// First failure of the current run; None when the last connection made
    /// progress (or nothing failed yet).
    failing_since: Option<Instant>,
    /// When the current connection opened; Some only while Open.
    opened_at: Option<Instant>,
    last_event_id: Option<String>,
    /// The server's last `retry:`: the least it wants us to wait.
    retry: Option<Duration>,
    recent: RecentIds,
    /// The status that said the server has no GET stream (405, 400, 403…).
    refused: Option<u16>,
}

impl SseStream {
    pub fn new(cfg: ReconnectConfig, rng: Rng) -> SseStream {
        SseStream {
            backoff: Backoff::new(cfg.base, cfg.cap, rng),
            recent: RecentIds::new(cfg.recent_ids),
            cfg,
            state: StreamState::Idle,
            failing_since: None,
            opened_at: None,
            last_event_id: None,
            retry: None,
            refused: None,
        }
    }

    /// The owner wants the stream (after `notifications/initialized`, or a
    /// POST stream ended before its reply). Idempotent: while Connecting,
    /// Open or in Backoff it returns nothing, so there is at most one
    /// connection at any moment. Nothing either after a 405 or a give-up.
    ///
    /// Resuming a stream whose server sent `retry:` waits that long first
    /// (2025-11-25: the client must wait `retry` before reconnecting); this
    /// is the polling case, where the server closed a POST stream on purpose.
    pub fn want(&mut self, now: Instant) -> Vec<Action> {
        if self.state != StreamState::Idle || self.refused.is_some() {
            return Vec::new();
        }
        let wait = self
            .retry
            .filter(|r| !r.is_zero() && self.last_event_id.is_some());
        match wait {
            None => self.connect(),
            Some(r) => match now.checked_add(r) {
                Some(until) => self.wait(until),
                None => self.give_up(),
            },
        }
    }

    /// HTTP 200 `text/event-stream` arrived for the outstanding `Connect`.
    pub fn on_connected(&mut self, now: Instant) {
        if self.state == StreamState::Connecting {
            self.state = StreamState::Open;
            self.opened_at = Some(now);
        }
    }

    /// An event arrived. Returns false if its id was delivered before: drop
    /// it. A delivered event ends the failure run (the server is making
    /// progress), becomes the resume point if it has an id, and its id is
    /// remembered for dedupe. `retry` (ms) is kept whatever the event.
    pub fn on_event(&mut self, id: Option<&str>, retry: Option<u64>, now: Instant) -> bool {
        if let Some(ms) = retry {
            self.retry = Some(Duration::from_millis(ms));
        }
        match id {
            Some(id) if self.recent.contains(id) => return false,
            // WHATWG HTML §9.2.6: an empty id resets the last event ID.
            Some("") => self.last_event_id = None,
            Some(id) => {
                self.last_event_id = Some(id.to_owned());
                self.recent.insert(id);
            }
            None => {}
        }
        // An event proves the connection open, even if the owner has not
        // said so yet.
        self.on_connected(now);
        self.end_run();
        true
    }

    /// The connection failed, or the open stream ended. `retry_after` is the
    /// parsed `Retry-After` of a 429/503, if any; `drops` is the upstream's
    /// tracker, where the end of an open stream is recorded and which says
    /// how wide to spread. Returns `Wait(until)`, `GiveUp`, or nothing (405,
    /// or a report about a connection this stream no longer tracks).
    pub fn on_failure(
        &mut self,
        kind: Failure,
        retry_after: Option<Duration>,
        drops: &mut RecentDrops,
        now: Instant,
    ) -> Vec<Action> {
        let was_open = match self.state {
            StreamState::Connecting => false,
            StreamState::Open => true,
            StreamState::Idle | StreamState::Backoff { .. } | StreamState::GaveUp => {
                return Vec::new();
            }
        };
        let opened_at = self.opened_at.take();
        match kind {
            Failure::Status(404) => return self.give_up(),
            Failure::Status(status) if !is_transient(status) => {
                self.refused = Some(status);
                self.state = StreamState::Idle;
                self.end_run();
                return Vec::new();
            }
            Failure::Status(_) | Failure::ConnectFailed | Failure::Dropped | Failure::Timeout => {}
        }
        // A quiet stream that lived long enough was working, not failing.
        if opened_at.is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.cap) {
            self.end_run();
        }
        let run_start = *self.failing_since.get_or_insert(now);
        if was_open {
            let n = drops.record(now);
            self.widen_to(drop_window(self.cfg.base, n));
        }
        let jitter = self.backoff.next_delay();
        let floor = self
            .retry
            .unwrap_or_default()
            .max(retry_after.map(|d| d.min(self.cfg.cap)).unwrap_or_default());
        let until = now.checked_add(floor.saturating_add(jitter));
        match (until, run_start.checked_add(self.cfg.max_elapsed)) {
            (Some(until), Some(deadline)) if until <= deadline => self.wait(until),
            (Some(until), None) => self.wait(until),
            _ => self.give_up(),
        }
    }

    /// The timer of the last `Wait` fired: connect again, resuming from
    /// `last_event_id`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            StreamState::Backoff { until } if now >= until => self.connect(),
            // Stale: a timer from an earlier backoff, or the current one's
            // is still armed.
            _ => Vec::new(),
        }
    }

    /// The stream is no longer wanted (the session is over): Idle. Forgets
    /// the connection and the failure run, keeps what the server said (the
    /// resume point, `retry:`, the remembered ids, a 405). Any armed timer
    /// becomes stale.
    pub fn stop(&mut self) {
        self.state = StreamState::Idle;
        self.opened_at = None;
        self.end_run();
    }

    pub fn state(&self) -> &StreamState {
        &self.state
    }

    /// The status with which the server said it has no GET stream (405,
    /// or any other status that is neither 404 nor transient); the stream
    /// is not asked for again.
    pub fn refused(&self) -> Option<u16> {
        self.refused
    }

    /// What the next `Connect` sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The backoff exponent: the next delay's jitter is drawn from
    /// `[0, min(cap, base·2^attempt)]`. It counts the failures of the run,
    /// plus the attempts skipped when an open stream was lost.
    pub fn attempt(&self) -> u32 {
        self.backoff.attempt()
    }

    fn connect(&mut self) -> Vec<Action> {
        self.state = StreamState::Connecting;
        vec![Action::Connect {
            last_event_id: self.last_event_id.clone(),
        }]
    }

    fn wait(&mut self, until: Instant) -> Vec<Action> {
        self.state = StreamState::Backoff { until };
        vec![Action::Wait(until)]
    }

    fn give_up(&mut self) -> Vec<Action> {
        self.state = StreamState::GaveUp;
        self.end_run();
        vec![Action::GiveUp]
    }

    fn end_run(&mut self) {
        self.failing_since = None;
        self.backoff.reset();
    }

    /// Skips the backoff ahead until its window is at least `window` (or
    /// the cap). `Backoff` only moves forward by drawing, so the skipped
    /// attempts' draws are discarded; they cost nothing but random state.
    fn widen_to(&mut self, window: Duration) {
        while self.backoff.ceiling() < window.min(self.cfg.cap) && self.backoff.attempt() < 31 {
            self.backoff.next_delay();
        }
    }
}

/// Statuses worth waiting out: 408 Request Timeout, 429 Too Many Requests
/// and every 5xx.
fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

#[cfg(test)]
mod tests;
