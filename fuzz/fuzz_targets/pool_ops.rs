//! The process pool (`upstream::pool`): any sequence of calls an owner can
//! make, in either mode and any configuration, checked after every call
//! against the pool's contract by `upstream::pool::drive` (compiled into
//! the relay's library for fuzzing builds, `cfg(fuzzing)`): the actions
//! name live processes and queued waiters, every waiter gets exactly one
//! outcome, no aged process is given out while a young one is ready, the
//! pool's view agrees with the owner's, each call leaves the pool settled,
//! `next_deadline` is honest, `pin` does what a `lease` at the same moment
//! would, and shutdown leaves nothing behind. The pool checks its own
//! invariants too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mcp_relay::upstream::pool::drive::run(data);
});
