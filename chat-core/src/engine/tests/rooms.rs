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
