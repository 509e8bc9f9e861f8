//! Byte buffers, non-blocking file descriptors and child processes.

pub mod buf;
pub mod child;
pub mod dns;
pub mod fd;
pub mod orphans;
pub mod ratelog;
pub mod stderr;
pub mod transport;
