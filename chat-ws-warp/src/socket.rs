//! An upgraded WebSocket as the runtime's two halves: [`WarpInbound`] and
//! [`WarpOutbound`], plus the one place where the WebSocket is built with our limits
//! and where tungstenite's errors are translated into [`TransportError`].
//!
//! We answer the upgrade ourselves instead of through warp's `Ws::on_upgrade`: warp 0.4
//! builds the socket with tungstenite's default 128 KiB read buffer, which tungstenite
//! zeroes before every read and which is most of an idle connection's memory. Here
//! the socket is built from hyper's upgraded connection with our own
//! [`WebSocketConfig`] ([`websocket_config`]): a small read buffer, the configured
//! frame and message limits.
//!
//! # Reading with tungstenite, writing ourselves
//!
//! When hyper's upgraded connection is the `TcpStream` our accept loop served
//! (`Upgraded::downcast`, which also hands back the bytes hyper read past the request),
//! the stream is split into its lock-free owned halves:
//!
//! * **reading** stays tungstenite's (framing, masking, UTF-8 and size checks, the
//!   1009 on an oversized frame header): a `WebSocketStream` over [`ControlShim`],
//!   whose reads come from the read half;
//! * **writing** is ours ([`Wire`], in `wire.rs`): a batch of server frames goes out
//!   in one vectored write, a 2–10 byte header per frame and the frame's shared `Bytes`
//!   (no copy, no write buffer kept between batches). tungstenite's own writes — pongs
//!   and the reply to a peer's close — reach the wire through the shim and are slotted
//!   in at the next frame boundary; after a close frame (ours or that reply) nothing
//!   else is written, so a peer answering our close gets no second one.
//!
//! Any other upgraded connection (`warp::serve`, whose HTTP/1–HTTP/2 detection wraps
//! the stream; a TLS or Unix stream) is the **fallback**: tungstenite reads and writes,
//! split with `futures_util`'s `split` as before. Both paths keep what the runtime
//! relies on (`chat_core::transport`): `send` may be cancelled (the `close` that
//! follows finishes a frame begun), `close` flushes, sends the close frame and
//! half-closes, and `recv` keeps working after `close` for the runtime's linger.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_core::{CloseCode, Inbound, Incoming, Outbound, TransportError, async_trait};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use warp::reply::{Reply, Response};

use crate::config::{WRITE_BUFFER_BYTES, WarpConfig};
use crate::frame;
use crate::wire::{ControlShim, SendError, Wire};

/// tungstenite's read buffer per connection, in bytes (its default is 128 KiB).
///
/// tungstenite allocates it when the socket is built, keeps it for the connection's
/// life, and zeroes the free part of it before every read: with 128 KiB that zeroing
/// was the largest single cost of a busy server, and the buffer most of an idle
/// connection's memory. Client frames are small (a command is a few hundred bytes), so
/// 1 KiB takes a typical command, or a burst of a few, in one read; a larger frame makes
/// tungstenite reserve room for exactly that frame. Measured (docs/BENCHMARKS.md): each
/// halving from 4 KiB to 1 KiB saved about 1 KiB per idle connection with no change in
/// CPU per delivery that the runs could tell from noise; 1 KiB is what brings an idle
/// connection under the 8 KiB budget.
pub(crate) const READ_BUFFER_BYTES: usize = 1024;

/// The tungstenite settings of every socket this crate serves: the chat's and the echo
/// route's, so Autobahn tests exactly what the chat serves. The write settings only
/// matter on the fallback (on the direct path tungstenite writes nothing but control
/// replies): the threshold ([`WRITE_BUFFER_BYTES`]) stays tungstenite's 128 KiB, and
/// `Outbound::send` feeds a whole batch and flushes once, so a batch below it leaves in
/// one write.
pub(crate) fn websocket_config(config: &WarpConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(config.effective_max_write_buffer())
        .max_frame_size(Some(config.max_frame_bytes))
        .max_message_size(Some(config.max_message_bytes))
}

