//! Room messages.

use super::*;

#[test]
fn chat_needs_a_username_and_a_room() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    chat(&mut s, c, "hi");
    assert_eq!(error_code(&s.take(c)[0]), "username_required");
    let d = named(&mut s, "alice");
    chat(&mut s, d, "hi");
    assert_eq!(
        s.take(d),
        vec![json!({"type":"error","message":"Join a room first","code":"not_in_room"})]
    );
}

#[test]
fn every_member_including_the_sender_gets_message_received() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    let outsider = member(&mut s, "carol", "elsewhere");
    s.take(a);
    let ida = client_id(&mut s, a);
    chat(&mut s, a, "  hello  ");
    let expected = json!({"type":"message_received","id":"00000000-0000-0000-0000-000000000001",
        "room":"lobby","seq":1,"userId":ida,"username":"alice","content":"hello",
        "timestamp":"2023-11-14T22:13:20.001Z"});
    assert_eq!(s.take(a), vec![expected.clone()]);
    assert_eq!(s.take(b), vec![expected]);
    assert!(s.take(outsider).is_empty());
}

#[test]
fn content_is_cut_to_1000_chars_and_empty_content_is_ignored() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    chat(&mut s, a, &"é".repeat(1200));
    let f = s.take(a);
    assert_eq!(f[0]["content"].as_str().unwrap().chars().count(), 1000);
    chat(&mut s, a, "   \n ");
    assert!(s.take(a).is_empty());
    assert_eq!(
        s.store
            .room_messages(&RoomName::parse("lobby").unwrap())
            .len(),
        1
    );
}

#[test]
fn seq_increases_per_room_without_gaps() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "one");
    s.send(a, json!({"type":"join_room","room":"two","keepRooms":true}));
    s.take(a);
    for _ in 0..3 {
        s.send(a, json!({"type":"chat_message","content":"x","room":"one"}));
        s.send(a, json!({"type":"chat_message","content":"y","room":"two"}));
    }
    let frames = s.take(a);
    let per = |room: &str| -> Vec<u64> {
        frames
            .iter()
            .filter(|f| f["room"] == room)
            .map(|f| f["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(per("one"), [1, 2, 3]);
    assert_eq!(per("two"), [1, 2, 3]);
}

#[test]
fn nobody_sees_a_message_before_the_store_accepted_it() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.set_store_mode(StoreMode::Held);
    chat(&mut s, a, "hi");
    assert!(s.take(a).is_empty() && s.take(b).is_empty());
    assert_eq!(s.held().len(), 1);
    s.complete(0);
    assert_eq!(seqs(&s.take(a)), [1]);
    assert_eq!(seqs(&s.take(b)), [1]);
}

#[test]
fn a_store_failure_is_reported_and_nothing_is_broadcast() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.store.fail_next = 1;
    chat(&mut s, a, "hi");
    assert_eq!(error_code(&s.take(a)[0]), "store_unavailable");
    assert!(s.take(b).is_empty());
    chat(&mut s, a, "again");
    assert_eq!(seqs(&s.take(b)), [1], "a failed append consumes no seq");
}

#[test]
fn client_msg_id_is_echoed_and_a_retry_is_not_stored_twice() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let msg = json!({"type":"chat_message","content":"hi","clientMsgId":"c-1"});
    s.send(a, msg.clone());
    let first = s.take(a);
    assert_eq!(first[0]["clientMsgId"], "c-1");
    assert_eq!(s.take(b).len(), 1);
    s.send(a, msg);
    assert!(s.take(a).is_empty(), "the connection already has it");
    assert!(s.take(b).is_empty());
    assert_eq!(
        s.store
            .room_messages(&RoomName::parse("lobby").unwrap())
            .len(),
        1
    );
}

#[test]
fn a_retry_of_a_message_older_than_the_join_page_is_answered_once() {
    let mut config = Config::unlimited();
    config.join_history = 2;
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    s.send(
        a,
        json!({"type":"chat_message","content":"old","clientMsgId":"c-old"}),
    );
    chat(&mut s, a, "2");
    chat(&mut s, a, "3");
    s.disconnect(a);
    let a2 = s.connect_as("alice-2", "alicia");
    s.take(a2);
    // A different user with the same clientMsgId is not a duplicate:
    s.send(a2, json!({"type":"join_room","room":"lobby"}));
    s.take(a2);
    s.send(
        a2,
        json!({"type":"chat_message","content":"new","clientMsgId":"c-old"}),
    );
    assert_eq!(seqs(&s.take(a2)), [4]);
}

#[test]
fn invalid_client_msg_id_is_refused() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    s.send(
        a,
        json!({"type":"chat_message","content":"x","clientMsgId":""}),
    );
    assert_eq!(error_code(&s.take(a)[0]), "invalid_field");
}

#[test]
fn commands_behind_a_store_round_trip_keep_their_order() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.set_store_mode(StoreMode::Held);
    s.send(a, json!({"type":"join_room","room":"lobby"}));
    chat(&mut s, a, "first");
    chat(&mut s, a, "second");
    assert!(s.take(a).is_empty());
    s.complete_all();
    let frames = s.take(a);
    let types: Vec<_> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "room_joined",
            "message_history",
            "room_users",
            "message_received",
            "message_received"
        ]
    );
    assert_eq!(frames[3]["content"], "first");
    assert_eq!(frames[4]["content"], "second");
}

#[test]
fn too_many_queued_commands_are_refused() {
    let mut config = Config::unlimited();
    config.max_queued_commands = 2;
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    s.set_store_mode(StoreMode::Held);
    for i in 0..4 {
        chat(&mut s, a, &format!("m{i}"));
    }
    assert_eq!(error_code(&s.take(a)[0]), "too_many_requests");
    s.complete_all();
    assert_eq!(seqs(&s.take(a)), [1, 2, 3]);
}
