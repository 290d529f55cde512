//! Wire error codes and decoding errors.
//!
//! Every refusal the server can send is one [`ErrorCode`], declared once in the table
//! below with its stable snake_case name. Layer errors (decoding, name validation, the
//! engine's rules, the store) map onto it in one place each, so a client can rely on
//! `code` while `message` stays human-readable.

use std::borrow::Cow;

use serde::Serialize;
use thiserror::Error;

use crate::ids::NameError;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Machine-readable `code` of an `error` frame (PROTOCOL.md *ext*).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    /// The frame is not valid JSON (syntax, lone surrogate, nesting too deep).
    InvalidJson => "invalid_json",
    /// Valid JSON of the wrong shape: not an object, no `type`, a field of the wrong type.
    InvalidMessage => "invalid_message",
    /// A `type` the server does not know.
    UnknownType => "unknown_type",
    /// Binary frames are not part of the protocol.
    BinaryUnsupported => "binary_unsupported",
    /// The command needs a username first.
    UsernameRequired => "username_required",
    /// The username is too short or has invisible characters.
    InvalidUsername => "invalid_username",
    /// Another online user has this name (compared case- and look-alike-insensitively).
    UsernameTaken => "username_taken",
    /// The name cannot change now (it comes from a token, or the user is in rooms).
    UsernameLocked => "username_locked",
    /// The room name is empty or has invisible characters.
    InvalidRoom => "invalid_room",
    /// The command names a room this connection has not joined.
    NotInRoom => "not_in_room",
    /// The connection is already in as many rooms as allowed.
    TooManyRooms => "too_many_rooms",
    /// The DM target is not online.
    UserNotFound => "user_not_found",
    /// A `clientMsgId`, `since` or `limit` value is out of range.
    InvalidField => "invalid_field",
    /// Too many requests of this kind; `retryAfterMs` says when to retry.
    RateLimited => "rate_limited",
    /// Too many commands queued behind an unfinished one on this connection.
    TooManyRequests => "too_many_requests",
    /// The message store failed; nothing was stored or changed.
    StoreUnavailable => "store_unavailable",
    /// The message store did not answer in time: the message may or may not be stored.
    /// Resending it with the same `clientMsgId` is safe (a stored original comes back
    /// as the answer, never a second copy).
    StoreTimeout => "store_timeout",
    /// The cluster bus that connects this server to the others is unavailable; nothing
    /// was changed. Try again later.
    ClusterUnavailable => "cluster_unavailable",
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The body of an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireError {
    /// Human-readable text.
    pub message: Cow<'static, str>,
    /// Machine-readable code.
    pub code: ErrorCode,
    /// For `rate_limited`: milliseconds until the request would be accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl WireError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
            code,
            retry_after_ms: None,
        }
    }
}

impl WireError {
    /// The fixed text of every `store_unavailable` error. Store failures never carry the
    /// store's own text to clients (it may quote schema or stored values); the runtime
    /// logs that instead.
    pub const STORE_UNAVAILABLE_TEXT: &'static str =
        "The message store is unavailable; nothing was stored. Try again later";

    /// The fixed text of every `store_timeout` error.
    pub const STORE_TIMEOUT_TEXT: &'static str =
        "may or may not be stored; resend with the same clientMsgId";

    /// The fixed text of every `cluster_unavailable` error.
    pub const CLUSTER_UNAVAILABLE_TEXT: &'static str =
        "The cluster is unavailable; nothing was changed. Try again later";

    /// `cluster_unavailable` with its fixed text.
    pub fn cluster_unavailable() -> Self {
        Self::new(
            ErrorCode::ClusterUnavailable,
            Self::CLUSTER_UNAVAILABLE_TEXT,
        )
    }

    /// `store_unavailable` with its fixed text.
    pub fn store_unavailable() -> Self {
        Self::new(ErrorCode::StoreUnavailable, Self::STORE_UNAVAILABLE_TEXT)
    }

    /// `store_timeout` with its fixed text.
    pub fn store_timeout() -> Self {
        Self::new(ErrorCode::StoreTimeout, Self::STORE_TIMEOUT_TEXT)
    }

    /// The answer to a failed **append**: `store_timeout` when the message may have been
    /// stored ([`StoreError::Indeterminate`](crate::StoreError::Indeterminate)),
    /// `store_unavailable` otherwise. (A failed read is always `store_unavailable`: reading
    /// again is the retry, and there is nothing to be unsure about.)
    pub fn append_failed(e: &crate::store::StoreError) -> Self {
        if e.is_indeterminate() {
            Self::store_timeout()
        } else {
            Self::store_unavailable()
        }
    }
}

/// Why a frame could not be decoded into a command. Never a panic: every byte string
/// decodes to a command or to one of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not JSON at all (or not UTF-8, a lone surrogate, nesting past serde_json's limit).
    #[error("Invalid JSON: {0}")]
    Json(String),
    /// JSON, but not an object with the fields of a known command.
    #[error("Invalid message: {0}")]
    Shape(String),
    /// An object whose `type` is missing.
    #[error("Invalid message: missing \"type\"")]
    MissingType,
    /// An object whose `type` is not a command.
    #[error("Unknown message type: {0}")]
    UnknownType(String),
    /// A binary frame (the protocol is text-only).
    #[error("Binary frames are not supported; send JSON text frames")]
    Binary,
}

impl DecodeError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Json(_) => ErrorCode::InvalidJson,
            DecodeError::Shape(_) | DecodeError::MissingType => ErrorCode::InvalidMessage,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::Binary => ErrorCode::BinaryUnsupported,
        }
    }

    /// The `error` frame body for this error.
    pub fn to_wire(&self) -> WireError {
        WireError::new(self.code(), self.to_string())
    }
}

impl From<&NameError> for WireError {
    fn from(e: &NameError) -> Self {
        let code = match e {
            NameError::UsernameTooShort | NameError::UsernameCharacters => {
                ErrorCode::InvalidUsername
            }
            NameError::RoomEmpty | NameError::RoomCharacters => ErrorCode::InvalidRoom,
            NameError::ClientMsgId | NameError::UserId => ErrorCode::InvalidField,
        };
        WireError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let names: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for n in names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
    }
}
