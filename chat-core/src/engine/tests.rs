//! One test per rule of PROTOCOL.md (base and *ext*), with exact expected frames,
//! driven through the deterministic simulation.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Config, Rate};
use crate::ids::{ConnId, RoomName};
use crate::testkit::sim::{Sim, StoreMode};
use crate::transport::CloseCode;

fn sim() -> Sim {
    Sim::new(Config::default())
}

fn client_id(sim: &mut Sim, conn: ConnId) -> String {
    sim.engine.user_of(conn).expect("connected").to_string()
}

/// A connection with a username, inbox drained.
fn named(sim: &mut Sim, name: &str) -> ConnId {
    let c = sim.connect();
    sim.send(c, json!({"type":"set_username","username":name}));
    sim.take(c);
    c
}

/// A named connection that joined `room` (with `keepRooms`), inbox drained.
fn member(sim: &mut Sim, name: &str, room: &str) -> ConnId {
    let c = named(sim, name);
    sim.send(c, json!({"type":"join_room","room":room,"keepRooms":true}));
    sim.take(c);
    c
}

fn chat(sim: &mut Sim, conn: ConnId, content: &str) {
    sim.send(conn, json!({"type":"chat_message","content":content}));
}

fn error_code(frame: &Value) -> &str {
    assert_eq!(frame["type"], "error", "{frame}");
    frame["code"].as_str().unwrap_or("")
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message_received")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect()
}

fn history_seqs(frame: &Value) -> Vec<u64> {
    frame["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

// ---- connection and usernames -------------------------------------------------------

#[test]
fn connection_is_the_first_frame_and_carries_the_client_id() {
    let mut s = sim();
    let c = s.connect();
    let id = client_id(&mut s, c);
    assert_eq!(s.take(c), vec![json!({"type":"connection","clientId":id})]);
}

#[test]
fn set_username_is_trimmed_and_answered() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(c, json!({"type":"set_username","username":"  alice  "}));
    assert_eq!(
        s.take(c),
        vec![json!({"type":"username_set","username":"alice"})]
    );
}

#[test]
fn set_username_longer_than_20_is_cut() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(
        c,
        json!({"type":"set_username","username":"abcdefghijklmnopqrstuvwxyz"}),
    );
    assert_eq!(s.take(c)[0]["username"], "abcdefghijklmnopqrst");
}

#[test]
fn set_username_shorter_than_2_is_an_error() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(c, json!({"type":"set_username","username":" a "}));
    assert_eq!(
        s.take(c),
        vec![
            json!({"type":"error","message":"Username must be at least 2 characters","code":"invalid_username"})
        ]
    );
    s.send(c, json!({"type":"set_username"}));
    assert_eq!(error_code(&s.take(c)[0]), "invalid_username");
}

#[test]
fn username_taken_by_another_online_user_compares_case_and_look_alikes() {
    let mut s = sim();
    named(&mut s, "Alice");
    let b = s.connect();
    s.take(b);
    for name in ["alice", "ALICE", "\u{0410}lice", "ａｌｉｃｅ"] {
        s.send(b, json!({"type":"set_username","username":name}));
        assert_eq!(
            s.take(b),
            vec![json!({"type":"error","message":"Username taken","code":"username_taken"})],
            "{name}"
        );
    }
}

#[test]
fn a_name_is_free_again_when_its_holder_goes_offline() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.disconnect(a);
    let b = s.connect();
    s.take(b);
    s.send(b, json!({"type":"set_username","username":"alice"}));
    assert_eq!(s.take_types(b), ["username_set"]);
}

#[test]
fn setting_the_same_name_again_is_fine_and_renaming_in_a_room_is_refused() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    s.send(a, json!({"type":"set_username","username":"alice"}));
    assert_eq!(s.take_types(a), ["username_set"]);
    s.send(a, json!({"type":"set_username","username":"alicia"}));
    assert_eq!(error_code(&s.take(a)[0]), "username_locked");
    s.send(a, json!({"type":"leave_room"}));
    s.take(a);
    s.send(a, json!({"type":"set_username","username":"alicia"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"username_set","username":"alicia"})]
    );
}

