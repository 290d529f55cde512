//! The TCP example end to end: a real server on an ephemeral port, real TCP clients.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use chat_core::{Config, RuntimeConfig, Server};
use chat_examples::tcp::TcpLineTransport;
use chat_memory_store::MemoryStore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

struct Client {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
        Client {
            lines: BufReader::new(read).lines(),
            write,
        }
    }

    async fn send(&mut self, v: Value) {
        self.write
            .write_all(format!("{v}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
            .expect("connection open");
        serde_json::from_str(&line).unwrap()
    }

    async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn two_clients_chat_over_tcp_and_shutdown_closes_them_with_1001() {
    let (transport, addr) = TcpLineTransport::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let server = Server::new(
        Config::default(),
        RuntimeConfig::default(),
        Arc::new(MemoryStore::new()),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(transport, async move {
        let _ = stop_rx.await;
    }));

    let mut alice = Client::connect(addr).await;
    let mut bob = Client::connect(addr).await;
    assert_eq!(alice.recv().await["type"], "connection");
    assert_eq!(bob.recv().await["type"], "connection");
    for (c, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        c.send(json!({"type":"set_username","username":name})).await;
        assert_eq!(c.recv().await["type"], "username_set");
        c.send(json!({"type":"join_room","room":"lobby"})).await;
        assert_eq!(c.recv_type("room_users").await["room"], "lobby");
    }
    // Garbage gets an error and the connection stays usable.
    alice.write.write_all(b"not json\n").await.unwrap();
    assert_eq!(alice.recv_type("error").await["code"], "invalid_json");
    alice
        .send(json!({"type":"chat_message","content":"hi bob"}))
        .await;
    let got = bob.recv_type("message_received").await;
    assert_eq!(got["content"], "hi bob");
    assert_eq!(got["seq"], 1);

    stop_tx.send(()).unwrap();
    let closed = bob.recv_type("closed").await;
    assert_eq!(closed["code"], 1001);
    assert_eq!(alice.recv_type("closed").await["code"], 1001);
    // Both hang up after the close, as a client does, so the server need not linger its
    // 2 s waiting for them before `run` returns.
    drop((alice, bob));
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_line_over_64_kib_is_closed_with_1009() {
    let (transport, addr) = TcpLineTransport::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let server = Server::new(
        Config::default(),
        RuntimeConfig::default(),
        Arc::new(MemoryStore::new()),
    );
    let handle = tokio::spawn(server.run(transport, std::future::pending()));
    let mut c = Client::connect(addr).await;
    c.recv().await;
    let big = format!(
        "{{\"type\":\"chat_message\",\"content\":\"{}\"}}\n",
        "x".repeat(70_000)
    );
    c.write.write_all(big.as_bytes()).await.unwrap();
    assert_eq!(c.recv_type("closed").await["code"], 1009);
    handle.abort();
}
