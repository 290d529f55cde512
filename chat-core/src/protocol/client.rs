//! Client → server commands and their decoder.
//!
//! Decoding is one pass of serde_json over a flat struct that borrows strings from the
//! frame where it can; the `type` then picks the command. Unknown fields are ignored (a
//! client may send server fields such as `id`, `seq`, `userId` or `timestamp`; they
//! have no effect), a field of the wrong type or a repeated field is an error.
//! Validation of names and content is the engine's job, so the order of checks matches
//! PROTOCOL.md (a missing username is reported before an empty room name).
//!
//! Every command may carry a `ref` ([`RequestRef`]), the client's name for the request;
//! [`decode_frame`] returns it next to the command so the engine can echo it on the
//! `error` that answers the frame, even when the frame itself is refused.
//!
//! A failed decode is answered with a fixed text per kind of failure (the
//! [`Refusal`](super::Refusal) table). Which field has the wrong type is found by a
//! second, tolerant pass over the frame, only on that error path, so the answer never
//! depends on the wording of serde_json's messages.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::error::{DecodeError, Refusal};
use crate::ids::{Seq, is_invisible};

/// Most characters of a request reference (`ref`).
pub const REF_MAX_CHARS: usize = 64;

/// *ext* A client's reference for one request (`"ref"` on any command): 1 to
/// [`REF_MAX_CHARS`] characters, none invisible. The `error` frame answering that
/// request carries it back, so a client can tell which of its requests failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RequestRef(Arc<str>);

impl RequestRef {
    /// A valid reference, or `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let n = raw.chars().count();
        (n > 0 && n <= REF_MAX_CHARS && !raw.chars().any(is_invisible)).then(|| Self(raw.into()))
    }

    /// The reference as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One decoded frame: the command, or why there is none, and the client's `ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The command, or why the frame is refused.
    pub command: Result<ClientCommand, DecodeError>,
    /// The frame's valid `ref`, when it has one (also when the command is refused, as
    /// long as the frame was a JSON object with a readable `ref`).
    pub reference: Option<RequestRef>,
}

/// A decoded client command. String fields are raw (not yet trimmed or validated).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCommand {
    /// `set_username {username}`.
    SetUsername {
        /// Requested name (missing is treated as empty, as the base server does).
        username: String,
    },
    /// `join_room {room, since?, epoch?, keepRooms?}`.
    JoinRoom {
        /// Room to join.
        room: String,
        /// *ext*: resume after this `seq`.
        since: Option<Seq>,
        /// *ext*: the epoch `since` belongs to.
        epoch: Option<String>,
        /// *ext*: stay in the rooms already joined. Without it, the base behaviour holds:
        /// joining leaves the current (most recently joined) room.
        keep_rooms: bool,
    },
    /// `leave_room {room?}`.
    LeaveRoom {
        /// *ext*: which room; default the most recently joined.
        room: Option<String>,
    },
    /// `chat_message {content, room?, clientMsgId?}`.
    ChatMessage {
        /// Text.
        content: String,
        /// *ext*: target room; default the most recently joined.
        room: Option<String>,
        /// *ext*: idempotency key.
        client_msg_id: Option<String>,
    },
    /// `private_message {targetId, content, clientMsgId?}`.
    PrivateMessage {
        /// Recipient user id.
        target_id: String,
        /// Text.
        content: String,
        /// *ext*: idempotency key.
        client_msg_id: Option<String>,
    },
    /// `typing_start {room?}`.
    TypingStart {
        /// *ext*: room; default the most recently joined.
        room: Option<String>,
    },
    /// `typing_stop {room?}`.
    TypingStop {
        /// *ext*: room; default the most recently joined.
        room: Option<String>,
    },
    /// *ext* `history {room, before?, limit?}`.
    History {
        /// Room (must be joined).
        room: String,
        /// Page of messages with `seq` below this; default the newest.
        before: Option<Seq>,
        /// Page size, clamped to the configured cap (default 100).
        limit: Option<u64>,
    },
    /// *ext* `dm_history {userId, before?, limit?}`: the conversation with one user.
    DmHistory {
        /// The other user.
        user_id: String,
        /// Page of messages with `seq` below this; default the newest.
        before: Option<Seq>,
        /// Page size, clamped to the configured cap.
        limit: Option<u64>,
    },
}

