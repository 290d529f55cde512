//! The bad-input suite: hostile and broken clients against the **real example server**
//! (a child process, see `support/process.rs`), over real sockets on 127.0.0.1.
//!
//! Every case asserts the exact answer — the HTTP status, the close code, or the whole
//! `error` frame — and then, through [`Suite::finish`], that the server came through:
//! the process runs and `/healthz` is 200, two canary clients in their own room still
//! chat (A sends, both receive the exact message), the server's gauges on `/metrics` are
//! back to the canaries alone (connections, users, rooms), and its `VmRSS` settles within
//! a tolerance of the baseline taken after warm-up. Heavy cases also check the gauges at
//! their peak (10,000 rooms, 50 connections).
//!
//! Only what sockets and the real binary show is here: handshakes, framing, size
//! limits, floods, close codes on the wire, admission. What the engine and the decoder
//! answer to each malformed frame, name, id or cursor is tested where those rules live
//! (docs/TESTS.md); one case sends one of each kind through the real server.
//!
//! Each case starts its own server with the flags it needs (small limits make floods
//! quick), so cases do not share state and a crash is pinned to one case. The table of
//! cases is in docs/SECURITY.md; run with
//! `cargo test -p chat-ws-warp --test bad_input -- --nocapture` to see each case's RSS.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::frames::{self, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
use support::process::{ends_within, http_exchange, read_response};
use support::suite::{Suite, hs256, sub_of, unix_now};
use support::{PROMPT, Peer, RawFrame, RawWs, TIMESTAMP, UUID, assert_frame};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

// ---- helpers ------------------------------------------------------------------------

fn chat(content: &str) -> Value {
    json!({"type": "chat_message", "content": content})
}

/// The expected `message_received` for `content` sent by `from` (named `username`).
fn received(room: &str, seq: u64, from: &Peer, username: &str, content: &str) -> Value {
    json!({
        "type": "message_received", "id": UUID, "room": room, "seq": seq,
        "userId": from.id, "username": username, "content": content, "timestamp": TIMESTAMP,
    })
}

fn error(message: &str, code: &str) -> Value {
    json!({"type": "error", "message": message, "code": code})
}

/// The connection still works: a message to its room comes back with `seq`.
async fn still_chats(peer: &mut Peer, room: &str, seq: u64, name: &str) {
    peer.send(chat("still here")).await;
    let expected = received(room, seq, peer, name, "still here");
    peer.expect(expected).await;
}

/// A raw client (see `RawWs`) with its `connection` frame read.
async fn raw_client(suite: &Suite) -> RawWs {
    let mut raw = RawWs::connect(suite.addr()).await;
    assert_eq!(raw.next().await["type"], "connection");
    raw
}

/// A raw client with a name, in `room`.
async fn raw_member(suite: &Suite, name: &str, room: &str) -> RawWs {
    let mut raw = raw_client(suite).await;
    raw.send(json!({"type": "set_username", "username": name}))
        .await;
    assert_eq!(
        raw.next().await,
        json!({"type": "username_set", "username": name})
    );
    raw.send(json!({"type": "join_room", "room": room})).await;
    for kind in ["room_joined", "message_history", "room_users"] {
        assert_eq!(raw.next().await["type"], kind);
    }
    raw
}

/// Sends `frame` from a raw client that is a room member, and asserts the close code the
/// server answers with. The client's room empties, which `finish` checks via the gauges.
async fn closes_with(suite: &Suite, frame: &[u8], code: u16) {
    let mut raw = raw_member(suite, "framer", "frames").await;
    raw.write(frame).await.expect("write the frame");
    assert_eq!(raw.close_code().await, code);
    assert!(
        raw.ended_within(PROMPT).await,
        "the server ends the connection"
    );
}

/// A `chat_message` whose JSON text is exactly `bytes` long.
fn chat_of_size(bytes: usize) -> String {
    let empty = chat("").to_string();
    let text = chat(&"x".repeat(bytes - empty.len())).to_string();
    assert_eq!(text.len(), bytes);
    text
}

// ---- malformed handshakes -----------------------------------------------------------

/// Small HTTP limits, so oversized and slow requests are quick to show.
const HTTP_FLAGS: &[&str] = &[
    "--max-request-header-bytes",
    "4096",
    "--max-request-headers",
    "16",
    "--header-read-timeout",
    "1s",
];

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
const VERSION: &str = "Sec-WebSocket-Version: 13\r\n";
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n";

/// An upgrade request for `/ws` with the given extra header lines.
fn upgrade(method_and_version: (&str, &str), headers: &str) -> String {
    let (method, version) = method_and_version;
    format!("{method} /ws {version}\r\nHost: 127.0.0.1\r\n{headers}\r\n")
}

