//! *ext* Request references: an `error` echoes the `ref` of the frame it answers, and for
//! `chat_message`/`private_message` its valid `clientMsgId` (PROTOCOL.md *Errors*).
//! Clients that send neither see the base frames, unchanged.

use serde_json::json;

use super::*;

/// The default configuration with one change (set field by field: `Config` is
/// `#[non_exhaustive]` for users).
fn config(change: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    change(&mut c);
    c
}

#[test]
fn an_error_echoes_the_ref_of_the_request_it_answers() {
    let mut s = sim();
    let a = s.connect();
    s.take(a);
    s.send(a, json!({"type":"join_room","room":"lobby","ref":"j-1"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"error","message":"Set username first",
            "code":"username_required","ref":"j-1"})]
    );
    // No ref, no echo: the base frame, and never the ref of an earlier request.
    s.send(a, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"error","message":"Set username first","code":"username_required"})]
    );
    // A ref on a request that succeeds changes nothing in its answer.
    s.send(
        a,
        json!({"type":"set_username","username":"alice","ref":"u-1"}),
    );
    assert_eq!(
        s.take(a),
        vec![json!({"type":"username_set","username":"alice"})]
    );
}

#[test]
fn chat_and_private_message_errors_echo_the_client_msg_id() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.send(
        a,
        json!({"type":"chat_message","content":"hi","clientMsgId":"m-1","ref":"r-1"}),
    );
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Join a room first","code":"not_in_room",
            "ref":"r-1","clientMsgId":"m-1"})
        ]
    );
    s.send(
        a,
        json!({"type":"private_message","targetId":"nobody","content":"hi","clientMsgId":"m-2"}),
    );
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"User not found","code":"user_not_found",
            "clientMsgId":"m-2"})
        ]
    );
    // An invalid clientMsgId is refused, not echoed.
    s.send(a, json!({"type":"join_room","room":"lobby"}));
    s.take(a);
    s.send(
        a,
        json!({"type":"chat_message","content":"hi","clientMsgId":"","ref":"r-3"}),
    );
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"clientMsgId must be 1 to 64 visible characters",
            "code":"invalid_field","ref":"r-3"})
        ]
    );
    // Other commands have no clientMsgId to echo, even if the frame has the field.
    s.send(
        a,
        json!({"type":"leave_room","room":"elsewhere","clientMsgId":"m-4"}),
    );
    assert_eq!(
        s.take(a),
        vec![json!({"type":"error","message":"You are not in that room","code":"not_in_room"})]
    );
}

#[test]
fn rate_limited_keeps_its_retry_after_next_to_the_echo() {
    let mut s = Sim::new(config(|c| c.message_rate = Some(Rate::per_second(1, 1))));
    let a = member(&mut s, "alice", "lobby");
    chat(&mut s, a, "one");
    s.take(a);
    s.send(
        a,
        json!({"type":"chat_message","content":"two","clientMsgId":"m-2","ref":"r-2"}),
    );
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Sending messages too fast","code":"rate_limited",
            "retryAfterMs":1000,"ref":"r-2","clientMsgId":"m-2"})
        ]
    );
}

#[test]
fn refused_frames_echo_the_ref_when_it_can_be_read() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.send(a, json!({"type":"dance","ref":"d-1"}));
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Unknown message type: dance",
            "code":"unknown_type","ref":"d-1"})
        ]
    );
    s.send(a, json!({"type":"chat_message","content":5,"ref":"d-2"}));
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Invalid message: \"content\" must be a string",
            "code":"invalid_message","ref":"d-2"})
        ]
    );
    // Not JSON: nothing to read a ref from.
    s.send_raw(a, br#"{"type":"dance","ref":"d-3""#);
    assert_eq!(
        s.take(a),
        vec![json!({"type":"error","message":"Invalid JSON","code":"invalid_json"})]
    );
    // An invalid ref is refused, clearly, and not echoed.
    s.send(a, json!({"type":"typing_stop","ref":"x".repeat(65)}));
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"ref must be 1 to 64 visible characters",
            "code":"invalid_field"})
        ]
    );
}

/// A store failure arrives after the connection moved on to other frames in its
/// queue; it still names the request that waited for the store.
#[test]
fn a_store_failure_answers_the_request_that_waited_for_it() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    s.set_store_mode(StoreMode::Held);
    s.send(
        a,
        json!({"type":"chat_message","content":"hi","clientMsgId":"m-1","ref":"r-1"}),
    );
    // Queued behind the append: answered after it, with its own ref.
    s.send(a, json!({"type":"leave_room","room":"nowhere","ref":"r-2"}));
    assert!(s.take(a).is_empty());
    s.store.fail_next = 1;
    s.complete(0);
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":WireError::STORE_UNAVAILABLE_TEXT,
                "code":"store_unavailable","ref":"r-1","clientMsgId":"m-1"}),
            json!({"type":"error","message":"You are not in that room","code":"not_in_room",
                "ref":"r-2"}),
        ]
    );
}

/// A frame refused because too many wait behind a store round trip is answered at
/// once, with its own ref, not the ref of the request being waited for.
#[test]
fn a_frame_refused_for_a_full_queue_echoes_its_own_ref() {
    let mut s = Sim::new(config(|c| c.max_queued_commands = 1));
    let a = member(&mut s, "alice", "lobby");
    s.set_store_mode(StoreMode::Held);
    s.send(
        a,
        json!({"type":"chat_message","content":"hi","clientMsgId":"m-1","ref":"r-1"}),
    );
    s.send(a, json!({"type":"typing_start","ref":"r-2"}));
    s.send(
        a,
        json!({"type":"chat_message","content":"yo","clientMsgId":"m-3","ref":"r-3"}),
    );
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Too many requests waiting; slow down",
            "code":"too_many_requests","ref":"r-3","clientMsgId":"m-3"})
        ]
    );
    s.complete_all();
    assert_eq!(seqs(&s.take(a)), [1]);
}