impl ClientCommand {
    /// The wire `type` of this command.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientCommand::SetUsername { .. } => "set_username",
            ClientCommand::JoinRoom { .. } => "join_room",
            ClientCommand::LeaveRoom { .. } => "leave_room",
            ClientCommand::ChatMessage { .. } => "chat_message",
            ClientCommand::PrivateMessage { .. } => "private_message",
            ClientCommand::TypingStart { .. } => "typing_start",
            ClientCommand::TypingStop { .. } => "typing_stop",
            ClientCommand::History { .. } => "history",
            ClientCommand::DmHistory { .. } => "dm_history",
        }
    }
}

/// A string field borrowed from the frame when it holds no escapes. (A newtype because
/// serde ignores `#[serde(borrow)]` on `Option<Cow<str>>` and would always allocate.)
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Every field any command has.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    username: Option<Text<'a>>,
    #[serde(borrow)]
    room: Option<Text<'a>>,
    #[serde(borrow)]
    content: Option<Text<'a>>,
    #[serde(borrow)]
    target_id: Option<Text<'a>>,
    #[serde(borrow)]
    user_id: Option<Text<'a>>,
    #[serde(borrow)]
    client_msg_id: Option<Text<'a>>,
    #[serde(borrow)]
    epoch: Option<Text<'a>>,
    #[serde(rename = "ref", borrow)]
    reference: Option<Text<'a>>,
    since: Option<u64>,
    before: Option<u64>,
    limit: Option<u64>,
    keep_rooms: Option<bool>,
}

/// Bytes kept of a name or id field (`room`, `username`, `targetId`, `userId`,
/// `clientMsgId`, `epoch`). Far above the longest valid value (a user id is at most 128
/// characters of at most 4 bytes, a room name 30), so a valid value is never changed; an
/// oversized one is cut here, before the engine trims, lower-cases or normalises it, so
/// a 60 KB room name costs what a 1 KiB one does.
pub const FIELD_MAX_BYTES: usize = 1024;

/// Bytes kept of `content`: four times the 1000-character limit of 4-byte characters,
/// so only text that the engine would cut anyway (or whitespace around it) is lost.
pub const CONTENT_MAX_BYTES: usize = 16 * 1024;

/// Bytes kept of serde_json's description of a decoding error (the `detail` of a
/// [`DecodeError`], for logs; clients get a fixed text). serde's messages quote the
/// offending value ("invalid type: string \"…\""), so without a bound a 64 KiB value of
/// control bytes would make a ~450 KB log line.
pub const ERROR_TEXT_MAX_BYTES: usize = 160;

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn cut_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The shortest suffix of `s` of at most `max` bytes that starts on a char boundary.
fn tail_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A field cut to `max` bytes on a char boundary; borrowed text is copied once, cut.
fn cut_owned(t: Text<'_>, max: usize) -> String {
    match t.0 {
        Cow::Borrowed(b) => cut_bytes(b, max).to_owned(),
        Cow::Owned(mut o) => {
            let len = cut_bytes(&o, max).len();
            o.truncate(len);
            o
        }
    }
}

fn owned(s: Option<Text<'_>>) -> Option<String> {
    s.map(|t| cut_owned(t, FIELD_MAX_BYTES))
}

fn owned_or_empty(s: Option<Text<'_>>) -> String {
    owned(s).unwrap_or_default()
}

fn content(s: Option<Text<'_>>) -> String {
    s.map(|t| cut_owned(t, CONTENT_MAX_BYTES))
        .unwrap_or_default()
}

/// An error text bounded to about [`ERROR_TEXT_MAX_BYTES`]: short texts unchanged, long
/// ones keep their head and their tail (where serde says what it expected and where),
/// joined by `…`, both cut on char boundaries.
pub(crate) fn bounded_error_text(text: String) -> String {
    if text.len() <= ERROR_TEXT_MAX_BYTES {
        return text;
    }
    let tail_max = ERROR_TEXT_MAX_BYTES / 3;
    let head = cut_bytes(&text, ERROR_TEXT_MAX_BYTES - tail_max);
    let tail = tail_bytes(&text, tail_max);
    format!("{head}…{tail}")
}

