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

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::process::ServerProcess;
use super::{PROMPT, Peer, TIMESTAMP, UUID, Ws, assert_frame};

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
/// queues, the gauges catching up.
pub(crate) const SETTLE: Duration = Duration::from_secs(5);

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

/// A server process with its canaries and memory baseline.
pub(crate) struct Suite {
    pub(crate) server: ServerProcess,
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
        let mut a = Peer::member(addr, "canary-a", CANARY_ROOM).await;
        let b = Peer::member(addr, "canary-b", CANARY_ROOM).await;
        a.expect(
            json!({"type": "user_joined", "room": CANARY_ROOM, "username": "canary-b",
                        "userId": b.id}),
        )
        .await;
        let mut suite = Suite {
            server,
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

    /// Four clients join a room, chat, page history and leave; the canaries chat; the
    /// HTTP routes are served. Then the gauges are back to the canaries alone.
    async fn warm_up(&mut self) {
        let addr = self.addr();
        let mut clients = Vec::new();
        for i in 0..4 {
            clients.push(Peer::member(addr, &format!("warm-{i}"), "warm-up").await);
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
        self.server
            .await_metric("chat_connections", 2, SETTLE)
            .await;
        self.server.await_metric("chat_rooms", 1, SETTLE).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
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
            tokio::time::sleep(Duration::from_millis(100)).await;
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
