//! The wire protocol of `PROTOCOL.md`: client commands, server events, the JSON codec
//! and the error codes.
//!
//! * [`decode`] turns one text frame into a [`ClientCommand`] or a [`DecodeError`]; it
//!   never panics.
//! * [`encode`] turns one [`ServerEvent`] into the bytes of a text frame; the runtime
//!   calls it once per event and shares the bytes among all recipients.
//! * [`ErrorCode`] is the table of machine-readable error codes.

mod client;
mod error;
mod server;
#[cfg(test)]
pub(crate) mod tests;

pub use client::{CONTENT_MAX_BYTES, ClientCommand, ERROR_TEXT_MAX_BYTES, FIELD_MAX_BYTES, decode};
pub use error::{DecodeError, ErrorCode, WireError};
pub use server::{History, JoinCursor, ServerEvent, UserEntry, encode};
