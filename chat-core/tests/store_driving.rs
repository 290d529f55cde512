//! How the runtime drives the store: at most `store_concurrency` operations at once, the
//! rest waiting in order; a timeout counted from the request (waiting included); a
//! panicking store future failing only its own ticket. The store here is gated by the
//! test, and time is tokio's paused clock.
#![cfg(feature = "runtime")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use chat_core::store::{Appended, Page, PageRange, Store, StoreError};
use chat_core::{
    ChannelTransport, ClientConnection, ClientEvent, Config, ConnectionInfo, Connector, Epoch,
    MessageId, NewDm, NewRoomMessage, RoomName, RuntimeConfig, Seq, SequentialIds, Server,
    ServerHandle, StoredDm, StoredMessage, Timestamp, UserId,
};

/// Content that makes the store panic at its first poll.
const BOOM: &str = "boom now";
/// Content that makes the store panic after it had to wait once.
const BOOM_LATER: &str = "boom later";
/// Content that makes the store never answer.
const HANG: &str = "hang";

/// A store whose appends start by reporting their content, then wait for a permit of
/// `gate` (unless the gate is open), then append. Pages are answered at once.
struct GatedStore {
    started: mpsc::UnboundedSender<String>,
    gate: Option<Arc<Semaphore>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    rooms: Mutex<HashMap<RoomName, Vec<Arc<StoredMessage>>>>,
}

/// Decrements the running count however the append ends (a timeout drops it).
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for GatedStore {
    async fn append_room(&self, m: NewRoomMessage) -> Result<Appended<StoredMessage>, StoreError> {
        let content = m.content.as_str().to_owned();
        let _ = self.started.send(content.clone());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = Running(&self.running);
        self.most_running.fetch_max(now, Ordering::SeqCst);
        assert!(content != BOOM, "the store panics on purpose");
        if content == BOOM_LATER {
            tokio::task::yield_now().await;
            panic!("the store panics on purpose, later");
        }
        if content == HANG {
            std::future::pending::<()>().await;
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        let mut rooms = self.rooms.lock().expect("store lock");
        let log = rooms.entry(m.room.clone()).or_default();
        let seq = log.len() as u64 + 1;
        let message = Arc::new(StoredMessage {
            id: MessageId(uuid::Uuid::from_u128(u128::from(seq))),
            room: m.room,
            seq: Seq(seq),
            user_id: m.user_id,
            username: m.username,
            content: m.content,
            timestamp: Timestamp(seq),
            client_msg_id: m.client_msg_id,
        });
        log.push(Arc::clone(&message));
        Ok(Appended {
            message,
            duplicate: false,
            epoch: Epoch::new("test"),
        })
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let rooms = self.rooms.lock().expect("store lock");
        let log = rooms.get(room).map_or(&[][..], Vec::as_slice);
        let last = log.len();
        let (from, to) = match range {
            PageRange::Latest { limit } => (last.saturating_sub(limit), last),
            PageRange::Before { seq, limit } => {
                let to = (seq.0.saturating_sub(1) as usize).min(last);
                (to.saturating_sub(limit), to)
            }
            PageRange::After { seq, limit } => {
                let from = (seq.0 as usize).min(last);
                (from, (from + limit).min(last))
            }
        };
        Ok(Page {
            epoch: Epoch::new("test"),
            last_seq: Seq(last as u64),
            messages: log[from..to].to_vec(),
            has_more: from > 0 || to < last,
        })
    }

    async fn append_dm(&self, _: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        Err(StoreError::rejected("no DMs in this test store"))
    }

    async fn dm_page(
        &self,
        _: &UserId,
        _: &UserId,
        _: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        Err(StoreError::rejected("no DMs in this test store"))
    }
}

/// Bounds every wait in simulated time, so a bug fails instead of hanging.
const WAIT: Duration = Duration::from_secs(600);

struct Setup {
    _connector: Connector,
    handle: ServerHandle,
    store: Arc<GatedStore>,
    started: mpsc::UnboundedReceiver<String>,
    /// Members of one room, their join replies consumed. The engine runs one store
    /// operation per connection at a time, so concurrent appends need several.
    clients: Vec<ClientConnection>,
}

/// A server with `concurrency` store slots, its store gated by `gate`, and `members`
/// clients in one room.
async fn setup(concurrency: usize, gate: Option<Arc<Semaphore>>, members: usize) -> Setup {
    let (tx, started) = mpsc::unbounded_channel();
    let store = Arc::new(GatedStore {
        started: tx,
        gate,
        running: AtomicUsize::new(0),
        most_running: AtomicUsize::new(0),
        rooms: Mutex::default(),
    });
    let runtime = RuntimeConfig::default().with_store_concurrency(concurrency);
    let (transport, connector) = ChannelTransport::new();
    let handle = Server::new(Config::unlimited(), runtime, Arc::clone(&store) as _)
        .with_id_generator(Box::new(SequentialIds::default()))
        .spawn(transport);
    let mut clients = Vec::new();
    for n in 0..members {
        let mut c = connector
            .connect(ConnectionInfo::default())
            .await
            .expect("connection refused");
        expect(&mut c, "connection").await;
        send(
            &mut c,
            json!({"type": "set_username", "username": format!("u{n}")}),
        )
        .await;
        expect(&mut c, "username_set").await;
        send(&mut c, json!({"type": "join_room", "room": "room"})).await;
        for ty in ["room_joined", "message_history", "room_users"] {
            expect(&mut c, ty).await;
        }
        clients.push(c);
    }
    Setup {
        _connector: connector,
        handle,
        store,
        started,
        clients,
    }
}

async fn send(c: &mut ClientConnection, v: Value) {
    c.send_text(v.to_string()).await.expect("send failed");
}

async fn chat(c: &mut ClientConnection, content: &str) {
    send(c, json!({"type": "chat_message", "content": content})).await;
}

/// The next frame of type `ty`, skipping others joining.
async fn expect(c: &mut ClientConnection, ty: &str) -> Value {
    loop {
        let event = tokio::time::timeout(WAIT, c.recv())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection already ended");
        let ClientEvent::Text(text) = event else {
            panic!("closed while {ty} was expected: {event:?}");
        };
        let v: Value = serde_json::from_str(&text).expect("server sent JSON");
        if v["type"] != "user_joined" {
            assert_eq!(v["type"], ty, "{v}");
            return v;
        }
    }
}

/// The next append the store started.
async fn next_start(started: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, started.recv())
        .await
        .expect("no append started")
        .expect("store gone")
}

