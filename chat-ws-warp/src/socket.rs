//! An upgraded warp `WebSocket` as the runtime's two halves: [`WarpInbound`] and
//! [`WarpOutbound`], plus the one place where the WebSocket limits are applied and where
//! tungstenite's errors are translated into [`TransportError`].
//!
//! The socket is split with `futures_util`'s `split`: the halves share it through a lock
//! held only while one of them is being polled, so the runtime's reader and writer tasks
//! never wait on each other across an `.await`.

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use chat_core::{CloseCode, Inbound, Incoming, Outbound, TransportError, async_trait};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;
use warp::ws::{Message, WebSocket, Ws};

use crate::config::WarpConfig;

/// Longest close reason that fits a control frame (125 bytes minus the 2-byte code).
const MAX_CLOSE_REASON: usize = 123;

/// Applies the configured limits to a handshake. The chat socket and the echo socket
/// both go through here, so Autobahn tests exactly what the chat serves.
pub(crate) fn with_limits(ws: Ws, config: &WarpConfig) -> Ws {
    ws.max_frame_size(config.max_frame_bytes)
        .max_message_size(config.max_message_bytes)
        .max_write_buffer_size(config.effective_max_write_buffer())
}

/// Splits an upgraded socket into the halves the runtime drives from two tasks.
pub(crate) fn split(socket: WebSocket, close_timeout: Duration) -> (WarpInbound, WarpOutbound) {
    let (sink, stream) = socket.split();
    (
        WarpInbound {
            stream,
            peer_close: None,
            oversized: false,
            close_timeout,
        },
        WarpOutbound {
            sink,
            close_timeout,
        },
    )
}

/// Receiving half of an accepted WebSocket.
///
/// Pings are answered by tungstenite: it queues the pong when it reads the ping and
/// writes it on the next read (which `recv` performs at once by reading on), or on the
/// next write. A peer's close frame is answered the same way, before `recv` reports it.
#[derive(Debug)]
pub(crate) struct WarpInbound {
    stream: SplitStream<WebSocket>,
    /// The peer's close, held while its reply is flushed (see `recv`), so a `recv`
    /// cancelled during that flush still reports it on the next call.
    peer_close: Option<Option<CloseCode>>,
    /// Set once a frame over the size limit was reported. tungstenite keeps that frame's
    /// header and, if read again, would buffer its whole announced payload to skip it, so
    /// the stream ends there (`None`): the runtime's linger after its 1009 stops at once
    /// instead of reading an oversized frame into memory.
    oversized: bool,
    close_timeout: Duration,
}

#[async_trait]
impl Inbound for WarpInbound {
    /// Cancel-safe: `StreamExt::next` loses nothing when dropped, a ping consumed
    /// before a cancellation needs no further action, and a close whose reply was being
    /// flushed is kept in `peer_close` and reported by the next call.
    ///
    /// After the runtime's close frame (tungstenite's `ClosedByUs` state) data frames
    /// still arrive, so the runtime's linger can read them; the peer's close reply ends
    /// the stream. After an invalid UTF-8 frame or a framing violation reading may go
    /// on (tungstenite consumed the frame); after an oversized one it may not (see
    /// `oversized`).
    async fn recv(&mut self) -> Option<Result<Incoming, TransportError>> {
        if self.oversized {
            return None;
        }
        if self.peer_close.is_some() {
            return self.finish_peer_close().await;
        }
        loop {
            let message = match self.stream.next().await? {
                Ok(message) => message,
                Err(err) => {
                    let error = read_error(&err);
                    self.oversized = error == TransportError::MessageTooBig;
                    return Some(Err(error));
                }
            };
            if message.is_text() {
                // `into_bytes` hands over a slice of tungstenite's read buffer: no copy.
                // It keeps that buffer alive while held; the runtime decodes and drops it.
                return Some(Ok(Incoming::Text(message.into_bytes())));
            }
            if message.is_binary() {
                return Some(Ok(Incoming::Binary(message.as_bytes().len())));
            }
            if message.is_pong() {
                return Some(Ok(Incoming::Pong));
            }
            if message.is_close() {
                self.peer_close = Some(message.close_frame().map(|(code, _)| CloseCode(code)));
                return self.finish_peer_close().await;
            }
            // A ping: tungstenite queued the pong; looping into the next read flushes it.
        }
    }
}

