//! The session core shared by both fronts: sans-I/O state about client
//! exchanges that does not depend on how bytes arrive or leave.
//!
//! - [`inflight`]: the requests a client has in flight — their ids, progress
//!   tokens and deadlines — so that each gets exactly one answer.
//! - [`shutdown`]: the relay's own lifecycle from serving to exit.

pub mod inflight;
pub mod shutdown;
