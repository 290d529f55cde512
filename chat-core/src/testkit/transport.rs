//! The transport conformance suite: what every [`Transport`] must do for the runtime.
//!
//! A transport crate implements [`Harness`] (start a transport, open a client connection
//! to it) and calls [`run_all`] from a test:
//!
//! ```no_run
//! # use chat_core::testkit::transport::{run_all, Harness};
//! # async fn demo(mut my_harness: impl Harness) {
//! // #[tokio::test] async fn conformance() {
//! run_all(&mut my_harness).await;
//! // }
//! # }
//! ```
//!
//! Each case starts a fresh transport, plays the server side itself (accept, receive,
//! send, close) and the client side through the harness, and panics with a message
//! naming the rule on failure. Every wait is bounded ([`STEP_TIMEOUT`]), so a broken
//! transport fails instead of hanging. The cases are public too, for transports that
//! want to run them one by one.
//!
//! The rules (the contract of [`crate::transport`]):
//!
//! 1. [`request_metadata`]: `ConnectionInfo` carries path, raw query and headers.
//! 2. [`rejection_status`]: a rejected handshake reaches the client as its HTTP status
//!    (or, for transports without a handshake reply, as a final frame naming it).
//! 3. [`text_both_ways`]: text frames arrive intact and in order in both directions,
//!    including non-ASCII text and a 60 KiB frame.
//! 4. [`batch_in_order`]: a batch of 500 frames in one `send` arrives in order.
//! 5. [`close_code_and_reason`]: a close reaches the client with its code and reason.
//! 6. [`peer_close`]: after the client closes (or vanishes), `recv` yields the close or
//!    `None`, and then `None` every time.
//! 7. [`ping_pong`]: a transport that pings gets a pong back from a reading client.
//! 8. [`many_connections`]: many connections open at once keep their frames apart.
//! 9. [`frame_size_limit`]: a frame of exactly [`MAX_FRAME_BYTES`] arrives intact; one
//!    byte more is [`TransportError::MessageTooBig`].
//! 10. [`invalid_utf8`]: a text frame that is not UTF-8 is
//!     [`TransportError::InvalidPayload`] (for clients that can send raw bytes:
//!     [`TestClient::send_raw_text`]).
//! 11. [`cancel_safe_recv`]: `recv` cancelled over and over while frames (a large one
//!     among them) arrive loses nothing and reorders nothing.
//! 12. [`through_a_server`]: behind a real [`Server`]: the greeting arrives, a handshake
//!     over `max_connections` is refused with 503, and a shutdown closes the open
//!     connection with 1001 after what was queued, while its client is still sending.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::channel::{ClientConnection, ClientEvent};
use crate::runtime::{RuntimeConfig, Server};
use crate::store::{Appended, Page, PageRange, Store, StoreError};
use crate::transport::{
    Channel, CloseCode, ConnectionInfo, Incoming, MAX_FRAME_BYTES, Rejection, Transport,
    TransportError,
};

/// Longest any single step of a case may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts transports and connects clients to them.
#[async_trait]
pub trait Harness: Send {
    /// The transport under test.
    type Transport: Transport;

    /// A fresh transport, ready to accept. Called once at the start of every case; the
    /// transport is dropped at its end.
    async fn start(&mut self) -> Self::Transport;

    /// Opens a client connection to the transport last started, with this request
    /// target (`/path?query`) and extra request headers. `Err` carries the HTTP status
    /// of a refusal.
    async fn connect(
        &mut self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Box<dyn TestClient>, u16>;

    /// Whether the transport reports path, query and headers in [`ConnectionInfo`]
    /// (transports without requests, such as raw TCP, may not). Default true.
    fn carries_request_metadata(&self) -> bool {
        true
    }

    /// Whether a refused handshake fails [`Harness::connect`] itself, as HTTP-based
    /// transports do (the upgrade request is answered with the status). Transports
    /// without a handshake reply (raw TCP) connect first and deliver the refusal as the
    /// connection's only frame, naming the status, followed by its end; for them the
    /// suite checks exactly that. Default true.
    fn refuses_during_connect(&self) -> bool {
        true
    }
}

/// The client end of a test connection.
#[async_trait]
pub trait TestClient: Send {
    /// Sends a text frame.
    async fn send_text(&mut self, text: &str) -> Result<(), TransportError>;

