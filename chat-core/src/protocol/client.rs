//! Client → server commands and their decoder.
//!
//! Decoding is one pass of serde_json over a flat struct that borrows strings from the
//! frame where it can; the `type` then picks the command. Unknown fields are ignored (a
//! client may send server fields such as `id`, `seq`, `userId` or `timestamp`; they
//! have no effect), a field of the wrong type or a repeated field is an error.
//! Validation of names and content is the engine's job, so the order of checks matches
//! PROTOCOL.md (a missing username is reported before an empty room name).

use std::borrow::Cow;

use serde::Deserialize;

use super::error::DecodeError;
use crate::ids::Seq;

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

/// Bytes kept of a decoding error's text. serde's messages quote the offending value
/// ("invalid type: string \"…\""), so without a bound a 64 KiB value of control bytes
/// would come back as a ~450 KB error frame.
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

fn classify(e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    let text = bounded_error_text(e.to_string());
    match e.classify() {
        Category::Data => DecodeError::Shape(text),
        Category::Syntax | Category::Eof | Category::Io => DecodeError::Json(text),
    }
}

/// Decodes one text frame. Never panics; every input yields a command or an error.
pub fn decode(frame: &[u8]) -> Result<ClientCommand, DecodeError> {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Tell "valid JSON but not an object" apart from "not JSON".
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(frame) {
                Ok(_) => DecodeError::Shape("expected a JSON object".into()),
                Err(e) => DecodeError::Json(bounded_error_text(e.to_string())),
            },
        );
    }
    let raw: RawFrame<'_> = serde_json::from_slice(frame).map_err(classify)?;
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

    #[test]
    fn decode_error_texts_are_bounded_on_char_boundaries() {
        let control = "\\u0001".repeat(10_000);
        let multibyte = "é".repeat(30_000);
        let cases: [(String, ErrorCode, &str); 5] = [
            // 64 KiB-ish of escaped control bytes in `since`: the value is cut.
            (
                format!(r#"{{"type":"join_room","room":"r","since":"{control}"}}"#),
                ErrorCode::InvalidMessage,
                "expected u64 at line 1 column 60041",
            ),
            // Multi-byte characters: the cut lands on a char boundary.
            (
                format!(r#"{{"type":"join_room","room":"r","since":"{multibyte}"}}"#),
                ErrorCode::InvalidMessage,
                "expected u64 at line 1 column 60041",
            ),
            (
                format!(r#"{{"type":"chat_message","keepRooms":"{multibyte}"}}"#),
                ErrorCode::InvalidMessage,
                "expected a boolean at line 1 column 60037",
            ),
            // Short texts are untouched.
            (
                r#"{"type":"join_room","room":"x","since":"3"}"#.to_owned(),
                ErrorCode::InvalidMessage,
                "Invalid message: invalid type: string \"3\", expected u64 at line 1 column 42",
            ),
            (
                "not json".to_owned(),
                ErrorCode::InvalidJson,
                "Invalid JSON: expected ident at line 1 column 2",
            ),
        ];
        for (frame, expected_code, ending) in cases {
            let err = decode(frame.as_bytes()).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.code(), expected_code, "{text}");
            assert!(text.ends_with(ending), "{text}");
            assert!(
                text.len() <= ERROR_TEXT_MAX_BYTES + 40,
                "{} bytes: {text}",
                text.len()
            );
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
