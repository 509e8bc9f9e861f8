//! RFC 7662 token introspection for opaque access tokens
//! (`--oauth-introspection-url`). Sans-I/O: the owner carries out the
//! POSTs [`Introspector::next_start`] hands out and reports how they ended;
//! the time is given.
//!
//! - **Cache.** Answers are kept per SHA-256 of the token (the token itself
//!   is never kept): an accepted token until its `exp` or `max_age`,
//!   whichever comes first; a refused one for at most
//!   [`REFUSAL_MAX_AGE`]. At most `cache_entries` answers; a new one pushes
//!   out the least recently used.
//! - **Sharing.** Requests with a token being introspected wait for that
//!   one introspection (waiters are the owner's ids, opaque here).
//! - **Bounds.** At most `max_held` requests wait in all and at most
//!   `max_inflight` tokens are introspected at once; beyond either, and for
//!   `down_for` after an introspection failed, an unknown token is
//!   [`Admit::Busy`] (the owner answers 503 with `Retry-After`).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::jwt::{Decision, Policy, Profile, Reason};

/// SHA-256 of a token: what the cache and the in-flight table key on.
pub type Key = [u8; 32];

/// Stale positions `lru` may hold beyond one per live entry before a pass
/// drops them.
const LRU_SLACK: usize = 64;

/// Longest a refusal (inactive, other audience, …) is cached.
pub const REFUSAL_MAX_AGE: Duration = Duration::from_secs(60);

pub fn key_of(token: &str) -> Key {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

pub use super::form::basic_credentials;

/// The verdict on a token, without the token: what the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Serve it, bound to this principal (`auth::principal`).
    Valid { principal: usize },
    /// 401 `invalid_token`.
    Invalid(Reason),
    /// 403 `insufficient_scope`.
    InsufficientScope,
}

impl Answer {
    pub fn of(d: Decision, issuer: &str) -> Answer {
        match d {
            Decision::Valid { subject, .. } => Answer::Valid {
                principal: super::principal(issuer, &subject),
            },
            Decision::Invalid(r) => Answer::Invalid(r),
            Decision::InsufficientScope => Answer::InsufficientScope,
        }
    }
}

/// Fixed and configured limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest an accepted token's answer is cached (zero: not cached).
    pub max_age: Duration,
    pub cache_entries: usize,
    pub max_inflight: usize,
    pub max_held: usize,
    /// After a failed introspection, unknown tokens get 503 this long.
    pub down_for: Duration,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Answered from the cache.
    Decided(Answer),
    /// Waiting for an introspection (started or joined).
    Held,
    /// Not now (503): the label says which bound.
    Busy(&'static str),
}

/// An introspection to send: `body` is the form, token included. The
/// owner hands it to the HTTP engine and drops it.
#[derive(Debug)]
pub struct Start {
    pub key: Key,
    pub body: Vec<u8>,
}

/// An introspection ended: its verdict (`Err`: the endpoint failed, text
/// for the log) and the requests that waited for it.
#[derive(Debug)]
pub struct Finished {
    pub result: Result<Answer, String>,
    pub waiters: Vec<usize>,
}

struct Entry {
    answer: Answer,
    until: Instant,
    /// Tick of the last use: the entry's live position in `lru`.
    used: u64,
}

#[derive(Debug, Default)]
pub struct IntroStats {
    /// Answers by outcome: `active`, `inactive`, `error`.
    pub active: u64,
    pub inactive: u64,
    pub error: u64,
    pub cache_hits: u64,
    pub evictions: u64,
    /// Requests answered 503 by bound: (label, count).
    busy: Vec<(&'static str, u64)>,
}

pub struct Introspector {
    limits: Limits,
    cache: HashMap<Key, Entry>,
    /// (tick of a use, key), oldest first. A use is pushed at the back and
    /// the entry's older positions stay behind as stale ones (their tick is
    /// no longer the entry's `used`), skipped when met at the front and
    /// dropped in one pass when they outnumber the live ones ([`Self::touch`]):
    /// at most `2 × cached + LRU_SLACK` positions.
    lru: VecDeque<(u64, Key)>,
    tick: u64,
    /// Tokens being introspected (or about to be) and who waits: at most
    /// `max_inflight` (a few dozen), so a list.
    pending: Vec<(Key, Vec<usize>)>,
    starts: VecDeque<Start>,
    held: usize,
    down_until: Option<Instant>,
    pub stats: IntroStats,
}

impl Introspector {
    pub fn new(limits: Limits) -> Introspector {
        Introspector {
            limits,
            cache: HashMap::new(),
            lru: VecDeque::new(),
            tick: 0,
            pending: Vec::new(),
            starts: VecDeque::new(),
            held: 0,
            down_until: None,
            stats: IntroStats::default(),
        }
    }

