//! Cheap floods against the **real example server** (a child process, see
//! `support/process.rs`), over real sockets on 127.0.0.1 (issue 11, point 3):
//!
//! * a flood of frames that change nothing (empty messages, `set_username` to the name
//!   held) is closed with 1008 after a bounded number of frames and costs the server a
//!   bounded amount of CPU;
//! * 25 connections that each ask for two full resumes and stop reading cannot grow the
//!   server's memory past the global outbound budget (plus bounded per-socket buffers):
//!   the largest holders are closed with 1013;
//! * a flood of new rooms is never refused (`store_unavailable`): the in-memory store
//!   forgets the least recently used rooms instead.
//!
//! Run with `cargo test -p chat-ws-warp --test floods -- --nocapture` to see the figures.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::Peer;
use support::process::{POLL, ServerProcess};
use support::suite::Suite;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

/// A raw client that writes whole floods at once and reads whatever comes back, never
/// failing on a write the server no longer reads (the point of a flood).
struct Flooder {
    tcp: TcpStream,
}

impl Flooder {
    async fn connect(addr: SocketAddr) -> Flooder {
        // A small receive buffer: a client that stops reading leaves what it was sent
        // on the server, not in its own kernel buffer.
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut tcp = socket.connect(addr).await.expect("TCP connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut byte).await.expect("read the handshake");
            assert_eq!(n, 1, "the server closed during the handshake");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
        Flooder { tcp }
    }

    /// One masked text frame.
    fn frame(command: &Value) -> Vec<u8> {
        support::frames::client(0x1, command.to_string().as_bytes())
    }

    /// Writes `bytes`; false once the server stopped taking them (closed, reset, or not
    /// reading for `within`).
    async fn write(&mut self, bytes: &[u8], within: Duration) -> bool {
        matches!(timeout(within, self.tcp.write_all(bytes)).await, Ok(Ok(())))
    }

    /// Reads until EOF (or `within`), returning every text frame and the close code.
    async fn drain(&mut self, within: Duration) -> (Vec<Value>, Option<u16>) {
        let deadline = Instant::now() + within;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let (mut texts, mut close, mut at) = (Vec::new(), None, 0);
        while let Some((op, payload, used)) = parse(&buf[at..]) {
            at += used;
            match op {
                0x1 => texts.push(serde_json::from_slice(payload).expect("JSON frames")),
                0x8 => close = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])),
                _ => {}
            }
        }
        (texts, close)
    }
}

/// One server frame at the start of `buf`: opcode, payload, bytes used.
fn parse(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, header) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = buf.get(header..header + len)?;
    Some((b0 & 0x0f, payload, header + len))
}

/// CPU seconds (user + system) the process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').expect("a stat line").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

const NO_OP_FLOOD: usize = 20_000;

/// Frames that change nothing are charged to the refusal budget: a flood of them is
/// closed with 1008 after the budget's burst (30), not after millions, and the server
/// spends little CPU on it. Before the fix: 6.27 M frames in 4 s, 5.3 CPU-s, never closed.
#[tokio::test]
async fn a_no_op_flood_is_closed_with_1008_within_a_bounded_number_of_frames() {
    let mut suite = Suite::start(&[]).await;
    let floods: [(&str, Value); 3] = [
        (
            "empty chat_message",
            json!({"type": "chat_message", "content": " "}),
        ),
        (
            "empty private_message",
            json!({"type": "private_message", "targetId": "nobody", "content": "  "}),
        ),
        (
            "set_username to the current name",
            json!({"type": "set_username", "username": "flooder"}),
        ),
    ];
    for (what, frame) in floods {
        let mut flooder = Flooder::connect(suite.addr()).await;
        let mut setup = Flooder::frame(&json!({"type": "set_username", "username": "flooder"}));
        setup.extend(Flooder::frame(
            &json!({"type": "join_room", "room": "flood"}),
        ));
        assert!(flooder.write(&setup, Duration::from_secs(5)).await);
        let one = Flooder::frame(&frame);
        let burst: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * NO_OP_FLOOD)
            .collect();
        let cpu_before = cpu_seconds(suite.server.pid());
        let started = Instant::now();
        // The server stops reading once it closes: a write that stalls is expected.
        flooder.write(&burst, Duration::from_secs(5)).await;
        let (texts, close) = flooder.drain(Duration::from_secs(10)).await;
        let cpu = cpu_seconds(suite.server.pid()) - cpu_before;
        let answers = texts.iter().filter(|f| f["type"] != "connection").count();
        eprintln!(
            "[floods] {what}: {} frames of {} bytes sent, closed with {close:?} after {answers} \
             answers in {:?}, server CPU {cpu:.2} s",
            NO_OP_FLOOD,
            one.len(),
            started.elapsed()
        );
        assert_eq!(close, Some(1008), "{what}: {:?}", texts.last());
        // username_set + 3 join replies + at most the budget's burst (30) of answers,
        // plus what refilled while the flood was read (1/s).
        assert!(answers <= 4 + 30 + 15, "{what}: {answers} answers");
        assert!(cpu < 2.0, "{what}: {cpu:.2} CPU seconds");
    }
    suite.sample_rss();
    suite.finish("no-op floods").await;
}

