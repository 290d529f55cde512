//! The store cut off from PostgreSQL or stalled, through a proxy inside the test (the
//! shared server itself is never touched): operations fail within the store timeout,
//! with `Unavailable` or the indeterminate outcome — never an acknowledgement — and the
//! store recovers by itself once traffic passes again.

mod support;

use std::time::{Duration, Instant};

use chat_core::{
    ClientMsgId, Content, NewRoomMessage, PageRange, RoomName, Seq, Store, StoreError, UserId,
};
use chat_postgres_store::PostgresStore;
use support::TestDb;
use support::proxy::{Mode, Proxy};

/// The store timeout of the tests' configuration.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Slack for a loaded (2-core CI) machine on top of the timeout. A failure must come
/// within `TIMEOUT + SLACK`: sooner than the runtime's own store timeout (10 s), and far
/// sooner than never, which is what a stalled connection without the store's timeout
/// gives.
const SLACK: Duration = Duration::from_secs(5);

fn message(content: &str, id: &str) -> NewRoomMessage {
    NewRoomMessage {
        room: RoomName::parse("faults").expect("room"),
        user_id: UserId::parse("alice").expect("user"),
        username: "alice".into(),
        content: Content::parse(content).expect("content"),
        client_msg_id: Some(ClientMsgId::parse(id).expect("id")),
    }
}

/// Through a proxy, on a fresh database.
async fn proxied(server: &str) -> (TestDb, Proxy, PostgresStore) {
    let db = TestDb::create(server).await;
    let proxy = Proxy::start(support::server_address(server)).await;
    let url = support::with_address(&db.url, proxy.addr);
    let store = PostgresStore::open(support::config(&url))
        .await
        .expect("open through the proxy");
    (db, proxy, store)
}

/// Appends, timing the answer.
async fn timed_append(store: &PostgresStore, content: &str, id: &str) -> Result<Seq, StoreError> {
    let started = Instant::now();
    let result = store.append_room(message(content, id)).await;
    let took = started.elapsed();
    assert!(
        took <= TIMEOUT + SLACK,
        "the append took {took:?}, beyond the store timeout"
    );
    result.map(|appended| appended.message.seq)
}

/// Once traffic passes again, the store works without being reopened: the first
/// attempts may still meet connections broken by the fault (each discarded as it
/// fails), so a few are allowed.
async fn recovers(store: &PostgresStore, content: &str, id: &str) -> Seq {
    for _ in 0..10 {
        match store.append_room(message(content, id)).await {
            Ok(appended) => return appended.message.seq,
            Err(error) => {
                eprintln!("not yet recovered: {}", error.chain());
                // A retry's backoff: each attempt is the check itself (no signal says
                // when the pool's broken connections are all discarded).
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("the store did not recover after the proxy passed traffic again");
}

async fn history(store: &PostgresStore) -> Vec<(u64, String)> {
    let page = store
        .room_page(
            &RoomName::parse("faults").expect("room"),
            PageRange::After {
                seq: Seq(0),
                limit: 1000,
            },
        )
        .await
        .expect("page");
    page.messages
        .iter()
        .map(|m| {
            (
                m.seq.0,
                m.client_msg_id
                    .as_ref()
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_database_is_unavailable_and_the_store_recovers_by_itself() {
    let Some(server) = support::server_url("a_cut_database") else {
        return;
    };
    let (_db, proxy, store) = proxied(&server).await;
    assert_eq!(
        timed_append(&store, "before", "c1").await.expect("append"),
        Seq(1)
    );

    proxy.set(Mode::Cut);
    for n in 0..3 {
        let error = timed_append(&store, "during", &format!("cut{n}"))
            .await
            .expect_err("no acknowledgement while the database is cut off");
        // A refused connection carried no statement: certainly not stored.
        assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
        // The database's own text stays in the source, for the log.
        assert!(!error.to_string().contains("chat_messages"), "{error}");
    }
    let started = Instant::now();
    let read = store
        .room_page(
            &RoomName::parse("faults").expect("room"),
            PageRange::Latest { limit: 10 },
        )
        .await;
    assert!(
        matches!(read, Err(StoreError::Unavailable { .. })),
        "{read:?}"
    );
    assert!(started.elapsed() <= TIMEOUT + SLACK);

    proxy.set(Mode::Pass);
    let seq = recovers(&store, "after", "c2").await;
    // Nothing sent during the cut can have been stored: a refused connection never
    // carried a statement, let alone a COMMIT.
    assert_eq!(seq, Seq(2));
    assert_eq!(
        history(&store).await,
        vec![(1, "c1".to_owned()), (2, "c2".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_times_out_and_a_resend_is_stored_exactly_once() {
    let Some(server) = support::server_url("a_stalled_database") else {
        return;
    };
    let (_db, proxy, store) = proxied(&server).await;
    assert_eq!(
        timed_append(&store, "before", "s0").await.expect("append"),
        Seq(1)
    );

    proxy.set(Mode::Stall);
    let error = timed_append(&store, "stalled", "s1")
        .await
        .expect_err("no acknowledgement while the database does not answer");
    assert!(
        matches!(
            error,
            StoreError::Unavailable { .. } | StoreError::Indeterminate { .. }
        ),
        "{error:?}"
    );
    let started = Instant::now();
    let read = store
        .room_page(
            &RoomName::parse("faults").expect("room"),
            PageRange::Latest { limit: 10 },
        )
        .await;
    assert!(
        matches!(read, Err(StoreError::Unavailable { .. })),
        "{read:?}"
    );
    assert!(started.elapsed() <= TIMEOUT + SLACK);

    // Traffic flows again, including whatever the proxy held: the stalled append may
    // land now or never. The client's resend with the same clientMsgId settles it.
    proxy.set(Mode::Pass);
    let seq = recovers(&store, "stalled", "s1").await;
    assert_eq!(seq, Seq(2), "stored once, right after the first message");
    let resend = store
        .append_room(message("stalled", "s1"))
        .await
        .expect("append");
    assert!(resend.duplicate);
    assert_eq!(
        history(&store).await,
        vec![(1, "s0".to_owned()), (2, "s1".to_owned())]
    );
}