/// Whether no append starts while the runtime has nothing else to do: with the paused
/// clock, the one simulated second only passes once every task is idle.
async fn nothing_starts(started: &mut mpsc::UnboundedReceiver<String>) -> bool {
    tokio::time::timeout(Duration::from_secs(1), started.recv())
        .await
        .is_err()
}

fn metric(handle: &ServerHandle, line: &str) -> bool {
    handle.metrics().encode_text().lines().any(|l| l == line)
}

/// The test reads tokio's paused clock to see how much simulated time passed.
fn paused_now() -> tokio::time::Instant {
    #[allow(clippy::disallowed_methods)]
    tokio::time::Instant::now()
}

#[tokio::test(start_paused = true)]
async fn store_operations_beyond_the_limit_wait_and_start_in_order() {
    let gate = Arc::new(Semaphore::new(0));
    let mut s = setup(2, Some(Arc::clone(&gate)), 5).await;
    for (n, c) in s.clients.iter_mut().enumerate() {
        chat(c, &format!("m{n}")).await;
    }
    assert_eq!(next_start(&mut s.started).await, "m0");
    assert_eq!(next_start(&mut s.started).await, "m1");
    assert!(nothing_starts(&mut s.started).await, "a third append ran");
    assert!(metric(&s.handle, "chat_store_in_flight 2"));
    assert!(metric(&s.handle, "chat_store_queued 3"));
    // Each finished append lets the oldest waiting one start.
    for n in 2..5 {
        gate.add_permits(1);
        assert_eq!(next_start(&mut s.started).await, format!("m{n}"));
        assert!(nothing_starts(&mut s.started).await);
    }
    gate.add_permits(2);
    // Everybody gets all five, in the order they were stored.
    for c in &mut s.clients {
        for seq in 1..=5u64 {
            let m = expect(c, "message_received").await;
            assert_eq!(m["seq"].as_u64(), Some(seq));
        }
    }
    assert_eq!(s.store.most_running.load(Ordering::SeqCst), 2);
    assert!(nothing_starts(&mut s.started).await);
    assert!(metric(&s.handle, "chat_store_in_flight 0"));
    assert!(metric(&s.handle, "chat_store_queued 0"));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_times_out_from_its_request_without_reaching_the_store() {
    let mut s = setup(1, None, 2).await;
    let limit = RuntimeConfig::default().store_timeout;
    let sent = paused_now();
    chat(&mut s.clients[0], HANG).await;
    chat(&mut s.clients[1], "behind the hang").await;
    assert_eq!(next_start(&mut s.started).await, HANG);
    // Both are answered at their deadline, counted from the request: the waiting one
    // did not get a fresh 10 s once the slot freed. The hung append reached the store, so
    // it may yet commit (`store_timeout`); the waiting one never did (`store_unavailable`).
    assert_eq!(
        expect(&mut s.clients[0], "error").await["code"],
        "store_timeout"
    );
    assert_eq!(
        expect(&mut s.clients[1], "error").await["code"],
        "store_unavailable"
    );
    assert_eq!(paused_now() - sent, limit);
    assert!(
        nothing_starts(&mut s.started).await,
        "the request whose time ran out while waiting reached the store"
    );
    assert!(metric(
        &s.handle,
        "chat_store_failures_total{op=\"append_room\"} 2"
    ));
    // The slot is free again.
    chat(&mut s.clients[1], "fine").await;
    assert_eq!(next_start(&mut s.started).await, "fine");
    for c in &mut s.clients {
        assert_eq!(expect(c, "message_received").await["content"], "fine");
    }
    assert_eq!(
        s.store.running.load(Ordering::SeqCst),
        0,
        "the hung append was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_behind_a_slow_store_is_counted_in_the_metrics() {
    let gate = Arc::new(Semaphore::new(0));
    let mut s = setup(1, Some(Arc::clone(&gate)), 2).await;
    chat(&mut s.clients[0], "first").await;
    chat(&mut s.clients[1], "second").await;
    assert_eq!(next_start(&mut s.started).await, "first");
    assert!(nothing_starts(&mut s.started).await);
    assert!(metric(&s.handle, "chat_store_in_flight 1"));
    assert!(metric(&s.handle, "chat_store_queued 1"));
    gate.add_permits(2);
    assert_eq!(next_start(&mut s.started).await, "second");
    for c in &mut s.clients {
        assert_eq!(expect(c, "message_received").await["content"], "first");
        assert_eq!(expect(c, "message_received").await["content"], "second");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_store_future_fails_its_own_ticket_only() {
    let gate = Arc::new(Semaphore::new(0));
    let mut s = setup(4, Some(Arc::clone(&gate)), 3).await;
    // A slow append is running while two others panic: one at its first poll, one after
    // it had to wait.
    for (c, content) in s.clients.iter_mut().zip(["slow", BOOM, BOOM_LATER]) {
        chat(c, content).await;
    }
    for expected in ["slow", BOOM, BOOM_LATER] {
        assert_eq!(next_start(&mut s.started).await, expected);
    }
    for c in &mut s.clients[1..] {
        assert_eq!(expect(c, "error").await["code"], "store_unavailable");
    }
    assert!(metric(&s.handle, "chat_store_in_flight 1"));
    gate.add_permits(1);
    for c in &mut s.clients {
        let m = expect(c, "message_received").await;
        assert_eq!(
            (m["content"].as_str(), m["seq"].as_u64()),
            (Some("slow"), Some(1))
        );
    }
    assert!(metric(
        &s.handle,
        "chat_store_failures_total{op=\"append_room\"} 2"
    ));
    assert!(metric(&s.handle, "chat_store_in_flight 0"));
    // The server carries on.
    gate.add_permits(1);
    chat(&mut s.clients[1], "after").await;
    assert_eq!(
        expect(&mut s.clients[0], "message_received").await["content"],
        "after"
    );
}
