//! Harness shared by the end-to-end tests: a real `chat_core::Server` with a
//! `MemoryStore` behind a `WarpTransport` on an ephemeral port, real tokio-tungstenite
//! clients, and exact frame assertions.
//!
//! Every wait is bounded: "the next frame" waits at most [`PROMPT`]. "No frame" is proved
//! by a round trip ([`Peer::expect_nothing_pending`]), never by a quiet window.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod frames;
pub(crate) mod process;
pub(crate) mod suite;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_core::{Config, RuntimeConfig, Server, ServerHandle};
use chat_memory_store::MemoryStore;
use chat_ws_warp::{HttpServer, WarpConfig, WarpTransport};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A tokio-tungstenite client socket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound for anything that should happen "at once": a deadline, never a window
/// that passes by default (a passing wait ends as soon as its event comes). Kept at half
/// the server's 10 s defaults (header read, handshake): `bad_input.rs` relies on a
/// timeout that fell back to its default missing this bound.
pub(crate) const PROMPT: Duration = Duration::from_secs(5);

/// In an expected frame: any hyphenated lower-case UUID.
pub(crate) const UUID: &str = "<uuid>";

/// In an expected frame: any ISO-8601 UTC timestamp with milliseconds
/// (`2024-01-31T12:34:56.789Z`).
pub(crate) const TIMESTAMP: &str = "<timestamp>";

// ---- the server ---------------------------------------------------------------------

/// A chat server on `127.0.0.1:0`. Dropping it detaches the server; the test's runtime
/// ends it.
pub(crate) struct TestServer {
    pub(crate) chat: ServerHandle,
    pub(crate) http: HttpServer,
    pub(crate) store: Arc<MemoryStore>,
}

impl TestServer {
    /// Default engine and runtime configuration.
    pub(crate) async fn start() -> TestServer {
        TestServer::with(Config::default(), RuntimeConfig::default()).await
    }

    /// The given engine and runtime configuration, default transport.
    pub(crate) async fn with(engine: Config, runtime: RuntimeConfig) -> TestServer {
        TestServer::with_warp(engine, runtime, |_, warp| warp).await
    }

    /// Full control: `warp` receives the server's metrics handle (for `/metrics`) and the
    /// default transport configuration, and returns the one to use.
    pub(crate) async fn with_warp(
        engine: Config,
        runtime: RuntimeConfig,
        warp: impl FnOnce(chat_core::Metrics, WarpConfig) -> WarpConfig,
    ) -> TestServer {
        TestServer::with_admission(engine, runtime, warp, Arc::new(chat_core::AllowAnonymous)).await
    }

