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
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn code(frame: &str) -> ErrorCode {
        decode(frame.as_bytes()).unwrap_err().code()
    }

    #[test]
    fn decodes_every_command() {
        let cases = [
            (r#"{"type":"set_username","username":"al"}"#, "set_username"),
            (
                r#"{"type":"join_room","room":"x","since":3,"epoch":"e","keepRooms":true}"#,
                "join_room",
            ),
            (r#"{"type":"leave_room"}"#, "leave_room"),
            (
                r#"{"type":"chat_message","content":"hi","clientMsgId":"c1"}"#,
                "chat_message",
            ),
            (
                r#"{"type":"private_message","targetId":"u","content":"hi"}"#,
                "private_message",
            ),
            (r#"{"type":"typing_start","room":"x"}"#, "typing_start"),
            (r#"{"type":"typing_stop"}"#, "typing_stop"),
            (
                r#"{"type":"history","room":"x","before":10,"limit":20}"#,
                "history",
            ),
            (r#"{"type":"dm_history","userId":"u"}"#, "dm_history"),
        ];
        for (frame, ty) in cases {
            assert_eq!(decode(frame.as_bytes()).unwrap().type_name(), ty);
        }
    }

    #[test]
    fn join_room_fields() {
        let c = decode(
            br#"{"type":"join_room","room":"Lobby","since":7,"epoch":"e1","keepRooms":true}"#,
        );
        assert_eq!(
            c.unwrap(),
            ClientCommand::JoinRoom {
                room: "Lobby".into(),
                since: Some(Seq(7)),
                epoch: Some("e1".into()),
                keep_rooms: true
            }
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let c = decode(br#"{"type":"chat_message","content":"a\"b\u00e9\n"}"#).unwrap();
        assert!(
            matches!(c, ClientCommand::ChatMessage { content, .. } if content == "a\"b\u{e9}\n")
        );
    }

    #[test]
    fn server_fields_sent_by_a_client_are_ignored() {
        let c = decode(br#"{"type":"chat_message","content":"x","id":"forged","seq":99,"userId":"u","timestamp":"t"}"#);
        assert!(matches!(c, Ok(ClientCommand::ChatMessage { .. })));
    }

    #[test]
    fn missing_string_fields_decode_as_empty_like_the_base_server() {
        assert_eq!(
            decode(br#"{"type":"set_username"}"#).unwrap(),
            ClientCommand::SetUsername {
                username: String::new()
            }
        );
    }

    #[test]
    fn malformed_frames_map_to_codes() {
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(
            code(r#"{"type":"chat_message","content":"x""#),
            ErrorCode::InvalidJson
        );
        assert_eq!(code(r#"[1,2]"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#""chat_message""#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"content":"x"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"chat_message","content":5}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"join_room","room":"x","since":-1}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(code(r#"{"type":"nope"}"#), ErrorCode::UnknownType);
        assert_eq!(code(""), ErrorCode::InvalidJson);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert_eq!(
            code(r#"{"type":"chat_message","content":"a","content":"b"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"chat_message","type":"set_username"}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn lone_surrogates_and_invalid_utf8_are_invalid_json() {
        assert_eq!(
            code(r#"{"type":"chat_message","content":"\ud800"}"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            decode(b"{\"type\":\"chat_message\",\"content\":\"\xff\"}")
                .unwrap_err()
                .code(),
            ErrorCode::InvalidJson
        );
    }

    #[test]
    fn deep_nesting_never_overflows_the_stack() {
        let (open, close) = ("[".repeat(100_000), "]".repeat(100_000));
        // In a known field: the wrong type is reported before any nesting is read.
        let known = format!(r#"{{"type":"chat_message","content":{open}{close}}}"#);
        assert_eq!(code(&known), ErrorCode::InvalidMessage);
        // At the top level: not an object.
        assert!(decode(format!("{open}{close}").as_bytes()).is_err());
        // In an unknown field: skipped without recursion; the command stands.
        let unknown = format!(r#"{{"type":"typing_stop","x":{open}{close}}}"#);
        assert_eq!(
            decode(unknown.as_bytes()).unwrap().type_name(),
            "typing_stop"
        );
    }

    /// Every kind of decode failure answers with its fixed text, whatever serde_json's
    /// own wording (which only reaches the logs, as `detail`).
    #[test]
    fn decode_failures_have_fixed_texts() {
        let deep = format!(r#"{{"type":"typing_stop","x":{}"#, "[".repeat(200));
        let cases: &[(&str, ErrorCode, &str)] = &[
            ("not json", ErrorCode::InvalidJson, "Invalid JSON"),
            ("", ErrorCode::InvalidJson, "Invalid JSON"),
            ("{'type':'x'}", ErrorCode::InvalidJson, "Invalid JSON"),
            (
                r#"{"type":"chat_message"} x"#,
                ErrorCode::InvalidJson,
                "Invalid JSON",
            ),
            (
                r#"{"type":"chat_message","content":"x"#,
                ErrorCode::InvalidJson,
                "Invalid JSON",
            ),
            (
                r#"{"type":"chat_message","content":"\ud800"}"#,
                ErrorCode::InvalidJson,
                "Invalid JSON",
            ),
            (&deep, ErrorCode::InvalidJson, "Invalid JSON"),
            (
                "[1,2]",
                ErrorCode::InvalidMessage,
                "Invalid message: expected a JSON object",
            ),
            (
                "null",
                ErrorCode::InvalidMessage,
                "Invalid message: expected a JSON object",
            ),
            (
                r#"{"content":"x"}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: missing \"type\"",
            ),
            (
                r#"{"type":null}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: missing \"type\"",
            ),
            (
                r#"{"type":5}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"type\" must be a string",
            ),
            (
                r#"{"type":"set_username","username":{"a":1}}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"username\" must be a string",
            ),
            (
                r#"{"type":"join_room","room":["x"]}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"room\" must be a string",
            ),
            (
                r#"{"type":"chat_message","content":5}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"content\" must be a string",
            ),
            (
                r#"{"type":"private_message","targetId":true,"content":"x"}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"targetId\" must be a string",
            ),
            (
                r#"{"type":"dm_history","userId":7}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"userId\" must be a string",
            ),
            (
                r#"{"type":"chat_message","content":"x","clientMsgId":1}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"clientMsgId\" must be a string",
            ),
            (
                r#"{"type":"join_room","room":"x","epoch":1}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"epoch\" must be a string",
            ),
            (
                r#"{"type":"typing_stop","ref":7}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"ref\" must be a string",
            ),
            (
                r#"{"type":"join_room","room":"x","since":-1}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"since\" must be a non-negative integer",
            ),
            (
                r#"{"type":"join_room","room":"x","since":"3"}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"since\" must be a non-negative integer",
            ),
            (
                r#"{"type":"history","room":"x","before":2.5}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"before\" must be a non-negative integer",
            ),
            (
                r#"{"type":"history","room":"x","limit":18446744073709551616}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"limit\" must be a non-negative integer",
            ),
            (
                r#"{"type":"join_room","room":"x","keepRooms":"yes"}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: \"keepRooms\" must be true or false",
            ),
            (
                r#"{"type":"chat_message","content":"a","content":"b"}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: a field appears twice",
            ),
            (
                r#"{"type":"chat_message","type":"set_username"}"#,
                ErrorCode::InvalidMessage,
                "Invalid message: a field appears twice",
            ),
            (
                r#"{"type":"dance"}"#,
                ErrorCode::UnknownType,
                "Unknown message type: dance",
            ),
            (
                r#"{"type":""}"#,
                ErrorCode::UnknownType,
                "Unknown message type: ",
            ),
            (
                r#"{"type":"typing_stop","ref":""}"#,
                ErrorCode::InvalidField,
                "ref must be 1 to 64 visible characters",
            ),
        ];
        for (frame, expected_code, text) in cases {
            let err = decode(frame.as_bytes()).unwrap_err();
            assert_eq!(err.code(), *expected_code, "{frame}");
            let wire = err.to_wire();
            assert_eq!(wire.code, *expected_code, "{frame}");
            assert_eq!(wire.message, *text, "{frame}");
        }
    }

    /// serde_json's description is kept for the logs, bounded and cut on char
    /// boundaries, and never reaches the wire.
    #[test]
    fn decode_details_are_bounded_and_kept_off_the_wire() {
        let control = "\\u0001".repeat(10_000);
        let multibyte = "é".repeat(30_000);
        let frames = [
            format!(r#"{{"type":"join_room","room":"r","since":"{control}"}}"#),
            format!(r#"{{"type":"join_room","room":"r","since":"{multibyte}"}}"#),
            format!(r#"{{"type":"chat_message","keepRooms":"{multibyte}"}}"#),
            "not json".to_owned(),
        ];
        for frame in frames {
            let err = decode(frame.as_bytes()).unwrap_err();
            let detail = err.detail().expect("serde_json said why");
            assert!(detail.len() <= ERROR_TEXT_MAX_BYTES + 40, "{detail}");
            assert!(!err.to_wire().message.contains(detail), "{detail}");
            assert!(err.to_wire().message.len() < 80);
        }
    }

    /// Each row of the probe's table is a field the decoder reads with that type: a
    /// value of another type is refused with the row's text, and only that one.
    #[test]
    fn the_probe_table_matches_the_decoder() {
        assert_eq!(FIELDS[REF_FIELD].0, "ref");
        for (name, expect, refusal) in FIELDS {
            let wrong = match expect {
                Expect::Str | Expect::Bool => "5",
                Expect::Count => "\"5\"",
            };
            let right = match expect {
                Expect::Str => "\"x\"",
                Expect::Count => "5",
                Expect::Bool => "true",
            };
            let kind = if name == "type" {
                ""
            } else {
                r#""type":"history","#
            };
            let bad = format!(r#"{{{kind}"{name}":{wrong}}}"#);
            let err = decode(bad.as_bytes()).unwrap_err();
            assert_eq!(err.refusal(), refusal, "{bad}");
            let twice = format!(r#"{{"type":"history","{name}":{right},"{name}":{right}}}"#);
            let err = decode(twice.as_bytes()).unwrap_err();
            assert_eq!(err.refusal(), Refusal::DuplicateField, "{twice}");
        }
    }

    #[test]
    fn ref_is_decoded_next_to_the_command() {
        let r = |frame: &str| decode_frame(frame.as_bytes());
        // On every command, valid: returned with the command.
        let ok = r(r#"{"type":"chat_message","content":"x","ref":"m-1"}"#);
        assert!(ok.command.is_ok());
        assert_eq!(ok.reference.as_ref().map(RequestRef::as_str), Some("m-1"));
        // Absent (or null): none, and the command stands.
        assert_eq!(r(r#"{"type":"typing_stop"}"#).reference, None);
        assert_eq!(r(r#"{"type":"typing_stop","ref":null}"#).reference, None);
        // Kept on refusals that can still read it.
        let unknown = r(r#"{"type":"dance","ref":"a"}"#);
        assert_eq!(unknown.command.unwrap_err().code(), ErrorCode::UnknownType);
        assert_eq!(unknown.reference.unwrap().as_str(), "a");
        let missing = r(r#"{"ref":"b"}"#);
        assert_eq!(
            missing.command.unwrap_err().code(),
            ErrorCode::InvalidMessage
        );
        assert_eq!(missing.reference.unwrap().as_str(), "b");
        let shape = r(r#"{"type":"chat_message","content":5,"ref":"c"}"#);
        assert_eq!(shape.command.unwrap_err().code(), ErrorCode::InvalidMessage);
        assert_eq!(shape.reference.unwrap().as_str(), "c");
        // Not readable: none.
        assert_eq!(r(r#"{"type":"x","ref":"d""#).reference, None);
        assert_eq!(r(r#"{"ref":"e","ref":"e"}"#).reference, None);
        // Limits: 1 to 64 characters (not bytes), none invisible; otherwise the frame
        // is refused with `invalid_field`.
        let max = "é".repeat(REF_MAX_CHARS);
        let long = "é".repeat(REF_MAX_CHARS + 1);
        assert_eq!(
            r(&format!(r#"{{"type":"typing_stop","ref":"{max}"}}"#))
                .reference
                .unwrap()
                .as_str(),
            max
        );
        for bad in [String::new(), long, "a\\u0000".into(), "a\\u200bb".into()] {
            let d = r(&format!(r#"{{"type":"typing_stop","ref":"{bad}"}}"#));
            assert_eq!(d.command, Err(DecodeError::InvalidRef), "{bad}");
            assert_eq!(d.reference, None);
        }
    }

    #[test]
    fn oversized_fields_are_cut_while_decoding() {
        let room = "é".repeat(40_000);
        let frame = format!(
            r#"{{"type":"chat_message","room":"{room}","content":"{room}","clientMsgId":"{room}"}}"#
        );
        let ClientCommand::ChatMessage {
            content: c,
            room: Some(r),
            client_msg_id: Some(id),
        } = decode(frame.as_bytes()).unwrap()
        else {
            panic!("not a chat message");
        };
        // "é" is 2 bytes: the cut falls on a boundary, just under the bound.
        assert_eq!(r.len(), FIELD_MAX_BYTES);
        assert_eq!(id.len(), FIELD_MAX_BYTES);
        assert_eq!(c.len(), CONTENT_MAX_BYTES);
        // An odd bound on a 2-byte character: one byte less, never a split character.
        assert_eq!(cut_bytes("éé", 3), "é");
        // Escaped (owned) strings are cut too.
        let escaped = format!(
            r#"{{"type":"set_username","username":"{}"}}"#,
            "\\n".repeat(5000)
        );
        let ClientCommand::SetUsername { username } = decode(escaped.as_bytes()).unwrap() else {
            panic!("not set_username");
        };
        assert_eq!(username.len(), FIELD_MAX_BYTES);
        // Values within the bounds are unchanged.
        let ok = decode(br#"{"type":"join_room","room":"Lobby","epoch":"e1"}"#).unwrap();
        assert!(matches!(ok, ClientCommand::JoinRoom { room, .. } if room == "Lobby"));
    }

    #[test]
    fn unknown_type_echo_is_bounded() {
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
        let msg = decode(long.as_bytes()).unwrap_err().to_string();
        assert!(msg.len() < 200);
    }
}
