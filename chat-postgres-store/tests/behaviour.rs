//! What the conformance suite does not cover: two store instances racing on one
//! database, hostile content, start-up errors and retention.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chat_core::{
    ClientMsgId, Content, NewDm, NewRoomMessage, PageRange, RoomName, Seq, Store, UserId,
};
use chat_postgres_store::{OpenError, PostgresConfig, PostgresStore, Retention, SCHEMA_VERSION};
use support::TestDb;

fn message(room: &str, user: &str, content: &str, id: Option<&str>) -> NewRoomMessage {
    NewRoomMessage {
        room: RoomName::parse(room).expect("room name"),
        user_id: UserId::parse(user).expect("user id"),
        username: user.into(),
        content: Content::parse(content).expect("content"),
        client_msg_id: id.map(|id| ClientMsgId::parse(id).expect("clientMsgId")),
    }
}

async fn all_seqs(store: &PostgresStore, room: &str) -> Vec<u64> {
    let page = store
        .room_page(
            &RoomName::parse(room).expect("room"),
            PageRange::After {
                seq: Seq(0),
                limit: 100_000,
            },
        )
        .await
        .expect("page");
    page.messages.iter().map(|m| m.seq.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_store_instances_on_one_database_never_share_or_skip_a_seq() {
    let Some(server) = support::server_url("two_store_instances") else {
        return;
    };
    let db = TestDb::create(&server).await;
    let first = Arc::new(db.open().await);
    let second = Arc::new(db.open().await);
    const PER_TASK: usize = 50;
    const TASKS: usize = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        // Half of the writers on each instance; every message also races a retry of
        // itself on the other instance (same user, same clientMsgId).
        let (mine, other) = if task % 2 == 0 {
            (Arc::clone(&first), Arc::clone(&second))
        } else {
            (Arc::clone(&second), Arc::clone(&first))
        };
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for n in 0..PER_TASK {
                let id = format!("t{task}-{n}");
                let user = format!("user-{task}");
                let (a, b) = tokio::join!(
                    mine.append_room(message("race", &user, &id, Some(&id))),
                    other.append_room(message("race", &user, &id, Some(&id))),
                );
                let (a, b) = (a.expect("append"), b.expect("append"));
                assert_eq!(a.message.seq, b.message.seq, "{id}: one message, one seq");
                assert_eq!(a.message.id, b.message.id, "{id}: the same stored original");
                assert!(
                    a.duplicate != b.duplicate,
                    "{id}: exactly one of the two is new"
                );
                // And a message without an id, which is always new.
                let plain = mine
                    .append_room(message("race", &user, "plain", None))
                    .await
                    .expect("append");
                acked.push(a.message.seq.0);
                acked.push(plain.message.seq.0);
            }
            acked
        });
    }
    let mut acked = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        for seq in result.expect("task") {
            assert!(acked.insert(seq), "seq {seq} acknowledged twice");
        }
    }
    let total = (TASKS * PER_TASK * 2) as u64;
    assert_eq!(
        acked,
        (1..=total).collect::<BTreeSet<_>>(),
        "no gap, no reuse"
    );
    for store in [&first, &second] {
        assert_eq!(
            all_seqs(store, "race").await,
            (1..=total).collect::<Vec<_>>()
        );
    }
    // Both instances report one epoch for the stream.
    let room = RoomName::parse("race").expect("room");
    let (a, b) = tokio::join!(
        first.room_page(&room, PageRange::Latest { limit: 1 }),
        second.room_page(&room, PageRange::Latest { limit: 1 }),
    );
    assert_eq!(a.expect("page").epoch, b.expect("page").epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_content_is_stored_and_returned_byte_for_byte() {
    let Some(server) = support::server_url("hostile_content") else {
        return;
    };
    let db = TestDb::create(&server).await;
    let store = db.open().await;
    let emoji = "😀".repeat(64 * 1024 / 4);
    let contents = [
        "it's \"quoted\" \\ back\\slashed".to_owned(),
        "nul \0 inside \0\0".to_owned(),
        emoji,
        "'); DROP TABLE chat_messages; --".to_owned(),
        "$1 $$ E'\\x00' ::bytea %s %n".to_owned(),
        "\u{202e}bidi and \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} joiners".to_owned(),
    ];
    let hostile_room = "r'; delete from chat_streams; --";
    let hostile_user = "u\"'); --";
    let hostile_id = "id' OR '1'='1";
    let mut expected = Vec::new();
    for (n, raw) in contents.iter().enumerate() {
        let content = Content::parse(raw).expect("content");
        let id = format!("{hostile_id}{n}");
        let appended = store
            .append_room(NewRoomMessage {
                room: RoomName::parse(hostile_room).expect("room"),
                user_id: UserId::parse(hostile_user).expect("user"),
                username: "o'neil".into(),
                content: content.clone(),
                client_msg_id: Some(ClientMsgId::parse(&id).expect("id")),
            })
            .await
            .expect("append");
        assert_eq!(appended.message.content, content);
        expected.push((content, id));
    }
    let dm = store
        .append_dm(NewDm {
            from: UserId::parse(hostile_user).expect("user"),
            from_username: "o'neil".into(),
            to: UserId::parse("x'y").expect("user"),
            to_username: "\"x\"".into(),
            content: Content::parse(&contents[1]).expect("content"),
            client_msg_id: None,
        })
        .await
        .expect("dm");
    drop(store);

    // Read back from a new instance: what is on disk, not what was in memory.
    let store = db.open().await;
    let page = store
        .room_page(
            &RoomName::parse(hostile_room).expect("room"),
            PageRange::Latest { limit: 50 },
        )
        .await
        .expect("page");
    assert_eq!(page.messages.len(), expected.len());
    for (message, (content, id)) in page.messages.iter().zip(&expected) {
        assert_eq!(
            message.content.as_str().as_bytes(),
            content.as_str().as_bytes()
        );
        assert_eq!(
            message.client_msg_id.as_ref().map(|c| c.as_str()),
            Some(id.as_str())
        );
        assert_eq!(message.user_id.as_str(), hostile_user);
        assert_eq!(&*message.username, "o'neil");
    }
    let dms = store
        .dm_page(
            &dm.message.to,
            &dm.message.from,
            PageRange::Latest { limit: 5 },
        )
        .await
        .expect("dm page");
    assert_eq!(dms.messages.len(), 1);
    assert_eq!(*dms.messages[0], *dm.message);
    // The tables are all still there.
    let client = db.client().await;
    let streams: i64 = client
        .query_one("SELECT count(*) FROM chat_streams", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(streams, 2);
}

#[tokio::test]
async fn start_up_errors_are_clear_and_never_panic() {
    let Some(server) = support::server_url("start_up_errors") else {
        return;
    };
    // Not a URL at all.
    let error = PostgresStore::open(PostgresConfig::new("postgres://[broken"))
        .await
        .expect_err("a broken URL");
    assert!(matches!(error, OpenError::Url(_)), "{error}");

    // Nobody listening: a port that was free a moment ago.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let error = PostgresStore::open(support::config(&support::with_address(&server, addr)))
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, OpenError::Unreachable(_)), "{error}");

    // A role that does not exist (the test server trusts every known role, so a wrong
    // password cannot be shown; an unknown user takes the same path).
    let stranger = server.replacen("://", "://no_such_chat_user:secret@", 1);
    let stranger = match stranger.find("@") {
        Some(first) if stranger[first + 1..].contains('@') => {
            // The URL already had a user: replace it instead.
            let scheme_end = server.find("://").map_or(0, |i| i + 3);
            let at = server.find('@').unwrap_or(scheme_end);
            format!(
                "{}no_such_chat_user:secret{}",
                &server[..scheme_end],
                &server[at..]
            )
        }
        _ => stranger,
    };
    let error = PostgresStore::open(support::config(&stranger))
        .await
        .expect_err("unknown role");
    assert!(matches!(error, OpenError::Authentication(_)), "{error}");

    // A database that does not exist.
    let missing = support::with_database(&server, "chat_no_such_database");
    let error = PostgresStore::open(support::config(&missing))
        .await
        .expect_err("missing database");
    assert!(matches!(error, OpenError::Refused(_)), "{error}");

    // A schema from a newer build.
    let db = TestDb::create(&server).await;
    drop(db.open().await);
    db.client()
        .await
        .execute(
            "UPDATE chat_meta SET schema_version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .expect("pretend a newer build migrated");
    let error = PostgresStore::open(support::config(&db.url))
        .await
        .expect_err("newer schema");
    match &error {
        OpenError::NewerSchema { found, supported } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other}"),
    }
    assert!(error.to_string().contains("newer"), "{error}");
}

