//! Operations over real sockets: `/healthz` reflects the hub and the store, `/metrics`
//! counts every handshake refusal and the new runtime series, and the example server
//! shuts down gracefully on SIGTERM.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_core::store::{Appended, Page, PageRange, Store, StoreError};
use chat_core::{
    Config, NewDm, NewRoomMessage, RoomName, RuntimeConfig, Server, ServerHandle, StoredDm,
    StoredMessage, UserId, async_trait,
};
use chat_memory_store::MemoryStore;
use chat_ws_warp::{HealthSource, HttpServer, MetricsSource, WarpConfig, WarpTransport};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::process::{ServerProcess, http_exchange, metric_in};
use support::{PROMPT, Peer};
use tokio_tungstenite::tungstenite::Message;

/// A `MemoryStore` whose appends fail while `failing` is set.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait]
impl Store for FlakyStore {
    async fn append_room(&self, m: NewRoomMessage) -> Result<Appended<StoredMessage>, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("disk on fire"));
        }
        self.inner.append_room(m).await
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        self.inner.room_page(room, range).await
    }

    async fn append_dm(&self, m: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        self.inner.append_dm(m).await
    }

    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        self.inner.dm_page(a, b, range).await
    }
}

/// A chat server wired like the example server: metrics with the transport's refusals,
/// and health.
async fn start(store: Arc<FlakyStore>) -> (ServerHandle, HttpServer, chat_core::Metrics) {
    let chat = Server::new(
        Config::unlimited(),
        RuntimeConfig::default(),
        store as Arc<dyn Store>,
    );
    let (metrics, refusals, health) = (chat.metrics(), chat.metrics(), chat.health());
    let config = WarpConfig::default()
        .with_metrics(Some(
            MetricsSource::openmetrics(move || metrics.encode_text())
                .counting_rejections(move |status| refusals.handshake_rejected(status)),
        ))
        .with_health(Some(HealthSource::new(move || {
            let report = health.check();
            let text = report.to_string();
            if report.is_healthy() {
                Ok(text)
            } else {
                Err(text)
            }
        })));
    let metrics = chat.metrics();
    let (transport, http) = WarpTransport::bind("127.0.0.1:0", config)
        .await
        .expect("bind 127.0.0.1:0");
    (chat.spawn(transport), http, metrics)
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (response, _) = http_exchange(addr, request.as_bytes()).await;
    let response = response.unwrap_or_else(|| panic!("no response to GET {path}"));
    (response.status, response.body)
}

#[tokio::test]
async fn healthz_is_503_with_the_reason_while_the_store_fails_and_200_again_after_a_success() {
    let store = Arc::new(FlakyStore::default());
    let (chat, http, _) = start(Arc::clone(&store)).await;
    let addr = http.local_addr();
    let mut alice = Peer::member(addr, "alice", "lobby").await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_owned()));

    store.failing.store(true, Ordering::SeqCst);
    for n in 0..3 {
        alice
            .send(json!({"type": "chat_message", "content": format!("m{n}")}))
            .await;
        let error = alice.expect_type("error").await;
        assert_eq!(error["code"], "store_unavailable");
        // The store's own text ("disk on fire") stays in the server's log.
        assert_eq!(
            error["message"],
            "The message store is unavailable; nothing was stored. Try again later"
        );
        if n == 0 {
            // One failure is not an outage.
            assert_eq!(get(addr, "/healthz").await.0, 200);
        }
    }
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("store failing: 3 operations in a row failed"),
        "{body}"
    );

    store.failing.store(false, Ordering::SeqCst);
    alice
        .send(json!({"type": "chat_message", "content": "back"}))
        .await;
    alice.expect_type("message_received").await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_owned()));

    // The chat runtime stopped, the HTTP server still answers: down.
    chat.shutdown();
    assert_eq!(alice.close_code().await, 1001);
    chat.join().await.expect("clean shutdown");
    assert_eq!(get(addr, "/healthz").await, (503, "hub stopped".to_owned()));
    http.shutdown();
}