    /// Requests waiting for an introspection now.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// A request with `token`, known to its owner as `waiter`.
    pub fn admit(&mut self, token: &str, waiter: usize, now: Instant) -> Admit {
        let key = key_of(token);
        if let Some(e) = self.cache.get_mut(&key) {
            if now < e.until {
                self.tick += 1;
                e.used = self.tick;
                let answer = e.answer;
                self.touch(key);
                self.stats.cache_hits += 1;
                return Admit::Decided(answer);
            }
            self.cache.remove(&key);
        }
        if self.held >= self.limits.max_held {
            return self.busy("held");
        }
        if let Some((_, w)) = self.pending.iter_mut().find(|(k, _)| *k == key) {
            w.push(waiter);
            self.held += 1;
            return Admit::Held;
        }
        if self.down_until.is_some_and(|d| now < d) {
            return self.busy("endpoint_down");
        }
        if self.pending.len() >= self.limits.max_inflight {
            return self.busy("in_flight");
        }
        self.pending.push((key, vec![waiter]));
        self.held += 1;
        let body = format!(
            "token={}&token_type_hint=access_token",
            super::form::value(token)
        );
        self.starts.push_back(Start {
            key,
            body: body.into_bytes(),
        });
        Admit::Held
    }

    fn busy(&mut self, why: &'static str) -> Admit {
        match self.stats.busy.iter_mut().find(|(k, _)| *k == why) {
            Some((_, n)) => *n += 1,
            None => self.stats.busy.push((why, 1)),
        }
        Admit::Busy(why)
    }

    /// Introspections wait to be sent.
    pub fn has_starts(&self) -> bool {
        !self.starts.is_empty()
    }

    /// The next introspection to send.
    pub fn next_start(&mut self) -> Option<Start> {
        self.starts.pop_front()
    }

    /// A waiter went away (its client closed the connection).
    pub fn forget(&mut self, waiter: usize) {
        for (_, w) in self.pending.iter_mut() {
            if let Some(i) = w.iter().position(|x| *x == waiter) {
                w.swap_remove(i);
                self.held -= 1;
                return;
            }
        }
    }

    fn take_waiters(&mut self, key: &Key) -> Vec<usize> {
        let w = match self.pending.iter().position(|(k, _)| k == key) {
            Some(i) => self.pending.swap_remove(i).1,
            None => Vec::new(),
        };
        self.held = self.held.saturating_sub(w.len());
        w
    }

    /// The endpoint answered `status` with `body` (read whole).
    pub fn on_response(
        &mut self,
        key: &Key,
        status: u16,
        body: &[u8],
        policy: &Policy,
        unix: u64,
        now: Instant,
    ) -> Finished {
        if status != 200 {
            return self.on_failure(key, &format!("status {status}"), now);
        }
        let (answer, exp) = match judge(body, policy, unix) {
            Ok(j) => j,
            Err(why) => return self.on_failure(key, &why, now),
        };
        self.down_until = None;
        let waiters = self.take_waiters(key);
        let max_age = match answer {
            Answer::Invalid(r) => {
                if r == Reason::Inactive {
                    self.stats.inactive += 1;
                } else {
                    self.stats.active += 1;
                }
                self.limits.max_age.min(REFUSAL_MAX_AGE)
            }
            _ => {
                self.stats.active += 1;
                // Until `exp` at most (Unix seconds; the clock of `unix`).
                let left = exp.map_or(Duration::MAX, |e| {
                    Duration::from_secs((e.max(0.0) as u64).saturating_sub(unix))
                });
                self.limits.max_age.min(left)
            }
        };
        self.remember(*key, answer, now, max_age);
        Finished {
            result: Ok(answer),
            waiters,
        }
    }

