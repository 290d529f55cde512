//! Lean WebSocket connections (issue 12): what an idle connection costs the server, and
//! the upgrade we answer ourselves, under our `serve` and under plain `warp::serve`.
//!
//! warp 0.4's `Ws` built every socket with tungstenite's 128 KiB read buffer (zeroed on
//! each read): an idle joined connection held about 140 KiB of the server's memory. The
//! transport now answers the upgrade itself and builds the socket with a 2 KiB read
//! buffer. The full-size figure (10,000 connections, release build) is a benchmark
//! (docs/BENCHMARKS.md, `chat-bench idle`); here a few hundred connections against the
//! real example server check the order of magnitude, which the old stack fails by far.

mod support;

use std::sync::Arc;

use chat_core::{Config, RuntimeConfig, Server};
use chat_memory_store::MemoryStore;
use chat_ws_warp::{WarpConfig, WarpTransport};
use serde_json::json;
use support::process::ServerProcess;
use support::{PROMPT, Peer};

/// Idle joined connections held by the RSS check.
const CONNECTIONS: usize = 400;

/// The most server memory one idle joined connection may hold, in KiB: several times
/// what it holds now (10 KiB with our own writer, 11 KiB before), a fraction of the old
/// 140 KiB (which fails this test).
const MAX_KIB_PER_CONNECTION: u64 = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_joined_connection_costs_the_server_a_few_kib() {
    let server = ServerProcess::start(&[
        "--max-connections-per-ip",
        "off",
        "--connections-per-ip-rate",
        "off",
        "--join-rate",
        "off",
        "--refusal-budget",
        "off",
    ]);
    let addr = server.addr();
    // A first connection warms up what every later one shares (tasks, the room). Its
    // join replies were read, and the server counts it: the baseline is taken after it.
    let _first = Peer::member(addr, "warm", "lobby").await;
    server.await_metric("chat_connections", 1, PROMPT).await;
    let before = server.rss_kib();

    let mut peers = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        // Ten rooms, like a server with many small rooms.
        peers.push(Peer::member(addr, &format!("idle{i}"), &format!("room{}", i % 10)).await);
    }
    // Every join was answered (`member` reads the replies), so the server holds every
    // connection's state now; the gauge confirms it counts them all.
    server
        .await_metric("chat_connections", CONNECTIONS as i64 + 1, PROMPT)
        .await;
    let after = server.rss_kib();
    let per_connection = after.saturating_sub(before) / CONNECTIONS as u64;
    eprintln!(
        "[lean] {CONNECTIONS} idle joined connections: RSS {before} → {after} KiB, \
         {per_connection} KiB each"
    );
    assert!(
        per_connection <= MAX_KIB_PER_CONNECTION,
        "{per_connection} KiB per idle connection (RSS {before} → {after} KiB)"
    );
    server.assert_healthy().await;
    drop(peers);
}

/// The routes under plain `warp::serve` (not our accept loop): the upgrade we answer
/// ourselves works there too, frames flow both ways, and a frame over the limit still
/// gets 1009.
#[tokio::test]
async fn the_chat_routes_upgrade_under_plain_warp_serve() {
    let config = WarpConfig::default()
        .with_max_frame_bytes(1024)
        .with_max_message_bytes(1024);
    let (transport, routes) = WarpTransport::routes(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    // The test's HTTP server.
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    let chat = Server::new(
        Config::default(),
        RuntimeConfig::default(),
        Arc::new(MemoryStore::new()) as Arc<dyn chat_core::Store>,
    );
    let _chat = chat.spawn(transport);

    let mut alice = Peer::member(addr, "alice", "lobby").await;
    alice
        .send(json!({"type": "chat_message", "room": "lobby", "content": "hi"}))
        .await;
    let received = alice.expect_type("message_received").await;
    assert_eq!(received["content"], "hi");

    // Over the 1 KiB frame limit: 1009, as under our own server.
    alice.send_text("x".repeat(2000)).await;
    assert_eq!(alice.close_code().await, 1009);
}
