//! The frame around every bad-input case: a real server process, two canary clients, a
//! memory baseline, and the checks that the server came through unharmed.
//!
//! [`Suite::start`] starts the example server with the case's flags, connects two
//! canaries (`canary-a`, `canary-b`, room `canary`), warms the server up (four clients
//! join a room, chat and leave; `/healthz` and `/metrics` are served once) and records
//! the baseline: the server's `VmRSS` once the warm-up clients are gone.
//!
//! [`Suite::finish`], after the abuse, asserts that
//!
//! * the canaries still chat: A sends, both A and B receive the exact `message_received`
//!   with the next `seq` of their room;
//! * `/healthz` answers 200 and the process is running;
//! * the server's own gauges are back to the canaries alone: `chat_connections 2`,
//!   `chat_users 2`, `chat_rooms 1`;
//! * its memory settles: `VmRSS ≤ baseline + RSS_TOLERANCE` within [`SETTLE`].
//!
//! The canaries run on tasks of their own that read all the time, so they answer the
//! server's pings even in cases that shorten the heartbeat.
//!
//! With `--jwt-hs256-secret` among the flags every connection needs a token: the suite's
//! clients (canaries, warm-up, [`Suite::named`], [`Suite::member`]) then sign in with an
//! HS256 token (`sub` = `user-<name>`, `name`, an `exp` an hour ahead) instead of
//! `set_username`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::process::{POLL, ServerProcess};
use super::{PROMPT, Peer, TIMESTAMP, UUID, Ws, assert_frame, next_text};

/// How far above its baseline the server's RSS may stay once an abuse is over.
///
/// Why not zero: freed memory is not necessarily returned to the kernel. glibc's malloc
/// keeps freed chunks in its arenas (one per thread that allocated, up to 8 × cores) and
/// only trims the top of the main heap, so RSS after a burst stays above the baseline
/// even when every byte was freed. 16 MiB is well below what a leak in any of the cases
/// would leave behind (a 1 GiB announced frame, 10,000 rooms, a slow reader's queue and
/// write buffer, 50 sockets with 128 KiB read buffers each) and above what allocator
/// retention was observed to keep (see docs/SECURITY.md).
pub(crate) const RSS_TOLERANCE_KIB: u64 = 16 * 1024;

/// How long the server gets to settle after an abuse: closing connections, freeing their
/// queues, the gauges catching up. A deadline (the waits end as soon as the server has
/// settled), generous for a loaded 2-core CI.
pub(crate) const SETTLE: Duration = Duration::from_secs(15);

/// The canary room.
pub(crate) const CANARY_ROOM: &str = "canary";

/// A client that only reads on its own task (answering pings) and sends on request.
struct Canary {
    id: String,
    name: &'static str,
    commands: mpsc::UnboundedSender<Value>,
    frames: mpsc::UnboundedReceiver<Result<Value, String>>,
}

impl Canary {
    fn spawn(peer: Peer, name: &'static str) -> Canary {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let Peer { ws, id } = peer;
        tokio::spawn(canary_task(ws, commands_rx, frames_tx));
        Canary {
            id,
            name,
            commands,
            frames,
        }
    }

    fn send(&self, command: Value) {
        self.commands
            .send(command)
            .unwrap_or_else(|_| panic!("canary {} is gone", self.name));
    }

    async fn next(&mut self) -> Value {
        match timeout(PROMPT, self.frames.recv()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(end))) => panic!("canary {} lost its connection: {end}", self.name),
            Ok(None) => panic!("canary {} is gone", self.name),
            Err(_) => panic!("canary {} received nothing in time", self.name),
        }
    }
}

async fn canary_task(
    mut ws: Ws,
    mut commands: mpsc::UnboundedReceiver<Value>,
    frames: mpsc::UnboundedSender<Result<Value, String>>,
) {
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => {
                    if let Err(e) = ws.send(Message::text(command.to_string())).await {
                        let _ = frames.send(Err(format!("send failed: {e}")));
                        return;
                    }
                }
                None => {
                    let _ = timeout(PROMPT, ws.close(None)).await;
                    return;
                }
            },
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let value = serde_json::from_str(text.as_str()).expect("server frames are JSON");
                    if frames.send(Ok(value)).is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => {
                    let _ = frames.send(Err(format!("{other:?}")));
                    return;
                }
            },
        }
    }
}

