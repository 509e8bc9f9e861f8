//! Upstream MCP servers: the pool that decides which child process serves which client session.

pub mod pool;
pub mod stdio;
