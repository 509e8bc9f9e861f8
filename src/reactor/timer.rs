//! A hierarchical timer wheel driven by an explicit clock.
//!
//! Time never comes from the wheel itself: `insert` takes a deadline and
//! `poll(now)` takes the current time, so tests drive it with a fake clock and
//! get exact, instant answers.
//!
//! Layout: `LEVELS` levels of 64 slots. A slot on level `l` spans `64^l`
//! milliseconds, so level 0 resolves single milliseconds and level 5 covers
//! about 795 days. An entry sits on the level of the highest 6-bit group in
//! which its deadline differs from the wheel's current tick; when the wheel
//! reaches that slot the entry cascades to a lower level, until it lands on
//! level 0 and fires. Deadlines beyond the top level are parked in the top
//! level's furthest slot and re-placed each time they come round, so a far
//! future timer is never fired early.
//!
//! Every slot is an intrusive doubly-linked list threaded through a slab, so
//! insert and cancel are O(1) and a cancelled timer frees its memory at once.
//! Handles carry a generation: cancelling a timer that already fired (and
//! whose slab slot was reused) is a no-op, never a wrong cancellation.

use slab::Slab;
use std::time::{Duration, Instant};

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Ticks (ms) covered by the whole wheel.
const WHEEL_RANGE: u64 = 1 << (SLOT_BITS as u64 * LEVELS as u64);
const NIL: usize = usize::MAX;
/// Pseudo-slot index of the list of entries that are due but not yet handed out.
const EXPIRED: usize = LEVELS * SLOTS;

/// Handle to a pending timer. Stale handles are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: usize,
    generation: u64,
}

struct Entry<T> {
    generation: u64,
    /// Absolute deadline in ticks since the wheel's origin.
    deadline: u64,
    /// Index of the list this entry is on (a slot, or `EXPIRED`).
    list: usize,
    prev: usize,
    next: usize,
    data: T,
}

#[derive(Clone, Copy)]
struct List {
    head: usize,
    tail: usize,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

pub struct TimerWheel<T> {
    origin: Instant,
    /// Every deadline up to and including this tick has been processed.
    elapsed: u64,
    entries: Slab<Entry<T>>,
    /// `LEVELS * SLOTS` slot lists followed by the expired list.
    lists: Vec<List>,
    /// One bit per non-empty slot, per level.
    occupied: [u64; LEVELS],
    next_gen: u64,
}

impl<T> TimerWheel<T> {
    /// A wheel whose tick 0 is `origin`.
    pub fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            elapsed: 0,
            entries: Slab::new(),
            lists: vec![EMPTY; LEVELS * SLOTS + 1],
            occupied: [0; LEVELS],
            next_gen: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Deadline rounded up to a whole tick, so a timer never fires early.
    fn tick_ceil(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let ms = d.as_millis() as u64;
        if d > Duration::from_millis(ms) {
            ms + 1
        } else {
            ms
        }
    }

    fn tick_floor(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Arms a timer that fires at the first `poll(now)` with `now >= deadline`.
    pub fn insert(&mut self, deadline: Instant, data: T) -> TimerId {
        let generation = self.next_gen;
        self.next_gen += 1;
        let deadline = self.tick_ceil(deadline);
        let key = self.entries.insert(Entry {
            generation,
            deadline,
            list: NIL,
            prev: NIL,
            next: NIL,
            data,
        });
        self.place(key);
        TimerId { key, generation }
    }

    /// Disarms a timer and returns its data, or `None` if it already fired
    /// or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        match self.entries.get(id.key) {
            Some(e) if e.generation == id.generation => {}
            _ => return None,
        }
        self.unlink(id.key);
        Some(self.entries.remove(id.key).data)
    }