#[test]
fn usernames_with_bidi_or_invisible_characters_are_refused() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(
        c,
        json!({"type":"set_username","username":"adm\u{202E}nimda"}),
    );
    assert_eq!(error_code(&s.take(c)[0]), "invalid_username");
}

// ---- joining and leaving ------------------------------------------------------------

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

// ---- room messages ------------------------------------------------------------------

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

// ---- gapless join and resume --------------------------------------------------------

#[test]
fn a_join_racing_sends_sees_every_message_exactly_once_in_order() {
    // Store replies completed in every order: join read first, last or in between.
    for join_at in 0..=4 {
        let mut s = Sim::new(Config::unlimited());
        let senders: Vec<ConnId> = (0..4)
            .map(|i| member(&mut s, &format!("u{i}"), "lobby"))
            .collect();
        for &c in &senders {
            chat(&mut s, c, "before");
        }
        let joiner = named(&mut s, "late");
        for &c in &senders {
            s.take(c);
        }
        s.set_store_mode(StoreMode::Held);
        for &c in &senders {
            chat(&mut s, c, "racing");
        }
        s.send(joiner, json!({"type":"join_room","room":"lobby"}));
        let join_index = s.held().len() - 1;
        // Complete appends in reverse order, the join at position `join_at`.
        let mut order: Vec<usize> = (0..join_index).rev().collect();
        order.insert(join_at.min(order.len()), join_index);
        let tickets: Vec<_> = s.held().iter().map(|r| r.ticket).collect();
        for i in order {
            let pos = s
                .held()
                .iter()
                .position(|r| r.ticket == tickets[i])
                .unwrap();
            s.complete(pos);
        }
        s.complete_all();
        let frames = s.take(joiner);
        let mut seen: Vec<u64> = frames
            .iter()
            .find(|f| f["type"] == "message_history")
            .map(history_seqs)
            .unwrap();
        seen.extend(seqs(&frames));
        assert_eq!(
            seen,
            (1..=8).collect::<Vec<_>>(),
            "join completed at {join_at}"
        );
        for &c in &senders {
            assert_eq!(seqs(&s.take(c)), [5, 6, 7, 8]);
        }
    }
}

#[test]
fn a_join_whose_read_ends_before_the_stream_catches_up_from_the_store() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    let b = named(&mut s, "bob");
    s.set_store_mode(StoreMode::Held);
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    // The join's read is performed (and answered) only after two messages were
    // delivered: simulate a stale read by completing the appends first but feeding the
    // read's reply computed before them.
    let join_req = s.held()[0].clone();
    let stale = s.store.perform(join_req.op.clone());
    s.take_held(0);
    chat(&mut s, a, "one");
    chat(&mut s, a, "two");
    s.complete_all();
    assert_eq!(seqs(&s.take(a)), [1, 2]);
    s.input(crate::engine::Input::StoreReply {
        ticket: join_req.ticket,
        reply: stale,
    });
    s.complete_all();
    let frames = s.take(b);
    assert_eq!(frames[0]["type"], "room_joined");
    assert_eq!(history_seqs(&frames[1]), [1, 2]);
    assert_eq!(frames[1]["lastSeq"], 2);
    s.set_store_mode(StoreMode::Immediate);
    chat(&mut s, a, "three");
    assert_eq!(seqs(&s.take(b)), [3]);
}

#[test]
fn a_join_pending_while_the_room_empties_still_gets_what_the_leaver_saw() {
    // Found by the property tests: the last member leaves while a join's (stale) read is
    // out. The joiner must still receive everything stored before it became a member.
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    let b = named(&mut s, "bob");
    s.set_store_mode(StoreMode::Held);
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    let join = s.take_held(0).expect("the join's read");
    let stale = s.store.perform(join.op.clone());
    chat(&mut s, a, "one");
    s.complete_all();
    assert_eq!(seqs(&s.take(a)), [1]);
    s.send(a, json!({"type":"leave_room"}));
    s.input(crate::engine::Input::StoreReply {
        ticket: join.ticket,
        reply: stale,
    });
    s.complete_all();
    let frames = s.take(b);
    assert_eq!(
        history_seqs(&frames[1]),
        [1],
        "the catch-up read brought seq 1"
    );
    assert_eq!(frames[1]["lastSeq"], 1);
}

