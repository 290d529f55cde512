//! The closing handshake over the TCP line transport delivers what was queued (issue 11,
//! point 1): after its `closed` line the server half-closes and reads on, discarding,
//! until the client's EOF, so a client still sending gets every line instead of a reset.
//!
//! The clients write their whole flood, line by line, before reading anything, with a
//! receive buffer as small as the kernel allows (on loopback the server's lines would
//! otherwise be in the client's buffer at once; on a real network they are in flight,
//! which is what a reset throws away). 20 of them run at once.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_core::{Config, Metrics, RuntimeConfig, Server, ServerHandle};
use chat_examples::tcp::TcpLineTransport;
use chat_memory_store::MemoryStore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, timeout};

/// Clients per case.
const CLIENTS: usize = 20;

/// Upper bound of any single wait.
const PROMPT: Duration = Duration::from_secs(10);

async fn start(runtime: RuntimeConfig) -> (ServerHandle, SocketAddr) {
    let (transport, addr) = TcpLineTransport::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let server = Server::new(Config::default(), runtime, Arc::new(MemoryStore::new()));
    (server.spawn(transport), addr)
}

struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

/// What a client saw: its error lines, other lines, and the `closed` code (1006 when
/// the connection ended without a `closed` line).
#[derive(Debug)]
struct Outcome {
    errors: usize,
    others: Vec<Value>,
    code: u64,
}

impl Client {
    /// Connects with a minimal receive buffer and reads the `connection` greeting.
    async fn connect(addr: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1).unwrap();
        let stream = timeout(PROMPT, socket.connect(addr))
            .await
            .unwrap()
            .unwrap();
        let (read, write) = stream.into_split();
        let mut client = Client {
            lines: BufReader::new(read).lines(),
            write,
        };
        let hello = client.line().await.expect("a greeting");
        assert_eq!(hello["type"], "connection", "{hello}");
        client
    }

    async fn line(&mut self) -> Option<Value> {
        match timeout(PROMPT, self.lines.next_line()).await.unwrap() {
            // A line cut short by a reset is no line: the connection ended there.
            Ok(Some(line)) => serde_json::from_str(&line).ok(),
            Ok(None) | Err(_) => None,
        }
    }

    /// Writes each line as soon as it is ready; a failed write ends the flood (the
    /// server may have closed; what it sent before is still to be read).
    async fn flood(&mut self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            if self
                .write
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    async fn outcome(&mut self) -> Outcome {
        let (mut errors, mut others) = (0, Vec::new());
        loop {
            match self.line().await {
                Some(v) if v["type"] == "error" => errors += 1,
                Some(v) if v["type"] == "closed" => {
                    return Outcome {
                        errors,
                        others,
                        code: v["code"].as_u64().unwrap(),
                    };
                }
                Some(v) => others.push(v),
                None => {
                    return Outcome {
                        errors,
                        others,
                        code: 1006,
                    };
                }
            }
        }
    }
}

/// `chat_message` without a username or a room: refused every time.
fn unjoined_chat(i: usize) -> String {
    json!({"type": "chat_message", "content": format!("{i} {}", "x".repeat(10_000))}).to_string()
}

/// A small refused `chat_message`.
fn unjoined_small(i: usize) -> String {
    json!({"type": "chat_message", "content": format!("{i} small")}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_flooding_tcp_clients_all_get_their_errors_and_1008() {
    let (server, addr) = start(RuntimeConfig::default()).await;
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|_| async move {
        let mut client = Client::connect(addr).await;
        client.flood((0..60).map(unjoined_chat)).await;
        client.outcome().await
    });
    let outcomes = futures_util::future::join_all(clients).await;
    // Budget 30, one more per second: the 31st refusal closes.
    let expected = 31..=31 + started.elapsed().as_secs() as usize + 1;
    let whole = outcomes
        .iter()
        .filter(|o| o.code == 1008 && expected.contains(&o.errors) && o.others.is_empty())
        .count();
    eprintln!(
        "1008 over TCP: {whole} of {CLIENTS} clients got every error line and the close; \
         codes {:?}, error counts {:?}",
        outcomes.iter().map(|o| o.code).collect::<Vec<_>>(),
        outcomes.iter().map(|o| o.errors).collect::<Vec<_>>()
    );
    assert_eq!(whole, CLIENTS, "{outcomes:#?}");
    server.shutdown();
    timeout(PROMPT, server.join()).await.unwrap().unwrap();
}

/// Frames the server decoded so far.
fn frames_in(metrics: &Metrics) -> u64 {
    metrics
        .encode_text()
        .lines()
        .filter(|l| l.starts_with("chat_messages_in_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sending_tcp_clients_all_get_their_lines_and_1001_at_shutdown() {
    let (server, addr) = start(RuntimeConfig::default()).await;
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut client = Client::connect(addr).await;
        // Small refusals: with the client's tiny, unread receive buffer full of error
        // lines, the kernel may drop the server's segments carrying the ACKs for a large
        // flood and stall it in the client's send queue for seconds; 20 small lines leave
        // in the first window.
        client.flood((0..20).map(unjoined_small)).await;
        clients.push(client);
    }
    let metrics = server.metrics().clone();
    let deadline = Instant::now() + PROMPT;
    while frames_in(&metrics) < (CLIENTS * 20) as u64 {
        assert!(
            Instant::now() < deadline,
            "the server read the floods in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.shutdown();
    let floods = clients.into_iter().map(|mut client| async move {
        // Still under the refusal budget if some are read before the shutdown begins.
        client.flood((0..9).map(|_| "z".repeat(60 * 1024))).await;
        client.outcome().await
    });
    let outcomes = futures_util::future::join_all(floods).await;
    let whole = outcomes
        .iter()
        .filter(|o| o.code == 1001 && (20..=29).contains(&o.errors) && o.others.is_empty())
        .count();
    eprintln!(
        "1001 over TCP: {whole} of {CLIENTS} clients got every queued line and the close; \
         codes {:?}, error counts {:?}",
        outcomes.iter().map(|o| o.code).collect::<Vec<_>>(),
        outcomes.iter().map(|o| o.errors).collect::<Vec<_>>()
    );
    assert_eq!(whole, CLIENTS, "{outcomes:#?}");
    timeout(PROMPT, server.join()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_peer_that_never_answers_the_close_costs_at_most_the_linger_time() {
    let runtime = RuntimeConfig::default()
        .with_close_linger(Duration::from_secs(1))
        .with_close_linger_bytes(usize::MAX);
    let (server, addr) = start(runtime).await;
    let mut client = Client::connect(addr).await;
    let started = Instant::now();
    let write_forever = async {
        for i in 0.. {
            let line = format!("{}\n", unjoined_chat(i));
            if client.write.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    };
    // Far longer than the linger, so that a linger that does not end the connection
    // fails here rather than passing late.
    let write_forever_for = Duration::from_secs(30);
    timeout(write_forever_for, write_forever)
        .await
        .expect("the server drops a peer that never stops sending");
    let took = started.elapsed();
    eprintln!("a TCP peer that never answers: dropped after {took:?} (linger 1 s)");
    // It lingered (the linger starts at the close decision, after `started`)…
    assert!(took >= Duration::from_millis(900), "it lingered: {took:?}");
    // …and the linger, not the writer giving up, ended it (with room for a loaded
    // machine, where the 31 refusals before the close may take seconds).
    assert!(took < write_forever_for / 2, "{took:?}");
    server.shutdown();
    timeout(PROMPT, server.join()).await.unwrap().unwrap();
}