    /// The next event: text frames, then one [`ClientEvent::Closed`] (code 1006 when the
    /// connection ended without a close frame), then `None`.
    async fn recv(&mut self) -> Option<ClientEvent>;

    /// Closes the connection from the client's side with code 1000.
    async fn close(&mut self);

    /// Sends `bytes` as one text frame without checking that they are UTF-8, for
    /// [`invalid_utf8`]. `None` (the default) when the client cannot (the case is then
    /// skipped); otherwise the result of the send.
    async fn send_raw_text(&mut self, bytes: &[u8]) -> Option<Result<(), TransportError>> {
        let _ = bytes;
        None
    }
}

#[async_trait]
impl TestClient for ClientConnection {
    async fn send_text(&mut self, text: &str) -> Result<(), TransportError> {
        ClientConnection::send_text(self, text).await
    }

    async fn recv(&mut self) -> Option<ClientEvent> {
        ClientConnection::recv(self).await
    }

    async fn close(&mut self) {
        ClientConnection::close(self).await;
    }
}

/// Builds the [`ConnectionInfo`] a request with this target and these headers should
/// produce (header names lower-cased). Handy for harnesses of in-process transports.
pub fn request_info(path_and_query: &str, headers: &[(&str, &str)]) -> ConnectionInfo {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (path_and_query, None),
    };
    ConnectionInfo {
        peer: None,
        client_addr: None,
        path: path.to_owned(),
        query,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
            .collect(),
    }
}

/// Runs every case in order.
pub async fn run_all<H: Harness>(h: &mut H) {
    request_metadata(h).await;
    rejection_status(h).await;
    text_both_ways(h).await;
    batch_in_order(h).await;
    close_code_and_reason(h).await;
    peer_close(h).await;
    ping_pong(h).await;
    many_connections(h).await;
    frame_size_limit(h).await;
    invalid_utf8(h).await;
    cancel_safe_recv(h).await;
    through_a_server(h).await;
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(out) => out,
        Err(_) => panic!("transport conformance: timed out waiting for {what}"),
    }
}

/// Accepts one handshake on the server side while the client connects.
async fn open<H: Harness>(
    h: &mut H,
    t: &mut H::Transport,
    target: &str,
    headers: &[(&str, &str)],
) -> (Box<dyn TestClient>, ConnectionInfo, Channel) {
    let server = async {
        let handshake = within("accept", t.accept())
            .await
            .expect("transport stopped accepting")
            .expect("accept failed");
        let info = handshake.info().clone();
        let channel = within("handshake accept", handshake.accept())
            .await
            .expect("handshake accept failed");
        (info, channel)
    };
    let client = within("client connect", h.connect(target, headers));
    let ((info, channel), client) = tokio::join!(server, client);
    let client = client.unwrap_or_else(|status| panic!("connect refused with {status}"));
    (client, info, channel)
}

/// The next non-pong frame on the server side.
async fn server_recv(channel: &mut Channel) -> Option<Result<Incoming, TransportError>> {
    loop {
        match within("server recv", channel.inbound.recv()).await {
            Some(Ok(Incoming::Pong)) => continue,
            other => return other,
        }
    }
}

async fn expect_server_text(channel: &mut Channel, want: &str) {
    match server_recv(channel).await {
        Some(Ok(Incoming::Text(got))) => assert!(
            got == want.as_bytes(),
            "server received a different frame: {} bytes instead of {} (starts {:?})",
            got.len(),
            want.len(),
            String::from_utf8_lossy(&got[..got.len().min(40)])
        ),
        other => panic!("server expected a text frame, got {other:?}"),
    }
}