/// The figure of issue 11: 25 connections from one address each ask for a full resume
/// twice and stop reading. Resume replays leave in 64 KiB frames, so no transport copy
/// holds megabytes; and with a global outbound budget of 4 MiB (low, so that the policy
/// shows), the largest holders are closed with 1013. The server grows by far less than
/// the 236 MB seen before (`FLOODS_GLOBAL_BYTES` overrides the budget, to compare).
#[tokio::test]
async fn double_full_resumes_that_nobody_reads_stay_within_the_global_budget() {
    let budget: u64 = std::env::var("FLOODS_GLOBAL_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4 << 20);
    let budget_flag = budget.to_string();
    let mut suite = Suite::start(&[
        "--outbound-global-bytes",
        &budget_flag,
        "--message-rate",
        "off",
        "--join-rate",
        "off",
        "--max-connections-per-ip",
        "off",
        "--connections-per-ip-rate",
        "off",
    ])
    .await;
    // 500 messages of 1,000 control characters: ~6 KB each once escaped, a full
    // resume ~3.2 MB.
    let mut writer = suite.member("writer", "big").await;
    let content = "\u{1}".repeat(1000);
    // In steps of 20: a connection may queue 32 commands behind one waiting for the store.
    for _ in 0..25 {
        for _ in 0..20 {
            writer
                .send(json!({"type": "chat_message", "content": content}))
                .await;
        }
        for _ in 0..20 {
            writer.expect_type("message_received").await;
        }
    }
    writer
        .send(json!({"type": "join_room", "room": "big", "since": 0, "epoch": "x"}))
        .await;
    writer.expect_type("room_left").await;
    writer.expect_type("room_joined").await;
    let epoch = writer.expect_type("message_history").await["epoch"].clone();
    writer.disconnect().await;
    let before = suite.sample_rss();

    let mut flooders = Vec::new();
    for i in 0..25 {
        let mut f = Flooder::connect(suite.addr()).await;
        let mut frames =
            Flooder::frame(&json!({"type": "set_username", "username": format!("reader-{i}")}));
        for _ in 0..2 {
            frames.extend(Flooder::frame(
                &json!({"type": "join_room", "room": "big", "since": 0, "epoch": epoch}),
            ));
        }
        assert!(f.write(&frames, Duration::from_secs(5)).await);
        flooders.push(f);
    }
    // The server queues what it will until it is past its budget: wait for its first
    // 1013 (without the policy there is none, and this wait fails) and an empty hub
    // queue, sampling its memory meanwhile.
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        peak = peak.max(suite.sample_rss());
        let shed = suite
            .server
            .metric(r#"chat_closes_total{code="1013"}"#)
            .await
            > 0;
        if shed && suite.server.metric("chat_hub_queue_depth").await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection was closed with 1013 (RSS peak {peak} KiB)"
        );
        tokio::time::sleep(POLL).await;
    }
    // Then read everything, sampling until the last reader is done: whatever the server
    // still queued meanwhile is within the peak.
    let mut drains: tokio::task::JoinSet<_> = flooders
        .into_iter()
        .map(|mut f| async move { f.drain(Duration::from_secs(10)).await.1 })
        .collect();
    let mut closes = Vec::new();
    loop {
        peak = peak.max(suite.sample_rss());
        // The sampling interval of the measurement (not a wait for anything): the
        // drains end on their own.
        match timeout(POLL, drains.join_next()).await {
            Ok(Some(close)) => closes.push(close.expect("drain task")),
            Ok(None) => break,
            Err(_sample_again) => {}
        }
    }
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    let busy = closes.iter().filter(|c| **c == Some(1013)).count();
    eprintln!(
        "[floods] 25 × 2 full resumes, unread: RSS {before} KiB → peak {peak} KiB \
         (+{growth_mib:.1} MiB, global budget {} MiB); closes {closes:?}",
        budget >> 20
    );
    // The budget plus what the transport holds outside it (one frame copy and the
    // socket's write buffer per connection): well under the 236 MB seen before.
    assert!(growth_mib < 64.0, "+{growth_mib:.1} MiB");
    assert!(
        busy > 0,
        "the largest holders are closed with 1013: {closes:?}"
    );
    suite.finish("double full resumes").await;
}

