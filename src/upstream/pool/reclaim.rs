//! Which session gives its process up when a Session-mode pool is full and a
//! new session waits ([`Pool::starved`](super::Pool::starved)).
//!
//! Most clients never end their sessions (no DELETE), so without this a pool
//! of `--max-connections` processes is full for good after that many
//! sessions, and every later one gets 503 until the session idle timeout.
//! The owner lists its sessions as [`Candidate`]s; [`choose`] names the one
//! to end, or when to ask again. Sans-I/O: no clock, no sessions, just the
//! rule:
//!
//! - a session with a request in flight or an open stream (`busy`) is never
//!   chosen: someone is using it;
//! - of the others, the least recently active goes first (ties: the lowest
//!   key, i.e. the oldest session), once it has been idle for `min_age`;
//! - if even that one is younger, the answer is when it will be old enough.
//!   Nobody else can be old enough sooner: a session that is busy now is
//!   active again when it stops being busy, so it is old enough `min_age`
//!   after that at the earliest. The owner asks again at that instant, and
//!   whenever else it likes (each loop turn, say), since candidates change;
//! - `min_age` `None` never reclaims; `Some(0)` takes any idle session.

use std::time::{Duration, Instant};

/// A session that might give its process up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<K> {
    pub key: K,
    /// Its last activity: a request or notification from its client, an
    /// answer to it, its stream closing.
    pub last_active: Instant,
    /// A request in flight or a stream open: never reclaimed.
    pub busy: bool,
}

/// What to do about a starved waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<K> {
    /// End this session: its process goes to the waiter.
    Reclaim(K),
    /// Nobody is idle long enough yet; ask again at this instant, when the
    /// least recently active idle session will be.
    RecheckAt(Instant),
    /// Nobody can be taken now (every session is busy, or reclaiming is off);
    /// ask again when a session stops being busy.
    Nobody,
}

/// The session to reclaim from `candidates` at `now`, or when to ask again.
pub fn choose<K: Copy + Ord>(
    candidates: &[Candidate<K>],
    now: Instant,
    min_age: Option<Duration>,
) -> Choice<K> {
    let Some(min_age) = min_age else {
        return Choice::Nobody;
    };
    let Some(oldest) = candidates
        .iter()
        .filter(|c| !c.busy)
        .min_by_key(|c| (c.last_active, c.key))
    else {
        return Choice::Nobody;
    };
    match oldest.last_active.checked_add(min_age) {
        Some(ripe) if ripe <= now => Choice::Reclaim(oldest.key),
        Some(ripe) => Choice::RecheckAt(ripe),
        // Too far away to represent: never.
        None => Choice::Nobody,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn idle(key: u64, last_active: Instant) -> Candidate<u64> {
        Candidate {
            key,
            last_active,
            busy: false,
        }
    }

    fn busy(key: u64, last_active: Instant) -> Candidate<u64> {
        Candidate {
            key,
            last_active,
            busy: true,
        }
    }

    #[test]
    fn the_least_recently_active_idle_session_goes_once_old_enough() {
        let t0 = Instant::now();
        let c = [
            idle(3, t0 + ms(300)),
            idle(1, t0 + ms(100)),
            idle(2, t0 + ms(200)),
        ];
        let age = Some(ms(1_000));
        // Too young: ask again exactly when the oldest is old enough.
        assert_eq!(
            choose(&c, t0 + ms(500), age),
            Choice::RecheckAt(t0 + ms(1_100))
        );
        assert_eq!(
            choose(&c, t0 + ms(1_099), age),
            Choice::RecheckAt(t0 + ms(1_100))
        );
        // Old enough at the very instant.
        assert_eq!(choose(&c, t0 + ms(1_100), age), Choice::Reclaim(1));
        // Once it is gone, the next one in line.
        assert_eq!(
            choose(&c[..1], t0 + ms(1_100), age),
            Choice::RecheckAt(t0 + ms(1_300))
        );
        assert_eq!(
            choose(&[c[0], c[2]], t0 + ms(5_000), age),
            Choice::Reclaim(2)
        );
    }

    #[test]
    fn a_busy_session_is_never_reclaimed() {
        let t0 = Instant::now();
        let later = t0 + ms(60_000);
        // The oldest is busy (a request in flight or an open stream): the
        // next idle one goes, however old the busy one is.
        let c = [busy(1, t0), idle(2, t0 + ms(10)), busy(3, t0 + ms(5))];
        assert_eq!(choose(&c, later, Some(ms(1_000))), Choice::Reclaim(2));
        assert_eq!(choose(&c, later, Some(Duration::ZERO)), Choice::Reclaim(2));
        // Everyone busy: nobody, whatever the age.
        let all_busy = [busy(1, t0), busy(2, t0)];
        assert_eq!(
            choose(&all_busy, later, Some(Duration::ZERO)),
            Choice::Nobody
        );
        assert_eq!(
            choose::<u64>(&[], later, Some(Duration::ZERO)),
            Choice::Nobody
        );
    }

    #[test]
    fn zero_takes_any_idle_session_and_none_never_reclaims() {
        let t0 = Instant::now();
        let c = [idle(7, t0), idle(4, t0)];
        // Active this very instant, still idle: age 0 takes it. Ties go to
        // the lowest key (the oldest session).
        assert_eq!(choose(&c, t0, Some(Duration::ZERO)), Choice::Reclaim(4));
        assert_eq!(choose(&c, t0 + ms(3_600_000), None), Choice::Nobody);
    }

    #[test]
    fn an_age_too_far_to_represent_is_never() {
        let t0 = Instant::now();
        assert_eq!(
            choose(&[idle(1, t0)], t0, Some(Duration::MAX)),
            Choice::Nobody
        );
    }
}
