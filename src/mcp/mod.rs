//! MCP session handling above the JSON-RPC envelope: what the relay rewrites
//! and routes so that sessions can share upstream processes.
//!
//! - `shared`: many client sessions multiplexed over one initialized server
//!   process ("shared" pool mode): request ids, progress tokens and cancelled
//!   `requestId`s rewritten on the way up and restored on the way down, and
//!   server-initiated messages routed to the right session.
//! - `tools_filter`: per-upstream allow/deny globs over tool names, applied
//!   to `tools/list` replies and enforced on `tools/call`.
//!
//! Everything here is sans-I/O: bytes in, bytes and routing decisions out.

pub mod era;
pub mod session;
pub mod shared;
pub mod tools_filter;
