//! Rule tables of the wire codec: every malformed frame the bad-input suite used to send
//! over a socket, with the error code [`decode`] must answer (the text is the error
//! table's business: only its presence is checked here), what a valid but odd frame
//! decodes to, and how [`encode`] carries hostile strings.

use std::sync::Arc;

use super::{ClientCommand, ErrorCode, ServerEvent, decode, encode};
use crate::ids::{ClientMsgId, Content, MessageId, RoomName, Seq, UserId};
use crate::message::{StoredMessage, Timestamp};

/// Decodes `frame`, expecting an error with `code` and a non-empty message.
fn refused(frame: &str, code: ErrorCode) {
    match decode(frame.as_bytes()) {
        Ok(command) => panic!("{frame:?} decoded to {command:?}, expected {code:?}"),
        Err(e) => {
            assert_eq!(e.code(), code, "for {frame:?}: {e}");
            assert!(!e.to_string().is_empty(), "for {frame:?}: no message");
        }
    }
}

#[test]
fn text_that_is_not_json_is_invalid_json() {
    for frame in [
        "hello",
        "{not json",
        "<script>alert(1)</script>",
        "",
        // A byte order mark is not JSON white space.
        "\u{feff}{\"type\":\"typing_stop\"}",
        "{'type': 'chat_message'}",
        "{\"type\":\"typing_stop\"} trailing",
    ] {
        refused(frame, ErrorCode::InvalidJson);
    }
}

#[test]
fn truncated_json_is_invalid_json() {
    for frame in [
        "{\"type\":\"chat_message\",\"content\":\"hi",
        "{\"type\":\"chat_message\",",
        "{",
        "[1, 2",
    ] {
        refused(frame, ErrorCode::InvalidJson);
    }
}

#[test]
fn json_that_is_not_an_object_or_has_no_type_is_invalid_message() {
    for frame in [
        "[1, 2]",
        "\"chat_message\"",
        "42",
        "null",
        "true",
        "{}",
        "{\"content\":\"no type\"}",
    ] {
        refused(frame, ErrorCode::InvalidMessage);
    }
}

#[test]
fn fields_of_the_wrong_type_are_invalid_message() {
    for frame in [
        r#"{"type":5}"#,
        r#"{"type":"chat_message","content":5}"#,
        r#"{"type":"chat_message","content":["a"]}"#,
        r#"{"type":"set_username","username":{"first":"a"}}"#,
        r#"{"type":"join_room","room":"x","keepRooms":"yes"}"#,
        r#"{"type":"history","room":"json","limit":1.5}"#,
        // Negative, fractional or out-of-range counts.
        r#"{"type":"history","room":"history","limit":-5}"#,
        // A clientMsgId that is no string.
        r#"{"type":"chat_message","content":"x","clientMsgId":7}"#,
    ] {
        refused(frame, ErrorCode::InvalidMessage);
    }
}

