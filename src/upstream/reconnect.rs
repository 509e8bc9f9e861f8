//! Reconnecting an upstream SSE stream: when to connect again, with which
//! `Last-Event-ID`, when to stop trying, and which replayed events to drop.
//!
//! Per upstream session the relay keeps at most one GET stream for
//! server-initiated messages, and resumes POST response streams that ended
//! before their reply (MCP 2025-11-25 polling). Each of them is one
//! [`SseStream`]. A dropped connection is not a cancellation
//! (MCP-TRANSPORTS.md §Streamable HTTP): the stream is resumed with a GET
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
//! Connecting    on_failure Status(405)             → Idle                (none)
//! Connecting    on_failure Status(404), other 4xx  → GaveUp              GiveUp
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
//! - **Losing an open stream spreads wider.** When a stream that was Open
//!   fails (dropped, reset, stalled), the run draws from a window of at least
//!   [`HERD_SPREAD`] (2 s): the backoff skips ahead to the first attempt `k`
//!   with `base·2^k ≥ 2 s` (k = 3 for the default 250 ms base, so the window
//!   is [0, 2 s]; any valid base gives a window in [2 s, 4 s)). Open streams
//!   drop together exactly when their upstream restarts, and then every
//!   session of the relay reconnects at once; at most 15% of them may land in
//!   any 100 ms. The plain 250 ms window puts ~40% there. A 1 s window puts
//!   10% there on average, but the densest 100 ms of a herd of 1,000 sits
//!   well above the average (up to 14.4% over 200 simulated herds: too close
//!   to the limit); a 2 s window gives 5% on average and at most 8.5% over
//!   1,000 simulated herds, for every valid base. The cost is one client's
//!   first reconnect after a drop: on average 1 s instead of 125 ms, with
//!   nothing lost, since the stream resumes from `Last-Event-ID`. A failure
//!   to connect (the stream was not Open) keeps the plain window: those come
//!   in herds only after a herd was already spread. Later failures keep
//!   doubling from `k`.
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
//! - **Statuses** (MCP-TRANSPORTS.md §Streamable HTTP): 404 means the session
//!   is gone (the owner starts a new one) → give up now. 405 means the
//!   server has no GET stream → Idle, not an error, and later `want`s do
//!   nothing (asking again would only get 405 again). 408, 429 and 5xx are
//!   transient → back off, like connect failures, timeouts and drops. Every
//!   other status (400, 401, 403, a redirect, an unexpected 2xx) will not
//!   change by waiting → give up.
//! - **Dedupe.** Event ids are unique across a session's streams, and a
//!   resumed stream may replay some it already sent. The last `recent_ids`
//!   delivered ids are remembered (a set plus a FIFO queue that evicts the
//!   oldest); an event with a remembered id is dropped and does not move
//!   `last_event_id` back. Events without an id are always delivered. An
//!   empty id resets `last_event_id` (WHATWG HTML §9.2.6), so the next
//!   reconnect sends none.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::policy::backoff::{Backoff, Rng};

/// The narrowest jitter window a reconnect after losing an open stream draws
/// from. At most 15% of a herd may land in one 100 ms window; uniform over
/// 2 s gives 5% on average, leaving room for chance (see the module docs).
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
    /// Not wanted, or the server has no such stream (405).
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
    /// The server answered 405: it has no GET stream.
    refused: bool,
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
            refused: false,
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
        if self.state != StreamState::Idle || self.refused {
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
    /// parsed `Retry-After` of a 429/503, if any. Returns `Wait(until)`,
    /// `GiveUp`, or nothing (405, or a report about a connection this stream
    /// no longer tracks).
    pub fn on_failure(
        &mut self,
        kind: Failure,
        retry_after: Option<Duration>,
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
            Failure::Status(405) => {
                self.refused = true;
                self.state = StreamState::Idle;
                self.end_run();
                return Vec::new();
            }
            Failure::Status(status) if !is_transient(status) => return self.give_up(),
            Failure::Status(_) | Failure::ConnectFailed | Failure::Dropped | Failure::Timeout => {}
        }
        // A quiet stream that lived long enough was working, not failing.
        if opened_at.is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.cap) {
            self.end_run();
        }
        let run_start = *self.failing_since.get_or_insert(now);
        if was_open {
            self.spread_herd();
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

    /// Skips the backoff ahead until its window is at least [`HERD_SPREAD`]
    /// (or the cap). `Backoff` only moves forward by drawing, so the skipped
    /// attempts' draws are discarded; they cost nothing but random state.
    fn spread_herd(&mut self) {
        while self.backoff.ceiling() < HERD_SPREAD.min(self.cfg.cap) && self.backoff.attempt() < 31
        {
            self.backoff.next_delay();
        }
    }
}

