//! Codec benchmarks: what one inbound chat message costs before the engine sees it, what
//! one outbound `message_received` costs to encode (once, for all its recipients), and
//! what the O(members) `room_users` join reply costs to encode in a room of 10,000.
//!
//! ```text
//! cargo bench -p chat-core --bench codec
//! ```
//!
//! Results, machine facts and how to read them: `docs/BENCHMARKS.md`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chat_core::protocol::{ClientCommand, ServerEvent, UserEntry, decode, encode};
use chat_core::{ClientMsgId, Content, MessageId, RoomName, Seq, StoredMessage, Timestamp, UserId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A realistic `chat_message` frame (125 bytes): a short sentence, an explicit room and
/// an idempotency key, as a reconnect-aware client sends it.
const CHAT_FRAME: &[u8] = br#"{"type":"chat_message","room":"general","content":"Deploy done, dashboards are green. Any 502s?","clientMsgId":"c-18f2a9-42"}"#;

/// A plain `join_room` frame.
const JOIN_FRAME: &[u8] = br#"{"type":"join_room","room":"general"}"#;

/// Decodes and validates a `chat_message` the way the engine does: the decoder leaves
/// strings raw; `cmd_chat` parses the room (`Conn::resolve_room`), the content and the
/// `clientMsgId`.
fn decode_and_validate(frame: &[u8]) -> (RoomName, Content, Option<ClientMsgId>) {
    let Ok(ClientCommand::ChatMessage {
        content,
        room,
        client_msg_id,
    }) = decode(frame)
    else {
        panic!("the benchmark frame is a valid chat_message");
    };
    let room = RoomName::parse(room.as_deref().unwrap_or_default()).expect("valid room");
    let content = Content::parse(&content).expect("non-empty content");
    let client_msg_id = client_msg_id
        .as_deref()
        .map(ClientMsgId::parse)
        .transpose()
        .expect("valid clientMsgId");
    (room, content, client_msg_id)
}

/// A typical live message: UUID ids (as the runtime's id generator and stores make
/// them), a short sentence, an echoed `clientMsgId`.
fn message_received() -> ServerEvent {
    ServerEvent::MessageReceived(Arc::new(StoredMessage {
        id: MessageId(uuid::Uuid::from_u128(
            0x6f1c_2d3e_4b5a_4c6d_8e9f_0a1b_2c3d_4e5f,
        )),
        room: RoomName::parse("general").expect("valid room"),
        seq: Seq(48_213),
        user_id: UserId::from(uuid::Uuid::from_u128(
            0x0e4f_9a2b_7c3d_4e1f_a5b6_c7d8_e9f0_1a2b,
        )),
        username: "alice".into(),
        content: Content::parse("Deploy done, dashboards are green. Any 502s?")
            .expect("non-empty content"),
        timestamp: Timestamp(1_795_444_680_123),
        client_msg_id: Some(ClientMsgId::parse("c-18f2a9-42").expect("valid clientMsgId")),
    }))
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));

    g.throughput(Throughput::Bytes(CHAT_FRAME.len() as u64));
    g.bench_function("chat_message/decode", |b| {
        b.iter(|| decode(black_box(CHAT_FRAME)))
    });
    g.bench_function("chat_message/decode+validate", |b| {
        b.iter(|| decode_and_validate(black_box(CHAT_FRAME)))
    });

    g.throughput(Throughput::Bytes(JOIN_FRAME.len() as u64));
    g.bench_function("join_room/decode+validate", |b| {
        b.iter(|| {
            let Ok(ClientCommand::JoinRoom { room, .. }) = decode(black_box(JOIN_FRAME)) else {
                panic!("the benchmark frame is a valid join_room");
            };
            RoomName::parse(&room).expect("valid room")
        })
    });

    let event = message_received();
    let frame_len = encode(&event).len();
    println!("message_received frame: {frame_len} bytes");
    g.throughput(Throughput::Bytes(frame_len as u64));
    g.bench_function("message_received/encode", |b| {
        b.iter(|| encode(black_box(&event)))
    });

    // The join reply that is O(members) by nature: every joiner gets the user list.
    const USERS: u64 = 10_000;
    let users = ServerEvent::RoomUsers {
        room: RoomName::parse("general").expect("valid room"),
        users: (1..=USERS)
            .map(|n| UserEntry {
                id: UserId::from(uuid::Uuid::from_u128(n.into())),
                username: format!("user{n}").into(),
            })
            .collect(),
    };
    let frame_len = encode(&users).len();
    println!("room_users frame with {USERS} users: {frame_len} bytes");
    g.throughput(Throughput::Elements(USERS));
    g.sample_size(20);
    g.bench_function(format!("room_users/encode/{USERS}"), |b| {
        b.iter(|| encode(black_box(&users)))
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
