//! An upgraded WebSocket as the runtime's two halves: [`WarpInbound`] and
//! [`WarpOutbound`], plus the one place where the WebSocket is built with our limits
//! and where tungstenite's errors are translated into [`TransportError`].
//!
//! We answer the upgrade ourselves instead of through warp's `Ws::on_upgrade`: warp 0.4
//! builds the socket with tungstenite's default 128 KiB read buffer, which tungstenite
//! zeroes before every read and which is most of an idle connection's memory. Here
//! the socket is built from hyper's upgraded connection with our own
//! [`WebSocketConfig`] ([`websocket_config`]): a small read buffer, the configured
//! frame, message and write-buffer limits.
//!
//! The socket is split with `futures_util`'s `split`: the halves share it through a lock
//! held only while one of them is being polled, so the runtime's reader and writer tasks
//! never wait on each other across an `.await`.

use std::time::Duration;

use bytes::Bytes;
use chat_core::{CloseCode, Inbound, Incoming, Outbound, TransportError, async_trait};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use warp::reply::{Reply, Response};

use crate::config::{WRITE_BUFFER_BYTES, WarpConfig};

/// Longest close reason that fits a control frame (125 bytes minus the 2-byte code).
const MAX_CLOSE_REASON: usize = 123;

/// tungstenite's read buffer per connection, in bytes (its default is 128 KiB).
///
/// tungstenite allocates it when the socket is built, keeps it for the connection's
/// life, and zeroes the free part of it before every read: with 128 KiB that zeroing
/// was the largest single cost of a busy server, and the buffer most of an idle
/// connection's memory. Client frames are small (a command is a few hundred bytes), so
/// 2 KiB takes a typical burst in one read; a larger frame makes tungstenite reserve
/// room for exactly that frame. Measured (docs/BENCHMARKS.md): 2 KiB holds 2 KiB less
/// per idle connection than 4 KiB at the same CPU per delivery.
pub(crate) const READ_BUFFER_BYTES: usize = 2 * 1024;