/// Statuses worth waiting out: 408 Request Timeout, 429 Too Many Requests
/// and every 5xx.
fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an
/// HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime forms). A
/// date in the past gives zero; an absurd number of seconds saturates.
/// The caller caps the result (`on_failure` caps it at `cap`).
pub fn parse_retry_after(value: &str, now_system: SystemTime) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let secs = parse_http_date(value, now_system)?;
    let Ok(secs) = u64::try_from(secs) else {
        return Some(Duration::ZERO); // before 1970: long past
    };
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(at.duration_since(now_system).unwrap_or(Duration::ZERO))
}

const SHORT_DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An HTTP-date (RFC 9110 §5.6.7) as seconds since the Unix epoch. The
/// weekday must be a weekday name but is not checked against the date.
fn parse_http_date(s: &str, now_system: SystemTime) -> Option<i64> {
    let fields: Vec<&str> = s.split_ascii_whitespace().collect();
    let (year, month, day, time) = match fields.as_slice() {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        [wd, day, mon, year, time, "GMT"] => {
            weekday(wd.strip_suffix(',')?, &SHORT_DAYS)?;
            (number(year, 4, 4)?, month(mon)?, number(day, 2, 2)?, *time)
        }
        // rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT"
        [wd, date, time, "GMT"] => {
            weekday(wd.strip_suffix(',')?, &LONG_DAYS)?;
            let mut parts = date.split('-');
            let day = number(parts.next()?, 2, 2)?;
            let mon = month(parts.next()?)?;
            let yy = number(parts.next()?, 2, 2)?;
            if parts.next().is_some() {
                return None;
            }
            (two_digit_year(yy, now_system), mon, day, *time)
        }
        // asctime-date: "Sun Nov  6 08:49:37 1994"
        [wd, mon, day, time, year] => {
            weekday(wd, &SHORT_DAYS)?;
            (number(year, 4, 4)?, month(mon)?, number(day, 1, 2)?, *time)
        }
        _ => return None,
    };
    let mut hms = time.split(':');
    let hour = number(hms.next()?, 2, 2)?;
    let minute = number(hms.next()?, 2, 2)?;
    let second = number(hms.next()?, 2, 2)?;
    // 60 is a leap second.
    if hms.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year as i64, month, day);
    Some(days * 86_400 + (hour * 3600 + minute * 60 + second) as i64)
}

/// Some if `name` is one of `days`.
fn weekday(name: &str, days: &[&str]) -> Option<()> {
    days.contains(&name).then_some(())
}

