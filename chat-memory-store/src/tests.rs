//! Behaviour specific to the in-memory store; the shared contract is checked by
//! `tests/conformance.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chat_core::{
    ClientMsgId, Content, NewDm, NewRoomMessage, PageRange, RoomName, Seq, Store, StoreError,
    StoredMessage, Timestamp, UserId,
};

use crate::log::{Entry, Log};
use crate::streams::STREAM_OVERHEAD_BYTES;
use crate::{MemoryConfig, MemoryStore};

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn msg(room_name: &str, author: &str, client_msg_id: Option<&str>) -> NewRoomMessage {
    NewRoomMessage {
        room: room(room_name),
        user_id: user(author),
        username: author.into(),
        content: Content::parse("hi").unwrap(),
        client_msg_id: client_msg_id.map(|id| ClientMsgId::parse(id).unwrap()),
    }
}

fn dm(from: &str, to: &str) -> NewDm {
    NewDm {
        from: user(from),
        from_username: from.into(),
        to: user(to),
        to_username: to.into(),
        content: Content::parse("psst").unwrap(),
        client_msg_id: None,
    }
}

fn small(room_history: usize) -> MemoryStore {
    MemoryStore::with_config(MemoryConfig::default().with_room_history(room_history))
}

/// (retained messages, idempotency entries) of a room.
fn sizes(store: &MemoryStore, name: &str) -> (usize, usize) {
    let stream = store.rooms.get(&room(name), &store.shared).unwrap();
    let log = stream.lock();
    (log.len(), log.index_len())
}

#[tokio::test]
async fn eviction_keeps_the_idempotency_index_bounded() {
    let store = small(3);
    for n in 0..100 {
        store
            .append_room(msg("r", "alice", Some(&format!("c{n}"))))
            .await
            .unwrap();
        let (len, index) = sizes(&store, "r");
        assert!(
            len <= 3 && index <= 3,
            "after {n}: {len} messages, {index} keys"
        );
    }
    assert_eq!(sizes(&store, "r"), (3, 3));
}

#[tokio::test]
async fn only_retained_messages_with_a_client_msg_id_are_indexed() {
    let store = small(4);
    for n in 0..10 {
        let id = (n % 2 == 0).then(|| format!("c{n}"));
        store
            .append_room(msg("r", "alice", id.as_deref()))
            .await
            .unwrap();
    }
    // Retained: seqs 7..=10, i.e. n = 6..=9, of which n = 6 and 8 carry an id.
    assert_eq!(sizes(&store, "r"), (4, 2));
}

#[tokio::test]
async fn a_retry_of_an_evicted_message_is_stored_again() {
    let store = small(2);
    let first = store
        .append_room(msg("r", "alice", Some("x")))
        .await
        .unwrap();
    store.append_room(msg("r", "alice", None)).await.unwrap();
    let still = store
        .append_room(msg("r", "alice", Some("x")))
        .await
        .unwrap();
    assert!(still.duplicate, "seq 1 is still retained");
    assert_eq!(still.message.id, first.message.id);

    store.append_room(msg("r", "alice", None)).await.unwrap(); // evicts seq 1
    let again = store
        .append_room(msg("r", "alice", Some("x")))
        .await
        .unwrap();
    assert!(
        !again.duplicate,
        "deduplication lasts only while the message is retained"
    );
    assert_eq!(again.message.seq, Seq(4));
    let retry = store
        .append_room(msg("r", "alice", Some("x")))
        .await
        .unwrap();
    assert!(retry.duplicate, "the new message is protected in turn");
    assert_eq!(retry.message.seq, Seq(4));
}

#[tokio::test]
async fn a_duplicate_shares_the_stored_allocation() {
    let store = MemoryStore::new();
    let first = store
        .append_room(msg("r", "alice", Some("x")))
        .await
        .unwrap();
    let retry = store
        .append_room(msg("r", "alice", Some("x")))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&first.message, &retry.message));
    let page = store
        .room_page(&room("r"), PageRange::Latest { limit: 1 })
        .await
        .unwrap();
    assert!(
        Arc::ptr_eq(&first.message, &page.messages[0]),
        "pages share it too"
    );
}

#[tokio::test]
async fn every_store_instance_has_its_own_epoch() {
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    assert_ne!(
        a.epoch(),
        b.epoch(),
        "history does not survive a new instance"
    );
    a.append_room(msg("r", "alice", None)).await.unwrap();
    let latest = PageRange::Latest { limit: 1 };
    assert_eq!(
        a.room_page(&room("r"), latest).await.unwrap().epoch,
        a.epoch()
    );
    assert_eq!(
        a.room_page(&room("x"), latest).await.unwrap().epoch,
        a.epoch()
    );
    let dms = a.dm_page(&user("p"), &user("q"), latest).await.unwrap();
    assert_eq!(dms.epoch, a.epoch(), "one epoch until something is evicted");
}

