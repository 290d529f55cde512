//! The wire protocol of `PROTOCOL.md`: client commands, server events, the JSON codec
//! and the error codes.
//!
//! * [`decode`] turns one text frame into a [`ClientCommand`] or a [`DecodeError`]; it
//!   never panics.
//! * [`encode`] turns one [`ServerEvent`] into the bytes of a text frame; the runtime
//!   calls it once per event and shares the bytes among all recipients.
//! * [`ErrorCode`] is the table of machine-readable error codes; [`Refusal`] is the table
//!   of every refusal with its code and fixed text.
//! * [`CloseCode`] is the table of WebSocket close codes the server sends.

mod client;
mod close;
mod error;
mod server;
#[cfg(test)]
pub(crate) mod tests;

pub use client::{
    CONTENT_MAX_BYTES, ClientCommand, Decoded, ERROR_TEXT_MAX_BYTES, FIELD_MAX_BYTES,
    REF_MAX_CHARS, RequestRef, decode, decode_frame,
};
pub use close::CloseCode;
pub use error::{DecodeError, ErrorCode, Refusal, WireError};
pub use server::{History, JoinCursor, ServerEvent, UserEntry, encode};
