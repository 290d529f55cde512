//! Shared code of the examples: transports written on chat-core's public traits.
//!
//! * [`tcp`]: newline-delimited JSON over TCP (`examples/tcp_server.rs`).

pub mod tcp;

/// The repository README's code examples, compiled and checked by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