fn budget(max_bytes: usize) -> MemoryStore {
    MemoryStore::with_config(MemoryConfig::default().with_max_bytes(max_bytes))
}

/// What one `msg(room, author, None)` costs, with its stream's overhead when new.
fn cost(room_name: &str, author: &str) -> (usize, usize) {
    let m = StoredMessage {
        id: chat_core::MessageId(uuid::Uuid::nil()),
        room: room(room_name),
        seq: Seq(1),
        user_id: user(author),
        username: author.into(),
        content: Content::parse("hi").unwrap(),
        timestamp: Timestamp(0),
        client_msg_id: None,
    };
    (m.bytes(), STREAM_OVERHEAD_BYTES + room_name.len())
}

#[tokio::test]
async fn bytes_are_accounted_for_messages_streams_and_dropped_history() {
    let store = MemoryStore::with_config(MemoryConfig::default().with_room_history(3));
    assert_eq!(store.bytes_used(), 0);
    let (message, stream) = cost("r", "alice");
    store.append_room(msg("r", "alice", None)).await.unwrap();
    assert_eq!(store.bytes_used(), stream + message);
    for _ in 0..10 {
        store.append_room(msg("r", "alice", None)).await.unwrap();
    }
    // Only the 3 retained messages count.
    assert_eq!(store.bytes_used(), stream + 3 * message);
    // A duplicate stores nothing and costs nothing.
    store
        .append_room(msg("r", "alice", Some("k")))
        .await
        .unwrap();
    let with_key = store.bytes_used();
    store
        .append_room(msg("r", "alice", Some("k")))
        .await
        .unwrap();
    assert_eq!(store.bytes_used(), with_key);
    // Reads of unknown rooms cost nothing.
    store
        .room_page(&room("nowhere"), PageRange::Latest { limit: 5 })
        .await
        .unwrap();
    assert_eq!(store.bytes_used(), with_key);
}

#[tokio::test]
async fn the_budget_is_respected_by_forgetting_the_least_recently_used_streams() {
    let (message, stream) = cost("r00", "alice");
    let per_room = message + stream;
    // Room for ten one-message rooms.
    let store = budget(10 * per_room + per_room / 2);
    for n in 0..10 {
        store
            .append_room(msg(&format!("r{n:02}"), "alice", None))
            .await
            .unwrap();
    }
    assert_eq!(store.room_count(), 10);
    // r00 is read (a use), so r01 is now the least recently used.
    store
        .room_page(&room("r00"), PageRange::Latest { limit: 1 })
        .await
        .unwrap();
    store.append_room(msg("r10", "alice", None)).await.unwrap();
    assert!(store.bytes_used() <= store.shared.max_bytes);
    // Brought down to 90 %: the two least recently used went (r01, r02).
    let kept = |name: &str| store.rooms.get(&room(name), &store.shared).is_some();
    assert!(!kept("r01") && !kept("r02"), "oldest unused rooms evicted");
    assert!(kept("r00"), "a recently read room stays");
    assert!(kept("r10"), "the room just written stays");
    assert!(kept("r03"));
    assert_eq!(store.room_count(), 9);
}

#[tokio::test]
async fn an_evicted_stream_starts_again_under_a_fresh_epoch_without_its_index() {
    let (message, stream) = cost("aa", "alice");
    let store = budget(2 * (message + stream) + 300);
    let first = store
        .append_room(msg("aa", "alice", Some("k")))
        .await
        .unwrap();
    assert_eq!(first.epoch, store.epoch());
    let old_epoch = first.epoch.clone();
    store.append_room(msg("bb", "alice", None)).await.unwrap();
    store.append_room(msg("cc", "alice", None)).await.unwrap(); // evicts "aa"
    assert!(store.rooms.get(&room("aa"), &store.shared).is_none());
    let page = store
        .room_page(&room("aa"), PageRange::Latest { limit: 5 })
        .await
        .unwrap();
    assert_ne!(page.epoch, old_epoch, "a resume with the old epoch is void");
    assert_eq!(page.last_seq, Seq(0));
    // The idempotency key went with the stream: the retry is stored again, at seq 1,
    // under an epoch the stream never had before.
    let again = store
        .append_room(msg("aa", "alice", Some("k")))
        .await
        .unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.message.seq, Seq(1));
    assert_ne!(again.epoch, old_epoch);
    let page = store
        .room_page(&room("aa"), PageRange::Latest { limit: 5 })
        .await
        .unwrap();
    assert_eq!(page.epoch, again.epoch, "appends and pages agree");
}

