//! The pool driven by random calls (`drive.rs`, the `pool_ops` fuzz
//! target's driver) on seeded inputs: every configuration the driver
//! decodes, a few hundred calls each, checked against the pool's contract
//! after every call, and then shut down, given back and reaped.

use super::*;
use crate::upstream::pool::drive as driver;

/// 3,000 inputs of 8 to 608 random bytes, and what they exercised: enough
/// pins, grants, timeouts and closes for the checks to mean something.
#[test]
fn random_calls_keep_every_promise() {
    let mut rng = Rng::seeded(13);
    let mut tally = driver::Tally::default();
    for case in 0..3_000 {
        let len = 8 + rng.below_or_equal(600) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        match std::panic::catch_unwind(|| driver::run(&data)) {
            Ok(t) => tally += t,
            Err(e) => {
                eprintln!("case {case} failed; its input: {data:?}");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("{tally:?}");
    assert!(tally.calls > 200_000, "{tally:?}");
    assert!(tally.pins > 1_000, "{tally:?}");
    assert!(tally.grants > 10_000, "{tally:?}");
    assert!(tally.queue_timeouts > 1_000, "{tally:?}");
    assert!(tally.idle_timeouts > 50, "{tally:?}");
    assert!(tally.aged > 200, "{tally:?}");
}