async fn expect_client_text(client: &mut dyn TestClient, want: &str) {
    match within("client recv", client.recv()).await {
        Some(ClientEvent::Text(got)) => assert!(
            got == want,
            "client received a different frame: {} bytes instead of {} (starts {:?})",
            got.len(),
            want.len(),
            &got.chars().take(40).collect::<String>()
        ),
        other => panic!("client expected a text frame, got {other:?}"),
    }
}

/// Rule 1: path, raw query and headers reach the runtime.
pub async fn request_metadata<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    let headers = [("X-Conformance", "yes"), ("Origin", "http://chat.example")];
    let (_client, info, _channel) = open(h, &mut t, "/chat?token=a%2Bb&room=x", &headers).await;
    if !h.carries_request_metadata() {
        return;
    }
    assert_eq!(info.path, "/chat", "ConnectionInfo::path");
    assert_eq!(
        info.query.as_deref(),
        Some("token=a%2Bb&room=x"),
        "ConnectionInfo::query is the raw query without '?'"
    );
    assert_eq!(info.query_param("token").as_deref(), Some("a+b"));
    assert_eq!(info.header("x-conformance"), Some("yes"), "custom header");
    assert_eq!(info.origin(), Some("http://chat.example"), "Origin header");
    assert!(
        info.headers
            .iter()
            .all(|(k, _)| *k == k.to_ascii_lowercase()),
        "header names are lower-cased"
    );
}

/// Rule 2: a rejection reaches the client as its status.
pub async fn rejection_status<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    for rejection in [
        Rejection::Unauthorized("no token".into()),
        Rejection::Forbidden("origin".into()),
        Rejection::TooManyRequests("slow down".into()),
        Rejection::Unavailable("full".into()),
    ] {
        let status = rejection.status();
        let server = async {
            let handshake = within("accept", t.accept())
                .await
                .expect("transport stopped accepting")
                .expect("accept failed");
            within("reject", handshake.reject(rejection)).await;
        };
        let during_connect = h.refuses_during_connect();
        let client = within("client connect", h.connect("/", &[]));
        let ((), result) = tokio::join!(server, client);
        match result {
            Err(got) => assert_eq!(got, status, "rejection status"),
            Ok(_) if during_connect => {
                panic!("a rejected handshake connected (expected {status})")
            }
            Ok(mut client) => {
                match within("the refusal frame", client.recv()).await {
                    Some(ClientEvent::Text(t)) => assert!(
                        t.contains(&status.to_string()),
                        "the refusal frame names the status {status}: {t}"
                    ),
                    other => panic!("expected a refusal frame naming {status}, got {other:?}"),
                }
                match within("the end after a refusal", client.recv()).await {
                    None | Some(ClientEvent::Closed { .. }) => {}
                    other => panic!("a refused connection must end, got {other:?}"),
                }
            }
        }
    }
}

fn sample_frames() -> Vec<String> {
    vec![
        "hello".to_owned(),
        r#"{"type":"chat_message","content":"hi"}"#.to_owned(),
        "ünïcödé ✓ — 中文 — emoji 😀🎉 — RTL עברית".to_owned(),
        "x".repeat(60 * 1024),
        "after the big one".to_owned(),
    ]
}

/// Rule 3: text frames, both ways, intact and in order.
pub async fn text_both_ways<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    let (mut client, _, mut channel) = open(h, &mut t, "/", &[]).await;
    let frames = sample_frames();
    for f in &frames {
        within("client send", client.send_text(f))
            .await
            .expect("client send failed");
    }
    for f in &frames {
        expect_server_text(&mut channel, f).await;
    }
    for f in &frames {
        let bytes = Bytes::copy_from_slice(f.as_bytes());
        within("server send", channel.outbound.send(&[bytes]))
            .await
            .expect("server send failed");
    }
    for f in &frames {
        expect_client_text(&mut *client, f).await;
    }
}

