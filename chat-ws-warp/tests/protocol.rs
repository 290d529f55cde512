//! End-to-end smoke tests and what only sockets show, over real sockets: a
//! `chat_core::Server` with the in-memory store behind `WarpTransport` on 127.0.0.1:0,
//! tokio-tungstenite clients, exact frames.
//!
//! The rules of PROTOCOL.md themselves are tested where they live (docs/TESTS.md):
//! engine rules on the `Sim` in `chat-core/src/engine/tests/`, decoding and names as
//! tables in `chat-core/src/protocol/tests.rs` and `chat-core/src/ids.rs`. Here: one
//! smoke test per path through the whole stack (room message, DM, resume across a
//! reconnect with the real store's epoch), the first frame, binary frames, the 64 KiB
//! frame limit, the heartbeat on the wire and the largest frame the server can send.
//!
//! Generated fields (`clientId`, `id`, `timestamp`, `epoch`) are checked for their shape
//! or for equality with a value seen before. "Nothing arrives" is shown by a marker — a
//! later frame to the same connection that would have come after it (the hub handles
//! commands one at a time and each connection's frames stay in order).

mod support;

use std::time::Duration;

use chat_core::{Config, RuntimeConfig};
use serde_json::{Value, json};
use support::{
    PROMPT, Peer, RawFrame, RawWs, TIMESTAMP, TestServer, UUID, assert_frame, history_seqs,
    next_text,
};
use tokio::time::timeout;
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

// ---- connection ---------------------------------------------------------------------

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

// ---- smoke: one path each through the whole stack -----------------------------------

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

    nothing_pending(&mut carol, "carol").await;
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

// ---- binary frames ------------------------------------------------------------------

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
    configured(|runtime: &mut RuntimeConfig| runtime.heartbeat_interval = Some(interval))
}

/// `T::default()` with `edit` applied: configs are built by assigning fields, never by
/// struct literals (they are `#[non_exhaustive]` outside their crate).
fn configured<T: Default>(edit: impl FnOnce(&mut T)) -> T {
    let mut config = T::default();
    edit(&mut config);
    config
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

    // Bob reads all along, so tungstenite answers his pings. (When, exactly, a silent
    // client is dropped is the runtime's rule, tested on a paused clock in
    // chat-core/tests/runtime.rs; here it must happen within `PROMPT`, far sooner than
    // the default 30 s interval would allow.)
    let mut bob = server.member("bob", "lobby").await;
    bob.expect(
        json!({"type": "user_left", "room": "lobby", "username": "silent", "userId": silent_id}),
    )
    .await;

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

    // Without pongs it would be gone after two intervals. The server's own pings mark
    // the intervals: six of them in a row, answered (tungstenite answers while reading),
    // and nothing else, show that it stayed.
    let mut pings = 0;
    while pings < 6 {
        match timeout(PROMPT, futures_util::StreamExt::next(&mut alice.ws))
            .await
            .expect("the next ping in time")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Pong(_))) => {}
            other => panic!("expected only pings, got {other:?}"),
        }
    }
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
    let engine = configured(|c: &mut Config| c.history_frame_bytes = usize::MAX);
    let server = TestServer::with(engine, RuntimeConfig::default()).await;
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
