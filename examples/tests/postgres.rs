//! The example server on PostgreSQL, end to end (`--store postgres://…`): history
//! survives a restart; with the database cut off (a proxy inside the test, never the
//! shared server) sends get `store_unavailable` error frames — no acknowledgement, no
//! broadcast — and `/healthz` reports the store failing; once traffic passes again the
//! server recovers by itself.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::postgres::proxy::{Mode, Proxy};
use support::postgres::{self, TestDb};
use support::{Client, PROMPT, ServerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over a plain connection: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PROMPT, stream.read_to_string(&mut response))
        .await
        .expect("a response in time")
        .unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn send(client: &mut Client, content: &str, id: &str) {
    client
        .send(json!({"type": "chat_message", "room": "pg", "content": content, "clientMsgId": id}))
        .await
        .unwrap();
}

/// The next frame that is our message's acknowledgement or an error.
async fn outcome(client: &mut Client, id: &str) -> Value {
    tokio::time::timeout(PROMPT, async {
        loop {
            let frame = client.next().await.expect("the connection stays open");
            let ours = frame["type"] == "message_received" && frame["clientMsgId"] == id;
            if ours || frame["type"] == "error" {
                return frame;
            }
        }
    })
    .await
    .expect("an answer to every send")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_server_keeps_history_in_postgres_and_survives_a_cut_database() {
    let Some(server) = postgres::server_url("the_example_server_on_postgres") else {
        return;
    };
    let db = TestDb::create(&server);
    let proxy = Proxy::start(postgres::server_address(&server)).await;
    let store = postgres::with_address(&db.url, proxy.addr);

    // Send, restart, history still there.
    let chat = ServerProcess::start(&store);
    let mut alice = Client::connect(chat.addr, "alice").await;
    alice.join("pg", json!({})).await;
    for n in 1..=3 {
        let id = format!("a{n}");
        send(&mut alice, &format!("message {n}"), &id).await;
        let ack = outcome(&mut alice, &id).await;
        assert_eq!(ack["seq"], n, "{ack}");
    }
    alice.close().await;
    chat.kill9();
    let chat = ServerProcess::start(&store);
    let mut alice = Client::connect(chat.addr, "alice").await;
    let (history, _) = alice.join("pg", json!({})).await;
    let contents: Vec<_> = history.iter().map(|m| m["content"].clone()).collect();
    assert_eq!(contents, ["message 1", "message 2", "message 3"]);
    let mut bob = Client::connect(chat.addr, "bob").await;
    bob.join("pg", json!({})).await;
    assert_eq!(get(chat.addr, "/healthz").await, (200, "ok".to_owned()));

    // The database goes away: errors, never an acknowledgement or a broadcast.
    proxy.set(Mode::Cut);
    for n in 1..=3 {
        let id = format!("cut{n}");
        send(&mut alice, "during the cut", &id).await;
        let error = outcome(&mut alice, &id).await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["code"], "store_unavailable", "{error}");
        assert!(
            !error["message"].as_str().unwrap_or("").contains("chat_"),
            "no database text reaches a client: {error}"
        );
    }
    let (status, body) = get(chat.addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("store failing"), "{body}");

    // Back: the server recovers without a restart.
    proxy.set(Mode::Pass);
    let mut stored = None;
    for attempt in 0..10 {
        let id = "after";
        send(&mut alice, "after the cut", id).await;
        let frame = outcome(&mut alice, id).await;
        if frame["type"] == "message_received" {
            stored = Some(frame);
            break;
        }
        eprintln!("attempt {attempt}: {frame}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stored = stored.expect("the server recovered once the database was back");
    assert_eq!(stored["seq"], 4, "nothing sent during the cut was stored");
    assert_eq!(get(chat.addr, "/healthz").await, (200, "ok".to_owned()));
    // Bob got the stored message, and only it, live: nothing from the cut.
    let live = tokio::time::timeout(PROMPT, async {
        loop {
            let frame = bob.next().await.expect("bob stays connected");
            if frame["type"] == "message_received" {
                return frame;
            }
        }
    })
    .await
    .expect("bob receives the message stored after the cut");
    assert_eq!(live["clientMsgId"], "after");
    assert_eq!(live["seq"], 4);
    alice.close().await;
    bob.close().await;
}