#[test]
fn resume_replays_exactly_the_missed_messages() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=5 {
        chat(&mut s, a, &format!("m{i}"));
    }
    let b = named(&mut s, "bob");
    s.send(
        b,
        json!({"type":"join_room","room":"lobby","since":3,"epoch":"sim-epoch"}),
    );
    let frames = s.take(b);
    assert_eq!(history_seqs(&frames[1]), [4, 5]);
    assert_eq!(frames[1]["recovered"], true);
    assert_eq!(frames[1]["lastSeq"], 5);
    let mut s2 = s;
    s2.send(
        b,
        json!({"type":"join_room","room":"lobby","since":5,"epoch":"sim-epoch"}),
    );
    let frames = s2.take(b);
    assert_eq!(frames[2]["messages"], json!([]));
    assert_eq!(frames[2]["recovered"], true);
}

#[test]
fn resume_that_cannot_be_complete_falls_back_to_the_latest_page() {
    let mut config = Config::unlimited();
    config.resume_max = 3;
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=10 {
        chat(&mut s, a, &format!("m{i}"));
    }
    let cases = [
        json!({"since":2,"epoch":"other-epoch"}),
        json!({"since":11,"epoch":"sim-epoch"}),
        json!({"since":2,"epoch":"sim-epoch"}),
        json!({"since":2}),
    ];
    for case in cases {
        let b = named(&mut s, "bob");
        let mut join = json!({"type":"join_room","room":"lobby"});
        join["since"] = case["since"].clone();
        if case.get("epoch").is_some() {
            join["epoch"] = case["epoch"].clone();
        }
        s.send(b, join);
        let frames = s.take(b);
        assert_eq!(frames[1]["recovered"], false, "{case}");
        assert_eq!(
            history_seqs(&frames[1]),
            (1..=10).collect::<Vec<_>>(),
            "{case}"
        );
        s.disconnect(b);
    }
}

#[test]
fn resume_after_the_store_dropped_old_messages_is_not_recovered() {
    let mut s = Sim::new(Config::unlimited());
    s.store.retain = 5;
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=10 {
        chat(&mut s, a, &format!("m{i}"));
    }
    let b = named(&mut s, "bob");
    s.send(
        b,
        json!({"type":"join_room","room":"lobby","since":2,"epoch":"sim-epoch"}),
    );
    let frames = s.take(b);
    assert_eq!(frames[1]["recovered"], false);
    assert_eq!(history_seqs(&frames[1]), [6, 7, 8, 9, 10]);
}

#[test]
fn a_gap_left_by_another_writer_is_filled_from_the_store() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    chat(&mut s, a, "one");
    s.take(a);
    // Another server appends directly to the shared store.
    let uid = s.engine.user_of(a).unwrap().clone();
    s.store.perform(crate::engine::StoreOp::AppendRoom(
        crate::message::NewRoomMessage {
            room: RoomName::parse("lobby").unwrap(),
            user_id: uid,
            username: "alice".into(),
            content: crate::ids::Content::parse("elsewhere").unwrap(),
            client_msg_id: None,
        },
    ));
    let b = named(&mut s, "bob");
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    let frames = s.take(b);
    assert_eq!(history_seqs(&frames[1]), [1, 2]);
    assert!(seqs(&frames).is_empty(), "bob's history already has seq 2");
    let to_alice = s.take(a);
    assert_eq!(
        seqs(&to_alice),
        [2],
        "alice gets the other writer's message"
    );
    chat(&mut s, a, "three");
    assert_eq!(seqs(&s.take(b)), [3]);
}

// ---- history ------------------------------------------------------------------------