#[tokio::test]
async fn a_flood_of_new_rooms_is_never_refused() {
    let store = MemoryStore::with_config(
        MemoryConfig::default()
            .with_max_rooms(50)
            .with_max_bytes(64 * 1024),
    );
    for n in 0..2_000 {
        let result = store
            .append_room(msg(&format!("flood-{n}"), "mallory", None))
            .await;
        assert!(result.is_ok(), "room {n}: {result:?}");
        assert!(store.room_count() <= 50);
        assert!(store.bytes_used() <= 64 * 1024);
    }
    // The newest room is there and readable.
    let page = store
        .room_page(&room("flood-1999"), PageRange::Latest { limit: 1 })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
}

#[tokio::test]
async fn conversations_beyond_the_cap_push_out_the_least_recently_used() {
    let store = MemoryStore::with_config(MemoryConfig::default().with_max_dm_conversations(2));
    store.append_dm(dm("alice", "bob")).await.unwrap();
    let reply = store.append_dm(dm("bob", "alice")).await.unwrap();
    assert_eq!(
        reply.message.seq,
        Seq(2),
        "both directions are one conversation"
    );
    store.append_dm(dm("alice", "carol")).await.unwrap();
    store.append_dm(dm("bob", "alice")).await.unwrap(); // alice–bob is the recent one
    store.append_dm(dm("alice", "dave")).await.unwrap(); // pushes out alice–carol
    assert_eq!(store.dm_conversation_count(), 2);
    let carol = store
        .dm_page(
            &user("alice"),
            &user("carol"),
            PageRange::Latest { limit: 5 },
        )
        .await
        .unwrap();
    assert!(carol.messages.is_empty());
    let bob = store
        .dm_page(&user("alice"), &user("bob"), PageRange::Latest { limit: 5 })
        .await
        .unwrap();
    assert_eq!(bob.last_seq, Seq(3));
}

#[tokio::test]
async fn an_injected_failure_has_no_effect_and_consumes_no_seq() {
    let store = MemoryStore::new();
    store.append_room(msg("r", "alice", None)).await.unwrap();
    store.fail_next(2);
    assert!(matches!(
        store.append_room(msg("r", "alice", Some("x"))).await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(matches!(
        store
            .room_page(&room("r"), PageRange::Latest { limit: 5 })
            .await,
        Err(StoreError::Unavailable { .. })
    ));
    let retried = store
        .append_room(msg("r", "alice", Some("x")))
        .await
        .unwrap();
    assert!(!retried.duplicate, "the failed append stored nothing");
    assert_eq!(retried.message.seq, Seq(2), "and used no seq");
}

#[tokio::test]
async fn zero_history_keeps_the_newest_message() {
    let store = small(0);
    for _ in 0..3 {
        store.append_room(msg("r", "alice", None)).await.unwrap();
    }
    let page = store
        .room_page(&room("r"), PageRange::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].seq, Seq(3));
    assert!(!page.has_more, "dropped messages count as not existing");
}

#[test]
fn timestamps_never_go_back_when_the_clock_does() {
    let mut log: Log<StoredMessage> = Log::new(10, chat_core::Epoch::new("e"));
    let alice = user("alice");
    let template = |seq: Seq, timestamp| StoredMessage {
        id: chat_core::MessageId(uuid::Uuid::from_u128(u128::from(seq.0))),
        room: room("r"),
        seq,
        user_id: alice.clone(),
        username: "alice".into(),
        content: Content::parse("hi").unwrap(),
        timestamp,
        client_msg_id: None,
    };
    let (first, _) = log.append(&alice, None, Timestamp(1_000), template);
    let (stepped_back, _) = log.append(&alice, None, Timestamp(400), template);
    let (later, _) = log.append(&alice, None, Timestamp(2_000), template);
    assert_eq!(first.message.timestamp, Timestamp(1_000));
    assert_eq!(stepped_back.message.timestamp, Timestamp(1_000));
    assert_eq!(later.message.timestamp, Timestamp(2_000));
}

/// A round that could evict nothing (the only stream is the one appended to) is not
/// repeated on the very next append: every other append skips the sort.
#[tokio::test]
async fn a_round_that_freed_nothing_skips_the_next() {
    let store = budget(10);
    for _ in 0..4 {
        store.append_room(msg("r", "alice", None)).await.unwrap();
    }
    assert_eq!(
        store.rounds.load(Ordering::Relaxed),
        2,
        "rounds 1 and 3 run"
    );
    // The next stream evicts the first as before.
    store.append_room(msg("s", "alice", None)).await.unwrap();
    let page = store
        .room_page(&room("r"), PageRange::Latest { limit: 5 })
        .await
        .unwrap();
    assert!(page.messages.is_empty(), "r was evicted");
}
