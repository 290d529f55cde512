//! End to end: the chat runtime (`chat_core::Server` with the in-memory store) serving
//! real WebSocket clients through `WarpTransport`.

use std::sync::Arc;
use std::time::Duration;

use chat_core::{Config, RuntimeConfig, Server};
use chat_memory_store::MemoryStore;
use chat_ws_warp::{HttpServer, MetricsSource, OPENMETRICS_TEXT, WarpConfig, WarpTransport};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PROMPT: Duration = Duration::from_secs(5);

async fn start() -> (chat_core::ServerHandle, HttpServer) {
    let store = Arc::new(MemoryStore::new());
    let chat = Server::new(Config::default(), RuntimeConfig::default(), store);
    let metrics = chat.metrics();
    let config = WarpConfig {
        metrics: Some(MetricsSource::openmetrics(move || metrics.encode_text())),
        ..WarpConfig::default()
    };
    let (transport, http) = WarpTransport::bind("127.0.0.1:0", config)
        .await
        .expect("bind 127.0.0.1:0");
    (chat.spawn(transport), http)
}

async fn connect(http: &HttpServer) -> Client {
    let url = format!("ws://{}/ws", http.local_addr());
    let (client, _) = timeout(PROMPT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    client
}

async fn send(client: &mut Client, command: Value) {
    client
        .send(Message::text(command.to_string()))
        .await
        .expect("send");
}

/// The next text frame as JSON.
async fn event(client: &mut Client) -> Value {
    loop {
        let message = timeout(PROMPT, client.next())
            .await
            .expect("an event in time")
            .expect("connection open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON event");
        }
    }
}

/// The close code the client receives next (text frames before it are skipped).
async fn close_code(client: &mut Client) -> u16 {
    loop {
        match timeout(PROMPT, client.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_round_trip_over_warp() {
    let (chat, http) = start().await;
    let mut alice = connect(&http).await;

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
    chat.join().await.expect("clean shutdown");
    http.shutdown();
    timeout(PROMPT, http.stopped())
        .await
        .expect("http server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_closes_an_oversized_frame_with_1009() {
    let (_chat, http) = start().await;
    let mut client = connect(&http).await;
    assert_eq!(event(&mut client).await["type"], "connection");
    client
        .send(Message::text("x".repeat(64 * 1024 + 1)))
        .await
        .expect("send");
    assert_eq!(close_code(&mut client).await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_the_runtimes_openmetrics() {
    let (_chat, http) = start().await;
    let mut client = connect(&http).await;
    assert_eq!(event(&mut client).await["type"], "connection");

    let mut tcp = TcpStream::connect(http.local_addr())
        .await
        .expect("connect");
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