#[test]
fn history_pages_backwards_and_clamps_the_limit() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=120 {
        chat(&mut s, a, &format!("m{i}"));
    }
    s.take(a);
    s.send(
        a,
        json!({"type":"history","room":"lobby","before":21,"limit":10}),
    );
    let page = &s.take(a)[0];
    assert_eq!(history_seqs(page), (11..=20).collect::<Vec<_>>());
    assert_eq!(page["hasMore"], true);
    assert!(page.get("recovered").is_none());
    s.send(
        a,
        json!({"type":"history","room":"lobby","before":3,"limit":10}),
    );
    let page = &s.take(a)[0];
    assert_eq!(history_seqs(page), [1, 2]);
    assert_eq!(page["hasMore"], false);
    s.send(
        a,
        json!({"type":"history","room":"lobby","limit":1_000_000_000u64}),
    );
    assert_eq!(history_seqs(&s.take(a)[0]).len(), 100);
    s.send(a, json!({"type":"history","room":"other"}));
    assert_eq!(error_code(&s.take(a)[0]), "not_in_room");
}

// ---- direct messages ----------------------------------------------------------------

#[test]
fn a_dm_reaches_the_target_and_the_sender_and_nobody_else() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    let c = member(&mut s, "carol", "lobby");
    for x in [a, b, c] {
        s.take(x);
    }
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":" psst ","clientMsgId":"d1"}),
    );
    let common = json!({"id":"00000000-0000-0000-0000-000000000001","seq":1,"fromId":ida,
        "fromUsername":"alice","toId":idb,"toUsername":"bob","content":"psst",
        "timestamp":"2023-11-14T22:13:20.001Z"});
    let mut to_b = common.clone();
    to_b["type"] = json!("private_message");
    let mut to_a = common;
    to_a["type"] = json!("private_message_sent");
    to_a["clientMsgId"] = json!("d1");
    assert_eq!(s.take(b), vec![to_b]);
    assert_eq!(s.take(a), vec![to_a]);
    assert!(s.take(c).is_empty());
}

#[test]
fn a_dm_to_an_unknown_user_is_an_error() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.send(
        a,
        json!({"type":"private_message","targetId":"nobody","content":"hi"}),
    );
    assert_eq!(
        s.take(a),
        vec![json!({"type":"error","message":"User not found","code":"user_not_found"})]
    );
}

#[test]
fn dm_history_pages_the_conversation() {
    let mut s = Sim::new(Config::unlimited());
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    for i in 0..3 {
        s.send(
            a,
            json!({"type":"private_message","targetId":idb,"content":format!("a{i}")}),
        );
        s.send(
            b,
            json!({"type":"private_message","targetId":ida,"content":format!("b{i}")}),
        );
    }
    s.take(a);
    s.send(a, json!({"type":"dm_history","userId":idb,"limit":4}));
    let page = &s.take(a)[0];
    assert_eq!(page["type"], "dm_history");
    assert_eq!(page["userId"], idb);
    assert_eq!(history_seqs(page), [3, 4, 5, 6]);
    assert_eq!(page["hasMore"], true);
    assert_eq!(page["messages"][0]["type"], "private_message");
}

// ---- several connections per user ---------------------------------------------------

#[test]
fn presence_counts_users_not_connections() {
    let mut s = sim();
    let watcher = member(&mut s, "carol", "lobby");
    let tab1 = s.connect_as("alice-id", "alice");
    let tab2 = s.connect_as("alice-id", "alice");
    assert_eq!(s.take_types(tab1), ["connection", "username_set"]);
    s.take(tab2);
    s.send(tab1, json!({"type":"join_room","room":"lobby"}));
    s.send(tab2, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        s.take_types(watcher),
        ["user_joined"],
        "one user, one user_joined"
    );
    let users = &s.take(tab2)[2]["users"];
    assert_eq!(users.as_array().unwrap().len(), 2);
    s.disconnect(tab1);
    assert!(
        s.take(watcher).is_empty(),
        "alice still has a connection in the room"
    );
    s.disconnect(tab2);
    assert_eq!(s.take_types(watcher), ["user_left"]);
    assert_eq!(s.engine.user_count(), 1);
}