    /// The deadline of a pending timer.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        match self.entries.get(id.key) {
            Some(e) if e.generation == id.generation => {
                Some(self.origin + Duration::from_millis(e.deadline))
            }
            _ => None,
        }
    }

    /// Returns the next timer due at `now`, in deadline order (insertion order
    /// within one tick). Call it until it returns `None`. Timers stay
    /// cancellable until they are returned.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        let now = self.tick_floor(now);
        loop {
            let head = self.lists[EXPIRED].head;
            if head != NIL {
                self.unlink(head);
                return Some(self.entries.remove(head).data);
            }
            let (level, slot, at) = self.next_expiration()?;
            if at > now {
                // Nothing due: remember how far time has gone so new inserts
                // land relative to the present.
                self.elapsed = self.elapsed.max(now);
                return None;
            }
            self.elapsed = self.elapsed.max(at);
            self.process_slot(level, slot);
        }
    }

    /// How long the loop may sleep before the next `poll` has work, measured
    /// from `now`. `None` when no timer is armed. The answer may be earlier than
    /// the real deadline (a cascade point), never later.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.lists[EXPIRED].head != NIL {
            return Some(Duration::ZERO);
        }
        let (_, _, at) = self.next_expiration()?;
        let at = self.origin + Duration::from_millis(at);
        Some(at.saturating_duration_since(now))
    }

    /// The earliest (level, slot, tick) at which a non-empty slot must be
    /// processed.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        let mut best: Option<(usize, usize, u64)> = None;
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let slot_range = 1u64 << shift;
            let level_range = slot_range << SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) & (SLOTS as u64 - 1)) as u32;
            let zeros = occupied.rotate_right(now_slot).trailing_zeros();
            let slot = ((now_slot + zeros) as usize) % SLOTS;
            let level_start = self.elapsed & !(level_range - 1);
            let mut at = level_start + slot as u64 * slot_range;
            // A slot at or behind the present is a whole rotation ahead: on
            // levels below the top this is a wrapped slot; on the top level it
            // may also be the present slot, holding parked far-future entries.
            if at <= self.elapsed {
                at += level_range;
            }
            if best.is_none_or(|(_, _, b)| at < b) {
                best = Some((level, slot, at));
            }
        }
        best
    }

    fn process_slot(&mut self, level: usize, slot: usize) {
        let list = level * SLOTS + slot;
        let mut key = self.lists[list].head;
        self.lists[list] = EMPTY;
        self.occupied[level] &= !(1u64 << slot);
        while key != NIL {
            let next = self.entries[key].next;
            let e = &mut self.entries[key];
            e.prev = NIL;
            e.next = NIL;
            e.list = NIL;
            self.place(key);
            key = next;
        }
    }

    /// Puts an unlinked entry on the list its deadline calls for.
    fn place(&mut self, key: usize) {
        let deadline = self.entries[key].deadline;
        let list = if deadline <= self.elapsed {
            EXPIRED
        } else {
            // Park deadlines beyond the wheel's range at its far edge.
            let target = deadline.min(self.elapsed + WHEEL_RANGE - 1);
            let masked = (self.elapsed ^ target) | (SLOTS as u64 - 1);
            let significant = 63 - masked.leading_zeros();
            // A parked target may carry past the top level: keep it there.
            let level = ((significant / SLOT_BITS) as usize).min(LEVELS - 1);
            let slot = ((target >> (SLOT_BITS * level as u32)) & (SLOTS as u64 - 1)) as usize;
            self.occupied[level] |= 1u64 << slot;
            level * SLOTS + slot
        };
        let tail = self.lists[list].tail;
        {
            let e = &mut self.entries[key];
            e.list = list;
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            self.lists[list].head = key;
        } else {
            self.entries[tail].next = key;
        }
        self.lists[list].tail = key;
    }

    fn unlink(&mut self, key: usize) {
        let (list, prev, next) = {
            let e = &self.entries[key];
            (e.list, e.prev, e.next)
        };
        if prev == NIL {
            self.lists[list].head = next;
        } else {
            self.entries[prev].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.entries[next].prev = prev;
        }
        if list != EXPIRED && self.lists[list].head == NIL {
            self.occupied[list / SLOTS] &= !(1u64 << (list % SLOTS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(w: &mut TimerWheel<u32>, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(v) = w.poll(now) {
            out.push(v);
        }
        out
    }

    #[test]
    fn fires_in_deadline_order_and_never_early() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(t0 + ms(300), 3);
        w.insert(t0 + ms(5), 1);
        w.insert(t0 + ms(70), 2);
        w.insert(t0 + ms(5000), 4);
        assert_eq!(drain(&mut w, t0 + ms(4)), Vec::<u32>::new());
        assert_eq!(drain(&mut w, t0 + ms(5)), vec![1]);
        assert_eq!(drain(&mut w, t0 + ms(299)), vec![2]);
        assert_eq!(drain(&mut w, t0 + ms(10_000)), vec![3, 4]);
        assert!(w.is_empty());
    }

    #[test]
    fn sub_millisecond_deadline_rounds_up() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(t0 + Duration::from_micros(1500), 7);
        assert_eq!(drain(&mut w, t0 + ms(1)), Vec::<u32>::new());
        assert_eq!(
            drain(&mut w, t0 + Duration::from_micros(1999)),
            Vec::<u32>::new()
        );
        assert_eq!(drain(&mut w, t0 + ms(2)), vec![7]);
    }

    #[test]
    fn cancellation_removes_and_stale_handles_are_harmless() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let a = w.insert(t0 + ms(10), 1);
        let b = w.insert(t0 + ms(10), 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        assert_eq!(drain(&mut w, t0 + ms(10)), vec![2]);
        // b fired; its slab slot is reused by c. Cancelling b must not touch c.
        let c = w.insert(t0 + ms(20), 3);
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.deadline(c), Some(t0 + ms(20)));
        assert_eq!(drain(&mut w, t0 + ms(20)), vec![3]);
    }

    #[test]
    fn a_due_timer_can_be_cancelled_by_an_earlier_one() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(t0 + ms(5), 1);
        let second = w.insert(t0 + ms(5), 2);
        assert_eq!(w.poll(t0 + ms(5)), Some(1));
        // Handling timer 1 cancels timer 2, which is due but not yet returned.
        assert_eq!(w.cancel(second), Some(2));
        assert_eq!(w.poll(t0 + ms(5)), None);
    }

    #[test]
    fn rearming_moves_the_deadline() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut id = w.insert(t0 + ms(100), 1);
        for step in 1..=5u64 {
            // Progress at 90ms steps restarts a 100ms timeout.
            let now = t0 + ms(90 * step);
            assert_eq!(drain(&mut w, now), Vec::<u32>::new());
            assert!(w.cancel(id).is_some());
            id = w.insert(now + ms(100), 1);
        }
        assert_eq!(drain(&mut w, t0 + ms(549)), Vec::<u32>::new());
        assert_eq!(drain(&mut w, t0 + ms(550)), vec![1]);
    }

    #[test]
    fn far_future_deadlines_wait_their_turn() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let year = 365 * 24 * 3600 * 1000u64;
        w.insert(t0 + ms(10 * year), 10);
        w.insert(t0 + ms(year), 1);
        w.insert(t0 + ms(30 * 60 * 1000), 0);
        assert_eq!(
            drain(&mut w, t0 + ms(30 * 60 * 1000 - 1)),
            Vec::<u32>::new()
        );
        assert_eq!(drain(&mut w, t0 + ms(30 * 60 * 1000)), vec![0]);
        assert_eq!(drain(&mut w, t0 + ms(year - 1)), Vec::<u32>::new());
        assert_eq!(drain(&mut w, t0 + ms(year)), vec![1]);
        // Beyond the wheel's ~795-day range: parked and re-placed, never early.
        for y in 2..10 {
            assert_eq!(drain(&mut w, t0 + ms(y * year)), Vec::<u32>::new());
        }
        assert_eq!(drain(&mut w, t0 + ms(10 * year - 1)), Vec::<u32>::new());
        assert_eq!(drain(&mut w, t0 + ms(10 * year)), vec![10]);
        assert!(w.is_empty());
    }

    #[test]
    fn many_timers_on_one_tick_fire_together_in_insertion_order() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        for i in 0..10_000 {
            w.insert(t0 + ms(4242), i);
        }
        assert_eq!(drain(&mut w, t0 + ms(4241)).len(), 0);
        let fired = drain(&mut w, t0 + ms(4242));
        assert_eq!(fired, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn next_timeout_is_never_later_than_the_deadline() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        assert_eq!(w.next_timeout(t0), None);
        w.insert(t0 + ms(5000), 1);
        let mut now = t0;
        let mut wakeups = 0;
        loop {
            let d = w.next_timeout(now).expect("armed");
            assert!(now + d <= t0 + ms(5000));
            now += d;
            wakeups += 1;
            if w.poll(now).is_some() {
                break;
            }
            assert!(wakeups < 10, "too many cascade wakeups");
        }
        assert_eq!(now, t0 + ms(5000));
    }

    #[test]
    fn inserting_after_time_advanced_is_relative_to_the_present() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        assert_eq!(w.poll(t0 + ms(1_000_000)), None);
        w.insert(t0 + ms(1_000_050), 1);
        w.insert(t0 + ms(999_000), 0); // already in the past: fires at once
        assert_eq!(drain(&mut w, t0 + ms(1_000_000)), vec![0]);
        assert_eq!(drain(&mut w, t0 + ms(1_000_050)), vec![1]);
    }

    #[test]
    fn randomized_against_a_sorted_model() {
        // A small LCG keeps this deterministic without extra crates.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut model: Vec<(u64, u32, TimerId)> = Vec::new();
        let mut now = 0u64;
        for i in 0..20_000u32 {
            match rand() % 4 {
                0 | 1 => {
                    let span = [10, 1000, 100_000, 10_000_000][(rand() % 4) as usize];
                    let at = now + rand() % span;
                    let id = w.insert(t0 + ms(at), i);
                    model.push((at, i, id));
                }
                2 if !model.is_empty() => {
                    let idx = (rand() as usize) % model.len();
                    let (_, v, id) = model.swap_remove(idx);
                    assert_eq!(w.cancel(id), Some(v));
                }
                _ => {
                    now += rand() % 5000;
                    let mut due: Vec<(u64, u32)> = model
                        .iter()
                        .filter(|(at, _, _)| *at <= now)
                        .map(|(at, v, _)| (*at, *v))
                        .collect();
                    due.sort();
                    model.retain(|(at, _, _)| *at > now);
                    let fired = drain(&mut w, t0 + ms(now));
                    let mut fired_sorted = fired.clone();
                    fired_sorted.sort();
                    let mut want: Vec<u32> = due.iter().map(|d| d.1).collect();
                    want.sort();
                    assert_eq!(fired_sorted, want, "at tick {now}");
                    // Deadline order: each fired timer's deadline is non-decreasing.
                    let at_of = |v: u32| due.iter().find(|d| d.1 == v).map(|d| d.0);
                    let ats: Vec<_> = fired.iter().map(|v| at_of(*v)).collect();
                    assert!(ats.windows(2).all(|p| p[0] <= p[1]), "order at {now}");
                }
            }
        }
        assert_eq!(w.len(), model.len());
    }
}