/// How much of tungstenite's own control replies it may hold on the direct path: 4 KiB.
///
/// There tungstenite writes nothing but pongs and close replies, straight to the
/// [`Wire`] (no write threshold). When the wire holds its maximum of replies (a peer
/// flooding pings at a socket it does not read), tungstenite keeps them in its own
/// buffer; past this cap it keeps only the latest pong instead of buffering one per
/// ping up to `max_write_buffer_bytes`.
const DIRECT_CONTROL_BUFFER_BYTES: usize = 4 * 1024;

/// The settings of a socket on the direct path: [`websocket_config`]'s reading limits,
/// with tungstenite's writing reduced to its control replies.
fn direct_config(config: WebSocketConfig) -> WebSocketConfig {
    config
        .write_buffer_size(0)
        .max_write_buffer_size(DIRECT_CONTROL_BUFFER_BYTES)
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

/// A socket over hyper's upgraded connection when it is not a plain `TcpStream`: the
/// fallback, entirely tungstenite's.
pub(crate) type FallbackSocket = WebSocketStream<TokioIo<Upgraded>>;

/// A WebSocket ready to be split into the runtime's halves.
#[derive(Debug)]
pub(crate) enum Socket {
    /// Served by our accept loop (or `warp::serve` over TCP without its protocol
    /// detection): tungstenite reads, our [`Wire`] writes (see the module docs).
    Direct {
        /// tungstenite over the read half; its control replies go to `wire`.
        stream: WebSocketStream<ControlShim>,
        /// The write half.
        wire: Arc<Wire>,
    },
    /// Any other connection hyper upgraded: tungstenite reads and writes.
    Fallback(FallbackSocket),
}

/// Waits until hyper hands the connection over (after it wrote our `101`), then builds
/// the WebSocket on it with `config`: on the `TcpStream` itself when hyper's connection
/// is one (see the module docs), else on hyper's `Upgraded`.
pub(crate) async fn upgrade(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
) -> Result<Socket, hyper::Error> {
    let upgraded = on_upgrade.await?;
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(upgraded) => {
            let io = TokioIo::new(upgraded);
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            return Ok(Socket::Fallback(socket));
        }
    };
    let config = direct_config(config);
    let (read, write) = parts.io.into_inner().into_split();
    let wire = Arc::new(Wire::new(write));
    let shim = ControlShim::new(read, Arc::clone(&wire));
    // What hyper read past the request (a client may send its first frames without
    // waiting for our `101`) comes before anything on the socket: tungstenite starts
    // with it in its read buffer. Copied, so hyper's whole read buffer is not kept.
    let stream = if parts.read_buf.is_empty() {
        WebSocketStream::from_raw_socket(shim, Role::Server, Some(config)).await
    } else {
        let part = parts.read_buf.to_vec();
        WebSocketStream::from_partially_read(shim, part, Role::Server, Some(config)).await
    };
    Ok(Socket::Direct { stream, wire })
}

/// Splits an upgraded socket into the halves the runtime drives.
pub(crate) fn split(socket: Socket, close_timeout: Duration) -> (WarpInbound, WarpOutbound) {
    let (messages, frames) = socket.into_parts();
    (
        WarpInbound {
            messages,
            peer_close: None,
            oversized: false,
            close_timeout,
        },
        WarpOutbound {
            frames,
            close_timeout,
        },
    )
}

impl Socket {
    /// The socket's reading and writing halves.
    pub(crate) fn into_parts(self) -> (Messages, Frames) {
        match self {
            Socket::Direct { stream, wire } => (Messages::Direct(stream), Frames::Direct(wire)),
            Socket::Fallback(socket) => {
                let (sink, stream) = socket.split();
                (Messages::Fallback(stream), Frames::Fallback(sink))
            }
        }
    }
}

/// The messages a socket receives, from tungstenite in both cases.
// The direct variant is the common one and lives once per connection, inside the
// boxed `Inbound`: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Messages {
    /// Over [`ControlShim`].
    Direct(WebSocketStream<ControlShim>),
    /// The fallback's reading half.
    Fallback(SplitStream<FallbackSocket>),
}

