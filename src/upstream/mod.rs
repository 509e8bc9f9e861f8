//! Upstream MCP servers: the pool that decides which child process serves which client session,
//! and the lifecycle of each child process, from spawn to reap.

pub mod hold;
pub mod http;
pub mod lifecycle;
pub mod pool;
pub mod reconnect;
pub mod stdio;
pub mod url;
