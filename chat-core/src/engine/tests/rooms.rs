//! Joining and leaving.

use super::*;

#[test]
fn join_needs_a_username() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(c, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        s.take(c),
        vec![json!({"type":"error","message":"Set username first","code":"username_required"})]
    );
}

#[test]
fn join_with_an_empty_room_name_is_an_error() {
    let mut s = sim();
    let c = named(&mut s, "alice");
    s.send(c, json!({"type":"join_room","room":"   "}));
    assert_eq!(
        s.take(c),
        vec![json!({"type":"error","message":"Room name required","code":"invalid_room"})]
    );
}

#[test]
fn join_replies_in_order_room_joined_history_room_users() {
    let mut s = sim();
    let c = named(&mut s, "alice");
    let id = client_id(&mut s, c);
    s.send(c, json!({"type":"join_room","room":"  Lobby "}));
    assert_eq!(
        s.take(c),
        vec![
            json!({"type":"room_joined","room":"lobby"}),
            json!({"type":"message_history","room":"lobby","messages":[],"epoch":"sim-epoch",
                   "lastSeq":0,"recovered":false,"hasMore":false}),
            json!({"type":"room_users","room":"lobby","users":[{"id":id,"username":"alice"}]}),
        ]
    );
}

#[test]
fn room_names_are_lowercased_and_cut_to_30() {
    let mut s = sim();
    let c = named(&mut s, "alice");
    s.send(
        c,
        json!({"type":"join_room","room":"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"}),
    );
    assert_eq!(s.take(c)[0]["room"], "abcdefghijklmnopqrstuvwxyz0123");
}

#[test]
fn others_get_user_joined_and_the_joiner_is_listed_last() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = named(&mut s, "bob");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"user_joined","room":"lobby","username":"bob","userId":idb})]
    );
    let replies = s.take(b);
    assert_eq!(
        replies[2],
        json!({"type":"room_users","room":"lobby","users":[
            {"id":ida,"username":"alice"},{"id":idb,"username":"bob"}]})
    );
}

#[test]
fn join_history_is_the_last_50_oldest_first() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=60 {
        chat(&mut s, a, &format!("m{i}"));
    }
    let b = named(&mut s, "bob");
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    let replies = s.take(b);
    let history = &replies[1];
    assert_eq!(history_seqs(history), (11..=60).collect::<Vec<_>>());
    assert_eq!(history["messages"][0]["content"], "m11");
    assert_eq!(history["messages"][0]["type"], "message_received");
    assert_eq!(history["hasMore"], true);
    assert_eq!(history["lastSeq"], 60);
}

#[test]
fn leave_answers_room_left_and_others_get_user_left() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let idb = client_id(&mut s, b);
    s.send(b, json!({"type":"leave_room"}));
    assert_eq!(s.take(b), vec![json!({"type":"room_left","room":"lobby"})]);
    assert_eq!(
        s.take(a),
        vec![json!({"type":"user_left","room":"lobby","username":"bob","userId":idb})]
    );
}

#[test]
fn leave_when_not_in_a_room_is_an_error() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.send(a, json!({"type":"leave_room"}));
    assert_eq!(error_code(&s.take(a)[0]), "not_in_room");
}

#[test]
fn an_empty_room_is_dropped() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    assert_eq!(s.engine.room_count(), 1);
    s.send(a, json!({"type":"leave_room"}));
    assert_eq!(s.engine.room_count(), 0);
    let b = member(&mut s, "bob", "other");
    s.disconnect(b);
    assert_eq!(s.engine.room_count(), 0);
    assert_eq!(s.engine.connection_count(), 1);
}

#[test]
fn a_plain_join_leaves_the_current_room_as_the_base_server_does() {
    let mut s = sim();
    let a = member(&mut s, "alice", "one");
    let watcher = member(&mut s, "bob", "one");
    s.take(a);
    s.send(a, json!({"type":"join_room","room":"two"}));
    assert_eq!(
        s.take_types(a),
        ["room_left", "room_joined", "message_history", "room_users"]
    );
    assert_eq!(s.take_types(watcher), ["user_left"]);
    assert_eq!(s.engine.rooms_of(a), [RoomName::parse("two").unwrap()]);
}

#[test]
fn rejoining_the_same_room_is_a_leave_and_a_join() {
    let mut s = sim();
    let a = member(&mut s, "alice", "one");
    let b = member(&mut s, "bob", "one");
    s.take(a);
    s.send(b, json!({"type":"join_room","room":"one"}));
    assert_eq!(
        s.take_types(b),
        ["room_left", "room_joined", "message_history", "room_users"]
    );
    assert_eq!(s.take_types(a), ["user_left", "user_joined"]);
}