/// Seconds since the Unix epoch (for JWT claims).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `claims` as an HS256 JWT signed with `secret`.
pub(crate) fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("signing works")
}

/// The user id the suite's tokens give `name`.
pub(crate) fn sub_of(name: &str) -> String {
    format!("user-{name}")
}

/// How the suite's clients get a name: `set_username`, or a token signed with this secret.
#[derive(Clone)]
struct Identity(Option<String>);

impl Identity {
    /// `?token=…` for `name`, or nothing.
    fn query(&self, name: &str) -> String {
        match &self.0 {
            Some(secret) => {
                let claims = json!({"sub": sub_of(name), "name": name, "exp": unix_now() + 3600});
                format!("?token={}", hs256(secret.as_bytes(), &claims))
            }
            None => String::new(),
        }
    }

    /// A client named `name`: signed in with a token, or by `set_username`.
    async fn named(&self, addr: SocketAddr, name: &str) -> Peer {
        if self.0.is_none() {
            return Peer::named(addr, name).await;
        }
        let url = format!("ws://{addr}/ws{}", self.query(name));
        let (mut ws, _) = timeout(PROMPT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("a token-bearing handshake is admitted");
        let sub = sub_of(name);
        assert_eq!(
            next_text(&mut ws).await,
            json!({"type": "connection", "clientId": sub})
        );
        assert_eq!(
            next_text(&mut ws).await,
            json!({"type": "username_set", "username": name})
        );
        Peer { ws, id: sub }
    }

    async fn member(&self, addr: SocketAddr, name: &str, room: &str) -> Peer {
        let mut peer = self.named(addr, name).await;
        peer.send(json!({"type": "join_room", "room": room})).await;
        peer.expect_type("room_joined").await;
        peer.expect_type("message_history").await;
        peer.expect_type("room_users").await;
        peer
    }
}

/// A server process with its canaries and memory baseline.
pub(crate) struct Suite {
    pub(crate) server: ServerProcess,
    identity: Identity,
    a: Canary,
    b: Canary,
    /// `seq` of the last message in the canary room.
    canary_seq: u64,
    /// RSS after warm-up, KiB.
    pub(crate) baseline_kib: u64,
    /// Highest RSS sampled during the case, KiB.
    peak_kib: u64,
}

impl Suite {
    /// Starts the server with `flags`, connects the canaries, warms up, takes the baseline.
    pub(crate) async fn start(flags: &[&str]) -> Suite {
        let server = ServerProcess::start(flags);
        let addr = server.addr();
        let secret = flags
            .iter()
            .position(|flag| *flag == "--jwt-hs256-secret")
            .map(|i| flags[i + 1].to_owned());
        let identity = Identity(secret);
        let mut a = identity.member(addr, "canary-a", CANARY_ROOM).await;
        let b = identity.member(addr, "canary-b", CANARY_ROOM).await;
        a.expect(
            json!({"type": "user_joined", "room": CANARY_ROOM, "username": "canary-b",
                        "userId": b.id}),
        )
        .await;
        let mut suite = Suite {
            server,
            identity,
            a: Canary::spawn(a, "canary-a"),
            b: Canary::spawn(b, "canary-b"),
            canary_seq: 0,
            baseline_kib: 0,
            peak_kib: 0,
        };
        suite.warm_up().await;
        suite.baseline_kib = suite.server.rss_kib();
        suite.peak_kib = suite.baseline_kib;
        suite
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// A client named `name` (signed in with a token when the server wants one).
    pub(crate) async fn named(&self, name: &str) -> Peer {
        self.identity.named(self.addr(), name).await
    }

    /// A client named `name` in `room` (its three join replies read).
    pub(crate) async fn member(&self, name: &str, room: &str) -> Peer {
        self.identity.member(self.addr(), name, room).await
    }

    /// `?token=…` for `name` when the server wants tokens, else empty.
    pub(crate) fn token_query(&self, name: &str) -> String {
        self.identity.query(name)
    }

    /// Four clients join a room, chat, page history and leave; the canaries chat; the
    /// HTTP routes are served. Then the gauges are back to the canaries alone.
    async fn warm_up(&mut self) {
        let addr = self.addr();
        let mut clients = Vec::new();
        for i in 0..4 {
            clients.push(
                self.identity
                    .member(addr, &format!("warm-{i}"), "warm-up")
                    .await,
            );
        }
        for round in 0..3 {
            for i in 0..clients.len() {
                let content = format!("warm {round} from {i}");
                clients[i]
                    .send(json!({"type": "chat_message", "content": content}))
                    .await;
                // Everyone (the sender included) reads up to that message; `user_joined`
                // frames of later joiners come first.
                for client in &mut clients {
                    while client.next().await["content"] != content.as_str() {}
                }
            }
        }
        clients[0]
            .send(json!({"type": "history", "room": "warm-up", "limit": 100}))
            .await;
        clients[0].expect_type("message_history").await;
        for client in clients {
            client.disconnect().await;
        }
        for _ in 0..3 {
            self.canaries_chat().await;
        }
        self.server.assert_healthy().await;
        // The baseline is taken once the server has seen the warm-up clients go (the
        // state `finish` compares with), not after some guessed pause.
        for (series, expected) in [
            ("chat_connections", 2),
            ("chat_users", 2),
            ("chat_rooms", 1),
        ] {
            self.server.await_metric(series, expected, SETTLE).await;
        }
    }

    /// Canary A sends a message; A and B both receive it, exactly, with the next `seq`.
    pub(crate) async fn canaries_chat(&mut self) {
        self.canary_seq += 1;
        let content = format!("canary {}", self.canary_seq);
        self.a
            .send(json!({"type": "chat_message", "content": content}));
        let expected = json!({
            "type": "message_received", "id": UUID, "room": CANARY_ROOM, "seq": self.canary_seq,
            "userId": self.a.id, "username": "canary-a", "content": content,
            "timestamp": TIMESTAMP,
        });
        let seen_by_a = self.a.next().await;
        assert_frame(&seen_by_a, &expected);
        let seen_by_b = self.b.next().await;
        assert_eq!(seen_by_b, seen_by_a, "both canaries get the same message");
    }

    /// Samples the server's RSS now (for the peak printed by [`finish`](Self::finish)).
    pub(crate) fn sample_rss(&mut self) -> u64 {
        let rss = self.server.rss_kib();
        self.peak_kib = self.peak_kib.max(rss);
        rss
    }

    /// Asserts that RSS is (or within [`SETTLE`] gets) at most baseline + tolerance;
    /// returns the settled value.
    pub(crate) async fn assert_memory_settles(&mut self) -> u64 {
        let limit = self.baseline_kib + RSS_TOLERANCE_KIB;
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let rss = self.sample_rss();
            if rss <= limit {
                return rss;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "RSS {rss} KiB stays above baseline {} KiB + {RSS_TOLERANCE_KIB} KiB",
                self.baseline_kib
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The server came through: the process runs, `/healthz` is 200, the gauges are back
    /// to the canaries alone, memory settles, and the canaries still chat (before and
    /// after the settling). Prints `baseline → peak → settled` RSS for the record.
    pub(crate) async fn finish(mut self, case: &str) {
        self.server.assert_running();
        self.canaries_chat().await;
        self.server.assert_healthy().await;
        let after = self.sample_rss();
        for (series, expected) in [
            ("chat_connections", 2),
            ("chat_users", 2),
            ("chat_rooms", 1),
        ] {
            self.server.await_metric(series, expected, SETTLE).await;
        }
        let settled = self.assert_memory_settles().await;
        self.canaries_chat().await;
        self.server.assert_healthy().await;
        self.server.assert_running();
        eprintln!(
            "[bad_input] {case}: RSS baseline {} KiB, after abuse {after} KiB, peak {} KiB, \
             settled {settled} KiB (tolerance {RSS_TOLERANCE_KIB} KiB)",
            self.baseline_kib, self.peak_kib
        );
    }
}
