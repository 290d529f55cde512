//! Decoder tables: each decode failure's code and fixed text, the `ref` rules, and the
//! lenient second pass that names the field.

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
    let c =
        decode(br#"{"type":"join_room","room":"Lobby","since":7,"epoch":"e1","keepRooms":true}"#);
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
    assert!(matches!(c, ClientCommand::ChatMessage { content, .. } if content == "a\"b\u{e9}\n"));
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
