//! Wire formats: newline framing and JSON-RPC envelopes.

pub mod decimal;
pub mod errors;
pub mod framing;
pub mod http1;
pub mod jsonrpc;
pub mod object;
pub mod scan;
pub mod split;
pub mod sse;
pub mod unique;