#[test]
fn a_dm_reaches_all_target_connections_and_the_senders_other_connections() {
    let mut s = sim();
    let a1 = s.connect_as("alice-id", "alice");
    let a2 = s.connect_as("alice-id", "alice");
    let b1 = s.connect_as("bob-id", "bob");
    let b2 = s.connect_as("bob-id", "bob");
    for c in [a1, a2, b1, b2] {
        s.take(c);
    }
    s.send(
        a1,
        json!({"type":"private_message","targetId":"bob-id","content":"hi"}),
    );
    assert_eq!(s.take_types(a1), ["private_message_sent"]);
    assert_eq!(s.take_types(a2), ["private_message_sent"]);
    assert_eq!(s.take_types(b1), ["private_message"]);
    assert_eq!(s.take_types(b2), ["private_message"]);
}

#[test]
fn an_authenticated_name_cannot_be_changed_or_shadowed() {
    let mut s = sim();
    let a = s.connect_as("alice-id", "Alice");
    s.take(a);
    s.send(a, json!({"type":"set_username","username":"mallory"}));
    assert_eq!(error_code(&s.take(a)[0]), "username_locked");
    let other = s.connect_as("other-id", "ALICE");
    assert_eq!(
        s.closed(other).map(|(c, _)| c),
        Some(CloseCode::USERNAME_CONFLICT)
    );
}

#[test]
fn connections_per_user_are_capped() {
    let config = Config {
        max_connections_per_user: 2,
        ..Config::default()
    };
    let mut s = Sim::new(config);
    s.connect_as("u", "alice");
    s.connect_as("u", "alice");
    let third = s.connect_as("u", "alice");
    assert_eq!(s.closed(third).map(|(c, _)| c), Some(CloseCode::POLICY));
    assert_eq!(s.engine.connection_count(), 2);
}

// ---- typing -------------------------------------------------------------------------

#[test]
fn typing_reaches_the_others_only_and_repeated_starts_are_coalesced() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let ida = client_id(&mut s, a);
    s.send(a, json!({"type":"typing_start"}));
    s.send(a, json!({"type":"typing_start"}));
    assert!(s.take(a).is_empty());
    assert_eq!(
        s.take(b),
        vec![
            json!({"type":"typing_indicator","room":"lobby","username":"alice","userId":ida,"isTyping":true})
        ]
    );
    s.send(a, json!({"type":"typing_stop"}));
    assert_eq!(s.take(b)[0]["isTyping"], false);
    s.send(a, json!({"type":"typing_stop"}));
    assert!(s.take(b).is_empty(), "stop when not typing is silent");
}

#[test]
fn typing_stops_by_itself_after_5_seconds_without_news() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.send(a, json!({"type":"typing_start"}));
    s.take(b);
    s.advance(Duration::from_secs(3));
    s.send(a, json!({"type":"typing_start"})); // refresh
    s.advance(Duration::from_millis(4_900));
    assert!(s.take(b).is_empty());
    assert_eq!(
        s.engine.poll_timeout(),
        Some(s.now + Duration::from_millis(100))
    );
    s.advance(Duration::from_millis(100));
    assert_eq!(s.take(b)[0]["isTyping"], false);
    assert_eq!(s.engine.poll_timeout(), None);
}

#[test]
fn sending_a_message_stops_typing() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.send(a, json!({"type":"typing_start"}));
    s.take(b);
    chat(&mut s, a, "done");
    let frames = s.take(b);
    assert_eq!(frames[0]["type"], "typing_indicator");
    assert_eq!(frames[0]["isTyping"], false);
    assert_eq!(frames[1]["type"], "message_received");
}

#[test]
fn leaving_stops_typing_before_user_left() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.send(a, json!({"type":"typing_start"}));
    s.take(b);
    s.disconnect(a);
    let frames = s.take(b);
    assert_eq!(frames[0]["isTyping"], false);
    assert_eq!(frames[1]["type"], "user_left");
    assert_eq!(s.engine.poll_timeout(), None, "no timer left behind");
}

