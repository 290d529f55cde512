//! The runtime end to end: the real engine, a small in-memory store, and the in-process
//! channel transport. Time is tokio's paused clock: nothing here waits for real time, and
//! heartbeats and timeouts happen in simulated seconds.
#![cfg(feature = "runtime")]
// On tokio's paused clock a sleep advances simulated time: how these tests let a timer
// fire. The crate's ban on sleeping is about the engine and the runtime.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use chat_core::store::{Appended, Page, PageRange, Store, StoreError};
use chat_core::{
    Admission, Admitted, ChannelOptions, ChannelTransport, ClientConnection, ClientEvent,
    CloseCode, Config, ConnectionInfo, Connector, Epoch, Identity, MessageId, NewDm,
    NewRoomMessage, Rejection, RoomName, RuntimeConfig, Seq, SequentialIds, Server, ServerHandle,
    StoredDm, StoredMessage, Timestamp, UserId, Username,
};

// ---------------------------------------------------------------------------------------
// A minimal store: rooms only, everything in a mutex, ids from a counter.

#[derive(Default)]
struct TestStore {
    rooms: Mutex<HashMap<RoomName, Vec<Arc<StoredMessage>>>>,
}

/// A message with this content makes the store panic (a buggy store).
const BOOM: &str = "make the store panic";

/// A message with this content makes the store hang forever (a sick store).
const HANG: &str = "make the store hang";

