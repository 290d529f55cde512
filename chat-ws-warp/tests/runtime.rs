//! End to end: the chat runtime (`chat_core::Server` with the in-memory store) serving
//! real WebSocket clients through `WarpTransport`.

mod support;

use chat_core::{Config, RuntimeConfig};
use chat_ws_warp::{MetricsSource, OPENMETRICS_TEXT};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{PROMPT, TestServer, Ws, close_code, next_text as event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// Default configuration, with the runtime's metrics on `/metrics`.
async fn start() -> TestServer {
    TestServer::with_warp(
        Config::default(),
        RuntimeConfig::default(),
        |metrics, warp| {
            warp.with_metrics(Some(MetricsSource::openmetrics(move || {
                metrics.encode_text()
            })))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_round_trip_over_warp() {
    let TestServer { chat, http, .. } = start().await;
    let mut alice = TestServer::ws_at(http.local_addr()).await;

    let hello = event(&mut alice).await;
    assert_eq!(hello["type"], "connection");
    assert!(hello["clientId"].is_string());

    send(
        &mut alice,
        json!({"type": "set_username", "username": "alice"}),
    )
    .await;
    assert_eq!(event(&mut alice).await["type"], "username_set");

    send(&mut alice, json!({"type": "join_room", "room": "General"})).await;
    let joined = event(&mut alice).await;
    assert_eq!(joined["type"], "room_joined");
    assert_eq!(joined["room"], "general");
    assert_eq!(event(&mut alice).await["type"], "message_history");
    assert_eq!(event(&mut alice).await["type"], "room_users");

    send(
        &mut alice,
        json!({"type": "chat_message", "content": "hello over warp"}),
    )
    .await;
    let message = event(&mut alice).await;
    assert_eq!(message["type"], "message_received");
    assert_eq!(message["content"], "hello over warp");
    assert_eq!(message["username"], "alice");

    // A graceful runtime shutdown closes the socket with 1001.
    chat.shutdown();
    assert_eq!(close_code(&mut alice).await, 1001);
    // Reading on answers the close (tungstenite replies by itself), so the server need
    // not linger its 2 s for an answer before `join` returns.
    while let Some(Ok(_)) = timeout(PROMPT, alice.next())
        .await
        .expect("the server ends the connection once answered")
    {}
    chat.join().await.expect("clean shutdown");
    http.shutdown();
    timeout(PROMPT, http.stopped())
        .await
        .expect("http server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_closes_an_oversized_frame_with_1009() {
    let server = start().await;
    let mut client = server.ws().await;
    assert_eq!(event(&mut client).await["type"], "connection");
    client
        .send(Message::text("x".repeat(64 * 1024 + 1)))
        .await
        .expect("send");
    assert_eq!(close_code(&mut client).await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_the_runtimes_openmetrics() {
    let server = start().await;
    let mut client = server.ws().await;
    assert_eq!(event(&mut client).await["type"], "connection");

    let mut tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let request = "GET /metrics HTTP/1.1\r\nHost: chat\r\nConnection: close\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    timeout(PROMPT, tcp.read_to_string(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(&format!("content-type: {OPENMETRICS_TEXT}")),
        "{response}"
    );
    assert!(response.trim_end().ends_with("# EOF"), "{response}");
}

async fn send(client: &mut Ws, command: serde_json::Value) {
    client
        .send(Message::text(command.to_string()))
        .await
        .expect("send");
}
