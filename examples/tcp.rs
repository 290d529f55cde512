//! Newline-delimited JSON over TCP: a complete [`Transport`] in about a hundred lines.
//!
//! Each line a client writes is one command; each event is written as one line. There is
//! no HTTP, so there are no headers: a rejection is written as a final
//! `{"type":"rejected",...}` line, and a close as a final `{"type":"closed",...}` line
//! before the socket is shut down. Lines are capped at 64 KiB like WebSocket messages.

use std::net::SocketAddr;

use bytes::Bytes;
use chat_core::{
    Channel, CloseCode, ConnectionInfo, Handshake, Inbound, Incoming, Outbound, Rejection,
    Transport, TransportError, async_trait,
};
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// Longest line accepted, as PROTOCOL.md's frame limit.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Accepts TCP connections; each becomes a chat connection.
pub struct TcpLineTransport {
    listener: TcpListener,
}

impl TcpLineTransport {
    /// Binds `addr` and returns the transport with the bound address.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<(Self, SocketAddr)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((Self { listener }, local))
    }
}

#[async_trait]
impl Transport for TcpLineTransport {
    async fn accept(&mut self) -> Option<Box<dyn Handshake>> {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    // Chat frames are small and latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    let info = ConnectionInfo {
                        peer: Some(peer.into()),
                        ..ConnectionInfo::default()
                    };
                    return Some(Box::new(TcpHandshake { stream, info }));
                }
                // A failed accept (e.g. out of file descriptors) must not end the server.
                Err(e) => tracing::warn!(error = %e, "tcp accept failed"),
            }
        }
    }
}

struct TcpHandshake {
    stream: TcpStream,
    info: ConnectionInfo,
}

#[async_trait]
impl Handshake for TcpHandshake {
    fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    async fn accept(self: Box<Self>) -> Result<Channel, TransportError> {
        let (read, write) = self.stream.into_split();
        Ok(Channel {
            inbound: Box::new(LinesIn(FramedRead::new(
                read,
                LinesCodec::new_with_max_length(MAX_LINE_BYTES),
            ))),
            outbound: Box::new(LinesOut(BufWriter::new(write))),
        })
    }

    async fn reject(mut self: Box<Self>, rejection: Rejection) {
        let line = serde_json::json!({
            "type": "rejected",
            "status": rejection.status(),
            "reason": rejection.reason(),
        });
        let _ = self.stream.write_all(format!("{line}\n").as_bytes()).await;
        let _ = self.stream.shutdown().await;
    }
}

struct LinesIn(FramedRead<OwnedReadHalf, LinesCodec>);

#[async_trait]
impl Inbound for LinesIn {
    async fn recv(&mut self) -> Option<Result<Incoming, TransportError>> {
        loop {
            return match self.0.next().await? {
                // `nc` users press Enter on empty lines; they are not commands.
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => Some(Ok(Incoming::Text(Bytes::from(line)))),
                Err(LinesCodecError::MaxLineLengthExceeded) => {
                    Some(Err(TransportError::MessageTooBig))
                }
                Err(LinesCodecError::Io(e)) => Some(Err(TransportError::Io(e.to_string()))),
            };
        }
    }
}

struct LinesOut(BufWriter<OwnedWriteHalf>);

#[async_trait]
impl Outbound for LinesOut {
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        let io = |e: std::io::Error| TransportError::Io(e.to_string());
        for frame in frames {
            self.0.write_all(frame).await.map_err(io)?;
            self.0.write_all(b"\n").await.map_err(io)?;
        }
        // One flush per batch: a busy room costs one syscall per batch, not per line.
        self.0.flush().await.map_err(io)
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        let line = serde_json::json!({"type": "closed", "code": code.0, "reason": reason});
        let io = |e: std::io::Error| TransportError::Io(e.to_string());
        self.0
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io)?;
        self.0.flush().await.map_err(io)?;
        self.0.shutdown().await.map_err(io)
    }
}
