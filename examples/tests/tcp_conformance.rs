//! The TCP line transport passes chat-core's transport conformance suite.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use chat_core::testkit::transport::{Harness, TestClient, run_all};
use chat_core::{ClientEvent, CloseCode, TransportError, async_trait};
use chat_examples::tcp::TcpLineTransport;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Default)]
struct TcpHarness {
    addr: Option<std::net::SocketAddr>,
}

/// A line client that reads the transport's final `closed` line as the close event.
struct LineClient {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    ended: bool,
}

#[async_trait]
impl Harness for TcpHarness {
    type Transport = TcpLineTransport;

    async fn start(&mut self) -> TcpLineTransport {
        let (t, addr) = TcpLineTransport::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        self.addr = Some(addr);
        t
    }

    async fn connect(
        &mut self,
        _path_and_query: &str,
        _headers: &[(&str, &str)],
    ) -> Result<Box<dyn TestClient>, u16> {
        let stream = TcpStream::connect(self.addr.expect("started"))
            .await
            .unwrap();
        let (read, write) = stream.into_split();
        Ok(Box::new(LineClient {
            lines: BufReader::new(read).lines(),
            write,
            ended: false,
        }))
    }

    /// Raw TCP has no request line or headers.
    fn carries_request_metadata(&self) -> bool {
        false
    }

    /// Raw TCP has no handshake reply: the refusal is a final line.
    fn refuses_during_connect(&self) -> bool {
        false
    }
}

#[async_trait]
impl TestClient for LineClient {
    async fn send_text(&mut self, text: &str) -> Result<(), TransportError> {
        let io = |e: std::io::Error| TransportError::Io(e.to_string());
        self.write.write_all(text.as_bytes()).await.map_err(io)?;
        self.write.write_all(b"\n").await.map_err(io)
    }

    async fn recv(&mut self) -> Option<ClientEvent> {
        if self.ended {
            return None;
        }
        match self.lines.next_line().await {
            Ok(Some(line)) => {
                let closed = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .filter(|v| v["type"] == "closed");
                if let Some(v) = closed {
                    self.ended = true;
                    let code = v["code"]
                        .as_u64()
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(1006);
                    let reason = v["reason"].as_str().unwrap_or_default().to_owned();
                    return Some(ClientEvent::Closed {
                        code: CloseCode(code),
                        reason,
                    });
                }
                Some(ClientEvent::Text(line))
            }
            _ => {
                self.ended = true;
                Some(ClientEvent::Closed {
                    code: CloseCode(1006),
                    reason: String::new(),
                })
            }
        }
    }

    async fn send_raw_text(&mut self, bytes: &[u8]) -> Option<Result<(), TransportError>> {
        let io = |e: std::io::Error| TransportError::Io(e.to_string());
        let mut line = bytes.to_vec();
        line.push(b'\n');
        Some(self.write.write_all(&line).await.map_err(io))
    }

    async fn close(&mut self) {
        let _ = self.write.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_line_transport_passes_the_transport_conformance_suite() {
    run_all(&mut TcpHarness::default()).await;
}
