//! Client-facing sides of the relay, one module per mode.

pub mod auth;
pub mod forward;
pub mod reverse;
