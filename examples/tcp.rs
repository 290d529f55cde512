//! Newline-delimited JSON over TCP: a complete [`Transport`] in about a hundred lines.
//!
//! Each line a client writes is one command; each event is written as one line. There is
//! no HTTP, so there are no headers: a rejection is written as a final
//! `{"type":"rejected",...}` line and a close as a final `{"type":"closed",...}` line
//! (chat-core's [`rejected_frame`] and [`closed_frame`], the shape `chat_core::transport`
//! recommends), each followed by a half-close of the write side. The runtime then reads
//! on, discarding, until the client's EOF, so a client still sending gets every line
//! instead of a reset. Lines are capped at [`MAX_FRAME_BYTES`] like WebSocket messages.

use std::net::SocketAddr;

use bytes::Bytes;
use chat_core::{
    Channel, CloseCode, ConnectionInfo, Handshake, Inbound, Incoming, MAX_FRAME_BYTES, Outbound,
    Rejection, Transport, TransportError, async_trait, closed_frame, rejected_frame,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// Longest line accepted: the protocol's frame limit.
pub const MAX_LINE_BYTES: usize = MAX_FRAME_BYTES;

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
    /// Cancel-safe (`TcpListener::accept` is). A failed accept (out of file descriptors,
    /// say) is reported as temporary: the runtime pauses and accepts again.
    async fn accept(&mut self) -> Option<Result<Box<dyn Handshake>, TransportError>> {
        Some(match self.listener.accept().await {
            Ok((stream, peer)) => {
                // Chat frames are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                let info = ConnectionInfo {
                    peer: Some(peer.into()),
                    ..ConnectionInfo::default()
                };
                Ok(Box::new(TcpHandshake { stream, info }))
            }
            Err(e) => Err(TransportError::Io(e.to_string())),
        })
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
        let mut line = rejected_frame(&rejection).to_vec();
        line.push(b'\n');
        let _ = self.stream.write_all(&line).await;
        let _ = self.stream.shutdown().await;
        // Read what the client already sent until its EOF (briefly, and at most a few
        // lines' worth): closing with unread data would reset the connection and could
        // discard the refusal line before the client reads it.
        let mut sink = [0u8; 4096];
        let drain = async {
            for _ in 0..16 {
                if matches!(self.stream.read(&mut sink).await, Ok(0) | Err(_)) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
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
                // The codec checks UTF-8 (and has consumed the line, so reading can go on).
                Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    Some(Err(TransportError::InvalidPayload))
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

    /// The `closed` line, then a half-close (FIN): the client reads the line and EOF,
    /// while the runtime drains the read half until the client's own EOF.
    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        let io = |e: std::io::Error| TransportError::Io(e.to_string());
        self.0
            .write_all(&closed_frame(code, reason))
            .await
            .map_err(io)?;
        self.0.write_all(b"\n").await.map_err(io)?;
        self.0.flush().await.map_err(io)?;
        self.0.shutdown().await.map_err(io)
    }
}
