//! An in-process [`Transport`]: a whole chat server without sockets.
//!
//! [`ChannelTransport::new`] returns the transport (give it to
//! [`Server::run`](crate::Server::run)) and a [`Connector`] (keep it, clone it) whose
//! [`connect`](Connector::connect) plays the client's side of a handshake and returns a
//! [`ClientConnection`]. Useful for tests, simulations, benchmarks, and for embedding the
//! chat in a process that already has its own way of talking to users.
//!
//! # Semantics
//!
//! * **Bounded both ways.** Each direction is a channel of
//!   [`ChannelOptions::capacity`] frames. A client that does not call
//!   [`recv`](ClientConnection::recv) eventually blocks the server's writer, exactly like
//!   a peer that does not read its socket — which is what the runtime's slow-reader
//!   policy is for. [`send_text`](ClientConnection::send_text) waits while the server is
//!   not reading.
//! * **Frame size.** A text frame longer than [`ChannelOptions::max_frame_len`] bytes
//!   (default 64 KiB) reaches the server as [`TransportError::MessageTooBig`], as a
//!   WebSocket server with that limit would report it.
//! * **Close.** A close from the server is delivered after the frames already sent to
//!   the client ([`ClientEvent::Closed`] with the code and reason), even when the
//!   client has not been reading (the close does not queue behind the data). A server
//!   that drops the connection without a close is reported as code 1006, as browsers do.
//!   After `Closed`, `recv` returns `None`. Receiving a close also answers it: the
//!   client's sending side ends, as a WebSocket client's close reply ends its side, so
//!   the server's linger after its close frame ends at once.
//! * **Heartbeat.** `ping` succeeds and is answered with a pong at once, as a browser's
//!   WebSocket stack would, unless [`ClientConnection::set_auto_pong`] turned that off
//!   (a dead peer) or [`ChannelOptions::ping`] is false (a transport without pings).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::transport::{
    Channel, CloseCode, ConnectionInfo, Handshake, Inbound, Incoming, Outbound, Rejection,
    Transport, TransportError,
};

/// Options of a [`ChannelTransport`]. Start from [`ChannelOptions::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelOptions {
    /// Frames each direction of a connection buffers. Default 64.
    pub capacity: usize,
    /// Largest text frame in bytes; larger ones reach the server as
    /// [`TransportError::MessageTooBig`]. Default 64 KiB (PROTOCOL.md).
    pub max_frame_len: usize,
    /// Whether the transport supports pings. Default true.
    pub ping: bool,
    /// Handshakes that may wait for the server's `accept`. Default 64.
    pub backlog: usize,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            capacity: 64,
            max_frame_len: crate::transport::MAX_FRAME_BYTES,
            ping: true,
            backlog: 64,
        }
    }
}

crate::config_setters! {
    ChannelOptions {
        with_capacity => capacity: usize,
        with_max_frame_len => max_frame_len: usize,
        with_ping => ping: bool,
        with_backlog => backlog: usize,
    }
}

/// One event a client receives. Exhaustive on purpose: a channel carries text frames and
/// one close, nothing else, and tests match on exactly these two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A text frame (one JSON event).
    Text(String),
    /// The connection ended. 1006 means it ended without a close frame.
    Closed {
        /// Close code.
        code: CloseCode,
        /// Close reason (may be empty).
        reason: String,
    },
}

/// The server side: hand it to [`Server::run`](crate::Server::run).
#[derive(Debug)]
pub struct ChannelTransport {
    pending: mpsc::Receiver<Pending>,
}

/// The client side's entry point: opens connections to the [`ChannelTransport`]. Clone
/// it freely; the transport stops accepting when every connector is dropped.
#[derive(Debug, Clone)]
pub struct Connector {
    pending: mpsc::Sender<Pending>,
    options: ChannelOptions,
}