/// Rule 4: one `send` of 500 frames arrives whole and in order.
pub async fn batch_in_order<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    let (mut client, _, mut channel) = open(h, &mut t, "/", &[]).await;
    let frames: Vec<String> = (0..500).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    let batch: Vec<Bytes> = frames.iter().map(|f| Bytes::from(f.clone())).collect();
    // The client reads while the server writes: a transport may apply backpressure.
    let send = async {
        within("server send of 500", channel.outbound.send(&batch))
            .await
            .expect("server send failed");
    };
    let read = async {
        for f in &frames {
            expect_client_text(&mut *client, f).await;
        }
    };
    tokio::join!(send, read);
}

/// Rule 5: close code and reason reach the client; then the stream ends.
pub async fn close_code_and_reason<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    for (code, reason) in [
        (CloseCode::TRY_AGAIN_LATER, "slow reader"),
        (CloseCode::USERNAME_CONFLICT, "name taken"),
    ] {
        let (mut client, _, mut channel) = open(h, &mut t, "/", &[]).await;
        let last = Bytes::from_static(b"last words");
        within("server send", channel.outbound.send(&[last]))
            .await
            .expect("server send failed");
        within("server close", channel.outbound.close(code, reason))
            .await
            .expect("server close failed");
        expect_client_text(&mut *client, "last words").await;
        match within("client recv of the close", client.recv()).await {
            Some(ClientEvent::Closed {
                code: got,
                reason: why,
            }) => {
                assert_eq!(got, code, "close code");
                assert_eq!(why, reason, "close reason");
            }
            other => panic!("client expected Closed({code}), got {other:?}"),
        }
        assert_eq!(
            within("client recv after close", client.recv()).await,
            None,
            "recv after Closed"
        );
    }
}

/// Rule 6: a client close (or disappearance) ends the server's stream, for good.
pub async fn peer_close<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    // A clean close…
    let (mut client, _, mut channel) = open(h, &mut t, "/", &[]).await;
    within("client close", client.close()).await;
    match server_recv(&mut channel).await {
        None | Some(Ok(Incoming::Close(_))) => {}
        other => panic!("after a client close the server expected Close or None, got {other:?}"),
    }
    for _ in 0..3 {
        assert!(
            server_recv(&mut channel).await.is_none(),
            "recv keeps returning None after the end"
        );
    }
    // …and a client that simply vanishes.
    let (client, _, mut channel) = open(h, &mut t, "/", &[]).await;
    drop(client);
    loop {
        match server_recv(&mut channel).await {
            None => break,
            Some(Ok(Incoming::Close(_)) | Err(_)) => continue,
            Some(Ok(other)) => panic!("unexpected frame from a dropped client: {other:?}"),
        }
    }
    assert!(server_recv(&mut channel).await.is_none(), "None stays None");
}

/// Rule 7: `ping` either reports no support or is answered by a reading client.
pub async fn ping_pong<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    let (mut client, _, mut channel) = open(h, &mut t, "/", &[]).await;
    let supported = within("ping", channel.outbound.ping())
        .await
        .expect("ping failed on an open connection");
    if !supported {
        return;
    }
    let Channel { inbound, .. } = &mut channel;
    let server = async {
        match within("pong", inbound.recv()).await {
            Some(Ok(Incoming::Pong)) => {}
            other => panic!("server expected a pong, got {other:?}"),
        }
    };
    // Some client stacks answer pings only while reading: keep the client reading until
    // the server has its pong.
    let client = async {
        while client.recv().await.is_some() {}
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = server => {}
        () = client => {}
    }
}

