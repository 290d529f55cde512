//! Every rule of PROTOCOL.md (base and *ext*) over real sockets: a `chat_core::Server`
//! with the in-memory store behind `WarpTransport` on 127.0.0.1:0, tokio-tungstenite
//! clients, exact frames.
//!
//! Generated fields (`clientId`, `id`, `timestamp`, `epoch`) are checked for their shape
//! or for equality with a value seen before. "Nothing arrives" is shown either by a
//! marker — a later frame to the same connection that would have come after it (the hub
//! handles commands one at a time and each connection's frames stay in order) — or by a
//! bounded quiet window of at most 300 ms.

mod support;

use std::time::Duration;

use chat_core::{Config, RuntimeConfig};
use serde_json::{Value, json};
use support::{
    PROMPT, Peer, QUIET, RawFrame, RawWs, TIMESTAMP, TestServer, UUID, assert_frame, history_seqs,
    next_text,
};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

/// The expected `message_received` for a message `from` sent to `room`, with any id and
/// timestamp.
fn received(room: &str, seq: u64, from: &Peer, username: &str, content: &str) -> Value {
    json!({
        "type": "message_received", "id": UUID, "room": room, "seq": seq,
        "userId": from.id, "username": username, "content": content, "timestamp": TIMESTAMP,
    })
}

fn chat(content: &str) -> Value {
    json!({"type": "chat_message", "content": content})
}

/// Proves that nothing is queued for `peer` before this point: setting one's own name
/// again is answered `username_set` (also inside a room), so that must be the next frame.
async fn nothing_pending(peer: &mut Peer, name: &str) {
    peer.send(json!({"type": "set_username", "username": name}))
        .await;
    peer.expect(json!({"type": "username_set", "username": name}))
        .await;
}

/// Sends chat messages `m1..=mn` to the peer's room (a fresh one: they get seq 1..=n)
/// and returns the echoes in order. Pipelined 16 at a time: a connection may queue at most 32
/// commands behind one that waits for the store (`too_many_requests` beyond).
async fn post_many(peer: &mut Peer, n: u64) -> Vec<Value> {
    let mut echoes = Vec::new();
    let mut next = 1;
    while next <= n {
        let window = next..=n.min(next + 15);
        for i in window.clone() {
            peer.send(chat(&format!("m{i}"))).await;
        }
        for i in window {
            let frame = peer.expect_type("message_received").await;
            assert_eq!(frame["seq"], i, "{frame}");
            assert_eq!(frame["content"], format!("m{i}"), "{frame}");
            echoes.push(frame);
        }
        next += 16;
    }
    echoes
}