#[tokio::test]
async fn metrics_count_transport_refusals_bytes_the_hub_and_the_process() {
    let (chat, http, metrics) = start(Arc::default()).await;
    let addr = http.local_addr();
    let mut alice = Peer::member(addr, "alice", "lobby").await;
    alice
        .send(json!({"type": "chat_message", "content": "hello"}))
        .await;
    alice.expect_type("message_received").await;

    // A malformed upgrade: answered 400 by the transport alone.
    let bad_key = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
    );
    let (response, _) = http_exchange(addr, bad_key.as_bytes()).await;
    assert_eq!(response.expect("a response").status, 400);

    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric_in(&text, r#"chat_handshakes_rejected_total{status="400"}"#),
        1
    );
    assert!(metric_in(&text, "chat_bytes_written_total") > 0, "{text}");
    assert!(
        metric_in(&text, "chat_hub_turn_seconds_count") > 0,
        "{text}"
    );
    assert!(text.contains("\nchat_hub_queue_depth "), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "one exposition: {text}");
    assert!(text.ends_with("# EOF\n"));
    if cfg!(target_os = "linux") {
        assert!(
            metric_in(&text, "process_resident_memory_bytes") > 1 << 20,
            "{text}"
        );
        assert!(metric_in(&text, "process_open_fds") > 3, "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.contains("\nprocess_start_time_seconds "), "{text}");
    }

    // The runtime gone: the transport answers 503 itself, and counts it.
    chat.shutdown();
    assert_eq!(alice.close_code().await, 1001);
    chat.join().await.expect("clean shutdown");
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let (response, _) = http_exchange(addr, upgrade.as_bytes()).await;
    assert_eq!(response.expect("a response").status, 503);
    assert_eq!(metrics.handshakes_rejected(503), 1);
    assert_eq!(metrics.handshakes_rejected(400), 1);
    http.shutdown();
}

/// SIGTERM, as `docker stop` or systemd send it: every client gets what was queued for
/// it, then 1001, and the process exits 0 within the grace period.
#[tokio::test]
async fn sigterm_flushes_queues_closes_every_client_with_1001_and_exits_0() {
    const CLIENTS: usize = 5;
    const MESSAGES: usize = 50;
    let mut server = ServerProcess::start(&["--shutdown-grace", "5s", "--message-rate", "off"]);
    let addr = server.addr();
    let mut sender = Peer::member(addr, "sender", "lobby").await;
    let mut readers = Vec::new();
    for i in 0..CLIENTS {
        readers.push(Peer::member(addr, &format!("reader{i}"), "lobby").await);
        sender.expect_type("user_joined").await;
    }
    // One at a time (the per-connection store queue is small). The sender's own copy
    // arrives after the hub queued everyone's: all of it is then in the readers' queues
    // (or on their sockets), unread.
    for n in 0..MESSAGES {
        sender
            .send(json!({"type": "chat_message", "content": format!("m{n}")}))
            .await;
        sender.expect_type("message_received").await;
    }
    let asked = tokio::time::Instant::now();
    server.terminate();

    let want: Vec<String> = (0..MESSAGES).map(|n| format!("m{n}")).collect();
    for (i, reader) in readers.iter_mut().enumerate() {
        let (got, code) = messages_then_close(reader).await;
        assert_eq!(got, want, "reader {i}: every queued message, in order");
        assert_eq!(code, 1001, "reader {i}");
    }
    assert_eq!(messages_then_close(&mut sender).await, (Vec::new(), 1001));
    let status = server
        .wait_exit(Duration::from_secs(5) + PROMPT)
        .await
        .expect("the server exits within the grace period");
    assert!(status.success(), "exit status {status}");
    eprintln!("SIGTERM → exit 0 in {:?}", asked.elapsed());
}

/// Reads until the close frame: the contents of the `message_received` frames (presence
/// frames skipped) and the close code.
async fn messages_then_close(peer: &mut Peer) -> (Vec<String>, u16) {
    let mut contents = Vec::new();
    loop {
        let message = tokio::time::timeout(PROMPT, peer.ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection ends with a close frame")
            .expect("a frame");
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if frame["type"] == "message_received" {
                    contents.push(frame["content"].as_str().unwrap_or_default().to_owned());
                }
            }
            Message::Close(Some(close)) => return (contents, u16::from(close.code)),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
