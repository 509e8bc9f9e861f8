//! Policies with no I/O: backoff and the random source behind it.

pub mod backoff;