/// Rule 8: many connections at once, each with its own frames.
pub async fn many_connections<H: Harness>(h: &mut H) {
    const N: usize = 64;
    let mut t = h.start().await;
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let target = format!("/?n={i}");
        let (client, info, channel) = open(h, &mut t, &target, &[]).await;
        conns.push((i, client, info, channel));
    }
    for (i, client, _, _) in &mut conns {
        within("client send", client.send_text(&format!("from {i}")))
            .await
            .expect("client send failed");
    }
    for (i, client, info, channel) in &mut conns {
        if h.carries_request_metadata() {
            assert_eq!(
                info.query_param("n"),
                Some(i.to_string()),
                "info of connection {i}"
            );
        }
        expect_server_text(channel, &format!("from {i}")).await;
        let reply = Bytes::from(format!("to {i}"));
        within("server send", channel.outbound.send(&[reply]))
            .await
            .expect("server send failed");
        expect_client_text(&mut **client, &format!("to {i}")).await;
    }
}

/// Rule 9: the frame size limit is [`MAX_FRAME_BYTES`], exactly.
pub async fn frame_size_limit<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    let (mut client, _, mut channel) = open(h, &mut t, "/", &[]).await;
    let largest = "a".repeat(MAX_FRAME_BYTES);
    within("client send", client.send_text(&largest))
        .await
        .expect("client send failed");
    expect_server_text(&mut channel, &largest).await;
    // The send may fail or not (the transport may already refuse it); the server's
    // side is what the rule is about.
    let _ = within(
        "client send",
        client.send_text(&"b".repeat(MAX_FRAME_BYTES + 1)),
    )
    .await;
    match server_recv(&mut channel).await {
        Some(Err(TransportError::MessageTooBig)) => {}
        other => {
            panic!("a frame of MAX_FRAME_BYTES + 1 bytes must be MessageTooBig, got {other:?}")
        }
    }
}

/// Rule 10: invalid UTF-8 in a text frame is the transport's to report.
pub async fn invalid_utf8<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    let (mut client, _, mut channel) = open(h, &mut t, "/", &[]).await;
    let bad = b"{\"type\":\"chat_message\",\"content\":\"\xff\xfe\xc3\"}";
    let Some(sent) = within("client raw send", client.send_raw_text(bad)).await else {
        return;
    };
    sent.expect("client raw send failed");
    match server_recv(&mut channel).await {
        Some(Err(TransportError::InvalidPayload)) => {}
        other => panic!("a text frame that is not UTF-8 must be InvalidPayload, got {other:?}"),
    }
}

/// Rule 11: a `recv` dropped while waiting loses nothing.
pub async fn cancel_safe_recv<H: Harness>(h: &mut H) {
    let mut t = h.start().await;
    let (mut client, _, mut channel) = open(h, &mut t, "/", &[]).await;
    // Cancelled before anything arrives.
    for _ in 0..10 {
        let waited = tokio::time::timeout(Duration::from_millis(1), channel.inbound.recv()).await;
        assert!(
            waited.is_err(),
            "recv returned with nothing sent: {waited:?}"
        );
    }
    let frames = sample_frames();
    let send = async {
        for f in &frames {
            within("client send", client.send_text(f))
                .await
                .expect("client send failed");
        }
    };
    // Cancelled again and again while the frames (a 60 KiB one among them) arrive.
    let receive = within("frames while recv is cancelled again and again", async {
        let mut got = Vec::new();
        while got.len() < frames.len() {
            let short = tokio::time::timeout(Duration::from_micros(200), channel.inbound.recv());
            match short.await {
                Err(_cancelled) => {}
                Ok(Some(Ok(Incoming::Text(text)))) => got.push(text),
                Ok(Some(Ok(Incoming::Pong))) => {}
                Ok(other) => panic!("unexpected item under cancellation: {other:?}"),
            }
        }
        got
    });
    let ((), got) = tokio::join!(send, receive);
    for (got, want) in got.iter().zip(&frames) {
        assert!(
            got == want.as_bytes(),
            "a cancelled recv lost or changed a frame: got {} bytes (starts {:?}), want {}",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(40)]),
            want.len()
        );
    }
}

/// A store that keeps nothing: [`through_a_server`] never reaches it.
struct NoStore;

