//! Wire error codes, the table of refusals, and decoding errors.
//!
//! Two tables, each declared once:
//!
//! * [`ErrorCode`]: every machine-readable `code`, with its stable snake_case name;
//! * [`Refusal`]: every reason the server refuses a frame — decoding, name validation,
//!   the engine's rules, the store — each with its code and its fixed text.
//!
//! Layer errors ([`DecodeError`], [`NameError`], store failures) map onto a
//! [`Refusal`] in one place each, and the engine refuses only with a [`Refusal`], so a
//! client can rely on `code`, and `message` is one of a known set of texts.

use std::borrow::Cow;

use serde::Serialize;
use thiserror::Error;

use super::client::RequestRef;
use crate::ids::{ClientMsgId, NameError};

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

            /// The code with this wire name (what a client reads back).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(ErrorCode::$variant),)*
                    _ => None,
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
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

macro_rules! refusals {
    ($($(#[$doc:meta])* $variant:ident => $code:ident, $text:expr;)*) => {
        /// Every reason the server refuses a frame, with its [`ErrorCode`] and its fixed
        /// `message` text: the one table of what a client can be told (PROTOCOL.md
        /// *Errors*). Texts the base server had are kept byte for byte (ARCHITECTURE.md
        /// decision 10); none quotes a library's message, so upgrading serde_json or a
        /// store never changes the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Refusal {
            $($(#[$doc])* $variant,)*
        }

        impl Refusal {
            /// Every refusal, in table order.
            pub const ALL: &'static [Refusal] = &[$(Refusal::$variant,)*];

            /// The machine-readable `code`.
            pub const fn code(self) -> ErrorCode {
                match self {
                    $(Refusal::$variant => ErrorCode::$code,)*
                }
            }

            /// The fixed human-readable `message`.
            pub const fn text(self) -> &'static str {
                match self {
                    $(Refusal::$variant => $text,)*
                }
            }
        }
    };
}

refusals! {
    // Decoding (the frame itself).
    /// Not JSON: a syntax error, a truncated frame, a lone surrogate, nesting too deep.
    InvalidJson => InvalidJson, "Invalid JSON";
    /// JSON, but not an object.
    NotAnObject => InvalidMessage, "Invalid message: expected a JSON object";
    /// An object without `type`.
    MissingType => InvalidMessage, "Invalid message: missing \"type\"";
    /// `type` is not a string.
    TypeNotString => InvalidMessage, "Invalid message: \"type\" must be a string";
    /// `username` is not a string.
    UsernameNotString => InvalidMessage, "Invalid message: \"username\" must be a string";
    /// `room` is not a string.
    RoomNotString => InvalidMessage, "Invalid message: \"room\" must be a string";
    /// `content` is not a string.
    ContentNotString => InvalidMessage, "Invalid message: \"content\" must be a string";
    /// `targetId` is not a string.
    TargetIdNotString => InvalidMessage, "Invalid message: \"targetId\" must be a string";
    /// `userId` is not a string.
    UserIdNotString => InvalidMessage, "Invalid message: \"userId\" must be a string";
    /// `clientMsgId` is not a string.
    ClientMsgIdNotString => InvalidMessage, "Invalid message: \"clientMsgId\" must be a string";
    /// `epoch` is not a string.
    EpochNotString => InvalidMessage, "Invalid message: \"epoch\" must be a string";
    /// `ref` is not a string.
    RefNotString => InvalidMessage, "Invalid message: \"ref\" must be a string";
    /// `since` is not an integer in 0..=2^64-1.
    SinceNotCount => InvalidMessage,
        "Invalid message: \"since\" must be a non-negative integer";
    /// `before` is not an integer in 0..=2^64-1.
    BeforeNotCount => InvalidMessage,
        "Invalid message: \"before\" must be a non-negative integer";
    /// `limit` is not an integer in 0..=2^64-1.
    LimitNotCount => InvalidMessage,
        "Invalid message: \"limit\" must be a non-negative integer";
    /// `keepRooms` is not a boolean.
    KeepRoomsNotBool => InvalidMessage, "Invalid message: \"keepRooms\" must be true or false";
    /// A key appears twice in the object.
    DuplicateField => InvalidMessage, "Invalid message: a field appears twice";
    /// A shape error none of the rows above describes (kept so that a future serde_json
    /// refusal still has a fixed answer).
    OtherShape => InvalidMessage, "Invalid message: a field has the wrong type";
    /// A `type` that is not a command. On the wire the type follows, cut to 64
    /// characters: `Unknown message type: dance`.
    UnknownType => UnknownType, "Unknown message type";
    /// A binary frame.
    Binary => BinaryUnsupported, "Binary frames are not supported; send JSON text frames";
    /// A `ref` that is empty, too long or has invisible characters.
    InvalidRef => InvalidField, "ref must be 1 to 64 visible characters";

    // Names and ids (`NameError`).
    /// A username shorter than `USERNAME_MIN_CHARS` after trimming.
    UsernameTooShort => InvalidUsername, "Username must be at least 2 characters";
    /// A username with control, format or separator characters.
    UsernameCharacters => InvalidUsername, "Username contains invisible or control characters";
    /// A room name empty after trimming.
    RoomRequired => InvalidRoom, "Room name required";
    /// A room name with control, format or separator characters.
    RoomCharacters => InvalidRoom, "Room name contains invisible or control characters";
    /// A `clientMsgId` that is empty, too long or has invisible characters.
    InvalidClientMsgId => InvalidField, "clientMsgId must be 1 to 64 visible characters";
    /// A user id that is empty, too long or has invisible characters.
    InvalidUserId => InvalidField, "user id must be 1 to 128 visible characters";

    // The engine's rules.
    /// The command needs a username and the connection has none.
    UsernameRequired => UsernameRequired, "Set username first";
    /// Another online user holds the name.
    UsernameTaken => UsernameTaken, "Username taken";
    /// The name comes from the connection's token.
    UsernameFromToken => UsernameLocked, "Your username comes from your sign-in token";
    /// Renaming while in a room (members' lists would go stale).
    RenameInRoom => UsernameLocked, "Leave your rooms before changing your username";
    /// A room-scoped command without `room`, and no room joined.
    NoRoomJoined => NotInRoom, "Join a room first";
    /// The named room is not joined.
    NotInThatRoom => NotInRoom, "You are not in that room";
    /// Over the rooms-per-connection cap.
    TooManyRooms => TooManyRooms, "You are in too many rooms";
    /// The DM target is not online (or has no name yet).
    UserNotFound => UserNotFound, "User not found";
    /// Over the chat + DM rate.
    MessagesTooFast => RateLimited, "Sending messages too fast";
    /// Over the join rate.
    JoinsTooFast => RateLimited, "Joining rooms too fast";
    /// Over the history-page rate.
    HistoryTooFast => RateLimited, "Reading history too fast";
    /// Over the typing rate.
    TypingTooFast => RateLimited, "Typing updates too fast";
    /// Too many commands queued behind one that waits for the store.
    TooManyQueued => TooManyRequests, "Too many requests waiting; slow down";

    // The store. Never the store's own text: it may quote schema or stored values; the
    // runtime logs that instead.
    /// The store failed; nothing was stored or changed.
    StoreUnavailable => StoreUnavailable,
        "The message store is unavailable; nothing was stored. Try again later";
    /// The store did not answer in time: the message may or may not be stored.
    StoreTimeout => StoreTimeout, "may or may not be stored; resend with the same clientMsgId";
}

impl Refusal {
    /// The `error` frame body: the code and the fixed text, nothing echoed yet.
    pub fn to_wire(self) -> WireError {
        WireError::new(self.code(), self.text())
    }

    /// The answer to a failed **append**: `store_timeout` when the message may have been
    /// stored ([`StoreError::Indeterminate`](crate::StoreError::Indeterminate)),
    /// `store_unavailable` otherwise. (A failed read is always `store_unavailable`: reading
    /// again is the retry, and there is nothing to be unsure about.)
    pub fn append_failed(e: &crate::store::StoreError) -> Self {
        if e.is_indeterminate() {
            Refusal::StoreTimeout
        } else {
            Refusal::StoreUnavailable
        }
    }
}

impl From<&NameError> for Refusal {
    fn from(e: &NameError) -> Self {
        match e {
            NameError::UsernameTooShort => Refusal::UsernameTooShort,
            NameError::UsernameCharacters => Refusal::UsernameCharacters,
            NameError::RoomEmpty => Refusal::RoomRequired,
            NameError::RoomCharacters => Refusal::RoomCharacters,
            NameError::ClientMsgId => Refusal::InvalidClientMsgId,
            NameError::UserId => Refusal::InvalidUserId,
        }
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
    /// *ext*: the `ref` of the request this error answers, when the client sent one.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<RequestRef>,
    /// *ext*: the `clientMsgId` of the `chat_message` or `private_message` this error
    /// answers, when the client sent a valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<ClientMsgId>,
}

impl WireError {
    /// An error with a code and message. The engine's refusals come from the
    /// [`Refusal`] table instead.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
            code,
            retry_after_ms: None,
            reference: None,
            client_msg_id: None,
        }
    }

    /// The fixed text of every `store_unavailable` error (from the [`Refusal`] table).
    pub const STORE_UNAVAILABLE_TEXT: &'static str = Refusal::StoreUnavailable.text();

    /// The fixed text of every `store_timeout` error (from the [`Refusal`] table).
    pub const STORE_TIMEOUT_TEXT: &'static str = Refusal::StoreTimeout.text();

    /// `store_unavailable` with its fixed text.
    pub fn store_unavailable() -> Self {
        Refusal::StoreUnavailable.to_wire()
    }

    /// `store_timeout` with its fixed text.
    pub fn store_timeout() -> Self {
        Refusal::StoreTimeout.to_wire()
    }

    /// The answer to a failed append; see [`Refusal::append_failed`].
    pub fn append_failed(e: &crate::store::StoreError) -> Self {
        Refusal::append_failed(e).to_wire()
    }
}

impl From<Refusal> for WireError {
    fn from(r: Refusal) -> Self {
        r.to_wire()
    }
}

impl From<&NameError> for WireError {
    fn from(e: &NameError) -> Self {
        Refusal::from(e).to_wire()
    }
}

/// Why a frame could not be decoded into a command. Never a panic: every byte string
/// decodes to a command or to one of these.
///
/// What reaches the client is the [`Refusal`]'s fixed text ([`Display`](std::fmt::Display)
/// is that text); serde_json's own description, which changes between its versions and
/// quotes the offending value, is kept in `detail` for the server's logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not JSON at all (or not UTF-8, a lone surrogate, nesting past serde_json's limit).
    #[error("{}", Refusal::InvalidJson.text())]
    Json {
        /// serde_json's description, for logs only.
        detail: String,
    },
    /// JSON, but not an object with fields of the right types: `refusal` says which
    /// rule (an `invalid_message` row of the table).
    #[error("{}", .refusal.text())]
    Shape {
        /// The row of the table that answers it.
        refusal: Refusal,
        /// serde_json's description, for logs only (empty when there is none).
        detail: String,
    },
    /// An object whose `type` is missing.
    #[error("{}", Refusal::MissingType.text())]
    MissingType,
    /// An object whose `type` is not a command (the type, cut to 64 characters).
    #[error("{}: {}", Refusal::UnknownType.text(), .0)]
    UnknownType(String),
    /// A binary frame (the protocol is text-only).
    #[error("{}", Refusal::Binary.text())]
    Binary,
    /// A `ref` that is not 1 to [`REF_MAX_CHARS`](crate::protocol::REF_MAX_CHARS)
    /// visible characters.
    #[error("{}", Refusal::InvalidRef.text())]
    InvalidRef,
}