#[test]
fn keep_rooms_joins_several_and_room_less_commands_mean_the_latest() {
    let mut s = sim();
    let a = member(&mut s, "alice", "one");
    s.send(a, json!({"type":"join_room","room":"two","keepRooms":true}));
    s.take(a);
    chat(&mut s, a, "to two");
    s.send(
        a,
        json!({"type":"chat_message","content":"to one","room":"one"}),
    );
    let frames = s.take(a);
    assert_eq!(frames[0]["room"], "two");
    assert_eq!(frames[1]["room"], "one");
    s.send(
        a,
        json!({"type":"chat_message","content":"x","room":"three"}),
    );
    assert_eq!(error_code(&s.take(a)[0]), "not_in_room");
}

#[test]
fn too_many_rooms_is_refused() {
    let mut config = Config::unlimited();
    config.max_rooms_per_connection = 2;
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "r1");
    s.send(a, json!({"type":"join_room","room":"r2","keepRooms":true}));
    s.take(a);
    s.send(a, json!({"type":"join_room","room":"r3","keepRooms":true}));
    assert_eq!(error_code(&s.take(a)[0]), "too_many_rooms");
    assert_eq!(s.engine.rooms_of(a).len(), 2);
}

#[test]
fn a_blank_or_missing_room_name_is_room_name_required() {
    let mut s = sim();
    let c = named(&mut s, "alice");
    for join in [
        json!({"type":"join_room","room":"  \t "}),
        json!({"type":"join_room","room":""}),
        json!({"type":"join_room","room":"\u{3000}"}),
        json!({"type":"join_room"}),
    ] {
        s.send(c, join.clone());
        assert_eq!(
            s.take(c),
            vec![refusal("invalid_room", "Room name required")],
            "{join}"
        );
    }
    assert!(s.engine.rooms_of(c).is_empty());
}

#[test]
fn a_room_name_with_invisible_characters_is_refused() {
    let mut s = sim();
    let c = named(&mut s, "roomer");
    for room in ["ro\u{7}om", "\u{202e}moor", "a\u{200b}b", "x\u{0}y"] {
        s.send(c, json!({"type":"join_room","room":room}));
        assert_eq!(
            s.take(c),
            vec![refusal(
                "invalid_room",
                "Room name contains invisible or control characters"
            )],
            "{room:?}"
        );
    }
    assert_eq!(s.engine.room_count(), 0);
}

#[test]
fn a_joiner_gets_its_three_replies_and_no_user_joined_of_its_own() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = named(&mut s, "bob");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        s.take(b),
        vec![
            json!({"type":"room_joined","room":"lobby"}),
            json!({"type":"message_history","room":"lobby","messages":[],"epoch":"sim-epoch",
                   "lastSeq":0,"recovered":false,"hasMore":false}),
            json!({"type":"room_users","room":"lobby","users":[
                {"id":ida,"username":"alice"},{"id":idb,"username":"bob"}]}),
        ]
    );
    assert_eq!(
        s.take(a),
        vec![json!({"type":"user_joined","room":"lobby","username":"bob","userId":idb})]
    );
}

#[test]
fn a_leaver_gets_no_more_room_messages_and_leaving_again_is_not_in_room() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    s.send(b, json!({"type":"leave_room"}));
    assert_eq!(s.take(b), vec![json!({"type":"room_left","room":"lobby"})]);
    assert_eq!(
        s.take(a),
        vec![json!({"type":"user_left","room":"lobby","username":"bob","userId":idb})]
    );
    chat(&mut s, a, "bob is gone");
    assert_eq!(
        s.take(a),
        vec![received(1, "lobby", 1, &ida, "alice", "bob is gone")]
    );
    assert!(s.take(b).is_empty());
    s.send(b, json!({"type":"leave_room"}));
    assert_eq!(s.take(b), vec![refusal("not_in_room", "Join a room first")]);
}

#[test]
fn an_emptied_room_is_rebuilt_from_the_store_with_only_the_new_joiner() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let ida = client_id(&mut s, a);
    chat(&mut s, a, "hello");
    let hello = received(1, "lobby", 1, &ida, "alice", "hello");
    assert_eq!(s.take(a), vec![hello.clone()]);
    s.send(a, json!({"type":"leave_room"}));
    s.take(a);
    assert_eq!(s.engine.room_count(), 0);

    let b = named(&mut s, "bob");
    let idb = client_id(&mut s, b);
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        s.take(b),
        vec![
            json!({"type":"room_joined","room":"lobby"}),
            json!({"type":"message_history","room":"lobby","messages":[hello],
                   "epoch":"sim-epoch","lastSeq":1,"recovered":false,"hasMore":false}),
            json!({"type":"room_users","room":"lobby","users":[{"id":idb,"username":"bob"}]}),
        ]
    );
    assert!(s.take(a).is_empty(), "alice left: no user_joined");
    // The rebuilt room continues the stored sequence.
    chat(&mut s, b, "again");
    assert_eq!(
        s.take(b),
        vec![received(2, "lobby", 2, &idb, "bob", "again")]
    );
}

