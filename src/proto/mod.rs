//! Wire formats: newline framing and JSON-RPC envelopes.

pub mod errors;
pub mod framing;
pub mod jsonrpc;