/// What a field of a refused frame holds, read without recursion (nested values are
/// skipped by serde_json without a depth limit) and without failing on any type.
enum Probe {
    Null,
    Str(String),
    Bool,
    Count,
    Other,
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Probe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Probe, E> {
                Ok(Probe::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Probe, E> {
                Ok(Probe::Bool)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Probe, E> {
                Ok(Probe::Count)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Probe, E> {
                Ok(if v >= 0 { Probe::Count } else { Probe::Other })
            }
            fn visit_f64<E>(self, _: f64) -> Result<Probe, E> {
                Ok(Probe::Other)
            }
            fn visit_str<E>(self, v: &str) -> Result<Probe, E> {
                Ok(Probe::Str(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Probe::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Probe::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The JSON type a known field must have.
#[derive(Clone, Copy)]
enum Expect {
    Str,
    Count,
    Bool,
}

impl Expect {
    /// `null` stands for "absent", as in the decoder.
    fn accepts(self, p: &Probe) -> bool {
        matches!(
            (self, p),
            (_, Probe::Null)
                | (Expect::Str, Probe::Str(_))
                | (Expect::Count, Probe::Count)
                | (Expect::Bool, Probe::Bool)
        )
    }
}

/// Every field of [`RawFrame`], its type, and the refusal when it has another one, in
/// the order a refused frame is checked.
const FIELDS: [(&str, Expect, Refusal); 13] = [
    ("type", Expect::Str, Refusal::TypeNotString),
    ("username", Expect::Str, Refusal::UsernameNotString),
    ("room", Expect::Str, Refusal::RoomNotString),
    ("content", Expect::Str, Refusal::ContentNotString),
    ("targetId", Expect::Str, Refusal::TargetIdNotString),
    ("userId", Expect::Str, Refusal::UserIdNotString),
    ("clientMsgId", Expect::Str, Refusal::ClientMsgIdNotString),
    ("epoch", Expect::Str, Refusal::EpochNotString),
    ("ref", Expect::Str, Refusal::RefNotString),
    ("since", Expect::Count, Refusal::SinceNotCount),
    ("before", Expect::Count, Refusal::BeforeNotCount),
    ("limit", Expect::Count, Refusal::LimitNotCount),
    ("keepRooms", Expect::Bool, Refusal::KeepRoomsNotBool),
];

/// Index of `ref` in [`FIELDS`].
const REF_FIELD: usize = 8;

/// A refused object, read leniently: each known field as a [`Probe`] (the first time it
/// appears), and which known fields appear more than once.
struct ProbeFrame {
    fields: [Option<Probe>; FIELDS.len()],
    repeated: [bool; FIELDS.len()],
}

impl<'de> Deserialize<'de> for ProbeFrame {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ProbeFrame;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ProbeFrame, A::Error> {
                let mut frame = ProbeFrame {
                    fields: Default::default(),
                    repeated: [false; FIELDS.len()],
                };
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match FIELDS.iter().position(|(name, ..)| *name == key.0) {
                        Some(i) if frame.fields[i].is_some() => {
                            frame.repeated[i] = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        Some(i) => frame.fields[i] = Some(map.next_value()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(frame)
            }
        }
        d.deserialize_map(V)
    }
}

impl ProbeFrame {
    /// Why the decoder refused this object: the first field (in [`FIELDS`] order) of
    /// the wrong type, else a repeated key.
    fn refusal(&self) -> Refusal {
        let wrong = FIELDS
            .iter()
            .zip(&self.fields)
            .find(|((_, expect, _), probe)| probe.as_ref().is_some_and(|p| !expect.accepts(p)));
        match wrong {
            Some(((.., refusal), _)) => *refusal,
            None if self.repeated.contains(&true) => Refusal::DuplicateField,
            None => Refusal::OtherShape,
        }
    }

    /// The frame's `ref`, when it is valid and given once (of two, neither is the
    /// client's word for the request).
    fn reference(&self) -> Option<RequestRef> {
        if self.repeated[REF_FIELD] {
            return None;
        }
        match &self.fields[REF_FIELD] {
            Some(Probe::Str(s)) => RequestRef::parse(s),
            _ => None,
        }
    }
}

/// A frame serde_json refused: a syntax error is `Invalid JSON`; a shape error is
/// told apart by a [`ProbeFrame`] pass (which also recovers a valid `ref`, so the
/// refusal can carry it).
fn refused(frame: &[u8], e: serde_json::Error) -> Decoded {
    use serde_json::error::Category;
    let detail = bounded_error_text(e.to_string());
    if !matches!(e.classify(), Category::Data) {
        return Decoded {
            command: Err(DecodeError::Json { detail }),
            reference: None,
        };
    }
    let (refusal, reference) = match serde_json::from_slice::<ProbeFrame>(frame) {
        Ok(probe) => (probe.refusal(), probe.reference()),
        Err(_) => (Refusal::OtherShape, None),
    };
    Decoded {
        command: Err(DecodeError::Shape { refusal, detail }),
        reference,
    }
}

/// Decodes one text frame. Never panics; every input yields a command or an error.
/// The same as [`decode_frame`] without the `ref`.
pub fn decode(frame: &[u8]) -> Result<ClientCommand, DecodeError> {
    decode_frame(frame).command
}

/// Decodes one text frame and its `ref`. Never panics; every input yields a command or
/// an error. A `ref` that is present but not valid refuses the frame
/// ([`DecodeError::InvalidRef`]).
pub fn decode_frame(frame: &[u8]) -> Decoded {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Tell "valid JSON but not an object" apart from "not JSON".
        let command = match serde_json::from_slice::<IgnoredAny>(frame) {
            Ok(_) => Err(DecodeError::Shape {
                refusal: Refusal::NotAnObject,
                detail: String::new(),
            }),
            Err(e) => Err(DecodeError::Json {
                detail: bounded_error_text(e.to_string()),
            }),
        };
        return Decoded {
            command,
            reference: None,
        };
    }
    let mut raw: RawFrame<'_> = match serde_json::from_slice(frame) {
        Ok(raw) => raw,
        Err(e) => return refused(frame, e),
    };
    let reference = match raw.reference.take() {
        None => None,
        Some(text) => match RequestRef::parse(&text.0) {
            Some(r) => Some(r),
            None => {
                return Decoded {
                    command: Err(DecodeError::InvalidRef),
                    reference: None,
                };
            }
        },
    };
    Decoded {
        command: command(raw),
        reference,
    }
}

fn command(raw: RawFrame<'_>) -> Result<ClientCommand, DecodeError> {
    let kind = raw.kind.ok_or(DecodeError::MissingType)?;
    Ok(match &*kind.0 {
        "set_username" => ClientCommand::SetUsername {
            username: owned_or_empty(raw.username),
        },
        "join_room" => ClientCommand::JoinRoom {
            room: owned_or_empty(raw.room),
            since: raw.since.map(Seq),
            epoch: owned(raw.epoch),
            keep_rooms: raw.keep_rooms.unwrap_or(false),
        },
        "leave_room" => ClientCommand::LeaveRoom {
            room: owned(raw.room),
        },
        "chat_message" => ClientCommand::ChatMessage {
            content: content(raw.content),
            room: owned(raw.room),
            client_msg_id: owned(raw.client_msg_id),
        },
        "private_message" => ClientCommand::PrivateMessage {
            target_id: owned_or_empty(raw.target_id),
            content: content(raw.content),
            client_msg_id: owned(raw.client_msg_id),
        },
        "typing_start" => ClientCommand::TypingStart {
            room: owned(raw.room),
        },
        "typing_stop" => ClientCommand::TypingStop {
            room: owned(raw.room),
        },
        "history" => ClientCommand::History {
            room: owned_or_empty(raw.room),
            before: raw.before.map(Seq),
            limit: raw.limit,
        },
        "dm_history" => ClientCommand::DmHistory {
            user_id: owned_or_empty(raw.user_id),
            before: raw.before.map(Seq),
            limit: raw.limit,
        },
        other => {
            // Bound what we echo back: the type came from the peer.
            let shown: String = other.chars().take(64).collect();
            return Err(DecodeError::UnknownType(shown));
        }
    })
}

#[cfg(test)]
mod tests;