impl Messages {
    /// The next message (tungstenite has answered pings and the peer's close by then,
    /// or queued the answer for its next read). Cancel-safe, as `StreamExt::next` is.
    pub(crate) async fn next(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        match self {
            Messages::Direct(stream) => stream.next().await,
            Messages::Fallback(stream) => stream.next().await,
        }
    }

    /// After the peer's close: reads once more, which makes tungstenite write its reply
    /// and end the stream, and waits until the reply is in the socket (tungstenite does
    /// not flush after it on our wire, where a write only queues it behind a frame of
    /// ours that may be half written).
    pub(crate) async fn finish_reply(&mut self) {
        let _ = self.next().await;
        if let Messages::Direct(stream) = self {
            let _ = stream.get_ref().wire().flush().await;
        }
    }
}

/// What a data frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Data {
    /// Text: checked to be UTF-8 before anything is written.
    Text,
    /// Binary (only the echo route sends it).
    Binary,
}

/// How a socket sends: our [`Wire`], or the fallback's tungstenite sink.
#[derive(Debug)]
pub(crate) enum Frames {
    /// Vectored writes of our own frames.
    Direct(Arc<Wire>),
    /// The fallback's writing half.
    Fallback(SplitSink<FallbackSocket, Message>),
}

/// The error of an outbound text frame that is not UTF-8.
fn not_utf8() -> TransportError {
    TransportError::Io("outbound text frame is not valid UTF-8".to_owned())
}

impl Frames {
    /// Sends `frames` as whole messages of `data`, in order, and flushes once.
    pub(crate) async fn send(
        &mut self,
        data: Data,
        frames: &[Bytes],
    ) -> Result<(), TransportError> {
        match self {
            Frames::Direct(wire) => {
                let opcode = match data {
                    Data::Text => {
                        if frames.iter().any(|f| std::str::from_utf8(f).is_err()) {
                            return Err(not_utf8());
                        }
                        frame::TEXT
                    }
                    Data::Binary => frame::BINARY,
                };
                wire.send(opcode, frames).await.map_err(send_error)
            }
            Frames::Fallback(sink) => {
                for frame in frames {
                    // The frame is shared by every recipient of a broadcast: the message
                    // takes another reference to it (checked to be UTF-8, not copied).
                    // tungstenite then copies it once, into this connection's buffer.
                    let message = match data {
                        Data::Text => Message::Text(
                            Utf8Bytes::try_from(frame.clone()).map_err(|_| not_utf8())?,
                        ),
                        Data::Binary => Message::Binary(frame.clone()),
                    };
                    // `feed` writes into tungstenite's buffer without flushing; one flush
                    // below sends the whole batch in as few syscalls as the kernel allows.
                    sink.feed(message).await.map_err(|err| write_error(&err))?;
                }
                sink.flush().await.map_err(|err| write_error(&err))
            }
        }
    }

    /// Sends an empty ping.
    pub(crate) async fn ping(&mut self) -> Result<(), TransportError> {
        match self {
            Frames::Direct(wire) => wire
                .send(frame::PING, &[Bytes::new()])
                .await
                .map_err(send_error),
            Frames::Fallback(sink) => sink
                .send(Message::Ping(Bytes::new()))
                .await
                .map_err(|err| write_error(&err)),
        }
    }