#[test]
fn typing_outside_a_room_is_an_error() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.send(a, json!({"type":"typing_start"}));
    assert_eq!(error_code(&s.take(a)[0]), "not_in_room");
}

// ---- rate limits and abuse ----------------------------------------------------------

#[test]
fn chat_over_the_rate_is_refused_with_retry_after_and_not_stored() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    for i in 0..10 {
        chat(&mut s, a, &format!("m{i}"));
    }
    assert_eq!(seqs(&s.take(a)).len(), 10);
    chat(&mut s, a, "one too many");
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Sending messages too fast","code":"rate_limited","retryAfterMs":1000})
        ]
    );
    assert_eq!(
        s.store
            .room_messages(&RoomName::parse("lobby").unwrap())
            .len(),
        10
    );
    s.advance(Duration::from_millis(400));
    chat(&mut s, a, "still too early");
    assert_eq!(s.take(a)[0]["retryAfterMs"], 600);
    s.advance(Duration::from_millis(600));
    chat(&mut s, a, "ok now");
    assert_eq!(seqs(&s.take(a)), [11]);
}

#[test]
fn dms_share_the_chat_rate() {
    let config = Config {
        message_rate: Some(Rate::per_second(2, 1)),
        ..Config::default()
    };
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    let b = named(&mut s, "bob");
    let idb = client_id(&mut s, b);
    chat(&mut s, a, "1");
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":"2"}),
    );
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":"3"}),
    );
    let frames = s.take(a);
    assert_eq!(error_code(frames.last().unwrap()), "rate_limited");
}

#[test]
fn typing_has_its_own_rate() {
    let config = Config {
        typing_rate: Some(Rate::per_second(2, 1)),
        ..Config::default()
    };
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    s.send(a, json!({"type":"typing_start"}));
    s.send(a, json!({"type":"typing_stop"}));
    s.send(a, json!({"type":"typing_start"}));
    assert_eq!(error_code(&s.take(a)[0]), "rate_limited");
    chat(&mut s, a, "chat is not affected");
    assert_eq!(seqs(&s.take(a)), [1]);
}

#[test]
fn limits_can_be_switched_off() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    for i in 0..200 {
        chat(&mut s, a, &format!("m{i}"));
    }
    assert_eq!(seqs(&s.take(a)).len(), 200);
}

#[test]
fn invalid_frames_get_an_error_and_the_connection_stays_usable() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    s.send_raw(a, b"{not json");
    assert_eq!(error_code(&s.take(a)[0]), "invalid_json");
    s.send(a, json!({"type":"dance"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"error","message":"Unknown message type: dance","code":"unknown_type"})]
    );
    chat(&mut s, a, "still here");
    assert_eq!(seqs(&s.take(a)), [1]);
}

#[test]
fn a_flood_of_refused_requests_closes_the_connection_with_1008() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    for _ in 0..31 {
        s.send_raw(a, b"garbage");
    }
    assert_eq!(
        s.closed(a),
        Some((CloseCode::POLICY, "too many refused requests"))
    );
    assert_eq!(
        s.take_types(b).last().map(String::as_str),
        Some("user_left")
    );
    s.send_raw(a, b"garbage");
    assert_eq!(s.engine.connection_count(), 1);
}

#[test]
fn a_disconnect_during_a_join_leaves_nothing_behind() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.set_store_mode(StoreMode::Held);
    s.send(a, json!({"type":"join_room","room":"lobby"}));
    s.disconnect(a);
    assert_eq!(s.engine.room_count(), 1, "the join's read is still out");
    s.complete_all();
    assert_eq!(s.engine.room_count(), 0);
    assert_eq!(s.engine.pending_store_ops(), 0);
}

#[test]
fn a_message_stored_after_its_sender_left_still_reaches_the_room() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(b);
    s.set_store_mode(StoreMode::Held);
    chat(&mut s, a, "bye");
    s.disconnect(a);
    s.complete_all();
    let frames = s.take(b);
    assert_eq!(frames[0]["type"], "user_left");
    assert_eq!(seqs(&frames), [1]);
}