impl DecodeError {
    /// The row of the error table that answers this error.
    pub fn refusal(&self) -> Refusal {
        match self {
            DecodeError::Json { .. } => Refusal::InvalidJson,
            DecodeError::Shape { refusal, .. } => *refusal,
            DecodeError::MissingType => Refusal::MissingType,
            DecodeError::UnknownType(_) => Refusal::UnknownType,
            DecodeError::Binary => Refusal::Binary,
            DecodeError::InvalidRef => Refusal::InvalidRef,
        }
    }

    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        self.refusal().code()
    }

    /// serde_json's description of the failure, for logs: never sent to the client.
    pub fn detail(&self) -> Option<&str> {
        match self {
            DecodeError::Json { detail } | DecodeError::Shape { detail, .. } => {
                Some(detail).filter(|d| !d.is_empty()).map(String::as_str)
            }
            _ => None,
        }
    }

    /// The `error` frame body for this error.
    pub fn to_wire(&self) -> WireError {
        match self {
            DecodeError::UnknownType(_) => WireError::new(self.code(), self.to_string()),
            _ => self.refusal().to_wire(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CLIENT_MSG_ID_MAX_CHARS, USER_ID_MAX_CHARS, USERNAME_MIN_CHARS};
    use crate::protocol::{REF_MAX_CHARS, ServerEvent, encode};
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let names: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for n in names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
    }

    /// Every row has a code and a one-line text; texts are unique, so a text alone
    /// names its rule; every code is some refusal's code.
    #[test]
    fn every_refusal_has_a_code_and_a_text() {
        let mut texts = HashSet::new();
        for r in Refusal::ALL {
            let text = r.text();
            assert!(!text.trim().is_empty(), "{r:?}");
            assert_eq!(text, text.trim(), "{r:?}");
            assert!(!text.contains(['\n', '\r']), "{r:?}");
            assert!(texts.insert(text), "{r:?}: text used twice");
            assert!(ErrorCode::ALL.contains(&r.code()), "{r:?}");
        }
        for code in ErrorCode::ALL {
            assert!(
                Refusal::ALL.iter().any(|r| r.code() == *code),
                "{code:?} has no refusal"
            );
        }
    }

    /// What the encoder writes as `code` reads back as the same code, for every row.
    #[test]
    fn codes_round_trip_through_the_wire() {
        for r in Refusal::ALL {
            let frame = encode(&ServerEvent::Error(r.to_wire()));
            let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
            let name = v["code"].as_str().unwrap();
            assert_eq!(ErrorCode::from_name(name), Some(r.code()), "{r:?}");
            assert_eq!(v["message"], r.text(), "{r:?}");
            // Nothing echoed unless the request carried it.
            assert!(v.get("ref").is_none() && v.get("clientMsgId").is_none());
        }
        assert_eq!(ErrorCode::from_name("no_such_code"), None);
    }

    /// The base server's texts, byte for byte (ARCHITECTURE.md decision 10), and the
    /// texts clients and tests already rely on.
    #[test]
    fn base_texts_are_kept() {
        let pinned = [
            (Refusal::InvalidJson, "Invalid JSON"),
            (
                Refusal::UsernameTooShort,
                "Username must be at least 2 characters",
            ),
            (Refusal::UsernameTaken, "Username taken"),
            (Refusal::UsernameRequired, "Set username first"),
            (Refusal::RoomRequired, "Room name required"),
            (Refusal::UserNotFound, "User not found"),
            (Refusal::NoRoomJoined, "Join a room first"),
            (Refusal::NotInThatRoom, "You are not in that room"),
            (Refusal::TooManyRooms, "You are in too many rooms"),
            (Refusal::MessagesTooFast, "Sending messages too fast"),
            (
                Refusal::TooManyQueued,
                "Too many requests waiting; slow down",
            ),
            (
                Refusal::StoreUnavailable,
                "The message store is unavailable; nothing was stored. Try again later",
            ),
            (
                Refusal::StoreTimeout,
                "may or may not be stored; resend with the same clientMsgId",
            ),
        ];
        for (r, text) in pinned {
            assert_eq!(r.text(), text);
        }
        assert_eq!(
            WireError::STORE_UNAVAILABLE_TEXT,
            Refusal::StoreUnavailable.text()
        );
        assert_eq!(WireError::STORE_TIMEOUT_TEXT, Refusal::StoreTimeout.text());
    }

    /// A name error's text is its row's, and the numbers in the texts are the limits
    /// the parsers apply.
    #[test]
    fn name_errors_use_the_table_and_its_numbers_are_the_limits() {
        let all = [
            NameError::UsernameTooShort,
            NameError::UsernameCharacters,
            NameError::RoomEmpty,
            NameError::RoomCharacters,
            NameError::ClientMsgId,
            NameError::UserId,
        ];
        for e in &all {
            assert_eq!(e.to_string(), Refusal::from(e).text());
        }
        let has = |r: Refusal, n: usize| r.text().contains(&format!(" {n} "));
        assert!(has(Refusal::UsernameTooShort, USERNAME_MIN_CHARS));
        assert!(has(Refusal::InvalidClientMsgId, CLIENT_MSG_ID_MAX_CHARS));
        assert!(has(Refusal::InvalidUserId, USER_ID_MAX_CHARS));
        assert!(has(Refusal::InvalidRef, REF_MAX_CHARS));
    }

    #[test]
    fn echoes_are_written_only_when_set() {
        let mut e = Refusal::MessagesTooFast.to_wire();
        e.retry_after_ms = Some(5);
        e.reference = crate::protocol::RequestRef::parse("r1");
        e.client_msg_id = ClientMsgId::parse("m1").ok();
        let v: serde_json::Value = serde_json::from_slice(&encode(&ServerEvent::Error(e))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","message":"Sending messages too fast",
                "code":"rate_limited","retryAfterMs":5,"ref":"r1","clientMsgId":"m1"})
        );
    }
}