/// A handshake travelling from a connector to the transport.
struct Pending {
    info: ConnectionInfo,
    options: ChannelOptions,
    verdict: oneshot::Sender<Result<ClientConnection, Rejection>>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ChannelTransport {
    /// A transport with [`ChannelOptions::default`].
    pub fn new() -> (ChannelTransport, Connector) {
        Self::with_options(ChannelOptions::default())
    }

    /// A transport with the given options.
    pub fn with_options(options: ChannelOptions) -> (ChannelTransport, Connector) {
        let (tx, rx) = mpsc::channel(options.backlog.max(1));
        (
            ChannelTransport { pending: rx },
            Connector {
                pending: tx,
                options,
            },
        )
    }
}

#[async_trait]
impl Transport for ChannelTransport {
    /// Cancel-safe (a channel receive); never fails.
    async fn accept(&mut self) -> Option<Result<Box<dyn Handshake>, TransportError>> {
        let pending = self.pending.recv().await?;
        Some(Ok(Box::new(ChannelHandshake(pending))))
    }
}

impl Connector {
    /// Opens a connection presenting `info` (path, query, headers) and waits for the
    /// server's verdict. A server that is gone answers 503 ([`Rejection::Unavailable`]).
    pub async fn connect(&self, info: ConnectionInfo) -> Result<ClientConnection, Rejection> {
        let gone = || Rejection::Unavailable("server gone".into());
        let (verdict, answer) = oneshot::channel();
        let pending = Pending {
            info,
            options: self.options,
            verdict,
        };
        self.pending.send(pending).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

struct ChannelHandshake(Pending);

#[async_trait]
impl Handshake for ChannelHandshake {
    fn info(&self) -> &ConnectionInfo {
        &self.0.info
    }

    async fn accept(self: Box<Self>) -> Result<Channel, TransportError> {
        let Pending {
            options, verdict, ..
        } = self.0;
        let capacity = options.capacity.max(1);
        let (to_server, from_client) = mpsc::channel(capacity);
        let (to_client, from_server) = mpsc::channel(capacity);
        let (close_tx, close_rx) = oneshot::channel();
        let auto_pong = Arc::new(AtomicBool::new(true));
        let client = ClientConnection {
            tx: Some(to_server.clone()),
            rx: from_server,
            close: close_rx,
            finished: false,
            auto_pong: Arc::clone(&auto_pong),
            max_frame_len: options.max_frame_len,
        };
        verdict
            .send(Ok(client))
            .map_err(|_| TransportError::Handshake("client gave up".into()))?;
        Ok(Channel {
            inbound: Box::new(ChannelInbound {
                rx: from_client,
                done: false,
            }),
            outbound: Box::new(ChannelOutbound {
                tx: Some(to_client),
                close: Some(close_tx),
                // Weak: a pending pong must not keep the connection open once the
                // client has dropped its sender.
                pong: to_server.downgrade(),
                auto_pong,
                ping: options.ping,
            }),
        })
    }

    async fn reject(self: Box<Self>, rejection: Rejection) {
        let _ = self.0.verdict.send(Err(rejection));
    }
}

struct ChannelInbound {
    rx: mpsc::Receiver<Result<Incoming, TransportError>>,
    done: bool,
}

#[async_trait]
impl Inbound for ChannelInbound {
    async fn recv(&mut self) -> Option<Result<Incoming, TransportError>> {
        if self.done {
            return None;
        }
        // `mpsc::Receiver::recv` is cancel-safe, as `Inbound::recv` must be.
        let item = self.rx.recv().await;
        if matches!(item, None | Some(Ok(Incoming::Close(_)))) {
            self.done = true;
        }
        item
    }
}

struct ChannelOutbound {
    tx: Option<mpsc::Sender<Bytes>>,
    close: Option<oneshot::Sender<(CloseCode, String)>>,
    pong: mpsc::WeakSender<Result<Incoming, TransportError>>,
    auto_pong: Arc<AtomicBool>,
    ping: bool,
}

#[async_trait]
impl Outbound for ChannelOutbound {
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        for frame in frames {
            tx.send(frame.clone())
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    async fn ping(&mut self) -> Result<bool, TransportError> {
        if !self.ping {
            return Ok(false);
        }
        if self.tx.as_ref().is_none_or(|tx| tx.is_closed()) {
            return Err(TransportError::Closed);
        }
        // A full channel means the client is sending anyway; any frame counts as a sign
        // of life, so the pong may be skipped.
        if self.auto_pong.load(Ordering::Relaxed)
            && let Some(tx) = self.pong.upgrade()
        {
            let _ = tx.try_send(Ok(Incoming::Pong));
        }
        Ok(true)
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        let close = self.close.take().ok_or(TransportError::Closed)?;
        let _ = close.send((code, reason.to_owned()));
        // Dropping the data sender lets the client drain what was sent, then see the close.
        self.tx = None;
        Ok(())
    }
}

/// The client's end of one connection.
pub struct ClientConnection {
    tx: Option<mpsc::Sender<Result<Incoming, TransportError>>>,
    rx: mpsc::Receiver<Bytes>,
    close: oneshot::Receiver<(CloseCode, String)>,
    finished: bool,
    auto_pong: Arc<AtomicBool>,
    max_frame_len: usize,
}

impl fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConnection")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ClientConnection {
    async fn push(&mut self, item: Result<Incoming, TransportError>) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        tx.send(item).await.map_err(|_| TransportError::Closed)
    }

    /// Sends a text frame; waits while the server is not reading. Fails once the server
    /// has closed the connection.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), TransportError> {
        let text: String = text.into();
        let item = if text.len() > self.max_frame_len {
            Err(TransportError::MessageTooBig)
        } else {
            Ok(Incoming::Text(Bytes::from(text)))
        };
        self.push(item).await
    }

    /// Sends a binary frame of `len` bytes (only its length travels: the protocol is
    /// text-only).
    pub async fn send_binary(&mut self, len: usize) -> Result<(), TransportError> {
        self.push(Ok(Incoming::Binary(len))).await
    }

    /// The next event: text frames in order, then one [`ClientEvent::Closed`], then
    /// `None` forever.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        if self.finished {
            return None;
        }
        if let Some(frame) = self.rx.recv().await {
            return Some(ClientEvent::Text(
                String::from_utf8_lossy(&frame).into_owned(),
            ));
        }
        self.finished = true;
        // The server sends the close before dropping the data channel, so it is here
        // already if there was one.
        let (code, reason) = match self.close.try_recv() {
            Ok(close) => {
                // Answering the close, as a WebSocket client does: the server stops
                // lingering (RFC 6455 §7.1) once it sees the end of this side.
                self.tx = None;
                close
            }
            Err(_) => (CloseCode(1006), String::new()),
        };
        Some(ClientEvent::Closed { code, reason })
    }

    /// Whether this client answers pings (default true). Turn it off to play a peer
    /// that has silently died.
    pub fn set_auto_pong(&self, on: bool) {
        self.auto_pong.store(on, Ordering::Relaxed);
    }

    /// Closes the connection from the client's side (code 1000). Frames the server sent
    /// before it noticed can still be received.
    pub async fn close(&mut self) {
        let _ = self
            .push(Ok(Incoming::Close(Some(CloseCode::NORMAL))))
            .await;
        self.tx = None;
    }
}