/// One address creating rooms as fast as it can is never refused: past the store's
/// caps, the least recently used rooms are forgotten. Before the fix, every new room
/// beyond 10,000 got `store_unavailable` until a restart. The members of a room whose
/// idle stream was forgotten meanwhile are told `stream_reset` and keep chatting (seq
/// from 1 under the new epoch), so this case checks its own pair of members instead of
/// the suite's canaries (whose room is forgotten too, by design).
#[tokio::test]
async fn a_flood_of_new_rooms_never_gets_store_unavailable() {
    let server = ServerProcess::start(&[
        "--store-max-rooms",
        "100",
        "--store-max-bytes",
        "1048576",
        "--message-rate",
        "off",
        "--join-rate",
        "off",
    ]);
    let addr = server.addr();
    let mut a = Peer::member(addr, "alice", "quiet").await;
    let mut b = Peer::member(addr, "bob", "quiet").await;
    a.expect_type("user_joined").await;
    a.send(json!({"type": "chat_message", "content": "before"}))
        .await;
    assert_eq!(a.expect_type("message_received").await["seq"], 1);
    assert_eq!(b.expect_type("message_received").await["seq"], 1);
    let rss_before = server.rss_kib();
    let started = Instant::now();
    let mut peer = Peer::named(addr, "roomer").await;
    for n in 0..600 {
        let room = format!("flood-{n}");
        peer.send(json!({"type": "join_room", "room": room})).await;
        peer.send(json!({"type": "chat_message", "content": "first"}))
            .await;
        loop {
            let frame = peer.next().await;
            assert_ne!(frame["type"], "error", "room {n}: {frame}");
            if frame["type"] == "message_received" {
                assert_eq!(frame["seq"], 1, "room {n}: {frame}");
                break;
            }
        }
    }
    eprintln!(
        "[floods] 600 new rooms in {:?}, none refused; RSS {rss_before} KiB → {} KiB; \
         rooms with members in the engine {}",
        started.elapsed(),
        server.rss_kib(),
        server.metric("chat_rooms").await
    );
    // The quiet room's stream was forgotten: its members learn the new epoch and go on.
    a.send(json!({"type": "chat_message", "content": "after"}))
        .await;
    for member in [&mut a, &mut b] {
        let reset = member.expect_type("stream_reset").await;
        assert_eq!(reset["room"], "quiet");
        let after = member.expect_type("message_received").await;
        assert_eq!(
            (&after["content"], &after["seq"]),
            (&json!("after"), &json!(1))
        );
    }
    peer.disconnect().await;
}