/// `s` as a decimal number of `min..=max` digits.
fn number(s: &str, min: usize, max: usize) -> Option<u32> {
    if !(min..=max).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// 1-based month of a three-letter name (case-sensitive, as RFC 9110 says).
fn month(name: &str) -> Option<u32> {
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

/// RFC 9110 §5.6.7: a two-digit year that would be more than 50 years in
/// the future is the most recent past year with those digits.
fn two_digit_year(yy: u32, now_system: SystemTime) -> u32 {
    let secs = now_system
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Close enough for a 50-year rule: a Gregorian year is 365.2425 days.
    let this_year = 1970 + (secs / 31_556_952) as u32;
    let year = this_year - this_year % 100 + yy;
    if year > this_year + 50 {
        year - 100
    } else {
        year
    }
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn stream(seed: u64) -> SseStream {
        SseStream::new(ReconnectConfig::default(), Rng::seeded(seed))
    }

    fn connect(id: Option<&str>) -> Vec<Action> {
        vec![Action::Connect {
            last_event_id: id.map(str::to_owned),
        }]
    }

    /// The instant of the single `Wait` in `actions`.
    #[track_caller]
    fn wait_of(actions: Vec<Action>) -> Instant {
        match actions.as_slice() {
            [Action::Wait(until)] => *until,
            other => panic!("expected one Wait, got {other:?}"),
        }
    }

    /// Wants the stream at `now` and lets it connect.
    fn opened(s: &mut SseStream, now: Instant) {
        assert!(matches!(s.want(now).as_slice(), [Action::Connect { .. }]));
        s.on_connected(now);
        assert_eq!(s.state(), &StreamState::Open);
    }

    /// Fails the outstanding connect at `now` and fires its timer: returns
    /// the delay drawn.
    #[track_caller]
    fn fail_and_retry(s: &mut SseStream, kind: Failure, now: Instant) -> (Duration, Instant) {
        let until = wait_of(s.on_failure(kind, None, now));
        assert!(matches!(
            s.on_timer(until).as_slice(),
            [Action::Connect { .. }]
        ));
        (until - now, until)
    }

    /// The most values of `sorted` in any half-open window `[v, v + width)`.
    fn densest_window(sorted: &[Duration], width: Duration) -> usize {
        let mut best = 0;
        let mut hi = 0;
        for (lo, &start) in sorted.iter().enumerate() {
            while hi < sorted.len() && sorted[hi] < start + width {
                hi += 1;
            }
            best = best.max(hi - lo);
        }
        best
    }

    #[test]
    fn defaults_validate_and_base_is_bounded() {
        let cfg = ReconnectConfig::default();
        assert_eq!(cfg.base, ms(250));
        assert_eq!(cfg.cap, secs(30));
        assert_eq!(cfg.max_elapsed, secs(300));
        assert_eq!(cfg.recent_ids, 1024);
        assert_eq!(cfg.validate(), Ok(()));
        for ok in [100, 500] {
            let c = ReconnectConfig {
                base: ms(ok),
                ..ReconnectConfig::default()
            };
            assert_eq!(c.validate(), Ok(()), "{ok}ms");
        }
        for bad in [0, 99, 501, 5000] {
            let c = ReconnectConfig {
                base: ms(bad),
                ..ReconnectConfig::default()
            };
            assert!(c.validate().unwrap_err().contains("--reconnect-base"));
        }
        let c = ReconnectConfig {
            cap: ms(200),
            ..ReconnectConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn every_delay_is_within_its_bound_for_attempts_0_to_40() {
        let t0 = Instant::now();
        let cfg = ReconnectConfig {
            max_elapsed: secs(86_400),
            ..ReconnectConfig::default()
        };
        let mut s = SseStream::new(cfg.clone(), Rng::seeded(1));
        assert_eq!(s.want(t0), connect(None));
        let mut now = t0;
        let mut widest = Duration::ZERO;
        for n in 0..=40u32 {
            let bound = (cfg.base * 2u32.saturating_pow(n.min(20))).min(cfg.cap);
            assert_eq!(s.attempt(), n);
            let (delay, until) = fail_and_retry(&mut s, Failure::ConnectFailed, now);
            assert!(delay <= bound, "attempt {n}: {delay:?} > {bound:?}");
            widest = widest.max(delay);
            now = until;
        }
        assert!(widest > secs(15), "jitter should reach the upper half");
    }

    #[test]
    fn a_connect_failure_draws_from_the_base_window() {
        // The herd spread is for lost open streams; a failed first connect
        // retries within `base`.
        let t0 = Instant::now();
        for seed in 0..200 {
            let mut s = stream(seed);
            s.want(t0);
            let until = wait_of(s.on_failure(Failure::Timeout, None, t0));
            assert!(until - t0 <= ms(250), "seed {seed}");
            assert_eq!(s.attempt(), 1);
        }
    }

    #[test]
    fn a_received_message_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = stream(2);
        s.want(t0);
        let mut now = t0;
        for _ in 0..6 {
            now = fail_and_retry(&mut s, Failure::Status(503), now).1;
        }
        assert_eq!(s.attempt(), 6);
        s.on_connected(now);
        assert!(s.on_event(Some("1"), None, now));
        assert_eq!(s.attempt(), 0);
        // The next connect failure starts over at the base window...
        s.stop();
        s.want(now);
        let until = wait_of(s.on_failure(Failure::ConnectFailed, None, now));
        assert!(until - now <= ms(250));
        assert_eq!(s.attempt(), 1);
        // ...and a drop of an open stream at the herd window (2 s), not at
        // attempt 6's 16 s.
        s.on_timer(until);
        s.on_connected(until);
        assert!(s.on_event(Some("2"), None, until));
        let next = wait_of(s.on_failure(Failure::Dropped, None, until));
        assert!(next - until <= HERD_SPREAD);
        assert_eq!(s.attempt(), 4, "skipped to base·2³ = 2 s, then drew");
    }

    #[test]
    fn ten_503s_then_success_recovers_with_growing_delays() {
        let t0 = Instant::now();
        let mut s = stream(3);
        assert_eq!(s.want(t0), connect(None));
        let mut now = t0;
        let mut delays = Vec::new();
        for n in 0..10u32 {
            let (delay, until) = fail_and_retry(&mut s, Failure::Status(503), now);
            assert!(
                delay <= (ms(250) * 2u32.pow(n)).min(secs(30)),
                "attempt {n}"
            );
            delays.push(delay);
            now = until;
        }
        let early: Duration = delays[..5].iter().sum();
        let late: Duration = delays[5..].iter().sum();
        assert!(late > early * 4, "{delays:?}");
        assert!(now - t0 < secs(300), "still within the budget");
        // The eleventh attempt succeeds.
        s.on_connected(now);
        assert_eq!(s.state(), &StreamState::Open);
        assert!(s.on_event(Some("a"), None, now));
        assert_eq!(s.attempt(), 0);
        assert_eq!(s.last_event_id(), Some("a"));
    }

    #[test]
    fn the_servers_retry_is_a_floor_and_no_connect_comes_before_it() {
        let t0 = Instant::now();
        for seed in 0..100 {
            let mut s = stream(seed);
            opened(&mut s, t0);
            assert!(s.on_event(Some("p"), Some(3000), t0));
            let drop_at = t0 + secs(1);
            let until = wait_of(s.on_failure(Failure::Dropped, None, drop_at));
            assert!(until >= drop_at + secs(3), "seed {seed}");
            assert!(until <= drop_at + secs(3) + HERD_SPREAD, "seed {seed}");
            assert_eq!(s.on_timer(until - ms(1)), vec![]);
            assert_eq!(s.on_timer(until), connect(Some("p")));
        }
    }

    #[test]
    fn retry_after_7_is_obeyed_and_large_values_are_capped() {
        let t0 = Instant::now();
        let ra = parse_retry_after("7", SystemTime::now());
        assert_eq!(ra, Some(secs(7)));
        for seed in 0..100 {
            let mut s = stream(seed);
            s.want(t0);
            let until = wait_of(s.on_failure(Failure::Status(503), ra, t0));
            assert!(until >= t0 + secs(7) && until <= t0 + secs(7) + ms(250));
            assert_eq!(s.on_timer(until - ms(1)), vec![]);
            assert_eq!(s.on_timer(until), connect(None));
        }
        let mut s = stream(9);
        s.want(t0);
        let until = wait_of(s.on_failure(Failure::Status(429), Some(secs(3600)), t0));
        assert!(until >= t0 + secs(30) && until <= t0 + secs(30) + ms(250));
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        let date = UNIX_EPOCH + secs(784_111_777);
        let before = date - secs(10);
        let imf = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(imf, before), Some(secs(10)));
        assert_eq!(parse_retry_after(imf, date - ms(500)), Some(ms(500)));
        assert_eq!(parse_retry_after(imf, date), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(imf, date + secs(60)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", before),
            Some(secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:37 1994", before),
            Some(secs(10))
        );
        // A leap day, a leap second and a far future.
        let now = UNIX_EPOCH + secs(1_709_164_800); // 2024-02-29 00:00:00
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 00:01:00 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 00:00:60 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Mar 2024 00:00:00 GMT", now),
            Some(secs(86_400))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            Some(Duration::ZERO),
            "94 is 1994, not 2094"
        );
        assert_eq!(parse_retry_after(" 120 ", now), Some(secs(120)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(secs(u64::MAX))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "7s",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Thu, 29 Feb 2023 00:00:00 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_start_past_max_elapsed() {
        let t0 = Instant::now();
        let max = ReconnectConfig::default().max_elapsed;
        let mut s = stream(4);
        s.want(t0);
        // The run starts at t0 and runs on until well into the budget.
        let mut now = t0;
        while now - t0 < secs(200) {
            now = fail_and_retry(&mut s, Failure::ConnectFailed, now).1;
        }
        // A twin draws the same delay, so we can place the failure so that
        // the attempt lands exactly on the deadline...
        let delay = wait_of(s.clone().on_failure(Failure::ConnectFailed, None, now)) - now;
        let deadline = t0 + max;
        let at = deadline - delay;
        let mut exact = s.clone();
        assert_eq!(
            exact.on_failure(Failure::ConnectFailed, None, at),
            vec![Action::Wait(deadline)]
        );
        // ...or one microsecond past it: give up at the failure.
        let mut late = s.clone();
        assert_eq!(
            late.on_failure(Failure::ConnectFailed, None, at + Duration::from_micros(1)),
            vec![Action::GiveUp]
        );
        assert_eq!(late.state(), &StreamState::GaveUp);
        assert_eq!(late.want(at), vec![], "a give-up is final until stop");
        // Failing on and on, a stream never gets an attempt past the deadline
        // and gives up before it.
        let mut last = now;
        loop {
            match s.on_failure(Failure::ConnectFailed, None, last).as_slice() {
                [Action::Wait(until)] => {
                    assert!(*until <= deadline);
                    s.on_timer(*until);
                    last = *until;
                }
                [Action::GiveUp] => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(last <= deadline && deadline - last <= secs(30));
    }

    #[test]
    fn never_gives_up_while_events_keep_arriving() {
        let t0 = Instant::now();
        let mut s = stream(5);
        opened(&mut s, t0);
        let mut now = t0;
        for i in 0..2000u32 {
            // Each connection delivers one event, then the server drops it.
            assert!(s.on_event(Some(&i.to_string()), None, now));
            let until = wait_of(s.on_failure(Failure::Dropped, None, now + ms(10)));
            assert_eq!(s.on_timer(until), connect(Some(&i.to_string())));
            s.on_connected(until);
            now = until;
        }
        assert!(now - t0 > secs(900), "ran three budgets: {:?}", now - t0);
    }

    #[test]
    fn a_quiet_stream_that_lived_cap_is_not_a_failure_run() {
        // A GET stream with nothing to say, cut by an idle timeout every 40 s.
        let t0 = Instant::now();
        let mut s = stream(6);
        opened(&mut s, t0);
        let mut now = t0;
        while now - t0 < secs(1200) {
            let until = wait_of(s.on_failure(Failure::Dropped, None, now + secs(40)));
            assert!(until - (now + secs(40)) <= HERD_SPREAD);
            s.on_timer(until);
            s.on_connected(until);
            now = until;
        }
    }

    #[test]
    fn a_server_that_accepts_then_drops_backs_off_and_is_given_up() {
        let t0 = Instant::now();
        let mut s = stream(7);
        opened(&mut s, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        loop {
            match s.on_failure(Failure::Dropped, None, now + ms(5)).as_slice() {
                [Action::Wait(until)] => {
                    delays.push(*until - (now + ms(5)));
                    s.on_timer(*until);
                    s.on_connected(*until);
                    now = *until;
                }
                [Action::GiveUp] => break,
                other => panic!("{other:?}"),
            }
        }
        // Tens of reconnects over the budget, not a hot loop of thousands.
        assert!(delays.len() < 40, "{} reconnects", delays.len());
        assert!(delays.iter().max().unwrap() > &secs(10), "{delays:?}");
        assert!(now - t0 <= secs(300));
    }

    #[test]
    fn no_event_is_delivered_twice_across_a_reconnect() {
        let t0 = Instant::now();
        let mut s = stream(8);
        opened(&mut s, t0);
        let mut delivered = Vec::new();
        for id in ["1", "2", "3", "4", "5"] {
            if s.on_event(Some(id), None, t0) {
                delivered.push(id);
            }
        }
        let until = wait_of(s.on_failure(Failure::Dropped, None, t0 + ms(50)));
        assert_eq!(s.on_timer(until), connect(Some("5")));
        s.on_connected(until);
        // The server replays a little more than it should.
        for id in ["4", "5", "6"] {
            if s.on_event(Some(id), None, until) {
                delivered.push(id);
            }
        }
        assert_eq!(delivered, ["1", "2", "3", "4", "5", "6"]);
        assert_eq!(s.last_event_id(), Some("6"));
        // Events without an id always pass.
        assert!(s.on_event(None, None, until));
        assert!(s.on_event(None, None, until));
        assert_eq!(s.last_event_id(), Some("6"));
    }

    #[test]
    fn a_duplicate_neither_moves_the_resume_point_nor_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = stream(10);
        opened(&mut s, t0);
        assert!(s.on_event(Some("a"), None, t0));
        assert!(s.on_event(Some("b"), None, t0));
        let until = wait_of(s.on_failure(Failure::Dropped, None, t0));
        s.on_timer(until);
        s.on_connected(until);
        let attempt = s.attempt();
        assert!(!s.on_event(Some("a"), None, until));
        assert_eq!(s.last_event_id(), Some("b"));
        assert_eq!(s.attempt(), attempt);
    }

    #[test]
    fn the_recent_set_is_bounded_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let cfg = ReconnectConfig {
            recent_ids: 3,
            ..ReconnectConfig::default()
        };
        let mut s = SseStream::new(cfg, Rng::seeded(1));
        opened(&mut s, t0);
        for id in ["a", "b", "c", "d"] {
            assert!(s.on_event(Some(id), None, t0));
        }
        assert_eq!(s.recent.order.len(), 3);
        assert_eq!(s.recent.set.len(), 3);
        assert!(!s.on_event(Some("d"), None, t0));
        assert!(!s.on_event(Some("b"), None, t0));
        assert!(s.on_event(Some("a"), None, t0), "evicted, so delivered");
        // Remembering "a" again evicted the oldest, "b"; "c" stays.
        assert!(!s.on_event(Some("c"), None, t0));
        assert!(s.on_event(Some("b"), None, t0));
        assert_eq!(s.recent.order.len(), 3);
    }

    #[test]
    fn an_empty_id_resets_the_resume_point() {
        let t0 = Instant::now();
        let mut s = stream(11);
        opened(&mut s, t0);
        assert!(s.on_event(Some("9"), None, t0));
        assert!(s.on_event(Some(""), None, t0));
        assert!(
            s.on_event(Some(""), None, t0),
            "empty ids are not remembered"
        );
        assert_eq!(s.last_event_id(), None);
        let until = wait_of(s.on_failure(Failure::Dropped, None, t0));
        assert_eq!(s.on_timer(until), connect(None));
    }

    #[test]
    fn want_is_idempotent_in_every_active_state() {
        let t0 = Instant::now();
        let mut s = stream(12);
        assert_eq!(s.want(t0), connect(None));
        for _ in 0..100 {
            assert_eq!(s.want(t0), vec![]);
        }
        assert_eq!(s.state(), &StreamState::Connecting);
        s.on_connected(t0);
        for _ in 0..100 {
            assert_eq!(s.want(t0), vec![]);
        }
        assert_eq!(s.state(), &StreamState::Open);
        let until = wait_of(s.on_failure(Failure::Dropped, None, t0));
        for _ in 0..100 {
            assert_eq!(s.want(t0 + ms(1)), vec![]);
        }
        assert_eq!(s.state(), &StreamState::Backoff { until });
        assert_eq!(s.on_timer(until), connect(None));
        assert_eq!(s.on_timer(until), vec![], "a second firing is stale");
    }

    #[test]
    fn status_404_gives_up_at_once() {
        let t0 = Instant::now();
        let mut s = stream(13);
        s.want(t0);
        assert_eq!(
            s.on_failure(Failure::Status(404), None, t0),
            vec![Action::GiveUp]
        );
        assert_eq!(s.state(), &StreamState::GaveUp);
        assert_eq!(s.on_failure(Failure::Dropped, None, t0), vec![]);
        assert_eq!(s.on_timer(t0 + secs(60)), vec![]);
    }

    #[test]
    fn status_405_means_no_get_stream_and_goes_idle_for_good() {
        let t0 = Instant::now();
        let mut s = stream(14);
        s.want(t0);
        assert_eq!(s.on_failure(Failure::Status(405), None, t0), vec![]);
        assert_eq!(s.state(), &StreamState::Idle);
        assert_eq!(s.attempt(), 0);
        assert_eq!(s.want(t0 + secs(1)), vec![], "asking again would get 405");
        assert_eq!(s.on_timer(t0 + secs(1)), vec![]);
    }

    #[test]
    fn other_4xx_give_up_and_transient_statuses_back_off() {
        let t0 = Instant::now();
        for status in [400, 401, 403, 410, 421, 301, 204] {
            let mut s = stream(15);
            s.want(t0);
            assert_eq!(
                s.on_failure(Failure::Status(status), None, t0),
                vec![Action::GiveUp],
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503, 504] {
            let mut s = stream(15);
            s.want(t0);
            let until = wait_of(s.on_failure(Failure::Status(status), None, t0));
            assert!(until - t0 <= ms(250), "{status}");
        }
    }

    #[test]
    fn stale_reports_change_nothing() {
        let t0 = Instant::now();
        let mut s = stream(16);
        assert_eq!(s.on_timer(t0), vec![]);
        assert_eq!(s.on_failure(Failure::Dropped, None, t0), vec![]);
        s.on_connected(t0);
        assert_eq!(s.state(), &StreamState::Idle);
        s.want(t0);
        let until = wait_of(s.on_failure(Failure::ConnectFailed, None, t0));
        assert_eq!(s.on_failure(Failure::Dropped, None, t0), vec![]);
        assert_eq!(s.on_timer(until - Duration::from_micros(1)), vec![]);
        assert_eq!(s.state(), &StreamState::Backoff { until });
        s.stop();
        assert_eq!(s.state(), &StreamState::Idle);
        assert_eq!(s.attempt(), 0);
        assert_eq!(s.on_timer(until), vec![], "stop made the timer stale");
    }

    #[test]
    fn resuming_a_polled_post_stream_waits_the_servers_retry() {
        // 2025-11-25 polling: the POST stream primes an id and `retry:`, then
        // ends before the reply; the relay must re-GET after `retry`.
        let t0 = Instant::now();
        let mut s = stream(17);
        assert!(s.on_event(Some("post-1"), Some(2000), t0));
        assert_eq!(s.state(), &StreamState::Idle);
        let until = wait_of(s.want(t0 + ms(10)));
        assert_eq!(until, t0 + ms(2010));
        assert_eq!(s.want(t0 + ms(20)), vec![]);
        assert_eq!(s.on_timer(until), connect(Some("post-1")));
    }

    #[test]
    fn a_thousand_streams_dropped_together_spread_their_reconnects() {
        // Their upstream restarted: every open stream drops at t0.
        let t0 = Instant::now();
        let width = ms(100);
        let limit = 150; // 15% of 1,000
        for retry in [None, Some(2000)] {
            let mut delays: Vec<Duration> = (0..1000u64)
                .map(|seed| {
                    let mut s = stream(seed);
                    opened(&mut s, t0 - secs(60));
                    s.on_event(Some("e"), retry, t0 - secs(1));
                    wait_of(s.on_failure(Failure::Dropped, None, t0)) - t0
                })
                .collect();
            delays.sort();
            let floor = ms(retry.unwrap_or(0));
            assert!(delays[0] >= floor);
            let mut buckets = [0usize; 20];
            for d in &delays {
                buckets[((*d - floor).as_millis() / 100).min(19) as usize] += 1;
            }
            assert!(buckets.iter().all(|&n| n <= limit), "{buckets:?}");
            let densest = densest_window(&delays, width);
            assert!(densest <= limit, "retry {retry:?}: {densest} in 100 ms");
            assert!(densest >= 50, "sanity: {densest}");
        }
        // Without the herd rule the plain 250 ms window would crowd them.
        let mut plain: Vec<Duration> = (0..1000u64)
            .map(|seed| {
                let mut s = stream(seed);
                s.want(t0);
                wait_of(s.on_failure(Failure::ConnectFailed, None, t0)) - t0
            })
            .collect();
        plain.sort();
        assert!(densest_window(&plain, width) > 300);
    }
}