#[test]
fn after_a_plain_join_the_old_room_s_messages_no_longer_arrive() {
    let mut s = sim();
    let a = member(&mut s, "alice", "one");
    let watcher = member(&mut s, "bob", "one");
    s.take(a);
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, watcher));
    s.send(a, json!({"type":"join_room","room":"two"}));
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"room_left","room":"one"}),
            json!({"type":"room_joined","room":"two"}),
            json!({"type":"message_history","room":"two","messages":[],"epoch":"sim-epoch",
                   "lastSeq":0,"recovered":false,"hasMore":false}),
            json!({"type":"room_users","room":"two","users":[{"id":ida,"username":"alice"}]}),
        ]
    );
    assert_eq!(
        s.take(watcher),
        vec![json!({"type":"user_left","room":"one","username":"alice","userId":ida})]
    );
    chat(&mut s, watcher, "still in one");
    assert_eq!(
        s.take(watcher),
        vec![received(1, "one", 1, &idb, "bob", "still in one")]
    );
    assert!(s.take(a).is_empty());
}

/// With `keepRooms` a connection is in several rooms; every room-scoped event names its
/// room, and a command without `room` means the most recently joined one.
#[test]
fn keep_rooms_joins_several_rooms_and_every_room_scoped_event_carries_its_room() {
    let mut s = sim();
    let b = member(&mut s, "bob", "one");
    let c = member(&mut s, "carol", "two");
    let a = named(&mut s, "alice");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));

    s.send(a, json!({"type":"join_room","room":"one","keepRooms":true}));
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"room_joined","room":"one"}),
            json!({"type":"message_history","room":"one","messages":[],"epoch":"sim-epoch",
                   "lastSeq":0,"recovered":false,"hasMore":false}),
            json!({"type":"room_users","room":"one","users":[
                {"id":idb,"username":"bob"},{"id":ida,"username":"alice"}]}),
        ]
    );
    assert_eq!(
        s.take(b),
        vec![json!({"type":"user_joined","room":"one","username":"alice","userId":ida})]
    );
    // The second join leaves nothing: no room_left, nothing for room one.
    s.send(a, json!({"type":"join_room","room":"two","keepRooms":true}));
    assert_eq!(
        s.take_types(a),
        ["room_joined", "message_history", "room_users"]
    );
    assert_eq!(
        s.take(c),
        vec![json!({"type":"user_joined","room":"two","username":"alice","userId":ida})]
    );
    assert!(s.take(b).is_empty());

    // Without `room`: the most recently joined room.
    chat(&mut s, a, "to two");
    let to_two = received(1, "two", 1, &ida, "alice", "to two");
    assert_eq!(s.take(a), vec![to_two.clone()]);
    assert_eq!(s.take(c), vec![to_two]);
    assert!(s.take(b).is_empty());
    // With `room`: that room.
    s.send(
        a,
        json!({"type":"chat_message","content":"to one","room":"one"}),
    );
    let to_one = received(2, "one", 1, &ida, "alice", "to one");
    assert_eq!(s.take(a), vec![to_one.clone()]);
    assert_eq!(s.take(b), vec![to_one]);
    assert!(s.take(c).is_empty());

    for (kind, typing) in [("typing_start", true), ("typing_stop", false)] {
        s.send(a, json!({"type":kind,"room":"one"}));
        assert_eq!(
            s.take(b),
            vec![
                json!({"type":"typing_indicator","room":"one","username":"alice",
                        "userId":ida,"isTyping":typing})
            ]
        );
        assert!(s.take(c).is_empty());
    }

    s.send(a, json!({"type":"leave_room","room":"one"}));
    assert_eq!(s.take(a), vec![json!({"type":"room_left","room":"one"})]);
    assert_eq!(
        s.take(b),
        vec![json!({"type":"user_left","room":"one","username":"alice","userId":ida})]
    );
    s.send(a, json!({"type":"chat_message","content":"x","room":"one"}));
    assert_eq!(
        s.take(a),
        vec![refusal("not_in_room", "You are not in that room")]
    );
    // Still in two.
    chat(&mut s, a, "still in two");
    assert_eq!(
        s.take(a),
        vec![received(3, "two", 2, &ida, "alice", "still in two")]
    );
    assert!(s.take(b).is_empty());
}

#[test]
fn past_the_room_cap_a_join_is_too_many_rooms_and_changes_nothing() {
    let mut s = Sim::new(config(|c| c.max_rooms_per_connection = 2));
    let a = member(&mut s, "alice", "r1");
    let ida = client_id(&mut s, a);
    s.send(a, json!({"type":"join_room","room":"r2","keepRooms":true}));
    s.take(a);
    s.send(a, json!({"type":"join_room","room":"r3","keepRooms":true}));
    assert_eq!(
        s.take(a),
        vec![refusal("too_many_rooms", "You are in too many rooms")]
    );
    // Still in r1 and r2, not in r3.
    for (n, room) in [(1, "r1"), (2, "r2")] {
        s.send(a, json!({"type":"chat_message","content":"hi","room":room}));
        assert_eq!(s.take(a), vec![received(n, room, 1, &ida, "alice", "hi")]);
    }
    s.send(a, json!({"type":"chat_message","content":"hi","room":"r3"}));
    assert_eq!(
        s.take(a),
        vec![refusal("not_in_room", "You are not in that room")]
    );
}