#[tokio::test]
async fn concurrent_first_starts_migrate_once() {
    let Some(server) = support::server_url("concurrent_first_starts") else {
        return;
    };
    let db = TestDb::create(&server).await;
    let (a, b, c) = tokio::join!(db.open(), db.open(), db.open());
    let epochs: BTreeSet<_> = [a.epoch(), b.epoch(), c.epoch()]
        .into_iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    assert_eq!(epochs.len(), 1, "one database, one epoch");
}

#[tokio::test]
async fn retention_keeps_the_newest_per_room_and_never_reuses_a_seq() {
    let Some(server) = support::server_url("retention") else {
        return;
    };
    let db = TestDb::create(&server).await;
    let store = PostgresStore::open(
        support::config(&db.url).with_retention(
            Retention::default()
                .with_keep_last_per_room(Some(5))
                // Long: only `purge_now` deletes during the test.
                .with_interval(Duration::from_secs(3600)),
        ),
    )
    .await
    .expect("open");
    for n in 1..=12 {
        let id = format!("r{n}");
        store
            .append_room(message("kept", "alice", &format!("m{n}"), Some(&id)))
            .await
            .expect("append");
        store
            .append_room(message("other", "alice", "x", None))
            .await
            .expect("append");
    }
    assert_eq!(store.purge_now().await.expect("purge"), 14);
    assert_eq!(all_seqs(&store, "kept").await, (8..=12).collect::<Vec<_>>());
    let room = RoomName::parse("kept").expect("room");
    let page = store
        .room_page(&room, PageRange::Latest { limit: 50 })
        .await
        .expect("page");
    assert!(
        !page.has_more,
        "the oldest retained message ends the history"
    );
    assert_eq!(page.last_seq, Seq(12));
    // Numbering goes on; a retained message is still a duplicate; a deleted one's
    // retry is stored again, under a new seq.
    let retry = store
        .append_room(message("kept", "alice", "again", Some("r8")))
        .await
        .expect("append");
    assert!(retry.duplicate);
    assert_eq!(retry.message.seq, Seq(8));
    let again = store
        .append_room(message("kept", "alice", "again", Some("r1")))
        .await
        .expect("append");
    assert!(!again.duplicate);
    assert_eq!(again.message.seq, Seq(13));
}

#[tokio::test]
async fn age_retention_keeps_each_streams_newest_message() {
    let Some(server) = support::server_url("age_retention") else {
        return;
    };
    let db = TestDb::create(&server).await;
    let store = PostgresStore::open(
        support::config(&db.url).with_retention(
            Retention::default()
                .with_max_age(Some(Duration::ZERO))
                .with_interval(Duration::from_secs(3600)),
        ),
    )
    .await
    .expect("open");
    for n in 1..=4 {
        store
            .append_room(message("aged", "bob", &format!("m{n}"), None))
            .await
            .expect("append");
    }
    // Stamp everything an hour ago: all of it is older than the limit.
    db.client()
        .await
        .execute("UPDATE chat_messages SET ts = ts - 3600000", &[])
        .await
        .expect("age the messages");
    assert_eq!(store.purge_now().await.expect("purge"), 3);
    assert_eq!(all_seqs(&store, "aged").await, vec![4]);
}
