//! Behaviour specific to the in-memory store; the shared contract is checked by
//! `tests/conformance.rs`.

use std::sync::Arc;

use chat_core::{
    ClientMsgId, Content, NewDm, NewRoomMessage, PageRange, RoomName, Seq, Store, StoreError,
    StoredMessage, Timestamp, UserId,
};

use crate::log::Log;
use crate::streams::lock;
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
    MemoryStore::with_config(MemoryConfig {
        room_history,
        ..MemoryConfig::default()
    })
}

/// (retained messages, idempotency entries) of a room.
fn sizes(store: &MemoryStore, name: &str) -> (usize, usize) {
    let log = store.rooms.get(&room(name)).unwrap();
    let log = lock(&log);
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
        &a.room_page(&room("r"), latest).await.unwrap().epoch,
        a.epoch()
    );
    assert_eq!(
        &a.room_page(&room("x"), latest).await.unwrap().epoch,
        a.epoch()
    );
    let dms = a.dm_page(&user("p"), &user("q"), latest).await.unwrap();
    assert_eq!(
        &dms.epoch,
        a.epoch(),
        "one epoch for rooms and conversations"
    );
}

#[tokio::test]
async fn rooms_beyond_the_cap_are_refused_and_nothing_is_stored() {
    let store = MemoryStore::with_config(MemoryConfig {
        max_rooms: 2,
        ..MemoryConfig::default()
    });
    store.append_room(msg("one", "alice", None)).await.unwrap();
    store.append_room(msg("two", "alice", None)).await.unwrap();
    let refused = store.append_room(msg("three", "alice", None)).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(store.room_count(), 2);

    // Reading unknown rooms allocates nothing; existing rooms keep working.
    let page = store
        .room_page(&room("three"), PageRange::Latest { limit: 5 })
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    assert_eq!(page.last_seq, Seq(0));
    assert_eq!(store.room_count(), 2);
    let next = store.append_room(msg("one", "alice", None)).await.unwrap();
    assert_eq!(next.message.seq, Seq(2));
}

#[tokio::test]
async fn both_directions_are_one_conversation_under_the_cap() {
    let store = MemoryStore::with_config(MemoryConfig {
        max_dm_conversations: 1,
        ..MemoryConfig::default()
    });
    store.append_dm(dm("alice", "bob")).await.unwrap();
    let reply = store.append_dm(dm("bob", "alice")).await.unwrap();
    assert_eq!(reply.message.seq, Seq(2));
    assert_eq!(store.dm_conversation_count(), 1);
    let refused = store.append_dm(dm("alice", "carol")).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(store.dm_conversation_count(), 1);
}

#[tokio::test]
async fn an_injected_failure_has_no_effect_and_consumes_no_seq() {
    let store = MemoryStore::new();
    store.append_room(msg("r", "alice", None)).await.unwrap();
    store.fail_next(2);
    assert!(matches!(
        store.append_room(msg("r", "alice", Some("x"))).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .room_page(&room("r"), PageRange::Latest { limit: 5 })
            .await,
        Err(StoreError::Unavailable(_))
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
    let mut log: Log<StoredMessage> = Log::new(10);
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
    let first = log.append(&alice, None, Timestamp(1_000), template);
    let stepped_back = log.append(&alice, None, Timestamp(400), template);
    let later = log.append(&alice, None, Timestamp(2_000), template);
    assert_eq!(first.message.timestamp, Timestamp(1_000));
    assert_eq!(stepped_back.message.timestamp, Timestamp(1_000));
    assert_eq!(later.message.timestamp, Timestamp(2_000));
}