/// The tungstenite settings of every socket this crate serves: the chat's and the echo
/// route's, so Autobahn tests exactly what the chat serves. The write buffer threshold
/// ([`WRITE_BUFFER_BYTES`]) stays tungstenite's 128 KiB: `Outbound::send` feeds a whole
/// batch and flushes once, so a batch below it leaves in one write.
pub(crate) fn websocket_config(config: &WarpConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(config.effective_max_write_buffer())
        .max_frame_size(Some(config.max_frame_bytes))
        .max_message_size(Some(config.max_message_bytes))
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade whose
/// `Sec-WebSocket-Key` is `key` (the headers warp's `Ws` would send).
pub(crate) fn switching_protocols(key: &[u8]) -> Response {
    let accept = tungstenite::handshake::derive_accept_key(key);
    let Ok(accept) = HeaderValue::try_from(accept) else {
        // Base64 is always a valid header value; this branch is never taken.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// An upgraded connection as a server-side WebSocket.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Waits until hyper hands the connection over (after it wrote our `101`), then builds
/// the WebSocket on it with `config`.
pub(crate) async fn upgrade(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
) -> Result<Socket, hyper::Error> {
    let upgraded = on_upgrade.await?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await)
}

/// Splits an upgraded socket into the halves the runtime drives from two tasks.
pub(crate) fn split(socket: Socket, close_timeout: Duration) -> (WarpInbound, WarpOutbound) {
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
    stream: SplitStream<Socket>,
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
            match message {
                // A slice of tungstenite's read buffer: no copy. It keeps that buffer
                // alive while held; the runtime decodes and drops it.
                Message::Text(text) => return Some(Ok(Incoming::Text(Bytes::from(text)))),
                Message::Binary(data) => return Some(Ok(Incoming::Binary(data.len()))),
                Message::Pong(_) => return Some(Ok(Incoming::Pong)),
                Message::Close(frame) => {
                    self.peer_close = Some(frame.map(|f| CloseCode(u16::from(f.code))));
                    return self.finish_peer_close().await;
                }
                // A ping: tungstenite queued the pong; looping into the next read
                // flushes it. (Raw frames are never yielded by a read.)
                Message::Ping(_) | Message::Frame(_) => {}
            }
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
    sink: SplitSink<Socket, Message>,
    close_timeout: Duration,
}

#[async_trait]
impl Outbound for WarpOutbound {
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        for frame in frames {
            // The frame is shared by every recipient of a broadcast: the message takes
            // another reference to it (checked to be UTF-8, not copied). tungstenite
            // then copies it once, into this connection's write buffer.
            let text = Utf8Bytes::try_from(frame.clone()).map_err(|_| {
                TransportError::Io("outbound text frame is not valid UTF-8".to_owned())
            })?;
            // `feed` writes into tungstenite's buffer without flushing; one flush below
            // sends the whole batch in as few syscalls as the kernel allows.
            self.sink
                .feed(Message::Text(text))
                .await
                .map_err(|err| write_error(&err))?;
        }
        self.sink.flush().await.map_err(|err| write_error(&err))
    }

    async fn ping(&mut self) -> Result<bool, TransportError> {
        self.sink
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(|err| write_error(&err))?;
        Ok(true)
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        let frame = Message::Close(Some(CloseFrame {
            code: code.0.into(),
            reason: truncate(reason, MAX_CLOSE_REASON).into(),
        }));
        // A peer that does not read would hold the flush forever; the runtime is about to
        // drop the connection anyway, so give up after a short while.
        match tokio::time::timeout(self.close_timeout, self.sink.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => match err {
                // Closing an already closed socket is the outcome the caller wants.
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::SendAfterClosing,
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

/// Translates a read error so the runtime closes with the right code: capacity → 1009,
/// framing violations → 1002, the rest ends the connection quietly.
pub(crate) fn read_error(err: &tungstenite::Error) -> TransportError {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::Capacity(_) => TransportError::MessageTooBig,
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed => TransportError::Closed,
        tungstenite::Error::Protocol(p) => TransportError::Protocol(p.to_string()),
        tungstenite::Error::Utf8(_) => TransportError::InvalidPayload,
        tungstenite::Error::Io(e) => TransportError::Io(e.to_string()),
        other => TransportError::Io(other.to_string()),
    }
}

/// Translates a write error. A closed connection is [`TransportError::Closed`]; a full
/// write buffer means the peer stopped reading, which the runtime treats as I/O failure.
pub(crate) fn write_error(err: &tungstenite::Error) -> TransportError {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::SendAfterClosing) => TransportError::Closed,
        tungstenite::Error::WriteBufferFull(_) => {
            TransportError::Io("write buffer full".to_owned())
        }
        tungstenite::Error::Io(e) => TransportError::Io(e.to_string()),
        other => TransportError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_on_char_boundaries() {
        assert_eq!(truncate("short", 123), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate(&long, 123);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn sockets_get_a_small_read_buffer_and_the_configured_limits() {
        let config = WarpConfig {
            max_frame_bytes: 1000,
            max_message_bytes: 2000,
            max_write_buffer_bytes: 1 << 20,
            ..WarpConfig::default()
        };
        let ws = websocket_config(&config);
        assert_eq!(ws.read_buffer_size, READ_BUFFER_BYTES);
        assert!(
            ws.read_buffer_size * 16 <= WebSocketConfig::default().read_buffer_size,
            "far below tungstenite's default"
        );
        assert_eq!(ws.max_frame_size, Some(1000));
        assert_eq!(ws.max_message_size, Some(2000));
        assert_eq!(ws.max_write_buffer_size, 1 << 20);
        assert_eq!(ws.write_buffer_size, WRITE_BUFFER_BYTES);
        // tungstenite requires room for one frame above the flush threshold.
        let low = websocket_config(&WarpConfig {
            max_write_buffer_bytes: 10,
            ..WarpConfig::default()
        });
        assert!(low.max_write_buffer_size > low.write_buffer_size);
    }

    #[test]
    fn the_accept_header_is_rfc_6455s() {
        // RFC 6455 §1.3's example key and answer.
        let response = switching_protocols(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let headers = response.headers();
        assert_eq!(
            headers[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
    }
}