#[async_trait]
impl Store for TestStore {
    async fn append_room(&self, m: NewRoomMessage) -> Result<Appended<StoredMessage>, StoreError> {
        assert!(m.content.as_str() != BOOM, "the store panics on purpose");
        if m.content.as_str() == HANG {
            std::future::pending::<()>().await;
        }
        let mut rooms = self.rooms.lock().expect("store lock");
        let log = rooms.entry(m.room.clone()).or_default();
        if let Some(id) = &m.client_msg_id {
            let dup = log
                .iter()
                .find(|s| s.user_id == m.user_id && s.client_msg_id.as_ref() == Some(id));
            if let Some(dup) = dup {
                return Ok(Appended {
                    message: Arc::clone(dup),
                    duplicate: true,
                    epoch: Epoch::new("test"),
                });
            }
        }
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
        // seq n is at index n - 1.
        let (from, to, has_more) = match range {
            PageRange::Latest { limit } => {
                let from = last.saturating_sub(limit);
                (from, last, from > 0)
            }
            PageRange::Before { seq, limit } => {
                let to = (seq.0.saturating_sub(1) as usize).min(last);
                let from = to.saturating_sub(limit);
                (from, to, from > 0)
            }
            PageRange::After { seq, limit } => {
                let from = (seq.0 as usize).min(last);
                let to = (from + limit).min(last);
                (from, to, to < last)
            }
        };
        Ok(Page {
            epoch: Epoch::new("test"),
            last_seq: Seq(last as u64),
            messages: log[from..to].to_vec(),
            has_more,
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

// ---------------------------------------------------------------------------------------
// Harness: a server on a channel transport, and JSON clients.

/// Every wait in these tests is bounded in (simulated) time, so a bug fails instead of
/// hanging. Heartbeats are 30 s, so this stays well above the tests' own timelines.
const WAIT: Duration = Duration::from_secs(600);

struct TestServer {
    connector: Connector,
    handle: ServerHandle,
}

fn server_with(
    engine: Config,
    runtime: RuntimeConfig,
    options: ChannelOptions,
    admission: Option<Arc<dyn Admission>>,
) -> TestServer {
    let (transport, connector) = ChannelTransport::with_options(options);
    let mut server = Server::new(engine, runtime, Arc::new(TestStore::default()))
        .with_id_generator(Box::new(SequentialIds::default()));
    if let Some(admission) = admission {
        server = server.with_admission(admission);
    }
    TestServer {
        connector,
        handle: server.spawn(transport),
    }
}

fn server() -> TestServer {
    server_with(
        Config::unlimited(),
        RuntimeConfig::default(),
        ChannelOptions::default(),
        None,
    )
}

struct Client {
    conn: ClientConnection,
    id: String,
}

impl TestServer {
    async fn connect(&self) -> Client {
        let conn = self
            .connector
            .connect(ConnectionInfo::default())
            .await
            .expect("connection refused");
        let mut client = Client {
            conn,
            id: String::new(),
        };
        let hello = client.expect("connection").await;
        client.id = hello["clientId"].as_str().expect("clientId").to_owned();
        client
    }

    /// A client with a name, in `room`, its join replies consumed.
    async fn member(&self, name: &str, room: &str) -> Client {
        let mut c = self.connect().await;
        c.send(json!({"type": "set_username", "username": name}))
            .await;
        c.expect("username_set").await;
        c.send(json!({"type": "join_room", "room": room})).await;
        c.expect("room_joined").await;
        c.expect("message_history").await;
        c.expect("room_users").await;
        c
    }
}

impl Client {
    async fn send(&mut self, v: Value) {
        self.conn
            .send_text(v.to_string())
            .await
            .expect("send failed");
    }

    async fn event(&mut self) -> ClientEvent {
        tokio::time::timeout(WAIT, self.conn.recv())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection already ended")
    }

    async fn next(&mut self) -> Value {
        match self.event().await {
            ClientEvent::Text(t) => serde_json::from_str(&t).expect("server sent JSON"),
            ClientEvent::Closed { code, reason } => {
                panic!("closed ({code} {reason:?}) while a frame was expected")
            }
        }
    }

    /// The next frame of type `ty`, skipping presence noise (`user_joined`, `user_left`,
    /// typing indicators).
    async fn expect(&mut self, ty: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == ty {
                return v;
            }
            let noise = ["user_joined", "user_left", "typing_indicator"];
            assert!(
                noise.contains(&v["type"].as_str().unwrap_or("")),
                "expected {ty}, got {v}"
            );
        }
    }

    /// Waits for `user_joined` of `name`, skipping other presence frames.
    async fn saw_join_of(&mut self, name: &str) {
        while self.expect("user_joined").await["username"] != name {}
    }

    /// Skips text frames until the close; returns it and how many frames were skipped.
    async fn closed(&mut self) -> (CloseCode, String, usize) {
        let mut skipped = 0;
        loop {
            match self.event().await {
                ClientEvent::Text(_) => skipped += 1,
                ClientEvent::Closed { code, reason } => return (code, reason, skipped),
            }
        }
    }
}

/// The test's view of tokio's paused clock, to check how much simulated time passed.
fn paused_clock() -> tokio::time::Instant {
    // Reading the clock is the runtime's business; a test may read the simulated one.
    #[allow(clippy::disallowed_methods)]
    tokio::time::Instant::now()
}

fn chat(content: &str) -> Value {
    json!({"type": "chat_message", "content": content})
}

// ---------------------------------------------------------------------------------------
// Delivery

#[tokio::test(start_paused = true)]
async fn fifty_clients_get_every_message_exactly_once_in_seq_order() {
    fifty_clients_chat().await;
}

/// The same on real threads: the hub, connection and store tasks race for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_on_a_multi_thread_runtime() {
    fifty_clients_chat().await;
}

async fn fifty_clients_chat() {
    const CLIENTS: usize = 50;
    const EACH: usize = 4;
    let s = server();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(s.member(&format!("user{i}"), "lobby").await);
    }
    // Everyone talks at once; nobody reads yet (queues hold 1024 frames, plenty here).
    for round in 0..EACH {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(chat(&format!("{i}/{round}"))).await;
        }
    }
    let total = CLIENTS * EACH;
    for (i, c) in clients.iter_mut().enumerate() {
        let mut seqs = Vec::with_capacity(total);
        let mut mine = 0;
        while seqs.len() < total {
            let m = c.expect("message_received").await;
            seqs.push(m["seq"].as_u64().expect("seq"));
            if m["userId"] == c.id.as_str() {
                // A connection's own messages are stored in the order it sent them.
                assert_eq!(m["content"], format!("{i}/{mine}"));
                mine += 1;
            }
        }
        let want: Vec<u64> = (1..=total as u64).collect();
        assert_eq!(seqs, want, "client {i}: every seq once, in order");
        assert_eq!(mine, EACH);
    }
    assert_eq!(s.handle.metrics().connections(), CLIENTS as i64);
    s.handle.shutdown();
    s.handle.join().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_binary_frame_gets_binary_unsupported_and_the_connection_stays_usable() {
    let s = server();
    let mut c = s.connect().await;
    c.conn.send_binary(12).await.unwrap();
    let e = c.expect("error").await;
    assert_eq!(e["code"], "binary_unsupported");
    c.send(json!({"type": "set_username", "username": "alice"}))
        .await;
    assert_eq!(c.expect("username_set").await["username"], "alice");
}

#[tokio::test(start_paused = true)]
async fn an_oversized_frame_closes_with_1009() {
    let s = server();
    let mut c = s.connect().await;
    let big = format!(
        r#"{{"type":"chat_message","content":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    c.conn.send_text(big).await.unwrap();
    let (code, reason, _) = c.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::TOO_BIG, "message too big")
    );
}

