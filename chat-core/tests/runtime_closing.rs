//! The runtime's closing handshake and accept loop, on tokio's paused clock with the
//! in-process channel transport: after its close frame a connection lingers (reading and
//! discarding) until the peer answers, at most `close_linger`, and keeps its
//! `max_connections` slot meanwhile; a transport's temporary accept error does not stop
//! the server.
#![cfg(feature = "runtime")]
// On tokio's paused clock a sleep advances simulated time: how these tests let a timer
// fire. The crate's ban on sleeping is about the engine and the runtime.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::store::{Appended, Page, PageRange, Store, StoreError};
use chat_core::{
    ChannelTransport, ClientConnection, ClientEvent, CloseCode, Config, ConnectionInfo, Handshake,
    NewDm, NewRoomMessage, Rejection, RoomName, RuntimeConfig, Server, StoredDm, StoredMessage,
    Transport, TransportError, UserId,
};

/// No store operation happens in these cases.
struct NoStore;

#[async_trait]
impl Store for NoStore {
    async fn append_room(&self, _: NewRoomMessage) -> Result<Appended<StoredMessage>, StoreError> {
        Err(StoreError::unavailable("unused"))
    }
    async fn room_page(
        &self,
        _: &RoomName,
        _: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        Err(StoreError::unavailable("unused"))
    }
    async fn append_dm(&self, _: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        Err(StoreError::unavailable("unused"))
    }
    async fn dm_page(
        &self,
        _: &UserId,
        _: &UserId,
        _: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        Err(StoreError::unavailable("unused"))
    }
}

fn server(runtime: RuntimeConfig) -> Server {
    Server::new(Config::default(), runtime, Arc::new(NoStore))
}

/// Reads a client's frames until its close: (error frames, close code).
async fn errors_then_close(client: &mut ClientConnection) -> (usize, CloseCode) {
    let mut errors = 0;
    loop {
        match client.recv().await {
            Some(ClientEvent::Text(text)) if text.starts_with(r#"{"type":"error""#) => errors += 1,
            Some(ClientEvent::Text(text)) if text.starts_with(r#"{"type":"connection""#) => {}
            Some(ClientEvent::Closed { code, .. }) => return (errors, code),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_closed_connection_that_never_answers_holds_its_slot_for_the_linger_only() {
    let (transport, connector) = ChannelTransport::new();
    let runtime = RuntimeConfig::default()
        .with_max_connections(1)
        .with_close_linger(Duration::from_secs(2))
        .with_heartbeat_interval(None);
    let srv = server(runtime);
    let metrics = srv.metrics();
    let handle = srv.spawn(transport);
    let mut first = connector.connect(ConnectionInfo::default()).await.unwrap();
    // 31 refusals spend the budget: the server closes with 1008.
    for _ in 0..31 {
        first.send_text("garbage").await.unwrap();
    }
    while metrics.closes(CloseCode::POLICY) == 0 {
        tokio::task::yield_now().await;
    }
    // The client neither reads nor answers: the connection lingers, holding its slot…
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = connector.connect(ConnectionInfo::default()).await;
    assert!(
        matches!(refused, Err(Rejection::Unavailable(_))),
        "the slot is still held while lingering: {refused:?}"
    );
    // …and gives it back when the linger is over.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = connector.connect(ConnectionInfo::default()).await;
    assert!(
        second.is_ok(),
        "the slot is free after the linger: {second:?}"
    );
    // Everything queued before the close is there, then the close.
    assert_eq!(errors_then_close(&mut first).await, (31, CloseCode::POLICY));
    handle.shutdown();
    handle.join().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_the_close_frees_its_slot_at_once() {
    let (transport, connector) = ChannelTransport::new();
    let runtime = RuntimeConfig::default()
        .with_max_connections(1)
        .with_close_linger(Duration::from_secs(3600))
        .with_heartbeat_interval(None);
    let srv = server(runtime);
    let handle = srv.spawn(transport);
    let mut first = connector.connect(ConnectionInfo::default()).await.unwrap();
    for _ in 0..31 {
        first.send_text("garbage").await.unwrap();
    }
    // Reading the close answers it (the channel client's side ends).
    assert_eq!(errors_then_close(&mut first).await, (31, CloseCode::POLICY));
    let reconnect = async {
        loop {
            match connector.connect(ConnectionInfo::default()).await {
                Ok(_) => break,
                Err(Rejection::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), reconnect)
        .await
        .expect("the slot is freed at once, not after the hour-long linger");
    handle.shutdown();
    handle.join().await.unwrap();
}

/// Fails its first `accept`s as a process out of file descriptors would, then serves a
/// channel transport.
struct Flaky {
    failures: Arc<AtomicUsize>,
    inner: ChannelTransport,
}

#[async_trait]
impl Transport for Flaky {
    async fn accept(&mut self) -> Option<Result<Box<dyn Handshake>, TransportError>> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Some(Err(TransportError::Io(
                "Too many open files (os error 24)".into(),
            )));
        }
        self.inner.accept().await
    }
}

#[tokio::test(start_paused = true)]
async fn temporary_accept_errors_do_not_stop_the_server() {
    let (inner, connector) = ChannelTransport::new();
    let failures = Arc::new(AtomicUsize::new(3));
    let transport = Flaky {
        failures: Arc::clone(&failures),
        inner,
    };
    let handle = server(RuntimeConfig::default()).spawn(transport);
    let mut client = connector.connect(ConnectionInfo::default()).await.unwrap();
    match client.recv().await {
        Some(ClientEvent::Text(text)) => assert!(text.starts_with(r#"{"type":"connection""#)),
        other => panic!("expected the greeting, got {other:?}"),
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "every failure was retried"
    );
    handle.shutdown();
    handle.join().await.unwrap();
}
