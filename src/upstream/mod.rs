//! Upstream MCP servers: the pool that decides which child process serves which client session.

pub mod http;
pub mod pool;
pub mod reconnect;
pub mod stdio;
pub mod url;