#[tokio::test(start_paused = true)]
async fn an_engine_close_flushes_queued_errors_first() {
    // The default refusal budget (30 refused requests, then 1 per second) ends in 1008.
    let s = server_with(
        Config::default(),
        RuntimeConfig::default(),
        ChannelOptions::default(),
        None,
    );
    let mut c = s.connect().await;
    for _ in 0..40 {
        if c.conn.send_text("not json").await.is_err() {
            break;
        }
    }
    let mut errors = 0;
    let end = loop {
        match c.event().await {
            ClientEvent::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["code"], "invalid_json");
                errors += 1;
            }
            ClientEvent::Closed { code, reason } => break (code, reason),
        }
    };
    assert_eq!(end.0, CloseCode::POLICY);
    assert!(
        errors >= 30,
        "the errors before the close are delivered ({errors})"
    );
    assert_eq!(s.handle.metrics().closes(CloseCode::POLICY), 1);
}

#[tokio::test(start_paused = true)]
async fn engine_timers_run_on_the_runtime_clock() {
    let s = server();
    let mut typist = s.member("typist", "room").await;
    let mut watcher = s.member("watcher", "room").await;
    typist.saw_join_of("watcher").await;
    typist.send(json!({"type": "typing_start"})).await;
    assert_eq!(watcher.next().await["isTyping"], true);
    let started = paused_clock();
    // Nobody does anything: the engine's 5 s typing timeout stops the indicator.
    assert_eq!(watcher.next().await["isTyping"], false);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_store_is_a_store_failure_not_a_stuck_connection() {
    let s = server();
    let mut c = s.member("alice", "room").await;
    c.send(chat(BOOM)).await;
    assert_eq!(c.expect("error").await["code"], "store_unavailable");
    c.send(chat("fine")).await;
    assert_eq!(c.expect("message_received").await["content"], "fine");
    let text = s.handle.metrics().encode_text();
    assert!(
        text.contains("chat_store_failures_total{op=\"append_room\"} 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_that_never_answers_times_out_and_the_connection_stays_usable() {
    let s = server();
    let mut c = s.member("alice", "room").await;
    #[allow(clippy::disallowed_methods)] // the test measures the runtime's paused clock
    let sent = tokio::time::Instant::now();
    c.send(chat(HANG)).await;
    let error = c.expect("error").await;
    // A timeout is not a failure: the append may still land, so the client is told so
    // and may resend with the same clientMsgId.
    assert_eq!(error["code"], "store_timeout");
    assert_eq!(
        error["message"],
        "may or may not be stored; resend with the same clientMsgId"
    );
    let waited = sent.elapsed();
    let limit = RuntimeConfig::default().store_timeout;
    assert!(
        waited >= limit && waited < limit * 2,
        "answered after {waited:?}"
    );
    c.send(chat("fine")).await;
    assert_eq!(c.expect("message_received").await["content"], "fine");
}

// ---------------------------------------------------------------------------------------
// Slow readers

/// Queues small enough to overflow quickly; a client channel of 8 frames.
fn small_queues() -> (RuntimeConfig, ChannelOptions) {
    let runtime = RuntimeConfig::default()
        .with_outbound_frames(32)
        .with_write_batch(8);
    let options = ChannelOptions::default().with_capacity(8);
    (runtime, options)
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_closed_with_1013_while_the_others_keep_receiving() {
    let (runtime, options) = small_queues();
    let s = server_with(Config::unlimited(), runtime, options, None);
    let mut talker = s.member("talker", "busy").await;
    let mut fast = s.member("fast", "busy").await;
    // The slow reader joins, then never reads again.
    let mut slow = s.connect().await;
    slow.send(json!({"type": "set_username", "username": "slow"}))
        .await;
    slow.send(json!({"type": "join_room", "room": "busy"}))
        .await;
    talker.saw_join_of("slow").await;
    fast.saw_join_of("slow").await;

    // Lockstep: each message is read by the readers before the next is sent, so only
    // the slow reader's queue grows.
    const MESSAGES: u64 = 100;
    // The others see the slow reader leave as soon as its close is decided, in the
    // middle of the stream, not when its writer gives up.
    let mut leaves = 0;
    for n in 1..=MESSAGES {
        talker.send(chat(&format!("m{n}"))).await;
        for c in [&mut talker, &mut fast] {
            loop {
                let frame = c.next().await;
                if frame["type"] == "user_left" {
                    assert_eq!(frame["username"], "slow");
                    leaves += 1;
                    continue;
                }
                assert_eq!(frame["type"], "message_received");
                assert_eq!(frame["seq"], n);
                break;
            }
        }
    }
    assert_eq!(
        leaves, 2,
        "talker and fast each saw the slow reader leave once"
    );
    // Only the slow reader was closed, and only once.
    let metrics = s.handle.metrics();
    assert_eq!(metrics.closes(CloseCode::TRY_AGAIN_LATER), 1);
    let (code, reason, received) = slow.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::TRY_AGAIN_LATER, "slow reader")
    );
    // What reaches it is bounded by its channel (8) plus the writer's batch in flight (8):
    // the frames queued behind them were discarded, not kept.
    assert!(received <= 16, "slow reader received {received} frames");
    // The others carry on.
    talker.send(chat("still here")).await;
    assert_eq!(
        fast.expect("message_received").await["content"],
        "still here"
    );
    assert_eq!(metrics.connections(), 2);
}

/// The global outbound budget: two readers that stop reading each stay under their own
/// queue's bounds, but together pass the server-wide budget; each is closed with 1013
/// "server busy" once it holds the most, while the readers that keep up (their queues
/// near empty) receive every message and are never closed.
#[tokio::test(start_paused = true)]
async fn past_the_global_outbound_budget_the_largest_holders_are_closed() {
    let runtime = RuntimeConfig::default()
        .with_outbound_global_bytes(150_000)
        .with_write_batch(8);
    let options = ChannelOptions::default().with_capacity(8);
    let s = server_with(Config::unlimited(), runtime, options, None);
    let mut talker = s.member("talker", "busy").await;
    let mut fast = s.member("fast", "busy").await;
    let mut slow = Vec::new();
    for name in ["slow-1", "slow-2"] {
        let mut c = s.connect().await;
        c.send(json!({"type": "set_username", "username": name}))
            .await;
        c.send(json!({"type": "join_room", "room": "busy"})).await;
        talker.saw_join_of(name).await;
        fast.saw_join_of(name).await;
        slow.push(c);
    }
    // ~1.1 KB per message: 300 of them are ~330 KB per slow reader, far under its own
    // 4 MiB queue bound, well over the 150 KB the server allows for everyone.
    let body = "x".repeat(1000);
    let mut leaves = 0;
    for n in 1..=300u64 {
        talker.send(chat(&body)).await;
        for c in [&mut talker, &mut fast] {
            loop {
                let frame = c.next().await;
                if frame["type"] == "user_left" {
                    leaves += 1;
                    continue;
                }
                assert_eq!(frame["seq"], n, "{frame}");
                break;
            }
        }
    }
    assert_eq!(
        leaves, 4,
        "talker and fast each saw both slow readers leave"
    );
    let metrics = s.handle.metrics();
    assert_eq!(metrics.closes(CloseCode::TRY_AGAIN_LATER), 2);
    for mut c in slow {
        let (code, reason, received) = c.closed().await;
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::TRY_AGAIN_LATER, "server busy")
        );
        assert!(received < 300, "{received} frames reached a shed reader");
    }
    assert_eq!(metrics.connections(), 2);
}