#[async_trait]
impl Store for NoStore {
    async fn append_room(
        &self,
        _: crate::message::NewRoomMessage,
    ) -> Result<Appended<crate::message::StoredMessage>, StoreError> {
        Err(StoreError::unavailable("the transport suite keeps nothing"))
    }

    async fn room_page(
        &self,
        _: &crate::ids::RoomName,
        _: PageRange,
    ) -> Result<Page<crate::message::StoredMessage>, StoreError> {
        Err(StoreError::unavailable("the transport suite keeps nothing"))
    }

    async fn append_dm(
        &self,
        _: crate::message::NewDm,
    ) -> Result<Appended<crate::message::StoredDm>, StoreError> {
        Err(StoreError::unavailable("the transport suite keeps nothing"))
    }

    async fn dm_page(
        &self,
        _: &crate::ids::UserId,
        _: &crate::ids::UserId,
        _: PageRange,
    ) -> Result<Page<crate::message::StoredDm>, StoreError> {
        Err(StoreError::unavailable("the transport suite keeps nothing"))
    }
}

/// Rule 12: the transport behind a real [`Server`]: greeting, a refusal, a shutdown.
pub async fn through_a_server<H: Harness>(h: &mut H) {
    let t = h.start().await;
    let config = RuntimeConfig::default().with_max_connections(1);
    let server = Server::new(
        crate::engine::Config::default(),
        config,
        std::sync::Arc::new(NoStore),
    );
    let handle = server.spawn(t);
    let mut client = within("client connect", h.connect("/", &[]))
        .await
        .unwrap_or_else(|status| panic!("the first connection was refused with {status}"));
    match within("the greeting", client.recv()).await {
        Some(ClientEvent::Text(text)) => assert!(
            text.starts_with(r#"{"type":"connection""#),
            "the server greets first: {text}"
        ),
        other => panic!("expected the connection greeting, got {other:?}"),
    }
    // Over `max_connections`: refused with 503, during the handshake or in-band.
    match within("a refused connect", h.connect("/", &[])).await {
        Err(status) => assert_eq!(status, 503, "a full server answers 503"),
        Ok(_) if h.refuses_during_connect() => panic!("a connection over the limit was accepted"),
        Ok(mut refused) => {
            match within("the refusal frame", refused.recv()).await {
                Some(ClientEvent::Text(t)) => {
                    assert!(t.contains("503"), "the refusal frame names 503: {t}");
                }
                other => panic!("expected a refusal frame naming 503, got {other:?}"),
            }
            match within("the end after a refusal", refused.recv()).await {
                None | Some(ClientEvent::Closed { .. }) => {}
                other => panic!("a refused connection must end, got {other:?}"),
            }
        }
    }
    // Queued before the shutdown: one error per frame (no username yet).
    for i in 0..5 {
        within(
            "client send",
            client.send_text(&format!(r#"{{"type":"chat_message","content":"{i}"}}"#)),
        )
        .await
        .expect("client send failed");
    }
    for _ in 0..5 {
        match within("an error frame", client.recv()).await {
            Some(ClientEvent::Text(text)) => assert!(
                text.starts_with(r#"{"type":"error""#),
                "a chat_message without a name is refused: {text}"
            ),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }
    handle.shutdown();
    // The client keeps sending while the server closes; its frames are discarded.
    for i in 0..5 {
        let _ = within("client send", client.send_text(&format!("late {i}"))).await;
    }
    // Late frames the hub read before its shutdown began are refused first.
    loop {
        match within("the shutdown close", client.recv()).await {
            Some(ClientEvent::Text(text)) if text.starts_with(r#"{"type":"error""#) => {}
            Some(ClientEvent::Closed { code, reason }) => {
                assert_eq!(
                    code,
                    CloseCode::GOING_AWAY,
                    "a shutdown closes with 1001 ({reason})"
                );
                break;
            }
            other => panic!("expected the 1001 close, got {other:?}"),
        }
    }
    within("the server's end", handle.join())
        .await
        .expect("the server stopped cleanly");
}
