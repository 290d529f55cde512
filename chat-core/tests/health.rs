//! `Server::health()` end to end: the real engine and runtime over the in-process channel
//! transport, with a store that can be told to fail or to hang. Time is tokio's paused
//! clock, so the store timeout passes in simulated seconds.
#![cfg(feature = "runtime")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use chat_core::store::{Appended, Page, PageRange, Store, StoreError};
use chat_core::{
    ChannelTransport, ClientConnection, ClientEvent, Config, ConnectionInfo, Epoch, HubStatus,
    MessageId, NewDm, NewRoomMessage, RoomName, RuntimeConfig, Seq, Server, StoreStatus, StoredDm,
    StoredMessage, Timestamp, UserId,
};

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// Appends to one counter and never keeps anything; `mode` says whether it answers,
/// fails or hangs.
#[derive(Default)]
struct SwitchStore {
    mode: AtomicU8,
    seq: AtomicU64,
}

#[async_trait]
impl Store for SwitchStore {
    async fn append_room(&self, m: NewRoomMessage) -> Result<Appended<StoredMessage>, StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            FAIL => return Err(StoreError::unavailable("the test says so")),
            HANG => std::future::pending::<()>().await,
            _ => {}
        }
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Appended {
            message: Arc::new(StoredMessage {
                id: MessageId(uuid::Uuid::from_u128(u128::from(seq))),
                room: m.room,
                seq: Seq(seq),
                user_id: m.user_id,
                username: m.username,
                content: m.content,
                timestamp: Timestamp(seq),
                client_msg_id: m.client_msg_id,
            }),
            epoch: Epoch::new("health"),
            duplicate: false,
        })
    }

    async fn room_page(
        &self,
        _: &RoomName,
        _: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        Ok(Page {
            epoch: Epoch::new("health"),
            last_seq: Seq(self.seq.load(Ordering::SeqCst)),
            messages: Vec::new(),
            has_more: false,
        })
    }

    async fn append_dm(&self, _: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        Err(StoreError::rejected("no DMs here"))
    }

    async fn dm_page(
        &self,
        _: &UserId,
        _: &UserId,
        _: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        Err(StoreError::rejected("no DMs here"))
    }
}

const WAIT: Duration = Duration::from_secs(600);

async fn next(conn: &mut ClientConnection) -> Value {
    match tokio::time::timeout(WAIT, conn.recv()).await {
        Ok(Some(ClientEvent::Text(t))) => serde_json::from_str(&t).expect("JSON"),
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// The next frame of type `ty`, skipping presence frames.
async fn expect(conn: &mut ClientConnection, ty: &str) -> Value {
    loop {
        let v = next(conn).await;
        if v["type"] == ty {
            return v;
        }
        assert!(
            ["user_joined", "user_left", "room_users"].contains(&v["type"].as_str().unwrap_or("")),
            "expected {ty}, got {v}"
        );
    }
}

async fn say(conn: &mut ClientConnection, content: &str) {
    let frame = json!({"type": "chat_message", "content": content}).to_string();
    conn.send_text(frame).await.expect("send");
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_hanging_store_degrades_health_and_a_success_heals_it() {
    let store = Arc::new(SwitchStore::default());
    let runtime = RuntimeConfig::default().with_store_timeout(Duration::from_secs(10));
    let server = Server::new(
        Config::unlimited(),
        runtime,
        Arc::clone(&store) as Arc<dyn Store>,
    );
    let health = server.health();
    assert_eq!(health.check().hub, HubStatus::NotStarted);
    assert_eq!(health.check().to_string(), "hub not started");

    let (transport, connector) = ChannelTransport::new();
    let handle = server.spawn(transport);
    let mut c = connector
        .connect(ConnectionInfo::default())
        .await
        .expect("connected");
    expect(&mut c, "connection").await;
    c.send_text(json!({"type": "set_username", "username": "alice"}).to_string())
        .await
        .expect("send");
    expect(&mut c, "username_set").await;
    c.send_text(json!({"type": "join_room", "room": "lobby"}).to_string())
        .await
        .expect("send");
    expect(&mut c, "room_joined").await;
    expect(&mut c, "message_history").await;
    expect(&mut c, "room_users").await;
    assert!(health.check().is_healthy(), "{}", health.check());
    assert_eq!(health.check().to_string(), "ok");

    // One failure is tolerated, the third in a row is not.
    store.mode.store(FAIL, Ordering::SeqCst);
    say(&mut c, "one").await;
    assert_eq!(expect(&mut c, "error").await["code"], "store_unavailable");
    assert!(health.check().is_healthy(), "{}", health.check());
    for text in ["two", "three"] {
        say(&mut c, text).await;
        assert_eq!(expect(&mut c, "error").await["code"], "store_unavailable");
    }
    let report = health.check();
    assert!(
        matches!(
            report.store,
            StoreStatus::Failing {
                consecutive_failures: 3,
                ..
            }
        ),
        "{report:?}"
    );
    assert!(
        report
            .to_string()
            .starts_with("store failing: 3 operations in a row failed"),
        "{report}"
    );
    assert_eq!(report.hub, HubStatus::Running, "the hub itself is fine");

    // A success heals at once.
    store.mode.store(OK, Ordering::SeqCst);
    say(&mut c, "back").await;
    expect(&mut c, "message_received").await;
    assert!(health.check().is_healthy(), "{}", health.check());

    // A hanging store fails by timeout, and is reported the same way.
    store.mode.store(HANG, Ordering::SeqCst);
    // A test may read the simulated clock to see how much of it passed.
    #[allow(clippy::disallowed_methods)]
    let started = tokio::time::Instant::now();
    for text in ["h1", "h2", "h3"] {
        say(&mut c, text).await;
    }
    for _ in 0..3 {
        // An append that timed out may still land: `store_timeout`, not "unavailable".
        assert_eq!(expect(&mut c, "error").await["code"], "store_timeout");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "failed by the timeout"
    );
    assert!(!health.check().is_healthy());
    store.mode.store(OK, Ordering::SeqCst);
    say(&mut c, "healed").await;
    expect(&mut c, "message_received").await;
    assert!(health.check().is_healthy(), "{}", health.check());

    // A stopped server is down.
    handle.shutdown();
    let health = handle.health().clone();
    handle.join().await.expect("clean shutdown");
    assert_eq!(health.check().hub, HubStatus::Stopped);
    assert!(!health.check().is_healthy());
}
