//! Shared code of the examples: transports written on chat-core's public traits.
//!
//! * [`tcp`]: newline-delimited JSON over TCP (`examples/tcp_server.rs`).

pub mod tcp;
