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
            outbound: Box::new(LinesOut {
                out: BufWriter::new(write),
                dirty: false,
            }),
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
        let line = self.0.next().await?;
        Some(match line {
            // `nc` users press Enter on empty lines; they are not commands, only a sign
            // of life. Returned as such (not skipped here) so that the runtime sees
            // them: during the close linger each one spends at least a byte of
            // `close_linger_bytes`, like any frame.
            Ok(line) if line.trim().is_empty() => Ok(Incoming::Pong),
            Ok(line) => Ok(Incoming::Text(Bytes::from(line))),
            Err(LinesCodecError::MaxLineLengthExceeded) => Err(TransportError::MessageTooBig),
            // The codec checks UTF-8 (and has consumed the line, so reading can go on).
            Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(TransportError::InvalidPayload)
            }
            Err(LinesCodecError::Io(e)) => Err(TransportError::Io(e.to_string())),
        })
    }
}

struct LinesOut {
    out: BufWriter<OwnedWriteHalf>,
    /// A send began and has not flushed: a send cancelled mid-line (the runtime gives up
    /// a send when the queue is closed without flushing) may have left half a line,
    /// which `close` ends before its own line so that the `closed` line stays whole.
    dirty: bool,
}

#[async_trait]
impl Outbound for LinesOut {
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        let io = |e: std::io::Error| TransportError::Io(e.to_string());
        self.dirty = true;
        for frame in frames {
            self.out.write_all(frame).await.map_err(io)?;
            self.out.write_all(b"\n").await.map_err(io)?;
        }
        // One flush per batch: a busy room costs one syscall per batch, not per line.
        self.out.flush().await.map_err(io)?;
        self.dirty = false;
        Ok(())
    }

    /// The `closed` line, then a half-close (FIN): the client reads the line and EOF,
    /// while the runtime drains the read half until the client's own EOF.
    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        let io = |e: std::io::Error| TransportError::Io(e.to_string());
        if self.dirty {
            // End whatever line a cancelled send left unfinished (the client sees one
            // line it cannot parse, then the `closed` line whole).
            self.out.write_all(b"\n").await.map_err(io)?;
        }
        self.out
            .write_all(&closed_frame(code, reason))
            .await
            .map_err(io)?;
        self.out.write_all(b"\n").await.map_err(io)?;
        self.out.flush().await.map_err(io)?;
        self.out.shutdown().await.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: the server side's halves and the client's stream.
    async fn pair() -> (OwnedReadHalf, OwnedWriteHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, write) = server.into_split();
        (read, write, client)
    }

    #[tokio::test]
    async fn a_send_cancelled_mid_line_leaves_the_closed_line_whole() {
        let (_read, write, mut client) = pair().await;
        let mut out = LinesOut {
            out: BufWriter::new(write),
            dirty: false,
        };
        // A line far larger than the socket buffers, to a client not reading yet: the
        // send blocks mid-line and is given up, as the runtime does on a close without
        // flushing.
        let big = Bytes::from(vec![b'x'; 32 << 20]);
        let cancelled = tokio::time::timeout(Duration::from_millis(200), out.send(&[big])).await;
        assert!(cancelled.is_err(), "the send was still under way");
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        out.close(CloseCode::TRY_AGAIN_LATER, "slow reader")
            .await
            .unwrap();
        let all = reader.await.unwrap();
        let last = all[..all.len() - 1].rsplit(|b| *b == b'\n').next().unwrap();
        assert_eq!(
            last,
            &closed_frame(CloseCode::TRY_AGAIN_LATER, "slow reader")[..]
        );
        assert!(all.len() < (32 << 20), "the big line was cut short");
    }

    #[tokio::test]
    async fn blank_lines_come_out_as_signs_of_life() {
        let (read, _write, mut client) = pair().await;
        let mut lines = LinesIn(FramedRead::new(
            read,
            LinesCodec::new_with_max_length(MAX_LINE_BYTES),
        ));
        client.write_all(b"\n  \n{}\n").await.unwrap();
        assert_eq!(lines.recv().await.unwrap().unwrap(), Incoming::Pong);
        assert_eq!(lines.recv().await.unwrap().unwrap(), Incoming::Pong);
        assert_eq!(
            lines.recv().await.unwrap().unwrap(),
            Incoming::Text(Bytes::from_static(b"{}"))
        );
    }
}