/// A resume cursor must be a `u64` and its epoch a string; anything else is refused by
/// the decoder, before the engine sees a join.
#[test]
fn a_resume_cursor_that_is_no_u64_or_an_epoch_that_is_no_string_is_invalid_message() {
    for since in ["-1", "\"3\"", "2.5", "18446744073709551616", "[3]"] {
        refused(
            &format!(r#"{{"type":"join_room","room":"resume","since":{since},"epoch":"e"}}"#),
            ErrorCode::InvalidMessage,
        );
    }
    refused(
        r#"{"type":"join_room","room":"resume","since":2,"epoch":7}"#,
        ErrorCode::InvalidMessage,
    );
    // The largest u64 is a valid cursor (the engine answers it: see `resume.rs`).
    assert_eq!(
        decode(format!(r#"{{"type":"join_room","room":"r","since":{}}}"#, u64::MAX).as_bytes()),
        Ok(ClientCommand::JoinRoom {
            room: "r".into(),
            since: Some(Seq(u64::MAX)),
            epoch: None,
            keep_rooms: false,
        })
    );
}

#[test]
fn an_unknown_type_is_unknown_type_with_a_bounded_echo() {
    let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
    for frame in [
        r#"{"type":"dance"}"#,
        // Types are case-sensitive, and server event types are no commands.
        r#"{"type":"CHAT_MESSAGE","content":"x"}"#,
        r#"{"type":"username_set","username":"admin"}"#,
        r#"{"type":""}"#,
        long.as_str(),
    ] {
        refused(frame, ErrorCode::UnknownType);
    }
    let echoed = decode(long.as_bytes()).unwrap_err().to_string();
    assert!(
        echoed.len() < 200,
        "{} bytes echoed for a 10,000-byte type",
        echoed.len()
    );
}

#[test]
fn deep_nesting_is_refused_or_skipped_without_recursion() {
    // 20,000 levels fit in a 64 KiB frame (40 KB of brackets).
    let (open, close) = ("[".repeat(20_000), "]".repeat(20_000));
    // Valid JSON but no object; and nesting where a string is expected.
    refused(&format!("{open}{close}"), ErrorCode::InvalidMessage);
    refused(
        &format!(r#"{{"type":"chat_message","content":{open}{close}}}"#),
        ErrorCode::InvalidMessage,
    );
    // In a field the server does not know, the nesting is skipped: the command stands.
    let set_sender = ClientCommand::SetUsername {
        username: "sender".into(),
    };
    let in_unknown_field =
        format!(r#"{{"type":"set_username","username":"sender","x":{open}{close}}}"#);
    assert_eq!(decode(in_unknown_field.as_bytes()), Ok(set_sender.clone()));
    let objects = format!(
        r#"{{"type":"set_username","username":"sender","x":{}1{}}}"#,
        r#"{"a":"#.repeat(5_000),
        "}".repeat(5_000)
    );
    assert_eq!(decode(objects.as_bytes()), Ok(set_sender));
}

#[test]
fn a_repeated_key_is_invalid_message() {
    for frame in [
        r#"{"type":"chat_message","content":"a","content":"b"}"#,
        r#"{"type":"chat_message","type":"set_username","username":"x"}"#,
        r#"{"type":"set_username","username":"a1","username":"admin"}"#,
    ] {
        refused(frame, ErrorCode::InvalidMessage);
    }
}

#[test]
fn lone_surrogates_are_invalid_json() {
    for frame in [
        r#"{"type":"chat_message","content":"\ud800"}"#,
        r#"{"type":"chat_message","content":"\udc00"}"#,
        r#"{"type":"chat_message","content":"\ud800\u0041"}"#,
        r#"{"type":"set_username","username":"ab\ud83d"}"#,
    ] {
        refused(frame, ErrorCode::InvalidJson);
    }
}

/// Server fields a client adds (`userId`, `clientId`, `id`, `seq`, `timestamp`…) are
/// not part of any command: they cannot reach the engine.
#[test]
fn client_supplied_server_fields_are_dropped_by_the_decoder() {
    let forged = r#"{"type":"set_username","username":"forger2","userId":"u1","clientId":"u1",
        "id":"forged-id","seq":999,"timestamp":"1970-01-01T00:00:00.000Z","recovered":true}"#;
    assert_eq!(
        decode(forged.as_bytes()),
        Ok(ClientCommand::SetUsername {
            username: "forger2".into()
        })
    );
    let dm = r#"{"type":"private_message","targetId":"t","content":"psst","id":"forged-id",
        "seq":999,"fromId":"someone","fromUsername":"admin","toId":"me","toUsername":"admin"}"#;
    assert_eq!(
        decode(dm.as_bytes()),
        Ok(ClientCommand::PrivateMessage {
            target_id: "t".into(),
            content: "psst".into(),
            client_msg_id: None,
        })
    );
}

#[test]
fn a_history_limit_as_large_as_a_u64_decodes_for_the_engine_to_clamp() {
    for limit in [1_000_000_000, u64::MAX] {
        assert_eq!(
            decode(format!(r#"{{"type":"history","room":"h","limit":{limit}}}"#).as_bytes()),
            Ok(ClientCommand::History {
                room: "h".into(),
                before: None,
                limit: Some(limit),
            })
        );
    }
}

/// Strings that would run as script, markup or SQL if anything on the way interpreted
/// them (the bad-input suite's list).
pub(crate) const HOSTILE: [&str; 10] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(document.cookie)>",
    "<svg/onload=alert(1)>",
    "javascript:alert(1)",
    "</script><script>alert(1)</script>",
    "&lt;b&gt;not bold&lt;/b&gt; &amp; &#x3C;",
    "{{constructor.constructor('alert(1)')()}}",
    "' OR '1'='1'; DROP TABLE messages; --",
    "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">x</a>",
    "a\u{2028}b\u{2029}c<!--\\u003c/script>",
];

/// A hostile string travels with JSON escaping only: the encoded frame holds exactly
/// what `serde_json` makes of the string, and decodes back to it.
#[test]
fn hostile_content_is_encoded_with_json_escaping_only() {
    for content in HOSTILE {
        let event = ServerEvent::MessageReceived(Arc::new(StoredMessage {
            id: MessageId(uuid::Uuid::from_u128(1)),
            room: RoomName::parse("<script>x</script>").unwrap(),
            seq: Seq(1),
            user_id: UserId::parse("u").unwrap(),
            username: "\"><svg/onload=1>".into(),
            content: Content::parse(content).unwrap(),
            timestamp: Timestamp(1_700_000_000_000),
            client_msg_id: Some(ClientMsgId::parse("<b>").unwrap()),
        }));
        let bytes = encode(&event);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.contains(&serde_json::to_string(content).unwrap()),
            "{text}"
        );
        let frame: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(frame["content"], content);
        assert_eq!(frame["room"], "<script>x</script>");
        assert_eq!(frame["username"], "\"><svg/onload=1>");
        assert_eq!(frame["clientMsgId"], "<b>");
    }
}