impl WarpInbound {
    /// tungstenite has queued the reply to the peer's close; it is written by the next
    /// read, which then ends the stream. The runtime stops reading at a close and drops
    /// the connection, so read once more here — otherwise the reply would never leave
    /// and the peer would see the connection drop (1006) instead of a clean close.
    async fn finish_peer_close(&mut self) -> Option<Result<Incoming, TransportError>> {
        // Bounded: a peer that closed but does not read cannot hold us.
        let _ = tokio::time::timeout(self.close_timeout, self.stream.next()).await;
        let code = self.peer_close.take()?;
        Some(Ok(Incoming::Close(code)))
    }
}

/// Sending half of an accepted WebSocket.
#[derive(Debug)]
pub(crate) struct WarpOutbound {
    sink: SplitSink<WebSocket, Message>,
    close_timeout: Duration,
}

#[async_trait]
impl Outbound for WarpOutbound {
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        for frame in frames {
            // warp 0.4's `Message::text` takes a `String`, so each frame is copied once
            // here (tungstenite copies it again into its write buffer). A shared broadcast
            // `Bytes` cannot be handed over as is through warp's API.
            let text = String::from_utf8(frame.to_vec()).map_err(|_| {
                TransportError::Io("outbound text frame is not valid UTF-8".to_owned())
            })?;
            // `feed` writes into tungstenite's buffer without flushing; one flush below
            // sends the whole batch in as few syscalls as the kernel allows.
            self.sink
                .feed(Message::text(text))
                .await
                .map_err(|err| write_error(&err))?;
        }
        self.sink.flush().await.map_err(|err| write_error(&err))
    }

    async fn ping(&mut self) -> Result<bool, TransportError> {
        self.sink
            .send(Message::ping(Bytes::new()))
            .await
            .map_err(|err| write_error(&err))?;
        Ok(true)
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        let frame = Message::close_with(code.0, truncate(reason, MAX_CLOSE_REASON).to_owned());
        // A peer that does not read would hold the flush forever; the runtime is about to
        // drop the connection anyway, so give up after a short while.
        match tokio::time::timeout(self.close_timeout, self.sink.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => match tungstenite_error(&err) {
                // Closing an already closed socket is the outcome the caller wants.
                Some(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::SendAfterClosing,
                    ),
                ) => Ok(()),
                _ => Err(write_error(&err)),
            },
            Err(_elapsed) => Err(TransportError::Io("close timed out".to_owned())),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The tungstenite error inside a warp error (warp boxes it and exposes it as `source`).
pub(crate) fn tungstenite_error(err: &warp::Error) -> Option<&tungstenite::Error> {
    err.source()?.downcast_ref::<tungstenite::Error>()
}

/// Translates a read error so the runtime closes with the right code: capacity → 1009,
/// framing violations → 1002, the rest ends the connection quietly.
pub(crate) fn read_error(err: &warp::Error) -> TransportError {
    use tungstenite::error::ProtocolError;
    match tungstenite_error(err) {
        Some(tungstenite::Error::Capacity(_)) => TransportError::MessageTooBig,
        Some(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))
        | Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
            TransportError::Closed
        }
        Some(tungstenite::Error::Protocol(p)) => TransportError::Protocol(p.to_string()),
        Some(tungstenite::Error::Utf8(_)) => TransportError::InvalidPayload,
        Some(tungstenite::Error::Io(e)) => TransportError::Io(e.to_string()),
        Some(other) => TransportError::Io(other.to_string()),
        None => TransportError::Io(err.to_string()),
    }
}

/// Translates a write error. A closed connection is [`TransportError::Closed`]; a full
/// write buffer means the peer stopped reading, which the runtime treats as I/O failure.
pub(crate) fn write_error(err: &warp::Error) -> TransportError {
    use tungstenite::error::ProtocolError;
    match tungstenite_error(err) {
        Some(
            tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(ProtocolError::SendAfterClosing),
        ) => TransportError::Closed,
        Some(tungstenite::Error::WriteBufferFull(_)) => {
            TransportError::Io("write buffer full".to_owned())
        }
        Some(tungstenite::Error::Io(e)) => TransportError::Io(e.to_string()),
        Some(other) => TransportError::Io(other.to_string()),
        None => TransportError::Io(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn close_reasons_are_cut_on_char_boundaries() {
        assert_eq!(truncate("short", 123), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate(&long, 123);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
