//! mcp-relay: a single-threaded proxy for the Model Context Protocol.
//!
//! One `mio` reactor, slab-indexed endpoints with generation-checked tokens,
//! a timer wheel fed an explicit clock, and sans-I/O protocol pieces. See
//! docs/architecture.md for the map.

pub mod auth;
pub mod cli;
pub mod config;
pub mod front;
pub mod io;
pub mod keyhash;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod reactor;
pub mod record;
pub mod session;
pub mod upstream;
pub mod vecmap;