/// Sends `request`; asserts the exact status and plain-text body and that no upgrade
/// happened. Returns the connection.
async fn refused(suite: &Suite, request: &str, status: u16, body: &str) -> TcpStream {
    let (response, tcp) = http_exchange(suite.addr(), request.as_bytes()).await;
    let response = response.expect("an HTTP response");
    assert_eq!(
        (response.status, response.body.as_str()),
        (status, body),
        "{response:?}"
    );
    assert!(response.header("sec-websocket-accept").is_none());
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_without_sec_websocket_key_is_400() {
    let suite = Suite::start(HTTP_FLAGS).await;
    let request = upgrade(("GET", "HTTP/1.1"), &format!("{UPGRADE}{VERSION}"));
    refused(
        &suite,
        &request,
        400,
        "Invalid request header \"sec-websocket-key\"",
    )
    .await;
    suite.finish("no Sec-WebSocket-Key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_a_wrong_or_missing_version_is_400() {
    let suite = Suite::start(HTTP_FLAGS).await;
    for version in ["8", "14", "13, 8", "abc"] {
        let request = upgrade(
            ("GET", "HTTP/1.1"),
            &format!("{UPGRADE}{KEY}Sec-WebSocket-Version: {version}\r\n"),
        );
        refused(
            &suite,
            &request,
            400,
            "Invalid request header \"sec-websocket-version\"",
        )
        .await;
    }
    let request = upgrade(("GET", "HTTP/1.1"), &format!("{UPGRADE}{KEY}"));
    refused(
        &suite,
        &request,
        400,
        "Missing request header \"sec-websocket-version\"",
    )
    .await;
    suite.finish("wrong Sec-WebSocket-Version").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_without_upgrade_headers_is_400() {
    let suite = Suite::start(HTTP_FLAGS).await;
    let request = upgrade(("GET", "HTTP/1.1"), &format!("{KEY}{VERSION}"));
    refused(
        &suite,
        &request,
        400,
        "Invalid request header \"connection\"",
    )
    .await;
    let request = upgrade(
        ("GET", "HTTP/1.1"),
        &format!("Upgrade: websocket\r\nConnection: keep-alive\r\n{KEY}{VERSION}"),
    );
    refused(
        &suite,
        &request,
        400,
        "Connection header did not include 'upgrade'",
    )
    .await;
    suite.finish("no Upgrade/Connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_another_method_is_405() {
    let suite = Suite::start(HTTP_FLAGS).await;
    let request = upgrade(
        ("POST", "HTTP/1.1"),
        &format!("{UPGRADE}{KEY}{VERSION}Content-Length: 0\r\n"),
    );
    refused(&suite, &request, 405, "HTTP method not allowed").await;
    suite.finish("POST upgrade").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_at_a_path_that_is_no_socket_is_404() {
    let suite = Suite::start(HTTP_FLAGS).await;
    for path in ["/nope", "/ws/extra", "/WS", "/%2e%2e/ws"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{UPGRADE}{KEY}{VERSION}\r\n");
        refused(&suite, &request, 404, "").await;
    }
    suite.finish("upgrade at a foreign path").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_request_line_is_400_and_the_connection_is_closed() {
    let suite = Suite::start(HTTP_FLAGS).await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
        b"HELLO WORLD\r\n\r\n",
        b"GET /ws HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET\x00/ws HTTP/1.1\r\n\r\n",
    ] {
        let (response, mut tcp) = http_exchange(suite.addr(), garbage).await;
        let response = response.expect("an HTTP response");
        assert_eq!(response.status, 400, "{garbage:?}: {response:?}");
        assert_eq!(response.header("connection"), Some("close"));
        assert!(ends_within(&mut tcp, PROMPT).await, "closed after the 400");
    }
    suite.finish("garbage request line").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_past_max_request_header_bytes_are_431() {
    let suite = Suite::start(HTTP_FLAGS).await;
    // One 8 KiB header, and many small ones adding up past 4 KiB.
    let big = format!("{UPGRADE}{KEY}{VERSION}X-Big: {}\r\n", "a".repeat(8 * 1024));
    let many =
        format!("{UPGRADE}{KEY}{VERSION}") + &format!("X-Many: {}\r\n", "b".repeat(600)).repeat(8);
    for headers in [big, many] {
        let (response, mut tcp) = http_exchange(
            suite.addr(),
            upgrade(("GET", "HTTP/1.1"), &headers).as_bytes(),
        )
        .await;
        let response = response.expect("an HTTP response");
        assert_eq!(response.status, 431, "{response:?}");
        assert!(ends_within(&mut tcp, PROMPT).await, "closed after the 431");
    }
    suite.finish("oversized headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_headers_than_max_request_headers_are_431() {
    let suite = Suite::start(HTTP_FLAGS).await;
    let extra: String = (0..32).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = upgrade(
        ("GET", "HTTP/1.1"),
        &format!("{UPGRADE}{KEY}{VERSION}{extra}"),
    );
    let (response, mut tcp) = http_exchange(suite.addr(), request.as_bytes()).await;
    let response = response.expect("an HTTP response");
    assert_eq!(response.status, 431, "{response:?}");
    assert!(ends_within(&mut tcp, PROMPT).await, "closed after the 431");
    suite.finish("too many headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_end_are_cut_off_after_the_header_read_timeout() {
    let suite = Suite::start(HTTP_FLAGS).await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(suite.addr()).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    )
    .await
    .expect("write");
    let response = timeout(PROMPT, read_response(&mut tcp))
        .await
        .expect("the server acts on the timeout");
    let after = started.elapsed();
    // hyper closes the connection without a response: not before the 1 s timeout, and
    // (the `timeout` above) within `PROMPT`, half the default timeout of 10 s — so it is
    // the flag that acts, with no upper window for a loaded machine to miss.
    assert!(response.is_none(), "{response:?}");
    assert!(
        after >= Duration::from_millis(900),
        "cut off after {after:?}, before the header read timeout of 1 s"
    );
    suite.finish("slow headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_upgrade_is_refused() {
    let suite = Suite::start(HTTP_FLAGS).await;
    let request = upgrade(("GET", "HTTP/1.0"), &format!("{UPGRADE}{KEY}{VERSION}"));
    let (response, _tcp) = http_exchange(suite.addr(), request.as_bytes()).await;
    let response = response.expect("an HTTP response");
    assert_eq!(response.status, 400, "{response:?}");
    suite.finish("HTTP/1.0 upgrade").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_sec_websocket_key_is_400() {
    let suite = Suite::start(HTTP_FLAGS).await;
    for key in ["short", "!!!!", "dGhlIHNhbXBsZSBub25jZQ==dGhl"] {
        let request = upgrade(
            ("GET", "HTTP/1.1"),
            &format!("{UPGRADE}Sec-WebSocket-Key: {key}\r\n{VERSION}"),
        );
        let (response, _tcp) = http_exchange(suite.addr(), request.as_bytes()).await;
        let response = response.expect("an HTTP response");
        assert_eq!(response.status, 400, "key {key:?}: {response:?}");
    }
    suite.finish("malformed Sec-WebSocket-Key").await;
}

// ---- broken WebSocket framing -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let suite = Suite::start(&[]).await;
    let command = json!({"type": "set_username", "username": "unmasked"}).to_string();
    closes_with(
        &suite,
        &frames::frame(true, 0, TEXT, false, command.as_bytes()),
        1002,
    )
    .await;
    suite.finish("unmasked frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_opcodes_are_closed_with_1002() {
    let suite = Suite::start(&[]).await;
    // 0x3-0x7 are reserved data opcodes, 0xB-0xF reserved control opcodes.
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        closes_with(&suite, &frames::client(opcode, b"x"), 1002).await;
    }
    suite.finish("reserved opcode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_without_an_extension_are_closed_with_1002() {
    let suite = Suite::start(&[]).await;
    let command = chat("rsv").to_string();
    for rsv in [0b100, 0b010, 0b001] {
        closes_with(
            &suite,
            &frames::frame(true, rsv, TEXT, true, command.as_bytes()),
            1002,
        )
        .await;
    }
    suite.finish("RSV bits").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let suite = Suite::start(&[]).await;
    for payload in [
        &b"{\"type\":\"chat_message\",\"content\":\"\xff\xfe\"}"[..],
        b"{\"type\":\"chat_message\",\"content\":\"\xed\xa0\x80\"}", // an encoded surrogate
        b"{\"type\":\"chat_message\",\"content\":\"\xc0\xaf\"}",     // overlong '/'
        b"\xe2\x82",                                                 // cut mid-character
    ] {
        closes_with(&suite, &frames::client(TEXT, payload), 1007).await;
    }
    suite.finish("invalid UTF-8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_64_kib_is_closed_with_1009() {
    let suite = Suite::start(&[]).await;
    let text = chat_of_size(64 * 1024 + 1);
    closes_with(&suite, &frames::client(TEXT, text.as_bytes()), 1009).await;
    suite.finish("frame over 64 KiB").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_announcing_1_gib_is_closed_with_1009_at_once_without_memory_growth() {
    let mut suite = Suite::start(&[]).await;
    // 1 GiB, the largest 63-bit length, and a length with the most significant bit set
    // (which RFC 6455 forbids).
    for len in [1 << 30, i64::MAX as u64, u64::MAX] {
        let mut raw = raw_member(&suite, "announcer", "frames").await;
        let mut bytes = frames::header(true, 0, TEXT, true, len);
        bytes.extend(frames::masked(&[b'x'; 1000]));
        raw.write(&bytes).await.expect("write");
        // …and then nothing more: the server must not wait for (or reserve) the payload.
        // A server that waited would never close (the heartbeat is 30 s away):
        // `close_code` waits at most `PROMPT`.
        assert_eq!(raw.close_code().await, 1009, "announcing {len} bytes");
        let rss = suite.sample_rss();
        assert!(
            rss <= suite.baseline_kib + support::suite::RSS_TOLERANCE_KIB,
            "RSS {rss} KiB right after announcing {len} bytes (baseline {} KiB)",
            suite.baseline_kib
        );
        assert!(raw.ended_within(PROMPT).await);
    }
    suite.finish("1 GiB announced").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_finished_frame_is_dropped_by_the_heartbeat() {
    let mut suite = Suite::start(&["--heartbeat", "500ms"]).await;
    let mut raw = raw_member(&suite, "stalled", "frames").await;
    // A header announcing 1000 bytes, 10 of them, then silence (no pong can follow: the
    // frame is never finished).
    let mut bytes = frames::header(true, 0, TEXT, true, 1000);
    bytes.extend(frames::masked(b"{\"type\":\"c"));
    raw.write(&bytes).await.expect("write");
    // Dropped by the 500 ms heartbeat: the default one (30 s) would not end it within
    // these 5 s.
    let frames = raw.frames_until_end(Duration::from_secs(5)).await;
    assert!(frames.contains(&RawFrame::Ping), "{frames:?}");
    assert_eq!(
        frames.last(),
        Some(&RawFrame::Close(Some(1001))),
        "{frames:?}"
    );
    suite.sample_rss();
    suite.finish("never-finished frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_adding_up_past_64_kib_are_closed_with_1009() {
    let suite = Suite::start(&[]).await;
    // 257 fragments of 256 bytes: the 257th crosses 64 KiB.
    let mut bytes = frames::frame(false, 0, TEXT, true, &[b'x'; 256]);
    for _ in 1..257 {
        bytes.extend(frames::frame(false, 0, CONTINUATION, true, &[b'x'; 256]));
    }
    closes_with(&suite, &bytes, 1009).await;
    suite.finish("fragment flood past 64 KiB").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_empty_fragments_cost_nothing_and_the_message_still_counts() {
    let mut suite = Suite::start(&[]).await;
    let mut raw = raw_member(&suite, "fragments", "frames").await;
    let command = json!({"type": "set_username", "username": "fragments"}).to_string();
    let (head, tail) = command.split_at(10);
    let mut bytes = frames::frame(false, 0, TEXT, true, head.as_bytes());
    for _ in 0..20_000 {
        bytes.extend(frames::frame(false, 0, CONTINUATION, true, b""));
    }
    bytes.extend(frames::frame(true, 0, CONTINUATION, true, tail.as_bytes()));
    raw.write(&bytes).await.expect("write");
    assert_eq!(
        raw.next().await,
        json!({"type": "username_set", "username": "fragments"})
    );
    suite.sample_rss();
    drop(raw);
    suite.finish("20,000 empty fragments").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_answered_or_coalesced_and_memory_stays_flat() {
    let mut suite = Suite::start(&[]).await;
    let mut raw = raw_member(&suite, "pinger", "frames").await;
    // 5,000 pings, each with its number, then a command.
    let mut bytes = Vec::new();
    for i in 0u32..5_000 {
        bytes.extend(frames::client(PING, &i.to_be_bytes()));
    }
    bytes.extend(frames::client(
        TEXT,
        json!({"type": "set_username", "username": "pinger"})
            .to_string()
            .as_bytes(),
    ));
    raw.write(&bytes).await.expect("write");
    let mut pongs = 0;
    let answer = loop {
        match timeout(PROMPT, raw.frame()).await.expect("frames in time") {
            Some(RawFrame::Other(PONG)) => pongs += 1,
            Some(RawFrame::Text(text)) => break text,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(answer, r#"{"type":"username_set","username":"pinger"}"#);
    assert!(
        (1..=5_000).contains(&pongs),
        "{pongs} pongs for 5,000 pings"
    );
    // 20,000 more, written while not reading, and a command behind them: once it is
    // answered the server has read every ping, and the pongs may not have piled up in it.
    let mut flood: Vec<u8> = (0..20_000)
        .flat_map(|_| frames::client(PING, b""))
        .collect();
    flood.extend(frames::client(
        TEXT,
        json!({"type": "set_username", "username": "pinger"})
            .to_string()
            .as_bytes(),
    ));
    raw.write(&flood).await.expect("write");
    loop {
        match timeout(PROMPT, raw.frame()).await.expect("frames in time") {
            Some(RawFrame::Other(PONG)) => {}
            Some(RawFrame::Text(text)) => {
                assert_eq!(text, r#"{"type":"username_set","username":"pinger"}"#);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    suite.sample_rss();
    suite.assert_memory_settles().await;
    eprintln!("[bad_input] ping flood: {pongs} pongs for the first 5,000 pings");
    drop(raw);
    suite.finish("ping flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_with_nothing_to_continue_is_closed_with_1002() {
    let suite = Suite::start(&[]).await;
    closes_with(&suite, &frames::client(CONTINUATION, b"orphan"), 1002).await;
    suite.finish("orphan continuation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_frame_inside_a_fragmented_message_is_closed_with_1002() {
    let suite = Suite::start(&[]).await;
    let mut bytes = frames::frame(false, 0, TEXT, true, b"{\"type\":");
    bytes.extend(frames::client(TEXT, b"{}"));
    closes_with(&suite, &bytes, 1002).await;
    suite.finish("interleaved data frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_too_big_or_fragmented_are_closed_with_1002() {
    let suite = Suite::start(&[]).await;
    // A control frame's payload is at most 125 bytes…
    closes_with(&suite, &frames::client(PING, &[b'p'; 126]), 1002).await;
    // …and it may not be fragmented.
    closes_with(&suite, &frames::frame(false, 0, PING, true, b"p"), 1002).await;
    suite.finish("oversized / fragmented control frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_close_frame_is_answered_with_1002() {
    let suite = Suite::start(&[]).await;
    // A one-byte close payload (a code is two bytes), and codes that may not be sent.
    for payload in [
        &[0x03][..],
        &[0x03, 0xed],
        &[0x00, 0x00],
        &[0x03, 0xee],
        &[0x03, 0xf7],
    ] {
        closes_with(&suite, &frames::client(CLOSE, payload), 1002).await;
    }
    suite.finish("malformed close frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_is_answered_with_binary_unsupported() {
    let suite = Suite::start(&[]).await;
    let mut peer = Peer::member(suite.addr(), "binary", "binary").await;
    for payload in [
        chat("in binary").to_string().into_bytes(),
        vec![0, 159, 146, 150],
    ] {
        peer.send_message(Message::binary(payload)).await;
        peer.expect(error(
            "Binary frames are not supported; send JSON text frames",
            "binary_unsupported",
        ))
        .await;
    }
    // Also as raw fragments.
    let mut raw = raw_member(&suite, "raw-binary", "binary").await;
    let mut bytes = frames::frame(false, 0, BINARY, true, b"ab");
    bytes.extend(frames::frame(true, 0, CONTINUATION, true, b"cd"));
    raw.write(&bytes).await.expect("write");
    assert_eq!(
        raw.next().await,
        error(
            "Binary frames are not supported; send JSON text frames",
            "binary_unsupported"
        )
    );
    let joined = peer.expect_type("user_joined").await;
    drop(raw);
    peer.expect(
        json!({"type": "user_left", "room": "binary", "username": "raw-binary",
                       "userId": joined["userId"]}),
    )
    .await;
    still_chats(&mut peer, "binary", 1, "binary").await;
    drop(peer);
    suite.finish("binary frames").await;
}

// ---- hostile input through the real binary -----------------------------------------

/// What the rules say about each malformed frame, name, id, cursor or hostile string is
/// tested where the rule lives (docs/TESTS.md): decoding in
/// `chat-core/src/protocol/tests.rs`, names and ids in `chat-core/src/ids.rs`, the
/// engine's answers on the `Sim` in `chat-core/src/engine/tests/`. Here the real server
/// gets one of each kind on one connection, answers each with its code, passes a
/// hostile string through untouched, and comes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_each_kind_of_hostile_input_is_answered_and_the_server_comes_through() {
    let suite = Suite::start(&[]).await;
    let mut peer = Peer::member(suite.addr(), "sender", "json").await;
    // 20,000 levels fit in a 64 KiB frame (40 KB of brackets).
    let (open, close) = ("[".repeat(20_000), "]".repeat(20_000));
    let cases = [
        ("hello".to_owned(), "invalid_json"),
        ("{\"type\":\"chat_message\",".to_owned(), "invalid_json"),
        (
            r#"{"type":"chat_message","content":"\ud800"}"#.to_owned(),
            "invalid_json",
        ),
        ("null".to_owned(), "invalid_message"),
        (format!("{open}{close}"), "invalid_message"),
        (
            format!(r#"{{"type":"chat_message","content":{open}{close}}}"#),
            "invalid_message",
        ),
        (
            r#"{"type":"chat_message","content":"a","content":"b"}"#.to_owned(),
            "invalid_message",
        ),
        (
            r#"{"type":"join_room","room":"json","since":-1}"#.to_owned(),
            "invalid_message",
        ),
        (
            format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000)),
            "unknown_type",
        ),
        (
            json!({"type": "join_room", "room": "\u{202e}moor"}).to_string(),
            "invalid_room",
        ),
        (
            json!({"type": "chat_message", "content": "x", "clientMsgId": "a\u{200b}"}).to_string(),
            "invalid_field",
        ),
        (
            json!({"type": "private_message", "targetId": "<script>", "content": "hi"}).to_string(),
            "user_not_found",
        ),
    ];
    for (text, code) in &cases {
        peer.send_text(text.as_str()).await;
        let frame = peer.next().await;
        assert_eq!(
            (&frame["type"], &frame["code"]),
            (&json!("error"), &json!(code)),
            "for {:?}",
            &text[..text.len().min(80)]
        );
    }
    let mut unnamed = Peer::connect(suite.addr()).await;
    unnamed
        .send(json!({"type": "set_username", "username": "\u{202e}evil"}))
        .await;
    assert_eq!(unnamed.next().await["code"], "invalid_username");
    let hostile = "\"><img src=x onerror=alert(document.cookie)>";
    peer.send(chat(hostile)).await;
    peer.expect(received("json", 1, &peer, "sender", hostile))
        .await;
    drop((peer, unnamed));
    suite.finish("one of each kind of hostile input").await;
}

// ---- floods -------------------------------------------------------------------------

/// Reads `peer`'s frames until the server closes it: every text frame must be either
/// `accepted` (by `type`) or the exact error `refusal` (`retryAfterMs`, if present, may be
/// anything from 1 ms to `max_retry_ms`). Returns (accepted frames, refusals, close code,
/// close reason).
async fn read_until_close(
    peer: &mut Peer,
    accepted: &str,
    refusal: &Value,
    max_retry_ms: u64,
) -> (Vec<Value>, usize, u16, String) {
    let (mut ok, mut refused) = (Vec::new(), 0);
    loop {
        let message = timeout(PROMPT, futures_util::StreamExt::next(&mut peer.ws))
            .await
            .expect("frames in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if frame["type"] == accepted {
                    ok.push(frame);
                    continue;
                }
                let mut expected = refusal.clone();
                if let Some(retry) = frame["retryAfterMs"].as_u64() {
                    assert!((1..=max_retry_ms).contains(&retry), "{frame}");
                    expected["retryAfterMs"] = json!(retry);
                }
                assert_frame(&frame, &expected);
                refused += 1;
            }
            Some(Ok(Message::Close(Some(close)))) => {
                return (ok, refused, u16::from(close.code), close.reason.to_string());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected frames and a close, got {other:?}"),
        }
    }
}

/// Writes `texts` as text frames in one go and flushes. The server may close the
/// connection before the last ones are written (that is what a flood provokes), so write
/// errors end the blast instead of failing the test; the close frame sent before is still
/// there to read.
async fn blast(peer: &mut Peer, texts: impl IntoIterator<Item = String>) {
    use futures_util::SinkExt;
    for text in texts {
        if peer.ws.feed(Message::text(text)).await.is_err() {
            return;
        }
    }
    let _ = peer.ws.flush().await;
}

/// The refusal budget is 30 with 1 more per second: the 31st refusal in a burst closes.
fn assert_budget_spent(refused: usize, since: Instant) {
    let refill = since.elapsed().as_secs() as usize + 1;
    assert!(
        (31..=31 + refill).contains(&refused),
        "{refused} refusals before the close (budget 30, +1/s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flood_is_rate_limited_then_closed_with_1008() {
    let suite = Suite::start(&[]).await;
    let mut flooder = Peer::member(suite.addr(), "flooder", "flood").await;
    let mut watcher = Peer::member(suite.addr(), "watcher", "flood").await;
    flooder.expect_type("user_joined").await;
    let started = Instant::now();
    // The burst of 10 is accepted…
    let mut stored = Vec::new();
    for i in 1..=10 {
        flooder.send(chat(&format!("m{i}"))).await;
        let expected = received("flood", i, &flooder, "flooder", &format!("m{i}"));
        stored.push(flooder.expect(expected).await);
    }
    // …then 45 at once: refused until the refusal budget is spent (31), then closed.
    blast(
        &mut flooder,
        (11..=55).map(|i| chat(&format!("m{i}")).to_string()),
    )
    .await;
    let refusal = json!({"type": "error", "message": "Sending messages too fast",
                         "code": "rate_limited", "retryAfterMs": 0});
    let (extra, refused, code, reason) =
        read_until_close(&mut flooder, "message_received", &refusal, 1000).await;
    assert_eq!((code, reason.as_str()), (1008, "too many refused requests"));
    assert_budget_spent(refused, started);
    // A refill may let one more through per second; nothing else was stored.
    assert!(extra.len() <= started.elapsed().as_secs() as usize + 1);
    stored.extend(extra);
    for message in &stored {
        assert_eq!(&watcher.next().await, message);
    }
    watcher
        .expect(
            json!({"type": "user_left", "room": "flood", "username": "flooder",
                       "userId": flooder.id}),
        )
        .await;
    watcher
        .send(json!({"type": "history", "room": "flood"}))
        .await;
    watcher
        .expect(
            json!({"type": "message_history", "room": "flood", "messages": stored,
                       "hasMore": false}),
        )
        .await;
    drop(watcher);
    suite.finish("message flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_flood_spends_the_refusal_budget_and_is_closed_with_1008() {
    let suite = Suite::start(&[]).await;
    let mut flooder = Peer::member(suite.addr(), "flooder", "flood").await;
    let mut watcher = Peer::member(suite.addr(), "watcher", "flood").await;
    flooder.expect_type("user_joined").await;
    let started = Instant::now();
    blast(&mut flooder, (0..40).map(|_| "garbage".to_owned())).await;
    let refusal = error("Invalid JSON", "invalid_json");
    let (ok, refused, code, reason) = read_until_close(&mut flooder, "-", &refusal, 0).await;
    assert!(ok.is_empty());
    assert_eq!((code, reason.as_str()), (1008, "too many refused requests"));
    assert_budget_spent(refused, started);
    watcher
        .expect(
            json!({"type": "user_left", "room": "flood", "username": "flooder",
                       "userId": flooder.id}),
        )
        .await;
    drop(watcher);
    suite.finish("garbage flood").await;
}

/// Joins rooms `{prefix}0..{prefix}{n}` with `keepRooms` from `peer`, pipelined (a
/// successful join waits for the store, and 32 commands may queue behind it; refused joins
/// do not wait). Asserts each answer exactly: the first `cap` joins succeed, the rest are
/// `too_many_rooms`.
async fn join_many(peer: &mut Peer, name: &str, prefix: &str, n: usize, cap: usize) {
    let mut epoch = Value::Null;
    let mut next = 0;
    while next < n {
        let window = next..n.min(next + if next < cap { 16 } else { 500 });
        for i in window.clone() {
            peer.send(json!({"type": "join_room", "room": format!("{prefix}{i}"),
                             "keepRooms": true}))
                .await;
        }
        for i in window.clone() {
            let room = format!("{prefix}{i}");
            if i >= cap {
                peer.expect_error("You are in too many rooms", "too_many_rooms")
                    .await;
                continue;
            }
            peer.expect(json!({"type": "room_joined", "room": room}))
                .await;
            let history = peer.expect_type("message_history").await;
            if epoch.is_null() {
                epoch = history["epoch"].clone();
            }
            assert_eq!(
                history,
                json!({"type": "message_history", "room": room, "messages": [],
                       "epoch": epoch, "lastSeq": 0, "recovered": false, "hasMore": false})
            );
            peer.expect(json!({"type": "room_users", "room": room,
                               "users": [{"id": peer.id, "username": name}]}))
                .await;
        }
        next = window.end;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_10_000_rooms_stops_at_100_with_too_many_rooms() {
    let mut suite = Suite::start(&["--join-rate", "off", "--refusal-budget", "off"]).await;
    let mut roomer = Peer::named(suite.addr(), "roomer").await;
    join_many(&mut roomer, "roomer", "r", 10_000, 100).await;
    suite.server.await_metric("chat_rooms", 101, PROMPT).await;
    suite
        .server
        .await_metric("chat_connections", 3, PROMPT)
        .await;
    suite.sample_rss();
    // Still a working connection: leave one, join another.
    roomer
        .send(json!({"type": "leave_room", "room": "r0"}))
        .await;
    roomer
        .expect(json!({"type": "room_left", "room": "r0"}))
        .await;
    roomer
        .send(json!({"type": "join_room", "room": "r9999", "keepRooms": true}))
        .await;
    roomer
        .expect(json!({"type": "room_joined", "room": "r9999"}))
        .await;
    roomer.disconnect().await;
    suite.finish("join 10,000 rooms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_past_the_room_cap_with_the_refusal_budget_on_is_closed_with_1008() {
    let suite = Suite::start(&["--join-rate", "off"]).await;
    let mut roomer = Peer::named(suite.addr(), "roomer").await;
    join_many(&mut roomer, "roomer", "r", 100, 100).await;
    let started = Instant::now();
    blast(
        &mut roomer,
        (100..140).map(|i| {
            json!({"type": "join_room", "room": format!("r{i}"), "keepRooms": true}).to_string()
        }),
    )
    .await;
    let refusal = error("You are in too many rooms", "too_many_rooms");
    let (ok, refused, code, reason) = read_until_close(&mut roomer, "-", &refusal, 0).await;
    assert!(ok.is_empty());
    assert_eq!((code, reason.as_str()), (1008, "too many refused requests"));
    assert_budget_spent(refused, started);
    suite.finish("join past the cap").await;
}

/// 10 connections × 1,000 rooms (the per-connection cap raised with
/// `--max-rooms-per-connection 1000`), twice over: 10,000 rooms live at once, all
/// freed. Few connections keep the allocator's retention of their 128 KiB read buffers
/// small, so the RSS checks measure the rooms. The second round must not raise the settled
/// RSS by more than 4 MiB over the first: a leak of only 400 bytes per room would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_live_rooms_are_all_freed() {
    let mut suite = Suite::start(&[
        "--join-rate",
        "off",
        "--max-rooms-per-connection",
        "1000",
        "--connections-per-ip-rate",
        "off",
    ])
    .await;
    let addr = suite.addr();
    let mut settled = Vec::new();
    for round in 0..2 {
        let peers = futures_util::future::join_all((0..10).map(|c| async move {
            let name = format!("user-{c}");
            let mut peer = Peer::named(addr, &name).await;
            join_many(&mut peer, &name, &format!("{round}-{c}-"), 1_000, 1_000).await;
            peer
        }))
        .await;
        suite
            .server
            .await_metric("chat_rooms", 10_001, PROMPT)
            .await;
        suite
            .server
            .await_metric("chat_connections", 12, PROMPT)
            .await;
        suite.server.await_metric("chat_users", 12, PROMPT).await;
        let peak = suite.sample_rss();
        drop(peers);
        suite.server.await_metric("chat_rooms", 1, PROMPT).await;
        suite
            .server
            .await_metric("chat_connections", 2, PROMPT)
            .await;
        let after = suite.assert_memory_settles().await;
        eprintln!(
            "[bad_input] 10,000 live rooms, round {round}: RSS peak {peak} KiB, settled {after} KiB"
        );
        settled.push(after);
    }
    assert!(
        settled[1] <= settled[0] + 4 * 1024,
        "RSS grew from {} KiB to {} KiB over a second round of 10,000 rooms",
        settled[0],
        settled[1]
    );
    suite.finish("10,000 live rooms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_max_connections_is_503_and_recovers() {
    // The per-IP limits (on by default) would answer 429 first: this case is about the
    // global cap, so they are off here (and shown in their own cases).
    let mut suite = Suite::start(&[
        "--max-connections",
        "50",
        "--max-connections-per-ip",
        "off",
        "--connections-per-ip-rate",
        "off",
    ])
    .await;
    let addr = suite.addr();
    // The canaries hold 2 of the 50.
    let mut peers = Vec::new();
    for _ in 0..48 {
        peers.push(Peer::connect(addr).await);
    }
    suite
        .server
        .await_metric("chat_connections", 50, PROMPT)
        .await;
    let request = upgrade(("GET", "HTTP/1.1"), &format!("{UPGRADE}{KEY}{VERSION}"));
    for _ in 0..20 {
        refused(&suite, &request, 503, "server full").await;
    }
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(
        suite
            .server
            .metric("chat_handshakes_rejected_total{status=\"503\"}")
            .await,
        21
    );
    suite.sample_rss();
    // Ten leave: ten get in, the next is refused again.
    for peer in peers.drain(..10) {
        peer.disconnect().await;
    }
    suite
        .server
        .await_metric("chat_connections", 40, PROMPT)
        .await;
    let mut admitted = 0;
    let deadline = Instant::now() + PROMPT;
    while admitted < 10 {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            Ok((ws, _)) => {
                peers.push(Peer {
                    ws,
                    id: String::new(),
                });
                admitted += 1;
            }
            // A slot is given back when the connection's task has ended, a moment after
            // the gauge drops.
            // Each refused attempt is a full round trip to the server: the retry is the wait.
            Err(tungstenite::Error::Http(response)) if response.status() == 503 => {
                assert!(Instant::now() < deadline, "slots were not given back");
            }
            Err(e) => panic!("{e}"),
        }
    }
    refused(&suite, &request, 503, "server full").await;
    drop(peers);
    suite.finish("connection flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_in_a_busy_room_is_closed_with_1013() {
    let mut suite = Suite::start(&[
        "--message-rate",
        "off",
        "--outbound-frames",
        "128",
        "--outbound-bytes",
        "131072",
        "--write-timeout",
        "2s",
    ])
    .await;
    let addr = suite.addr();
    // A client with a 4 KiB receive buffer that never reads once it is in the room.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(addr).await.expect("connect");
    let mut slow = RawWs::handshake(tcp, addr).await;
    let slow_id = slow.next().await["clientId"]
        .as_str()
        .expect("clientId")
        .to_owned();
    slow.send(json!({"type": "set_username", "username": "slow"}))
        .await;
    slow.next().await;
    slow.send(json!({"type": "join_room", "room": "busy"}))
        .await;
    for _ in 0..3 {
        slow.next().await;
    }

    let mut talker = Peer::member(addr, "talker", "busy").await;
    let content = "x".repeat(1000);
    let started = Instant::now();
    let (mut sent, mut gone) = (0u64, false);
    while !gone {
        assert!(
            started.elapsed() < Duration::from_secs(30) && sent < 50_000,
            "the slow reader was not closed after {sent} messages"
        );
        for _ in 0..16 {
            talker.send(chat(&content)).await;
        }
        let mut echoes = 0;
        while echoes < 16 {
            let frame = talker.next().await;
            if frame["type"] == "message_received" {
                echoes += 1;
            } else {
                assert_eq!(
                    frame,
                    json!({"type": "user_left", "room": "busy", "username": "slow",
                           "userId": slow_id})
                );
                gone = true;
            }
        }
        sent += 16;
        if sent % 512 == 0 {
            suite.sample_rss();
        }
    }
    let took = started.elapsed();
    assert_eq!(
        suite
            .server
            .metric("chat_closes_total{code=\"1013\"}")
            .await,
        1
    );
    eprintln!("[bad_input] slow reader closed after {sent} messages in {took:?}");
    suite.sample_rss();
    // What reaches the slow reader, once it reads again, ends with the connection; a close
    // frame, if it made it past the full buffers, says 1013.
    let frames = slow.frames_until_end(Duration::from_secs(10)).await;
    for frame in &frames {
        assert!(
            matches!(
                frame,
                RawFrame::Text(_) | RawFrame::Ping | RawFrame::Close(Some(1013))
            ),
            "{frame:?}"
        );
    }
    drop(talker);
    suite.finish("slow reader").await;
}

// ---- admission: JWT, Origin, per-IP -------------------------------------------------

/// The secret the JWT cases' server is started with (HS256 needs at least 32 bytes).
const SECRET: &str = "bad-input suite secret, 32 bytes or more";

fn jwt_flags() -> [&'static str; 2] {
    ["--jwt-hs256-secret", SECRET]
}

/// RFC 4648 base64url without padding, as JWTs use it.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// A token with this header and claims and no signature.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// Valid claims for `name`, an hour ahead.
fn claims(name: &str) -> Value {
    json!({"sub": sub_of(name), "name": name, "exp": unix_now() + 3600})
}

/// A handshake at `/ws{query}` with extra header lines is refused with `status` and
/// exactly `body`; nothing is upgraded.
async fn admission_refuses(suite: &Suite, query: &str, headers: &str, status: u16, body: &str) {
    let request = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{UPGRADE}{KEY}{VERSION}{headers}\r\n"
    );
    refused(suite, &request, status, body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_with_alg_none_or_another_algorithm_is_401() {
    let suite = Suite::start(&jwt_flags()).await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = unsigned(&json!({"alg": alg, "typ": "JWT"}), &claims("mallory"));
        admission_refuses(
            &suite,
            &format!("?token={token}"),
            "",
            401,
            "token algorithm not accepted",
        )
        .await;
    }
    // Other algorithms than the configured one, correctly signed with the secret.
    for algorithm in [
        jsonwebtoken::Algorithm::HS384,
        jsonwebtoken::Algorithm::HS512,
    ] {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(algorithm),
            &claims("mallory"),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signing works");
        admission_refuses(
            &suite,
            "",
            &format!("Authorization: Bearer {token}\r\n"),
            401,
            "token algorithm not accepted",
        )
        .await;
    }
    assert_eq!(
        suite
            .server
            .metric("chat_handshakes_rejected_total{status=\"401\"}")
            .await,
        6
    );
    suite.finish("JWT alg none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_signed_with_another_key_is_401() {
    let suite = Suite::start(&jwt_flags()).await;
    for key in [
        "another secret, also 32 bytes long",
        "",
        SECRET.trim_end_matches('e'),
    ] {
        let token = hs256(key.as_bytes(), &claims("mallory"));
        admission_refuses(
            &suite,
            &format!("?token={token}"),
            "",
            401,
            "invalid token signature",
        )
        .await;
    }
    // A valid token whose claims were swapped after signing.
    let token = hs256(SECRET.as_bytes(), &claims("mallory"));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64url(claims("canary-a").to_string().as_bytes());
    admission_refuses(
        &suite,
        &format!("?token={}", parts.join(".")),
        "",
        401,
        "invalid token signature",
    )
    .await;
    suite.finish("JWT wrong key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_jwt_is_401() {
    let suite = Suite::start(&jwt_flags()).await;
    let now = unix_now();
    // Past the 30 s leeway: an hour ago, a minute ago, at the epoch.
    for exp in [now - 3600, now - 60, 1] {
        let token = hs256(
            SECRET.as_bytes(),
            &json!({"sub": "user-late", "name": "late", "exp": exp}),
        );
        admission_refuses(&suite, &format!("?token={token}"), "", 401, "token expired").await;
    }
    suite.finish("JWT expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_without_exp_is_401() {
    let suite = Suite::start(&jwt_flags()).await;
    let token = hs256(
        SECRET.as_bytes(),
        &json!({"sub": "user-forever", "name": "forever"}),
    );
    admission_refuses(
        &suite,
        &format!("?token={token}"),
        "",
        401,
        "token has no `exp` claim",
    )
    .await;
    suite.finish("JWT without exp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_jwt_is_401() {
    let suite = Suite::start(&jwt_flags()).await;
    let missing = "missing token: send ?token= or Authorization: Bearer";
    for (query, headers, body) in [
        ("", "", missing),
        ("?token=", "", missing),
        ("?token=abc", "", "malformed token"),
        ("?token=a.b.c", "", "malformed token"),
        (
            "",
            "Authorization: Basic dXNlcjpwYXNz\r\n",
            "the Authorization header must use the Bearer scheme",
        ),
    ] {
        admission_refuses(&suite, query, headers, 401, body).await;
    }
    let token = hs256(SECRET.as_bytes(), &claims("mallory"));
    admission_refuses(
        &suite,
        &format!("?token={token}&token={token}"),
        "",
        401,
        "more than one token presented",
    )
    .await;
    suite.finish("JWT missing / malformed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_cannot_rename_or_impersonate() {
    let suite = Suite::start(&jwt_flags()).await;
    let mut mallory = suite.named("mallory").await;
    for name in ["canary-a", "admin", "mallory2"] {
        mallory
            .send(json!({"type": "set_username", "username": name}))
            .await;
        mallory
            .expect_error(
                "Your username comes from your sign-in token",
                "username_locked",
            )
            .await;
    }
    // A valid token naming a look-alike of an online user: admitted and shown under a
    // disambiguated name — it cannot pass for the canary, and (no more 4009) nobody who
    // controls a display name at the identity provider can lock a user out.
    let token = hs256(
        SECRET.as_bytes(),
        &json!({"sub": "user-other", "name": "CANARY-A", "exp": unix_now() + 3600}),
    );
    let url = format!("ws://{}/ws?token={token}", suite.addr());
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("admitted");
    let mut other = Peer {
        ws,
        id: String::new(),
    };
    other
        .expect(json!({"type": "connection", "clientId": "user-other"}))
        .await;
    other
        .expect(json!({"type": "username_set", "username": "CANARY-A (2)"}))
        .await;
    // Nothing else came before the answer to a marker (it is in no room).
    other.send(json!({"type": "leave_room"})).await;
    other.expect_error("Join a room first", "not_in_room").await;
    other.disconnect().await;
    drop(mallory);
    suite.finish("JWT impersonation").await;
}

/// The origin the Origin cases allow.
const ORIGIN: &str = "http://chat.example:3000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_403() {
    let suite = Suite::start(&["--allowed-origins", ORIGIN]).await;
    for origin in [
        "http://chat.example.evil:3000",
        "http://evil-chat.example:3000",
        "http://sub.chat.example:3000",
        "http://chat.examp1e:3000",
        "http://xn--chat-xmpl-2ve.example:3000",
        "http://chat.example:3001",
        "http://chat.example",
        "https://chat.example:3000",
        "ws://chat.example:3000",
    ] {
        admission_refuses(
            &suite,
            "",
            &format!("Origin: {origin}\r\n"),
            403,
            "origin not allowed",
        )
        .await;
    }
    // The allowed origin, spelt otherwise, is admitted.
    let mut request = format!("ws://{}/ws", suite.addr())
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "Origin",
        "HTTP://CHAT.EXAMPLE:3000".parse().expect("a header value"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the allowed origin is admitted");
    drop(ws);
    suite.finish("foreign origins").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_malformed_or_repeated_origins_are_403() {
    let suite = Suite::start(&["--allowed-origins", ORIGIN]).await;
    admission_refuses(
        &suite,
        "",
        "Origin: null\r\n",
        403,
        "opaque origin (null) not allowed",
    )
    .await;
    for origin in [
        "chat.example:3000",
        "http://chat.example:3000/path",
        "http://",
        "*",
    ] {
        admission_refuses(
            &suite,
            "",
            &format!("Origin: {origin}\r\n"),
            403,
            "malformed Origin header",
        )
        .await;
    }
    admission_refuses(
        &suite,
        "",
        &format!("Origin: {ORIGIN}\r\nOrigin: {ORIGIN}\r\n"),
        403,
        "more than one Origin header",
    )
    .await;
    suite.finish("null / malformed origins").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_per_ip_are_429() {
    // Everything here comes from 127.0.0.1, which is not limited per IP by default:
    // `--limit-loopback` puts it under the limits this case is about (behind a trusted
    // proxy, tests/proxies.rs shows the same per forwarded client).
    let mut suite = Suite::start(&[
        "--max-connections-per-ip",
        "10",
        "--connections-per-ip-rate",
        "off",
        "--limit-loopback",
    ])
    .await;
    let addr = suite.addr();
    // The canaries hold 2 of the address's 10.
    let mut peers = Vec::new();
    for _ in 0..8 {
        peers.push(Peer::connect(addr).await);
    }
    let request = upgrade(("GET", "HTTP/1.1"), &format!("{UPGRADE}{KEY}{VERSION}"));
    for _ in 0..20 {
        refused(
            &suite,
            &request,
            429,
            "too many connections from your address",
        )
        .await;
    }
    suite.sample_rss();
    // One leaves, one gets in.
    peers.pop().expect("a peer").disconnect().await;
    suite
        .server
        .await_metric("chat_connections", 9, PROMPT)
        .await;
    let deadline = Instant::now() + PROMPT;
    loop {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            Ok((ws, _)) => {
                peers.push(Peer {
                    ws,
                    id: String::new(),
                });
                break;
            }
            // The slot is given back when the connection's task ends, just after the gauge.
            // Each refused attempt is a full round trip to the server: the retry is the wait.
            Err(tungstenite::Error::Http(response)) if response.status() == 429 => {
                assert!(Instant::now() < deadline, "the slot was not given back");
            }
            Err(e) => panic!("{e}"),
        }
    }
    refused(
        &suite,
        &request,
        429,
        "too many connections from your address",
    )
    .await;
    drop(peers);
    suite.finish("per-IP cap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_address_is_429_at_the_default_rate() {
    // Default per-IP limits: 20 new connections at once, then 5 per second — applied to
    // 127.0.0.1 by `--limit-loopback` (loopback is exempt by default).
    let suite = Suite::start(&["--limit-loopback"]).await;
    let addr = suite.addr();
    let request = upgrade(("GET", "HTTP/1.1"), &format!("{UPGRADE}{KEY}{VERSION}"));
    let started = Instant::now();
    let mut admitted = Vec::new();
    let mut refusals = 0;
    for _ in 0..60 {
        let (response, tcp) = http_exchange(addr, request.as_bytes()).await;
        let response = response.expect("an HTTP response");
        match response.status {
            101 => admitted.push(tcp),
            429 => {
                assert_eq!(
                    response.body,
                    "connecting too fast from your address: try again later"
                );
                refusals += 1;
            }
            other => panic!("unexpected {other}: {response:?}"),
        }
    }
    // The suite's own 6 connections (canaries, warm-up) came out of the same burst; the
    // bucket refills 5 per second.
    let allowed = 20 - 6 + 5 * (started.elapsed().as_secs() as usize + 2);
    assert!(
        admitted.len() <= allowed && refusals > 0,
        "{} admitted, {refusals} refused",
        admitted.len()
    );
    drop(admitted);
    suite.finish("per-IP rate").await;
}