#[tokio::test(start_paused = true)]
async fn typing_frames_are_dropped_before_a_slow_reader_is_closed() {
    let (runtime, options) = small_queues();
    let s = server_with(Config::unlimited(), runtime, options, None);
    let mut typist = s.member("typist", "room").await;
    let mut watcher = s.member("watcher", "room").await;
    let mut slow = s.connect().await;
    slow.send(json!({"type": "set_username", "username": "slow"}))
        .await;
    slow.send(json!({"type": "join_room", "room": "room"}))
        .await;
    watcher.saw_join_of("slow").await;
    typist.saw_join_of("slow").await;

    // 100 typing indicators: more than the slow reader's channel and queue hold.
    for n in 0..100 {
        let ty = if n % 2 == 0 {
            "typing_start"
        } else {
            "typing_stop"
        };
        typist.send(json!({"type": ty})).await;
        let t = watcher.next().await;
        assert_eq!(t["type"], "typing_indicator");
        assert_eq!(t["isTyping"], n % 2 == 0);
    }
    let metrics = s.handle.metrics();
    let dropped = metrics.slow_reader_drops();
    assert!(dropped > 0, "typing frames were dropped");
    assert_eq!(
        metrics.closes(CloseCode::TRY_AGAIN_LATER),
        0,
        "dropping typing frames is enough: nobody is closed yet"
    );

    // A message must be delivered: it evicts the queued typing frames…
    typist.send(chat("first")).await;
    assert_eq!(typist.expect("message_received").await["seq"], 1);
    assert_eq!(watcher.expect("message_received").await["seq"], 1);
    assert!(
        metrics.slow_reader_drops() > dropped,
        "queued typing frames evicted"
    );
    assert_eq!(metrics.closes(CloseCode::TRY_AGAIN_LATER), 0);
    // …and only messages that do not fit close the connection.
    for n in 2..=60 {
        typist.send(chat(&format!("m{n}"))).await;
        assert_eq!(typist.expect("message_received").await["seq"], n);
        assert_eq!(watcher.expect("message_received").await["seq"], n);
    }
    assert_eq!(metrics.closes(CloseCode::TRY_AGAIN_LATER), 1);
    let (code, _, _) = slow.closed().await;
    assert_eq!(code, CloseCode::TRY_AGAIN_LATER);
    let text = metrics.encode_text();
    assert!(text.contains("chat_slow_reader_drops_total"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Heartbeat

#[tokio::test(start_paused = true)]
async fn heartbeat_terminates_a_client_that_stops_answering() {
    let s = server();
    let mut alive = s.member("alive", "room").await;
    let mut dead = s.member("dead", "room").await;
    alive.expect("user_joined").await;
    dead.conn.set_auto_pong(false);

    let started = paused_clock();
    let (code, reason, _) = dead.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::GOING_AWAY, "heartbeat timeout")
    );
    // Pinged at 30 s, found silent at the next ping, 60 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(60) && took < Duration::from_secs(61),
        "{took:?}"
    );
    // The user left its rooms; the live client is untouched.
    assert_eq!(alive.expect("user_left").await["username"], "dead");
    tokio::time::sleep(Duration::from_secs(300)).await;
    alive.send(chat("still alive")).await;
    assert_eq!(
        alive.expect("message_received").await["content"],
        "still alive"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_keeps_sending_is_alive_even_without_pongs() {
    let s = server();
    let mut c = s.member("chatty", "room").await;
    c.conn.set_auto_pong(false);
    for n in 1..=10 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        c.send(chat(&format!("m{n}"))).await;
        assert_eq!(c.expect("message_received").await["seq"], n);
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_off_when_the_transport_has_no_ping() {
    let options = ChannelOptions::default().with_ping(false);
    let s = server_with(Config::unlimited(), RuntimeConfig::default(), options, None);
    let mut c = s.member("quiet", "room").await;
    c.conn.set_auto_pong(false);
    tokio::time::sleep(Duration::from_secs(600)).await;
    c.send(chat("hello")).await;
    assert_eq!(c.expect("message_received").await["content"], "hello");
}

// ---------------------------------------------------------------------------------------
// Admission and limits

/// `alice-token` is Alice; `brief-token` is Bob for one minute; anything else is refused;
/// no token is anonymous. Counts admissions and releases.
#[derive(Default)]
struct TokenAdmission {
    admitted: std::sync::atomic::AtomicUsize,
    released: std::sync::atomic::AtomicUsize,
}

const BRIEF: Duration = Duration::from_secs(60);

#[async_trait]
impl Admission for TokenAdmission {
    async fn admit(&self, info: &ConnectionInfo) -> Result<Admitted, Rejection> {
        // An admission that does I/O (a session lookup): `slow-N` answers after N seconds.
        if let Some(secs) = info
            .query_param("token")
            .and_then(|t| t.strip_prefix("slow-")?.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            self.admitted
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Ok(Admitted::anonymous());
        }
        let user = |id: &str, name: &str| Identity {
            user_id: UserId::parse(id).expect("valid id"),
            username: Username::parse(name).expect("valid name"),
        };
        let admitted = match info.query_param("token").as_deref() {
            Some("alice-token") => Admitted::user(user("alice-id", "Alice")),
            Some("brief-token") => Admitted::user(user("bob-id", "Bob")).expiring_in(BRIEF),
            Some(_) => return Err(Rejection::Unauthorized("bad token".into())),
            None => Admitted::anonymous(),
        };
        self.admitted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(admitted)
    }

    fn release(&self, _info: &ConnectionInfo) {
        self.released
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn with_token(token: &str) -> ConnectionInfo {
    ConnectionInfo {
        query: Some(format!("token={token}")),
        ..ConnectionInfo::default()
    }
}

#[tokio::test(start_paused = true)]
async fn admission_rejects_or_names_the_connection() {
    let s = server_with(
        Config::unlimited(),
        RuntimeConfig::default(),
        ChannelOptions::default(),
        Some(Arc::new(TokenAdmission::default())),
    );
    let refused = s.connector.connect(with_token("forged")).await;
    assert_eq!(refused.unwrap_err().status(), 401);

    let conn = s
        .connector
        .connect(with_token("alice-token"))
        .await
        .unwrap();
    let mut alice = Client {
        conn,
        id: String::new(),
    };
    assert_eq!(alice.expect("connection").await["clientId"], "alice-id");
    assert_eq!(alice.expect("username_set").await["username"], "Alice");
    assert!(
        s.handle
            .metrics()
            .encode_text()
            .contains("chat_handshakes_rejected_total{status=\"401\"} 1")
    );
}

#[tokio::test(start_paused = true)]
async fn an_expiring_admission_is_closed_with_4001_at_its_deadline() {
    let s = server_with(
        Config::unlimited(),
        RuntimeConfig::default(),
        ChannelOptions::default(),
        Some(Arc::new(TokenAdmission::default())),
    );
    let start = paused_clock();
    let conn = s
        .connector
        .connect(with_token("brief-token"))
        .await
        .unwrap();
    let mut bob = Client {
        conn,
        id: String::new(),
    };
    bob.expect("connection").await;
    bob.expect("username_set").await;
    bob.send(json!({"type": "join_room", "room": "r"})).await;
    bob.expect("room_joined").await;
    bob.expect("message_history").await;
    bob.expect("room_users").await;
    let mut alice = s.member("alice", "r").await;
    bob.saw_join_of("alice").await;

    // Still valid just before the deadline: the session works normally.
    tokio::time::sleep_until(start + BRIEF - Duration::from_secs(1)).await;
    bob.send(chat("in time")).await;
    assert_eq!(bob.expect("message_received").await["content"], "in time");
    assert_eq!(alice.expect("message_received").await["content"], "in time");

    let (code, reason, _) = bob.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::TOKEN_EXPIRED, "token expired")
    );
    let took = paused_clock() - start;
    assert!(
        took >= BRIEF && took < BRIEF + Duration::from_secs(1),
        "closed after {took:?}, expected at {BRIEF:?}"
    );
    // The engine saw the connection go: presence follows.
    assert_eq!(alice.expect("user_left").await["username"], "Bob");
    assert_eq!(s.handle.metrics().closes(CloseCode::TOKEN_EXPIRED), 1);
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_expiry_outlives_an_expiring_one() {
    let s = server_with(
        Config::unlimited(),
        RuntimeConfig::default(),
        ChannelOptions::default(),
        Some(Arc::new(TokenAdmission::default())),
    );
    let conn = s
        .connector
        .connect(with_token("alice-token"))
        .await
        .unwrap();
    let mut alice = Client {
        conn,
        id: String::new(),
    };
    alice.expect("connection").await;
    alice.expect("username_set").await;
    tokio::time::sleep(BRIEF * 10).await;
    alice.send(json!({"type": "join_room", "room": "r"})).await;
    alice.expect("room_joined").await;
}

#[tokio::test(start_paused = true)]
async fn every_admitted_connection_is_released_exactly_once() {
    let admission = Arc::new(TokenAdmission::default());
    let s = server_with(
        Config::unlimited(),
        RuntimeConfig::default(),
        ChannelOptions::default(),
        Some(Arc::clone(&admission) as Arc<dyn Admission>),
    );
    // Refused: neither admitted nor released.
    assert!(s.connector.connect(with_token("forged")).await.is_err());
    // Closed by the client, and closed by expiry.
    let quitter = s.connect().await;
    let conn = s
        .connector
        .connect(with_token("brief-token"))
        .await
        .unwrap();
    let mut brief = Client {
        conn,
        id: String::new(),
    };
    drop(quitter);
    brief.closed().await;
    let counts = || {
        (
            admission.admitted.load(std::sync::atomic::Ordering::SeqCst),
            admission.released.load(std::sync::atomic::Ordering::SeqCst),
        )
    };
    let mut waited = Duration::ZERO;
    while counts() != (2, 2) {
        assert!(waited < WAIT, "admitted/released: {:?}", counts());
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_admission_is_awaited_within_the_handshake_timeout_and_refused_503_past_it() {
    let admission = Arc::new(TokenAdmission::default());
    let runtime = RuntimeConfig::default().with_handshake_timeout(Duration::from_secs(5));
    let s = server_with(
        Config::unlimited(),
        runtime,
        ChannelOptions::default(),
        Some(Arc::clone(&admission) as Arc<dyn Admission>),
    );
    let counts = || {
        (
            admission.admitted.load(std::sync::atomic::Ordering::SeqCst),
            admission.released.load(std::sync::atomic::Ordering::SeqCst),
        )
    };
    // Four seconds of I/O at the handshake: admitted.
    let start = paused_clock();
    let conn = s.connector.connect(with_token("slow-4")).await.unwrap();
    assert_eq!(paused_clock() - start, Duration::from_secs(4));
    let mut client = Client {
        conn,
        id: String::new(),
    };
    assert!(client.expect("connection").await["clientId"].is_string());
    assert_eq!(counts(), (1, 0));
    // Past the handshake timeout: 503 when it runs out, and never released (it was
    // never admitted).
    let start = paused_clock();
    let refused = s.connector.connect(with_token("slow-60")).await;
    assert_eq!(paused_clock() - start, Duration::from_secs(5));
    let refused = refused.unwrap_err();
    assert_eq!(
        (refused.status(), refused.reason()),
        (503, "admission timed out")
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        counts(),
        (1, 0),
        "the timed-out admission was dropped, not completed"
    );
    drop(client);
    let mut waited = Duration::ZERO;
    while counts() != (1, 1) {
        assert!(waited < WAIT, "admitted/released: {:?}", counts());
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    assert!(
        s.handle
            .metrics()
            .encode_text()
            .contains("chat_handshakes_rejected_total{status=\"503\"} 1")
    );
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_limit_are_refused_with_503() {
    let runtime = RuntimeConfig::default().with_max_connections(2);
    let s = server_with(
        Config::unlimited(),
        runtime,
        ChannelOptions::default(),
        None,
    );
    let a = s.connect().await;
    let _b = s.connect().await;
    let refused = s.connector.connect(ConnectionInfo::default()).await;
    assert_eq!(refused.unwrap_err().status(), 503);
    // A freed place can be taken again.
    drop(a);
    let mut tries = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if s.connector.connect(ConnectionInfo::default()).await.is_ok() {
            break;
        }
        tries += 1;
        assert!(
            tries < 100,
            "the place of a closed connection was never freed"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Shutdown

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_then_closes_everyone_with_1001_and_run_returns() {
    let (transport, connector) = ChannelTransport::new();
    let server = Server::new(
        Config::unlimited(),
        RuntimeConfig::default(),
        Arc::new(TestStore::default()),
    );
    let metrics = server.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = server.run(transport, async {
        let _ = stopped.await;
    });
    let clients = async {
        let mut clients = Vec::new();
        for i in 0..3 {
            let conn = connector.connect(ConnectionInfo::default()).await.unwrap();
            let mut c = Client {
                conn,
                id: String::new(),
            };
            c.send(json!({"type": "set_username", "username": format!("u{i}")}))
                .await;
            clients.push(c);
        }
        // Make sure the hub has handled every command before stopping it.
        while metrics.connections() < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.send(()).unwrap();
        for c in &mut clients {
            // What was queued before the shutdown is delivered first.
            assert_eq!(c.next().await["type"], "connection");
            assert_eq!(c.next().await["type"], "username_set");
            let (code, reason, skipped) = c.closed().await;
            assert_eq!(
                (code, reason.as_str(), skipped),
                (CloseCode::GOING_AWAY, "server shutting down", 0)
            );
        }
        // New connections are refused once the server has stopped.
        assert!(connector.connect(ConnectionInfo::default()).await.is_err());
    };
    let (result, ()) = tokio::join!(run, clients);
    result.unwrap();
    assert_eq!(metrics.closes(CloseCode::GOING_AWAY), 3);
    assert_eq!(metrics.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_forever_for_a_client_that_never_reads() {
    let runtime = RuntimeConfig::default().with_shutdown_grace(Duration::from_secs(5));
    let options = ChannelOptions::default().with_capacity(1);
    let s = server_with(Config::unlimited(), runtime, options, None);
    let mut talker = s.member("talker", "room").await;
    let stuck = s.connect().await; // never reads: its writer blocks on a full channel
    let mut stuck_conn = stuck.conn;
    stuck_conn
        .send_text(json!({"type": "set_username", "username": "stuck"}).to_string())
        .await
        .unwrap();
    stuck_conn
        .send_text(json!({"type": "join_room", "room": "room"}).to_string())
        .await
        .unwrap();
    talker.expect("user_joined").await;
    let started = paused_clock();
    s.handle.shutdown();
    s.handle.join().await.expect("clean shutdown");
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn run_returns_when_the_transport_and_every_connection_are_gone() {
    let (transport, connector) = ChannelTransport::new();
    let server = Server::new(
        Config::unlimited(),
        RuntimeConfig::default(),
        Arc::new(TestStore::default()),
    );
    let run = server.run(transport, std::future::pending());
    let clients = async move {
        let mut c = connector.connect(ConnectionInfo::default()).await.unwrap();
        assert!(matches!(c.recv().await, Some(ClientEvent::Text(_))));
        drop(connector); // the transport stops accepting
        c.close().await; // and the last connection ends
    };
    let (result, ()) = tokio::time::timeout(WAIT, async { tokio::join!(run, clients) })
        .await
        .expect("run did not return");
    result.unwrap();
}

#[tokio::test(start_paused = true)]
async fn metrics_describe_the_server() {
    let s = server();
    let mut a = s.member("alice", "lobby").await;
    let _b = s.member("bob", "lobby").await;
    a.send(chat("hi")).await;
    a.expect("message_received").await;
    let text = s.handle.metrics().encode_text();
    for needle in [
        "chat_connections 2",
        "chat_users 2",
        "chat_rooms 1",
        "chat_messages_in_total{type=\"chat_message\"} 1",
        "chat_messages_in_total{type=\"join_room\"} 2",
        "chat_store_seconds_count{op=\"append_room\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}
