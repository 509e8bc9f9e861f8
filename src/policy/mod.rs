//! Policies with no I/O: backoff and the random source behind it, and the
//! log line budget (`ratelog`).

pub mod backoff;
pub mod ratelog;