    /// Full control, and an admission policy (authentication, Origin, per-IP limits).
    pub(crate) async fn with_admission(
        engine: Config,
        runtime: RuntimeConfig,
        warp: impl FnOnce(chat_core::Metrics, WarpConfig) -> WarpConfig,
        admission: Arc<dyn chat_core::Admission>,
    ) -> TestServer {
        let store = Arc::new(MemoryStore::new());
        let chat = Server::new(
            engine,
            runtime,
            Arc::clone(&store) as Arc<dyn chat_core::Store>,
        )
        .with_admission(admission);
        let config = warp(chat.metrics(), WarpConfig::default());
        let (transport, http) = WarpTransport::bind("127.0.0.1:0", config)
            .await
            .expect("bind 127.0.0.1:0");
        TestServer {
            chat: chat.spawn(transport),
            http,
            store,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// The in-memory store's epoch, as `message_history` carries it.
    pub(crate) fn epoch(&self) -> String {
        self.store.epoch().as_str().to_owned()
    }

    /// A bare WebSocket at `/ws`, nothing read yet.
    pub(crate) async fn ws(&self) -> Ws {
        TestServer::ws_at(self.addr()).await
    }

    /// A bare WebSocket at `/ws` of the server at `addr`, nothing read yet.
    pub(crate) async fn ws_at(addr: SocketAddr) -> Ws {
        let url = format!("ws://{addr}/ws");
        let (ws, _response) = timeout(PROMPT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        ws
    }

    /// A connected client whose `connection {clientId}` frame has been read and checked.
    pub(crate) async fn connect(&self) -> Peer {
        Peer::connect(self.addr()).await
    }

    /// A client with a username.
    pub(crate) async fn named(&self, name: &str) -> Peer {
        Peer::named(self.addr(), name).await
    }

    /// A client with a username that joined `room` (a plain join, its first room); the
    /// three join replies have been read. Other members' `user_joined` is theirs to read.
    pub(crate) async fn member(&self, name: &str, room: &str) -> Peer {
        Peer::member(self.addr(), name, room).await
    }
}

// ---- a client -----------------------------------------------------------------------

/// A client and the id the server gave it.
pub(crate) struct Peer {
    pub(crate) ws: Ws,
    /// `clientId` of its `connection` frame.
    pub(crate) id: String,
}

impl Peer {
    /// A client of the server at `addr` whose `connection {clientId}` frame has been read
    /// and checked.
    pub(crate) async fn connect(addr: SocketAddr) -> Peer {
        let mut ws = TestServer::ws_at(addr).await;
        let hello = next_text(&mut ws).await;
        assert_frame(&hello, &json!({"type": "connection", "clientId": UUID}));
        let id = hello["clientId"]
            .as_str()
            .expect("clientId is a string")
            .to_owned();
        Peer { ws, id }
    }

    /// A client of the server at `addr` with a username.
    pub(crate) async fn named(addr: SocketAddr, name: &str) -> Peer {
        let mut peer = Peer::connect(addr).await;
        peer.send(json!({"type": "set_username", "username": name}))
            .await;
        peer.expect(json!({"type": "username_set", "username": name}))
            .await;
        peer
    }

    /// A client of the server at `addr` with a username that joined `room` (a plain
    /// join, its first room); the three join replies have been read.
    pub(crate) async fn member(addr: SocketAddr, name: &str, room: &str) -> Peer {
        let mut peer = Peer::named(addr, name).await;
        peer.send(json!({"type": "join_room", "room": room})).await;
        peer.expect_type("room_joined").await;
        peer.expect_type("message_history").await;
        peer.expect_type("room_users").await;
        peer
    }

    /// Sends a JSON command as one text frame.
    pub(crate) async fn send(&mut self, command: Value) {
        self.send_text(command.to_string()).await;
    }

    /// Sends any text as one text frame.
    pub(crate) async fn send_text(&mut self, text: impl Into<String>) {
        self.send_message(Message::text(text.into())).await;
    }

    /// Sends any WebSocket message.
    pub(crate) async fn send_message(&mut self, message: Message) {
        timeout(PROMPT, self.ws.send(message))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// The next text frame as JSON (pings and pongs are skipped; tungstenite answers
    /// the pings).
    pub(crate) async fn next(&mut self) -> Value {
        next_text(&mut self.ws).await
    }

    /// Asserts that the next frame matches `expected` exactly (see [`assert_frame`]) and
    /// returns it.
    pub(crate) async fn expect(&mut self, expected: Value) -> Value {
        let frame = self.next().await;
        assert_frame(&frame, &expected);
        frame
    }

    /// Asserts the next frame's `type` and returns the frame.
    pub(crate) async fn expect_type(&mut self, kind: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], kind, "expected a {kind} frame, got {frame}");
        frame
    }

    /// Asserts that the next frame is `error {message, code}` exactly.
    pub(crate) async fn expect_error(&mut self, message: &str, code: &str) {
        self.expect(json!({"type": "error", "message": message, "code": code}))
            .await;
    }

    /// Asserts that nothing is on its way to this peer: everything the server was sent
    /// before (by this peer, and by any peer whose reply was read) has been handled, and
    /// produced no frame for this one.
    ///
    /// The proof is a round trip, not a wait: the peer sends a command of an unknown type
    /// and the very next frame must be its `unknown_type` error. The engine handles every
    /// connection's input in one order and each connection's frames leave in the order
    /// they were produced, so any frame caused by earlier input would come first — on a
    /// slow server as on a fast one. (The probe spends one unit of the refusal budget.)
    pub(crate) async fn expect_nothing_pending(&mut self) {
        self.send(json!({"type": "nothing-pending-probe"})).await;
        let frame = self.next().await;
        assert!(
            frame["type"] == "error" && frame["code"] == "unknown_type",
            "expected nothing before the probe's unknown_type error, got {frame}"
        );
    }

    /// The close code of the next close frame (text frames before it are skipped).
    pub(crate) async fn close_code(&mut self) -> u16 {
        close_code(&mut self.ws).await
    }

    /// Closes the socket cleanly (1000) and waits for the server's reply.
    pub(crate) async fn disconnect(mut self) {
        timeout(PROMPT, self.ws.close(None))
            .await
            .expect("close in time")
            .expect("close");
        // Drain until the server's close reply ends the stream.
        while let Some(Ok(_)) = timeout(PROMPT, self.ws.next())
            .await
            .expect("the server answers the close")
        {}
    }
}

/// The next text frame of `ws` as JSON (ping and pong frames are skipped).
pub(crate) async fn next_text(ws: &mut Ws) -> Value {
    loop {
        let message = timeout(PROMPT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("a frame");
        match message {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str()).expect("server frames are JSON");
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close code `ws` receives next (text frames before it are skipped).
pub(crate) async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match timeout(PROMPT, ws.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

// ---- exact frames -------------------------------------------------------------------

/// Asserts that `actual` is `expected`: the same JSON, every object with exactly the same
/// keys, except that the strings [`UUID`] and [`TIMESTAMP`] in `expected` stand for any
/// value of that shape.
#[track_caller]
pub(crate) fn assert_frame(actual: &Value, expected: &Value) {
    if let Err(at) = matches(actual, expected, "$") {
        panic!(
            "frame mismatch at {at}\n  actual: {actual}\nexpected: {expected}",
            actual = actual,
            expected = expected
        );
    }
}

fn matches(actual: &Value, expected: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(p), Value::String(s)) if p == UUID => is_uuid(s)
            .then_some(())
            .ok_or_else(|| format!("{at} (not a UUID)")),
        (Value::String(p), Value::String(s)) if p == TIMESTAMP => is_timestamp(s)
            .then_some(())
            .ok_or_else(|| format!("{at} (not an ISO-8601 UTC timestamp)")),
        (Value::Object(e), Value::Object(a)) => {
            let mut ek: Vec<_> = e.keys().collect();
            let mut ak: Vec<_> = a.keys().collect();
            ek.sort();
            ak.sort();
            if ek != ak {
                return Err(format!("{at} (keys {ak:?}, expected {ek:?})"));
            }
            e.iter()
                .try_for_each(|(k, v)| matches(&a[k], v, &format!("{at}.{k}")))
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{at} (length {}, expected {})", a.len(), e.len()));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .try_for_each(|(i, (e, a))| matches(a, e, &format!("{at}[{i}]")))
        }
        _ if actual == expected => Ok(()),
        _ => Err(at.to_owned()),
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower-case hex.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, with plausible field ranges.
pub(crate) fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let shape = b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    let field = |from: usize, to: usize| s[from..to].parse::<u32>().unwrap_or(u32::MAX);
    shape
        && (1..=12).contains(&field(5, 7))
        && (1..=31).contains(&field(8, 10))
        && field(11, 13) < 24
        && field(14, 16) < 60
        && field(17, 19) < 61
}

/// The `seq`s of a `message_history`'s or `dm_history`'s messages.
pub(crate) fn history_seqs(frame: &Value) -> Vec<u64> {
    frame["messages"]
        .as_array()
        .expect("a messages array")
        .iter()
        .map(|m| m["seq"].as_u64().expect("a numeric seq"))
        .collect()
}

// ---- a raw WebSocket client ---------------------------------------------------------

/// A minimal WebSocket client on a plain `TcpStream`: it answers nothing by itself (no
/// pong, no close reply), which tungstenite always does when read. For a peer that
/// never answers pings.
pub(crate) struct RawWs {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A frame as the raw client sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RawFrame {
    Text(String),
    Ping,
    /// The close code (none if the frame had no payload).
    Close(Option<u16>),
    Other(u8),
}

impl RawWs {
    /// Connects to `/ws` and completes the handshake.
    pub(crate) async fn connect(addr: SocketAddr) -> RawWs {
        let tcp = TcpStream::connect(addr).await.expect("TCP connect");
        RawWs::handshake(tcp, addr).await
    }

    /// Completes the handshake for `/ws` on a connected socket (one the caller tuned).
    pub(crate) async fn handshake(mut tcp: TcpStream, addr: SocketAddr) -> RawWs {
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut raw = RawWs {
            tcp,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(raw.fill().await, "the server closed during the handshake");
        };
        let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.buf.drain(..end);
        raw
    }

    /// Sends a JSON command as one masked text frame.
    pub(crate) async fn send(&mut self, command: Value) {
        let frame = frames::client(0x1, command.to_string().as_bytes());
        self.tcp.write_all(&frame).await.expect("write");
    }

    /// Reads more bytes; false at EOF (or when the peer reset the connection).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame, or `None` when the connection ended. Unbounded: wrap it in a
    /// timeout.
    pub(crate) async fn frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next text frame as JSON, skipping (and not answering) pings.
    pub(crate) async fn next(&mut self) -> Value {
        loop {
            match timeout(PROMPT, self.frame())
                .await
                .expect("a frame in time")
            {
                Some(RawFrame::Text(text)) => {
                    return serde_json::from_str(&text).expect("server frames are JSON");
                }
                Some(RawFrame::Ping) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }
}

/// One unmasked server frame at the start of `buf` and its length, if complete.
fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    assert_eq!(b0 & 0x80, 0x80, "the server sends unfragmented frames");
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    let (len, header) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().expect("8 bytes");
            (
                usize::try_from(u64::from_be_bytes(bytes)).expect("fits"),
                10,
            )
        }
        n => (usize::from(n), 2),
    };
    let payload = buf.get(header..header + len)?;
    let frame = match b0 & 0x0f {
        0x1 => RawFrame::Text(String::from_utf8(payload.to_vec()).expect("UTF-8 text")),
        0x8 => RawFrame::Close(
            payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]])),
        ),
        0x9 => RawFrame::Ping,
        op => RawFrame::Other(op),
    };
    Some((frame, header + len))
}