// ---- connection and usernames -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_is_the_first_frame_and_carries_a_uuid_client_id() {
    let server = TestServer::start().await;
    let mut ws = server.ws().await;
    let hello = next_text(&mut ws).await;
    assert_frame(&hello, &json!({"type": "connection", "clientId": UUID}));
    let other = server.connect().await;
    assert_ne!(
        hello["clientId"], other.id,
        "every connection has its own id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_username_is_trimmed_and_answered_with_username_set() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.send(json!({"type": "set_username", "username": "  alice \t"}))
        .await;
    c.expect(json!({"type": "username_set", "username": "alice"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_shorter_than_2_characters_is_refused_with_the_base_message() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    for command in [
        json!({"type": "set_username", "username": " a "}),
        json!({"type": "set_username", "username": ""}),
        json!({"type": "set_username"}),
    ] {
        c.send(command).await;
        c.expect_error("Username must be at least 2 characters", "invalid_username")
            .await;
    }
    c.send(json!({"type": "set_username", "username": "ab"}))
        .await;
    c.expect(json!({"type": "username_set", "username": "ab"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_longer_than_20_characters_is_cut_to_20() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.send(json!({"type": "set_username", "username": "abcdefghijklmnopqrstuvwxyz"}))
        .await;
    c.expect(json!({"type": "username_set", "username": "abcdefghijklmnopqrst"}))
        .await;
    // A space left at the end by the cut is trimmed too.
    c.send(json!({"type": "set_username", "username": "abcdefghijklmnopqrs uvwxyz"}))
        .await;
    c.expect(json!({"type": "username_set", "username": "abcdefghijklmnopqrs"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_held_by_an_online_user_is_taken_whatever_its_case_or_look_alike() {
    let server = TestServer::start().await;
    let _alice = server.named("Alice").await;
    let mut bob = server.connect().await;
    // Lower case, upper case, Cyrillic А, full-width letters.
    for name in ["alice", "ALICE", "\u{0410}lice", "ａｌｉｃｅ", " Alice "] {
        bob.send(json!({"type": "set_username", "username": name}))
            .await;
        bob.expect_error("Username taken", "username_taken").await;
    }
    bob.send(json!({"type": "set_username", "username": "bob"}))
        .await;
    bob.expect(json!({"type": "username_set", "username": "bob"}))
        .await;
}

// ---- joining and leaving ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_room_needs_a_username() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.send(json!({"type": "join_room", "room": "lobby"})).await;
    c.expect_error("Set username first", "username_required")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_room_with_an_empty_room_name_is_refused() {
    let server = TestServer::start().await;
    let mut alice = server.named("alice").await;
    for command in [
        json!({"type": "join_room", "room": "  \t "}),
        json!({"type": "join_room", "room": ""}),
        json!({"type": "join_room"}),
    ] {
        alice.send(command).await;
        alice
            .expect_error("Room name required", "invalid_room")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_names_are_trimmed_lower_cased_and_cut_to_30() {
    let server = TestServer::start().await;
    let mut alice = server.named("alice").await;
    alice
        .send(json!({"type": "join_room", "room": "  Lobby "}))
        .await;
    alice
        .expect(json!({"type": "room_joined", "room": "lobby"}))
        .await;
    assert_eq!(alice.expect_type("message_history").await["room"], "lobby");
    assert_eq!(alice.expect_type("room_users").await["room"], "lobby");

    alice
        .send(json!({"type": "join_room", "room": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "keepRooms": true}))
        .await;
    alice
        .expect(json!({"type": "room_joined", "room": "abcdefghijklmnopqrstuvwxyz0123"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_replies_room_joined_then_message_history_then_room_users() {
    let server = TestServer::start().await;
    let mut alice = server.named("alice").await;
    alice
        .send(json!({"type": "join_room", "room": "lobby"}))
        .await;
    alice
        .expect(json!({"type": "room_joined", "room": "lobby"}))
        .await;
    alice
        .expect(json!({
            "type": "message_history", "room": "lobby", "messages": [],
            "epoch": server.epoch(), "lastSeq": 0, "recovered": false, "hasMore": false,
        }))
        .await;
    alice
        .expect(json!({
            "type": "room_users", "room": "lobby",
            "users": [{"id": alice.id, "username": "alice"}],
        }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_members_get_user_joined_and_the_joiner_does_not() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.named("bob").await;
    bob.send(json!({"type": "join_room", "room": "lobby"}))
        .await;

    bob.expect(json!({"type": "room_joined", "room": "lobby"}))
        .await;
    bob.expect_type("message_history").await;
    bob.expect(json!({
        "type": "room_users", "room": "lobby",
        "users": [{"id": alice.id, "username": "alice"}, {"id": bob.id, "username": "bob"}],
    }))
    .await;
    alice
        .expect(
            json!({"type": "user_joined", "room": "lobby", "username": "bob", "userId": bob.id}),
        )
        .await;

    nothing_pending(&mut bob, "bob").await;
    nothing_pending(&mut alice, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_history_is_the_last_50_messages_oldest_first() {
    let server = TestServer::with(Config::unlimited(), RuntimeConfig::default()).await;
    let mut alice = server.member("alice", "lobby").await;
    let sent = post_many(&mut alice, 60).await;

    let mut bob = server.named("bob").await;
    bob.send(json!({"type": "join_room", "room": "lobby"}))
        .await;
    bob.expect(json!({"type": "room_joined", "room": "lobby"}))
        .await;
    bob.expect(json!({
        "type": "message_history", "room": "lobby", "messages": sent[10..],
        "epoch": server.epoch(), "lastSeq": 60, "recovered": false, "hasMore": true,
    }))
    .await;
    bob.expect_type("room_users").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_room_answers_room_left_and_the_others_get_user_left() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;

    bob.send(json!({"type": "leave_room"})).await;
    bob.expect(json!({"type": "room_left", "room": "lobby"}))
        .await;
    alice
        .expect(json!({"type": "user_left", "room": "lobby", "username": "bob", "userId": bob.id}))
        .await;

    // Bob no longer receives the room's messages…
    alice.send(chat("bob is gone")).await;
    alice.expect_type("message_received").await;
    nothing_pending(&mut bob, "bob").await;
    // …and leaving again is an error.
    bob.send(json!({"type": "leave_room"})).await;
    bob.expect_error("Join a room first", "not_in_room").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_room_is_dropped_and_a_new_joiner_finds_only_itself_and_the_stored_history() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    alice.send(chat("hello")).await;
    let hello = alice
        .expect(received("lobby", 1, &alice, "alice", "hello"))
        .await;
    alice.send(json!({"type": "leave_room"})).await;
    alice
        .expect(json!({"type": "room_left", "room": "lobby"}))
        .await;

    let mut bob = server.named("bob").await;
    bob.send(json!({"type": "join_room", "room": "lobby"}))
        .await;
    bob.expect(json!({"type": "room_joined", "room": "lobby"}))
        .await;
    bob.expect(json!({
        "type": "message_history", "room": "lobby", "messages": [hello],
        "epoch": server.epoch(), "lastSeq": 1, "recovered": false, "hasMore": false,
    }))
    .await;
    bob.expect(json!({
        "type": "room_users", "room": "lobby", "users": [{"id": bob.id, "username": "bob"}],
    }))
    .await;
    // The rebuilt room continues the stored sequence.
    bob.send(chat("again")).await;
    bob.expect(received("lobby", 2, &bob, "bob", "again")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_join_leaves_the_current_room_first() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "one").await;
    let mut bob = server.member("bob", "one").await;
    alice.expect_type("user_joined").await;

    alice
        .send(json!({"type": "join_room", "room": "two"}))
        .await;
    alice
        .expect(json!({"type": "room_left", "room": "one"}))
        .await;
    alice
        .expect(json!({"type": "room_joined", "room": "two"}))
        .await;
    assert_eq!(alice.expect_type("message_history").await["room"], "two");
    alice
        .expect(json!({
            "type": "room_users", "room": "two", "users": [{"id": alice.id, "username": "alice"}],
        }))
        .await;
    bob.expect(
        json!({"type": "user_left", "room": "one", "username": "alice", "userId": alice.id}),
    )
    .await;

    bob.send(chat("still in one")).await;
    bob.expect(received("one", 1, &bob, "bob", "still in one"))
        .await;
    nothing_pending(&mut alice, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_the_current_room_is_a_leave_and_a_join() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "one").await;
    let mut bob = server.member("bob", "one").await;
    alice.expect_type("user_joined").await;

    bob.send(json!({"type": "join_room", "room": "one"})).await;
    for kind in ["room_left", "room_joined", "message_history", "room_users"] {
        bob.expect_type(kind).await;
    }
    alice
        .expect(json!({"type": "user_left", "room": "one", "username": "bob", "userId": bob.id}))
        .await;
    alice
        .expect(json!({"type": "user_joined", "room": "one", "username": "bob", "userId": bob.id}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_rooms_joins_several_rooms_and_every_room_scoped_event_carries_its_room() {
    let server = TestServer::start().await;
    let mut bob = server.member("bob", "one").await;
    let mut carol = server.member("carol", "two").await;
    let mut alice = server.named("alice").await;

    alice
        .send(json!({"type": "join_room", "room": "one", "keepRooms": true}))
        .await;
    alice
        .expect(json!({"type": "room_joined", "room": "one"}))
        .await;
    alice
        .expect(json!({
            "type": "message_history", "room": "one", "messages": [],
            "epoch": server.epoch(), "lastSeq": 0, "recovered": false, "hasMore": false,
        }))
        .await;
    alice
        .expect(json!({
            "type": "room_users", "room": "one",
            "users": [{"id": bob.id, "username": "bob"}, {"id": alice.id, "username": "alice"}],
        }))
        .await;
    bob.expect(
        json!({"type": "user_joined", "room": "one", "username": "alice", "userId": alice.id}),
    )
    .await;

    // The second join leaves nothing: no room_left.
    alice
        .send(json!({"type": "join_room", "room": "two", "keepRooms": true}))
        .await;
    alice
        .expect(json!({"type": "room_joined", "room": "two"}))
        .await;
    assert_eq!(alice.expect_type("message_history").await["room"], "two");
    assert_eq!(alice.expect_type("room_users").await["room"], "two");
    carol
        .expect(
            json!({"type": "user_joined", "room": "two", "username": "alice", "userId": alice.id}),
        )
        .await;

    // Without `room`: the most recently joined room.
    alice.send(chat("to two")).await;
    let to_two = alice
        .expect(received("two", 1, &alice, "alice", "to two"))
        .await;
    assert_eq!(carol.next().await, to_two);
    // With `room`: that room.
    alice
        .send(json!({"type": "chat_message", "content": "to one", "room": "one"}))
        .await;
    let to_one = alice
        .expect(received("one", 1, &alice, "alice", "to one"))
        .await;
    assert_eq!(bob.next().await, to_one);

    for (kind, typing) in [("typing_start", true), ("typing_stop", false)] {
        alice.send(json!({"type": kind, "room": "one"})).await;
        bob.expect(json!({
            "type": "typing_indicator", "room": "one", "username": "alice",
            "userId": alice.id, "isTyping": typing,
        }))
        .await;
    }

    alice
        .send(json!({"type": "leave_room", "room": "one"}))
        .await;
    alice
        .expect(json!({"type": "room_left", "room": "one"}))
        .await;
    bob.expect(
        json!({"type": "user_left", "room": "one", "username": "alice", "userId": alice.id}),
    )
    .await;
    alice
        .send(json!({"type": "chat_message", "content": "x", "room": "one"}))
        .await;
    alice
        .expect_error("You are not in that room", "not_in_room")
        .await;
    // Still in two.
    alice.send(chat("still in two")).await;
    alice
        .expect(received("two", 2, &alice, "alice", "still in two"))
        .await;
    nothing_pending(&mut bob, "bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_more_rooms_than_the_cap_is_refused_with_too_many_rooms() {
    let config = Config {
        max_rooms_per_connection: 2,
        ..Config::default()
    };
    let server = TestServer::with(config, RuntimeConfig::default()).await;
    let mut alice = server.member("alice", "r1").await;
    alice
        .send(json!({"type": "join_room", "room": "r2", "keepRooms": true}))
        .await;
    for kind in ["room_joined", "message_history", "room_users"] {
        alice.expect_type(kind).await;
    }
    alice
        .send(json!({"type": "join_room", "room": "r3", "keepRooms": true}))
        .await;
    alice
        .expect_error("You are in too many rooms", "too_many_rooms")
        .await;

    // Still in r1 and r2, not in r3.
    for room in ["r1", "r2"] {
        alice
            .send(json!({"type": "chat_message", "content": "hi", "room": room}))
            .await;
        alice.expect(received(room, 1, &alice, "alice", "hi")).await;
    }
    alice
        .send(json!({"type": "chat_message", "content": "hi", "room": "r3"}))
        .await;
    alice
        .expect_error("You are not in that room", "not_in_room")
        .await;
}

// ---- room messages ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_message_needs_a_username_and_a_room() {
    let server = TestServer::start().await;
    let mut anonymous = server.connect().await;
    anonymous.send(chat("hi")).await;
    anonymous
        .expect_error("Set username first", "username_required")
        .await;
    let mut alice = server.named("alice").await;
    alice.send(chat("hi")).await;
    alice.expect_error("Join a room first", "not_in_room").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_message_reaches_every_member_including_the_sender_identically_and_nobody_else() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    let mut carol = server.member("carol", "elsewhere").await;
    alice.expect_type("user_joined").await;

    alice.send(chat("  hello  ")).await;
    let first = alice
        .expect(received("lobby", 1, &alice, "alice", "hello"))
        .await;
    assert_eq!(bob.next().await, first, "the same object for every member");

    bob.send(chat("hi alice")).await;
    let second = bob
        .expect(received("lobby", 2, &bob, "bob", "hi alice"))
        .await;
    assert_eq!(alice.next().await, second);
    assert_ne!(first["id"], second["id"], "ids are unique");

    // Carol, in another room, got neither.
    nothing_pending(&mut carol, "carol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_content_is_cut_to_1000_characters() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    alice.send(chat(&"é".repeat(1200))).await;
    alice
        .expect(received("lobby", 1, &alice, "alice", &"é".repeat(1000)))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_chat_content_is_ignored_without_any_frame() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;

    alice.send(chat(" \n\t  ")).await;
    alice.send(json!({"type": "chat_message"})).await;
    alice.expect_silence(QUIET).await;
    // Nothing was stored or broadcast: the next message is seq 1, and bob's next frame.
    alice.send(chat("after")).await;
    let after = alice
        .expect(received("lobby", 1, &alice, "alice", "after"))
        .await;
    assert_eq!(bob.next().await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_msg_id_is_echoed_and_a_retry_is_not_stored_twice() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;

    let message = json!({"type": "chat_message", "content": "hi", "clientMsgId": "c-1"});
    alice.send(message.clone()).await;
    let mut expected = received("lobby", 1, &alice, "alice", "hi");
    expected["clientMsgId"] = json!("c-1");
    let first = alice.expect(expected).await;
    assert_eq!(bob.next().await, first);

    // The retry: stored once, and nobody is sent it again.
    alice.send(message).await;
    alice.expect_silence(QUIET).await;
    alice.send(chat("next")).await;
    let next = alice
        .expect(received("lobby", 2, &alice, "alice", "next"))
        .await;
    assert_eq!(bob.next().await, next, "bob got no duplicate");

    alice
        .send(json!({"type": "history", "room": "lobby"}))
        .await;
    alice
        .expect(json!({"type": "message_history", "room": "lobby", "messages": [first, next], "hasMore": false}))
        .await;
}

// ---- direct messages ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_message_reaches_the_target_and_the_sender_and_nobody_else() {
    let server = TestServer::start().await;
    let mut alice = server.named("alice").await;
    let mut bob = server.named("bob").await;
    let mut carol = server.named("carol").await;

    alice
        .send(json!({"type": "private_message", "targetId": bob.id, "content": " psst ", "clientMsgId": "d-1"}))
        .await;
    let mut dm = json!({
        "type": "private_message", "id": UUID, "seq": 1, "fromId": alice.id,
        "fromUsername": "alice", "toId": bob.id, "toUsername": "bob", "content": "psst",
        "timestamp": TIMESTAMP,
    });
    let to_bob = bob.expect(dm.clone()).await;
    dm["type"] = json!("private_message_sent");
    dm["id"] = to_bob["id"].clone();
    dm["timestamp"] = to_bob["timestamp"].clone();
    dm["clientMsgId"] = json!("d-1");
    alice.expect(dm).await;

    carol.expect_silence(QUIET).await;
    nothing_pending(&mut carol, "carol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_message_to_an_unknown_or_unnamed_user_is_refused_with_user_not_found() {
    let server = TestServer::start().await;
    let mut alice = server.named("alice").await;
    let unnamed = server.connect().await;
    for target in ["nobody", unnamed.id.as_str()] {
        alice
            .send(json!({"type": "private_message", "targetId": target, "content": "hi"}))
            .await;
        alice.expect_error("User not found", "user_not_found").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_message_needs_a_username() {
    let server = TestServer::start().await;
    let bob = server.named("bob").await;
    let mut anonymous = server.connect().await;
    anonymous
        .send(json!({"type": "private_message", "targetId": bob.id, "content": "hi"}))
        .await;
    anonymous
        .expect_error("Set username first", "username_required")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_history_pages_the_conversation_oldest_first() {
    let server = TestServer::with(Config::unlimited(), RuntimeConfig::default()).await;
    let mut alice = server.named("alice").await;
    let mut bob = server.named("bob").await;
    // a0 b0 a1 b1 a2 b2, one at a time: seq 1..=6. Keep each as its recipient saw it.
    let mut as_received = Vec::new();
    for i in 0..3 {
        alice
            .send(
                json!({"type": "private_message", "targetId": bob.id, "content": format!("a{i}")}),
            )
            .await;
        alice.expect_type("private_message_sent").await;
        as_received.push(bob.expect_type("private_message").await);
        bob.send(
            json!({"type": "private_message", "targetId": alice.id, "content": format!("b{i}")}),
        )
        .await;
        bob.expect_type("private_message_sent").await;
        as_received.push(alice.expect_type("private_message").await);
    }
    let seqs: Vec<_> = as_received.iter().map(|m| m["seq"].clone()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);

    alice
        .send(json!({"type": "dm_history", "userId": bob.id, "limit": 4}))
        .await;
    alice
        .expect(json!({"type": "dm_history", "userId": bob.id, "messages": as_received[2..], "hasMore": true}))
        .await;
    bob.send(json!({"type": "dm_history", "userId": alice.id, "before": 3}))
        .await;
    bob.expect(json!({"type": "dm_history", "userId": alice.id, "messages": as_received[..2], "hasMore": false}))
        .await;
}

// ---- typing -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_others_is_not_echoed_and_a_repeated_start_is_coalesced() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;
    let alice_id = alice.id.clone();
    let indicator = |typing: bool| {
        json!({"type": "typing_indicator", "room": "lobby", "username": "alice",
               "userId": alice_id, "isTyping": typing})
    };

    alice.send(json!({"type": "typing_start"})).await;
    alice.send(json!({"type": "typing_start"})).await;
    alice.send(json!({"type": "typing_stop"})).await;
    // One start (the repeat is coalesced), then the stop.
    bob.expect(indicator(true)).await;
    bob.expect(indicator(false)).await;
    // A stop when not typing says nothing.
    alice.send(json!({"type": "typing_stop"})).await;
    alice.send(chat("marker")).await;
    let marker = alice
        .expect(received("lobby", 1, &alice, "alice", "marker"))
        .await;
    // Alice's first frame since was her message: nothing of her typing came back to her.
    assert_eq!(bob.next().await, marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_stops_by_itself_after_the_typing_timeout() {
    let typing_timeout = Duration::from_millis(300);
    let config = Config {
        typing_timeout,
        ..Config::default()
    };
    let server = TestServer::with(config, RuntimeConfig::default()).await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;
    let alice_id = alice.id.clone();
    let indicator = |typing: bool| {
        json!({"type": "typing_indicator", "room": "lobby", "username": "alice",
               "userId": alice_id, "isTyping": typing})
    };

    let started = Instant::now();
    alice.send(json!({"type": "typing_start"})).await;
    bob.expect(indicator(true)).await;
    bob.expect(indicator(false)).await;
    let after = started.elapsed();
    assert!(
        after >= typing_timeout,
        "stopped after {after:?}, before the {typing_timeout:?} timeout"
    );
    nothing_pending(&mut alice, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_a_message_stops_typing_before_the_message_arrives() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;

    alice.send(json!({"type": "typing_start"})).await;
    assert_eq!(bob.expect_type("typing_indicator").await["isTyping"], true);
    alice.send(chat("done")).await;
    let done = alice
        .expect(received("lobby", 1, &alice, "alice", "done"))
        .await;
    bob.expect(
        json!({"type": "typing_indicator", "room": "lobby", "username": "alice",
                      "userId": alice.id, "isTyping": false}),
    )
    .await;
    assert_eq!(bob.next().await, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typing_user_who_disconnects_stops_typing_before_user_left() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;

    alice.send(json!({"type": "typing_start"})).await;
    assert_eq!(bob.expect_type("typing_indicator").await["isTyping"], true);
    let alice_id = alice.id.clone();
    alice.disconnect().await;
    bob.expect(
        json!({"type": "typing_indicator", "room": "lobby", "username": "alice",
                      "userId": alice_id, "isTyping": false}),
    )
    .await;
    bob.expect(
        json!({"type": "user_left", "room": "lobby", "username": "alice", "userId": alice_id}),
    )
    .await;
}

// ---- history and resume -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_with_has_more_and_clamps_the_limit_to_100() {
    let server = TestServer::with(Config::unlimited(), RuntimeConfig::default()).await;
    let mut alice = server.member("alice", "lobby").await;
    let sent = post_many(&mut alice, 120).await;
    let page = |messages: &[Value], has_more: bool| {
        json!({"type": "message_history", "room": "lobby", "messages": messages,
               "hasMore": has_more})
    };

    alice
        .send(json!({"type": "history", "room": "lobby", "before": 21, "limit": 10}))
        .await;
    alice.expect(page(&sent[10..20], true)).await;
    alice
        .send(json!({"type": "history", "room": "lobby", "before": 3, "limit": 10}))
        .await;
    alice.expect(page(&sent[..2], false)).await;
    alice
        .send(json!({"type": "history", "room": "lobby", "limit": 1_000_000_000u64}))
        .await;
    let clamped = alice.expect(page(&sent[20..], true)).await;
    assert_eq!(history_seqs(&clamped), (21..=120).collect::<Vec<_>>());
    // Without `limit`: 50.
    alice
        .send(json!({"type": "history", "room": "lobby"}))
        .await;
    alice.expect(page(&sent[70..], true)).await;

    alice
        .send(json!({"type": "history", "room": "other"}))
        .await;
    alice
        .expect_error("You are not in that room", "not_in_room")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_reconnect_replays_exactly_the_missed_messages() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.named("bob").await;
    bob.send(json!({"type": "join_room", "room": "lobby"}))
        .await;
    bob.expect_type("room_joined").await;
    let joined = bob.expect_type("message_history").await;
    let epoch = joined["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(epoch, server.epoch());
    bob.expect_type("room_users").await;
    alice.expect_type("user_joined").await;

    let seen = post_many(&mut alice, 3).await;
    for message in &seen {
        assert_eq!(&bob.next().await, message);
    }
    let last_seen = seen[2]["seq"].as_u64().expect("a seq");

    let bob_id = bob.id.clone();
    bob.disconnect().await;
    alice
        .expect(json!({"type": "user_left", "room": "lobby", "username": "bob", "userId": bob_id}))
        .await;
    alice.send(chat("m4")).await;
    let m4 = alice
        .expect(received("lobby", 4, &alice, "alice", "m4"))
        .await;
    alice.send(chat("m5")).await;
    let m5 = alice
        .expect(received("lobby", 5, &alice, "alice", "m5"))
        .await;

    let mut bob = server.named("bob").await;
    bob.send(json!({"type": "join_room", "room": "lobby", "since": last_seen, "epoch": epoch}))
        .await;
    bob.expect(json!({"type": "room_joined", "room": "lobby"}))
        .await;
    bob.expect(json!({
        "type": "message_history", "room": "lobby", "messages": [m4, m5],
        "epoch": epoch, "lastSeq": 5, "recovered": true, "hasMore": false,
    }))
    .await;
    bob.expect_type("room_users").await;
    alice.expect_type("user_joined").await;

    // Live messages continue right after lastSeq.
    alice.send(chat("m6")).await;
    let m6 = alice
        .expect(received("lobby", 6, &alice, "alice", "m6"))
        .await;
    assert_eq!(bob.next().await, m6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_another_epoch_is_not_recovered_and_gets_the_latest_page() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let sent = post_many(&mut alice, 5).await;

    let mut bob = server.named("bob").await;
    bob.send(json!({"type": "join_room", "room": "lobby", "since": 2, "epoch": "an-old-epoch"}))
        .await;
    bob.expect(json!({"type": "room_joined", "room": "lobby"}))
        .await;
    bob.expect(json!({
        "type": "message_history", "room": "lobby", "messages": sent,
        "epoch": server.epoch(), "lastSeq": 5, "recovered": false, "hasMore": false,
    }))
    .await;
    bob.expect_type("room_users").await;
}

// ---- rate limits --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_11th_message_of_a_burst_is_rate_limited_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;

    for i in 1..=11 {
        alice.send(chat(&format!("m{i}"))).await;
    }
    let mut stored = Vec::new();
    for i in 1..=10 {
        stored.push(
            alice
                .expect(received("lobby", i, &alice, "alice", &format!("m{i}")))
                .await,
        );
    }
    let refused = alice.expect_type("error").await;
    let retry = refused["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!((1..=1000).contains(&retry), "retryAfterMs {retry}");
    assert_frame(
        &refused,
        &json!({"type": "error", "message": "Sending messages too fast", "code": "rate_limited",
                "retryAfterMs": retry}),
    );

    for message in &stored {
        assert_eq!(&bob.next().await, message);
    }
    nothing_pending(&mut bob, "bob").await;
    alice
        .send(json!({"type": "history", "room": "lobby"}))
        .await;
    alice
        .expect(json!({"type": "message_history", "room": "lobby", "messages": stored, "hasMore": false}))
        .await;
}

// ---- malformed input ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_answered_with_invalid_json_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    alice.send_text("{not json").await;
    alice.expect_error("Invalid JSON", "invalid_json").await;
    alice.send_text("hello").await;
    alice.expect_error("Invalid JSON", "invalid_json").await;
    alice.send(chat("still here")).await;
    alice
        .expect(received("lobby", 1, &alice, "alice", "still here"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_is_not_a_command_object_is_answered_with_invalid_message() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    alice.send_text("[1, 2]").await;
    alice
        .expect_error("Invalid message: expected a JSON object", "invalid_message")
        .await;
    alice.send_text("{}").await;
    alice
        .expect_error("Invalid message: missing \"type\"", "invalid_message")
        .await;
    alice.send(chat("still here")).await;
    alice
        .expect(received("lobby", 1, &alice, "alice", "still here"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_type_is_answered_with_unknown_type_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    alice.send(json!({"type": "dance"})).await;
    alice
        .expect_error("Unknown message type: dance", "unknown_type")
        .await;
    alice.send(chat("still here")).await;
    alice
        .expect(received("lobby", 1, &alice, "alice", "still here"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_is_answered_with_binary_unsupported_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let command = chat("in binary").to_string();
    alice.send_message(Message::binary(command)).await;
    alice
        .expect_error(
            "Binary frames are not supported; send JSON text frames",
            "binary_unsupported",
        )
        .await;
    alice.send(chat("as text")).await;
    alice
        .expect(received("lobby", 1, &alice, "alice", "as text"))
        .await;
}

// ---- size limit ---------------------------------------------------------------------

/// A `chat_message` whose JSON text is exactly `bytes` long (content of `x`s).
fn chat_of_size(bytes: usize) -> String {
    let empty = chat("").to_string();
    let text = chat(&"x".repeat(bytes - empty.len())).to_string();
    assert_eq!(text.len(), bytes);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_exactly_64_kib_is_accepted() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    alice.send_text(chat_of_size(64 * 1024)).await;
    alice
        .expect(received("lobby", 1, &alice, "alice", &"x".repeat(1000)))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_64_kib_is_closed_with_1009_and_its_user_leaves_the_room() {
    let server = TestServer::start().await;
    let mut alice = server.member("alice", "lobby").await;
    let mut bob = server.member("bob", "lobby").await;
    alice.expect_type("user_joined").await;

    bob.send_text(chat_of_size(64 * 1024 + 1)).await;
    assert_eq!(bob.close_code().await, 1009);
    alice
        .expect(json!({"type": "user_left", "room": "lobby", "username": "bob", "userId": bob.id}))
        .await;
}

// ---- heartbeat ----------------------------------------------------------------------

fn heartbeat(interval: Duration) -> RuntimeConfig {
    RuntimeConfig {
        heartbeat_interval: Some(interval),
        ..RuntimeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_terminated_and_leaves_its_rooms() {
    let interval = Duration::from_millis(250);
    let server = TestServer::with(Config::default(), heartbeat(interval)).await;

    // A raw client: it never sends a pong (tungstenite would, whenever it reads).
    let mut silent = RawWs::connect(server.addr()).await;
    let hello = silent.next().await;
    let silent_id = hello["clientId"].as_str().expect("clientId").to_owned();
    silent
        .send(json!({"type": "set_username", "username": "silent"}))
        .await;
    assert_eq!(silent.next().await["type"], "username_set");
    silent
        .send(json!({"type": "join_room", "room": "lobby"}))
        .await;
    for kind in ["room_joined", "message_history", "room_users"] {
        assert_eq!(silent.next().await["type"], kind);
    }

    // Bob reads all along, so tungstenite answers his pings.
    let mut bob = server.member("bob", "lobby").await;
    let started = Instant::now();
    bob.expect(
        json!({"type": "user_left", "room": "lobby", "username": "silent", "userId": silent_id}),
    )
    .await;
    let gone_after = started.elapsed();
    assert!(
        gone_after < 4 * interval + Duration::from_secs(1),
        "terminated only after {gone_after:?}"
    );

    // The silent client's socket was pinged, then closed: it ends (EOF or reset).
    let frames = timeout(PROMPT, async {
        let mut frames = Vec::new();
        while let Some(frame) = silent.frame().await {
            frames.push(frame);
        }
        frames
    })
    .await
    .expect("the server dropped the silent client's connection");
    assert!(frames.contains(&RawFrame::Ping), "{frames:?}");
    assert_eq!(
        frames.last(),
        Some(&RawFrame::Close(Some(1001))),
        "{frames:?}"
    );

    // Bob, who answered, is still connected.
    bob.send(chat("still here")).await;
    bob.expect(received("lobby", 1, &bob, "bob", "still here"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_stays_connected_over_many_intervals() {
    let interval = Duration::from_millis(250);
    let server = TestServer::with(Config::default(), heartbeat(interval)).await;
    let mut alice = server.member("alice", "lobby").await;

    // Without pongs it would be gone after two intervals.
    let (frames, pings) = alice.read_for(6 * interval).await;
    assert!(frames.is_empty(), "{frames:?}");
    assert!(pings >= 4, "only {pings} pings in 6 intervals");
    alice.send(chat("still here")).await;
    alice
        .expect(received("lobby", 1, &alice, "alice", "still here"))
        .await;
}

// ---- the harness itself -------------------------------------------------------------

#[test]
fn the_frame_matcher_rejects_extra_or_missing_keys_and_misshapen_generated_fields() {
    let pattern = json!({"type": "m", "id": UUID, "timestamp": TIMESTAMP});
    let good = json!({"type": "m", "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
                      "timestamp": "2024-02-29T23:59:59.999Z"});
    assert_frame(&good, &pattern);
    let mut bad = Vec::new();
    for (key, value) in [
        ("id", json!("0f8fad5b-d9cb-469f-a165-70867728950")),
        ("id", json!("0F8FAD5B-D9CB-469F-A165-70867728950E")),
        ("id", json!(7)),
        ("timestamp", json!("2024-02-29 23:59:59.999Z")),
        ("timestamp", json!("2024-13-01T00:00:00.000Z")),
        ("timestamp", json!("2024-02-29T23:59:59Z")),
        ("extra", json!(1)),
    ] {
        let mut frame = good.clone();
        frame[key] = value;
        bad.push(frame);
    }
    let mut missing = good.clone();
    missing.as_object_mut().expect("an object").remove("type");
    bad.push(missing);
    for frame in bad {
        let caught = std::panic::catch_unwind(|| assert_frame(&frame, &pattern));
        assert!(caught.is_err(), "{frame} should not match {pattern}");
    }
}

/// 500 messages (the resume cap) of 1,000 control characters, each escaped to six bytes
/// of JSON: a ~3 MB replay.
async fn store_a_full_resume(server: &TestServer) {
    use chat_core::{Content, NewRoomMessage, RoomName, Store, UserId};
    let content = Content::parse(&format!("x{}x", "\u{1}".repeat(998))).expect("content");
    for _ in 0..500 {
        server
            .store
            .append_room(NewRoomMessage {
                room: RoomName::parse("big").expect("room"),
                user_id: UserId::parse("writer").expect("user"),
                username: "writer".into(),
                content: content.clone(),
                client_msg_id: None,
            })
            .await
            .expect("stored");
    }
}

#[tokio::test]
async fn the_largest_frame_the_server_can_send_a_full_resume_is_delivered() {
    // With the frame budget lifted, the replay is one ~3 MB `message_history`, above
    // the old 2 MiB write-buffer cap: the transport carries it.
    let engine = chat_core::Config {
        history_frame_bytes: usize::MAX,
        ..chat_core::Config::default()
    };
    let server = TestServer::with(engine, chat_core::RuntimeConfig::default()).await;
    store_a_full_resume(&server).await;
    let mut reader = server.named("reader").await;
    reader
        .send(json!({"type": "join_room", "room": "big", "since": 0, "epoch": server.epoch()}))
        .await;
    reader.expect_type("room_joined").await;
    let history = reader.expect_type("message_history").await;
    assert_eq!(history["recovered"], true);
    assert_eq!(history_seqs(&history), (1..=500).collect::<Vec<_>>());
    assert!(history.to_string().len() > 3_000_000, "the frame is ~3 MB");
    reader.expect_type("room_users").await;
}

#[tokio::test]
async fn a_full_resume_arrives_in_continued_frames_of_at_most_64_kib() {
    let server = TestServer::start().await;
    store_a_full_resume(&server).await;
    let mut reader = server.named("reader").await;
    reader
        .send(json!({"type": "join_room", "room": "big", "since": 0, "epoch": server.epoch()}))
        .await;
    reader.expect_type("room_joined").await;
    let mut seqs = Vec::new();
    let mut frames = 0;
    loop {
        let history = reader.expect_type("message_history").await;
        frames += 1;
        assert_eq!(history["recovered"], true);
        // Each frame's cursor is its own last message; the last frame's is the head.
        let own_last = history_seqs(&history).last().copied();
        assert_eq!(history["lastSeq"].as_u64(), own_last);
        if history.get("continued").is_none() {
            assert_eq!(history["lastSeq"], 500);
        }
        let messages = serde_json::to_vec(&history["messages"])
            .expect("JSON")
            .len();
        assert!(messages <= 64 * 1024 + 2, "{messages} bytes of messages");
        seqs.extend(history_seqs(&history));
        if history.get("continued").is_none() {
            break;
        }
        assert_eq!(history["continued"], true);
    }
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>(), "in order, each once");
    assert!(frames >= 45, "{frames} frames");
    reader.expect_type("room_users").await;
}