    /// Finishes what is being written, sends a close frame with `code` and `reason`
    /// (cut to fit) unless one was sent already, and shuts the write side down; bounded
    /// by `within` (a peer that does not read would hold the flush forever; the
    /// runtime is about to drop the connection anyway).
    pub(crate) async fn close(
        &mut self,
        code: u16,
        reason: &str,
        within: Duration,
    ) -> Result<(), TransportError> {
        let closed = match self {
            Frames::Direct(wire) => tokio::time::timeout(within, wire.close(code, reason))
                .await
                .map(|written| written.map_err(|err| TransportError::Io(err.to_string()))),
            Frames::Fallback(sink) => {
                let frame = Message::Close(Some(CloseFrame {
                    code: code.into(),
                    reason: frame::truncate(reason, frame::MAX_CLOSE_REASON).into(),
                }));
                tokio::time::timeout(within, sink.send(frame))
                    .await
                    .map(|sent| match sent {
                        Ok(()) => Ok(()),
                        // Closing an already closed socket is the outcome the caller wants.
                        Err(
                            tungstenite::Error::ConnectionClosed
                            | tungstenite::Error::AlreadyClosed
                            | tungstenite::Error::Protocol(
                                tungstenite::error::ProtocolError::SendAfterClosing,
                            ),
                        ) => Ok(()),
                        Err(err) => Err(write_error(&err)),
                    })
            }
        };
        closed.unwrap_or_else(|_elapsed| Err(TransportError::Io("close timed out".to_owned())))
    }
}

/// Receiving half of an accepted WebSocket.
///
/// Pings are answered by tungstenite: it queues the pong when it reads the ping and
/// writes it on the next read (which `recv` performs at once by reading on), or on the
/// next write. A peer's close frame is answered the same way, before `recv` reports it.
#[derive(Debug)]
pub(crate) struct WarpInbound {
    messages: Messages,
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
    /// After the runtime's close frame data frames still arrive, so the runtime's linger
    /// can read them; the peer's close reply ends the stream (and is not answered: one
    /// close frame was sent already). After an invalid UTF-8 frame or a framing
    /// violation reading may go on (tungstenite consumed the frame); after an oversized
    /// one it may not (see `oversized`).
    async fn recv(&mut self) -> Option<Result<Incoming, TransportError>> {
        if self.oversized {
            return None;
        }
        if self.peer_close.is_some() {
            return self.finish_peer_close().await;
        }
        loop {
            let message = match self.messages.next().await? {
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
        let _ = tokio::time::timeout(self.close_timeout, self.messages.finish_reply()).await;
        let code = self.peer_close.take()?;
        Some(Ok(Incoming::Close(code)))
    }
}

/// Sending half of an accepted WebSocket.
#[derive(Debug)]
pub(crate) struct WarpOutbound {
    frames: Frames,
    close_timeout: Duration,
}

#[async_trait]
impl Outbound for WarpOutbound {
    /// A whole batch per `writev` (see the module docs). Cancel-safe as the runtime
    /// needs: a frame begun is finished by the `close` that follows.
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        self.frames.send(Data::Text, frames).await
    }

    async fn ping(&mut self) -> Result<bool, TransportError> {
        self.frames.ping().await?;
        Ok(true)
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        self.frames.close(code.0, reason, self.close_timeout).await
    }
}

/// Translates an error of our [`Wire`].
fn send_error(err: SendError) -> TransportError {
    match err {
        SendError::Closed => TransportError::Closed,
        SendError::Io(err) => TransportError::Io(err.to_string()),
    }
}

/// Translates a read error so the runtime closes with the right code: capacity → 1009,
/// a text frame that is not UTF-8 → 1007, other framing violations → 1002, the rest ends
/// the connection quietly.
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
    fn on_the_direct_path_tungstenite_buffers_only_a_few_control_replies() {
        let config = WarpConfig::default();
        let direct = direct_config(websocket_config(&config));
        assert_eq!(
            direct.write_buffer_size, 0,
            "replies go to the wire at once"
        );
        assert!(direct.max_write_buffer_size > direct.write_buffer_size);
        assert!(
            direct.max_write_buffer_size * 1000 < websocket_config(&config).max_write_buffer_size,
            "a few control frames, not the fallback's write buffer"
        );
        // The reading limits are the configured ones.
        assert_eq!(direct.read_buffer_size, READ_BUFFER_BYTES);
        assert_eq!(direct.max_frame_size, Some(config.max_frame_bytes));
        assert_eq!(direct.max_message_size, Some(config.max_message_bytes));
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