    /// The introspection failed before a usable answer.
    pub fn on_failure(&mut self, key: &Key, why: &str, now: Instant) -> Finished {
        self.stats.error += 1;
        self.down_until = Some(now + self.limits.down_for);
        Finished {
            result: Err(why.to_string()),
            waiters: self.take_waiters(key),
        }
    }

    fn remember(&mut self, key: Key, answer: Answer, now: Instant, max_age: Duration) {
        if max_age.is_zero() || self.limits.cache_entries == 0 {
            return;
        }
        self.cache.remove(&key);
        while self.cache.len() >= self.limits.cache_entries {
            let Some((used, oldest)) = self.lru.pop_front() else {
                break;
            };
            if self.cache.get(&oldest).is_some_and(|e| e.used == used) {
                self.cache.remove(&oldest);
                self.stats.evictions += 1;
            }
        }
        self.tick += 1;
        let until = now.checked_add(max_age).unwrap_or(now + REFUSAL_MAX_AGE);
        self.cache.insert(
            key,
            Entry {
                answer,
                until,
                used: self.tick,
            },
        );
        self.touch(key);
    }

    /// Records a use of `key` (its entry's `used` is the current tick), and
    /// drops the stale positions once they outnumber the live ones.
    fn touch(&mut self, key: Key) {
        self.lru.push_back((self.tick, key));
        if self.lru.len() > 2 * self.cache.len() + LRU_SLACK {
            let cache = &self.cache;
            self.lru
                .retain(|(used, k)| cache.get(k).is_some_and(|e| e.used == *used));
        }
    }

    /// The `mcp_relay_oauth_introspection*` families.
    pub fn render(&self, out: &mut String) {
        let s = &self.stats;
        let _ = write!(
            out,
            "# HELP mcp_relay_oauth_introspections_total Token introspections by outcome.\n\
             # TYPE mcp_relay_oauth_introspections_total counter\n\
             mcp_relay_oauth_introspections_total{{outcome=\"active\"}} {}\n\
             mcp_relay_oauth_introspections_total{{outcome=\"inactive\"}} {}\n\
             mcp_relay_oauth_introspections_total{{outcome=\"error\"}} {}\n\
             # HELP mcp_relay_oauth_introspection_cache_hits_total Requests decided from the introspection cache.\n\
             # TYPE mcp_relay_oauth_introspection_cache_hits_total counter\n\
             mcp_relay_oauth_introspection_cache_hits_total {}\n\
             # HELP mcp_relay_oauth_introspection_cache_evictions_total Cached answers pushed out by newer ones.\n\
             # TYPE mcp_relay_oauth_introspection_cache_evictions_total counter\n\
             mcp_relay_oauth_introspection_cache_evictions_total {}\n\
             # HELP mcp_relay_oauth_introspection_cache_entries Introspection answers cached.\n\
             # TYPE mcp_relay_oauth_introspection_cache_entries gauge\n\
             mcp_relay_oauth_introspection_cache_entries {}\n\
             # HELP mcp_relay_oauth_introspection_held Requests waiting for an introspection.\n\
             # TYPE mcp_relay_oauth_introspection_held gauge\n\
             mcp_relay_oauth_introspection_held {}\n",
            s.active,
            s.inactive,
            s.error,
            s.cache_hits,
            s.evictions,
            self.cache.len(),
            self.held
        );
        let _ = writeln!(
            out,
            "# HELP mcp_relay_oauth_introspection_busy_total Requests answered 503 at an introspection bound.\n\
             # TYPE mcp_relay_oauth_introspection_busy_total counter"
        );
        for (why, n) in &s.busy {
            let _ = writeln!(
                out,
                "mcp_relay_oauth_introspection_busy_total{{bound=\"{why}\"}} {n}"
            );
        }
    }
}

/// An introspection answer (RFC 7662 §2.2) against the policy: the verdict
/// and the `exp` it gave. Err: not a usable answer.
fn judge(body: &[u8], policy: &Policy, unix: u64) -> Result<(Answer, Option<f64>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    match obj.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok((Answer::Invalid(Reason::Inactive), None)),
        _ => return Err("no boolean \"active\"".into()),
    }
    let answer = match policy.claims(obj, unix, Profile::Introspection) {
        Ok(d) => Answer::of(d, &policy.issuer),
        Err(r) => Answer::Invalid(r),
    };
    Ok((answer, obj.get("exp").and_then(Value::as_f64)))
}

#[cfg(test)]
mod tests;
