//! Exponential backoff with full jitter.
//!
//! The n-th delay (n from 0) is uniform in `[0, min(cap, base * 2^n)]`, the
//! "full jitter" scheme: retries of many clients spread over the whole window
//! instead of arriving in waves. The random source is a seeded SplitMix64, so
//! tests are exact; production seeds it from the OS.

use std::time::Duration;

/// SplitMix64: tiny, fast, and good enough to spread retries.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the kernel's random source.
    pub fn from_os() -> Rng {
        let mut seed = [0u8; 8];
        // SAFETY: getrandom fills at most `len` bytes of a valid buffer.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        if n != seed.len() as isize {
            // Fall back to something that still differs between processes.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            return Rng(t ^ ((std::process::id() as u64) << 32));
        }
        Rng(u64::from_le_bytes(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max]`.
    pub fn below_or_equal(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        // Multiply-shift keeps the bias below 2^-64 * (max + 1): negligible.
        ((self.next_u64() as u128 * (max as u128 + 1)) >> 64) as u64
    }
}

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: Rng,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, rng: Rng) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
            rng,
        }
    }

    /// Failures since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Draws the next delay and counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let micros = self.rng.below_or_equal(ceiling.as_micros() as u64);
        Duration::from_micros(micros)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delay_is_inside_its_bound_and_the_bound_doubles_to_the_cap() {
        let base = Duration::from_millis(250);
        let cap = Duration::from_secs(30);
        let mut b = Backoff::new(base, cap, Rng::seeded(1));
        let mut max_seen = Duration::ZERO;
        for attempt in 0..40u32 {
            let bound = (base * 2u32.saturating_pow(attempt.min(20))).min(cap);
            assert_eq!(b.ceiling(), bound, "attempt {attempt}");
            let d = b.next_delay();
            assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
            max_seen = max_seen.max(d);
        }
        assert!(
            max_seen > Duration::from_secs(15),
            "jitter should reach the upper half"
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Rng::seeded(7),
        );
        for _ in 0..6 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_millis(6400));
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spreads_first_retries() {
        // 1,000 clients retrying after the same failure: no 100 ms bucket of
        // their first three retries' spread may hold a crowd.
        let mut rng = Rng::seeded(42);
        let mut buckets = [0u32; 10];
        for _ in 0..1000 {
            let mut b = Backoff::new(
                Duration::from_millis(1000),
                Duration::from_secs(30),
                rng.clone(),
            );
            rng.next_u64();
            let d = b.next_delay();
            buckets[(d.as_millis() as usize / 100).min(9)] += 1;
        }
        assert!(buckets.iter().all(|&n| n < 150), "{buckets:?}");
    }

    #[test]
    fn uniform_draws_hit_both_ends() {
        let mut r = Rng::seeded(3);
        let draws: Vec<u64> = (0..10_000).map(|_| r.below_or_equal(9)).collect();
        for v in 0..=9 {
            let n = draws.iter().filter(|&&d| d == v).count();
            assert!((800..1200).contains(&n), "value {v}: {n}");
        }
    }
}
