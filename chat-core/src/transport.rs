//! The [`Transport`] trait: how connections reach the runtime.
//!
//! A transport carries the protocol's text frames over something (WebSocket, TCP lines,
//! an in-process channel, QUIC…). It does three things and nothing else:
//!
//! 1. **accept** handshakes and describe them ([`ConnectionInfo`]: peer address, path,
//!    query, headers), so the runtime can authenticate and check `Origin` *before* the
//!    connection is upgraded — a [`Handshake`] is then either accepted or rejected with a
//!    [`Rejection`] (an HTTP status for HTTP-based transports);
//! 2. **receive** frames ([`Inbound`]);
//! 3. **send** batches of frames, ping, and close with a code ([`Outbound`]).
//!
//! Everything else — decoding, queues, backpressure, heartbeats, shutdown, the closing
//! handshake's linger — is the runtime's, so every transport gets the same behaviour.
//! Implementations are checked by `chat_core::testkit::transport`.
//!
//! # The contract, in full
//!
//! * **Frames.** One protocol frame is one UTF-8 JSON text. The transport enforces
//!   [`MAX_FRAME_BYTES`] on what it receives: a longer frame is
//!   [`TransportError::MessageTooBig`] (the runtime closes with 1009), and the transport
//!   must not buffer more than about one frame to find that out.
//! * **UTF-8 is the transport's to check.** A text frame that is not valid UTF-8 is
//!   [`TransportError::InvalidPayload`] (close 1007); [`Incoming::Text`] always holds
//!   valid UTF-8. The engine's `invalid_json` error is for valid UTF-8 that is not JSON.
//! * **No raw newline.** An encoded frame never contains a raw `\n` or `\r` (JSON
//!   escapes them inside strings, and the encoder writes no whitespace), so a line-based
//!   transport may frame by newlines without escaping anything.
//! * **Ping is optional.** A transport without pings returns `Ok(false)` from
//!   [`Outbound::ping`]; heartbeats are then off for that connection (a dead peer is
//!   noticed when a write fails or the OS gives up on the socket).
//! * **Closing.** [`Outbound::close`] sends the close code and reason, flushes, and
//!   half-closes the write side where the transport can (TCP `shutdown(Write)`). The
//!   runtime then keeps calling [`Inbound::recv`] and discards what arrives until the
//!   peer's close, `None` or an error, within
//!   [`RuntimeConfig::close_linger`](crate::RuntimeConfig::close_linger) — so `recv` must
//!   keep working after `close`, and a transport that can no longer read safely after an
//!   error (one that would have to buffer the rest of an oversized frame) returns `None`.
//! * **Cancel-safety.** [`Transport::accept`] and [`Inbound::recv`] may be dropped at any
//!   `.await` (the runtime selects on them) and must lose nothing: the next call returns
//!   what the cancelled one would have. [`Outbound::send`] may be cancelled by the
//!   runtime's write timeout; the runtime then calls [`Outbound::close`] and never
//!   `send`s again, so a half-written batch is acceptable.
//!
//! # Transports without HTTP
//!
//! A transport with no handshake reply of its own (raw TCP, a Unix socket, a pipe) tells
//! the client about a refusal and a close in-band, as the last frame it writes. The
//! recommended shape, which the TCP example (`examples/tcp.rs`) writes and its tests
//! read, is one JSON frame each, built by [`rejected_frame`] and [`closed_frame`]:
//!
//! ```text
//! {"type":"rejected","status":429,"reason":"too many connections"}   ← Handshake::reject
//! {"type":"closed","code":1008,"reason":"too many refused requests"} ← Outbound::close
//! ```
//!
//! `status` is [`Rejection::status`] (the HTTP status an HTTP transport would answer);
//! `code` is the [`CloseCode`] a WebSocket would carry. After either frame the transport
//! half-closes its write side. Neither type collides with a server event of the protocol.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

/// Largest frame, in bytes, every transport must accept and no transport may accept more
/// than (PROTOCOL.md): 64 KiB. A longer frame is [`TransportError::MessageTooBig`].
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The recommended last frame of a refused connection on a transport without HTTP:
/// `{"type":"rejected","status":…,"reason":…}` (see the [module docs](self)).
pub fn rejected_frame(rejection: &Rejection) -> Bytes {
    // `Value`'s `Display` is its JSON encoding: the reason is quoted and escaped.
    let reason = serde_json::Value::from(rejection.reason());
    let status = rejection.status();
    Bytes::from(format!(
        r#"{{"type":"rejected","status":{status},"reason":{reason}}}"#
    ))
}

/// The recommended last frame of a closed connection on a transport without a close
/// frame of its own: `{"type":"closed","code":…,"reason":…}` (see the
/// [module docs](self)).
pub fn closed_frame(code: CloseCode, reason: &str) -> Bytes {
    let reason = serde_json::Value::from(reason);
    let code = code.0;
    Bytes::from(format!(
        r#"{{"type":"closed","code":{code},"reason":{reason}}}"#
    ))
}

/// Close codes are part of the protocol (PROTOCOL.md *Close codes*); re-exported here
/// because every transport speaks them.
pub use crate::protocol::CloseCode;

/// Where a connection comes from, in the terms of its transport.
///
/// Per-address limits and logs use [`Peer::ip`]; peers without an IP address (a
/// Unix-domain socket, an in-process channel) are not limited per address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// An IP socket address (TCP, QUIC…).
    Ip(SocketAddr),
    /// A Unix-domain socket peer: its path when it is bound to one, `None` when unnamed
    /// (what a client `connect`ing without `bind` is).
    Unix(Option<PathBuf>),
    /// Anything else the transport can name (an in-process channel id, a pipe…).
    Other(String),
}

impl Peer {
    /// The IP address, for an IP peer (IPv4-mapped IPv6 addresses as IPv4).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Ip(addr) => Some(crate::proxies::canonical(addr.ip())),
            Peer::Unix(_) | Peer::Other(_) => None,
        }
    }

    /// The socket address, for an IP peer.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Ip(addr) => Some(*addr),
            Peer::Unix(_) | Peer::Other(_) => None,
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Peer::Ip(addr)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => write!(f, "{addr}"),
            Peer::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            Peer::Unix(None) => f.write_str("unix:(unnamed)"),
            Peer::Other(name) => f.write_str(name),
        }
    }
}

/// What the runtime knows about a connection before accepting it.
///
/// Its `Debug` output is safe to log: the values of credential-carrying headers
/// ([`REDACTED_HEADERS`]) and query parameters ([`REDACTED_QUERY_PARAMS`]) are replaced by
/// `[redacted]`.
#[derive(Clone, Default)]
pub struct ConnectionInfo {
    /// Where the connection comes from, when the transport knows.
    pub peer: Option<Peer>,
    /// The client's address as named by a trusted reverse proxy (see
    /// [`TrustedProxies`](crate::proxies::TrustedProxies)): `Some` only when the peer is
    /// a trusted proxy — the address its forwarding header names, or the proxy's own
    /// address when the header is missing, unidentified or malformed. `None`: the peer
    /// is the client. Read it through [`client_ip`](Self::client_ip).
    pub client_addr: Option<IpAddr>,
    /// Request path (`/`, `/ws`…), when the transport has one.
    pub path: String,
    /// Raw query string without `?`.
    pub query: Option<String>,
    /// Request headers, names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
}

/// Headers whose values `ConnectionInfo`'s `Debug` never shows: they carry credentials
/// (a bearer token, a session cookie).
pub const REDACTED_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Query parameters whose values `ConnectionInfo`'s `Debug` never shows: browsers cannot
/// set headers on a WebSocket, so tokens travel here (`?token=`).
pub const REDACTED_QUERY_PARAMS: &[&str] = &["token", "access_token"];

const REDACTED: &str = "[redacted]";

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so that a `?info` in a log line cannot leak a token.
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let secret = REDACTED_HEADERS
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(name));
                (
                    name.as_str(),
                    if secret { REDACTED } else { value.as_str() },
                )
            })
            .collect();
        f.debug_struct("ConnectionInfo")
            .field("peer", &self.peer)
            .field("client_addr", &self.client_addr)
            .field("path", &self.path)
            .field("query", &self.query.as_deref().map(redact_query))
            .field("headers", &headers)
            .finish()
    }
}

/// The query with the values of [`REDACTED_QUERY_PARAMS`] replaced. Names are compared
/// percent-decoded, as [`ConnectionInfo::query_param`] reads them, so `%74oken=` is
/// redacted too.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if REDACTED_QUERY_PARAMS.contains(&percent_decode(key).as_str()) {
                format!("{key}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl ConnectionInfo {
    /// The client's IP address: the one a trusted proxy named
    /// ([`client_addr`](Self::client_addr)), else the peer's. What per-address limits
    /// count and logs show; `None` for a peer without an IP address.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_addr
            .map(crate::proxies::canonical)
            .or_else(|| self.peer.as_ref().and_then(Peer::ip))
    }

    /// Whether the connection came through a trusted reverse proxy.
    pub fn via_proxy(&self) -> bool {
        self.client_addr.is_some()
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Origin` header.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The first query parameter with this name, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params(name).next()
    }

    /// Every value of the query parameter with this name, percent-decoded, in order (so
    /// a credential check can refuse a repeated parameter instead of picking one).
    pub fn query_params<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.query
            .as_deref()
            .into_iter()
            .flat_map(|query| query.split('&'))
            .filter_map(move |pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k) == name).then(|| percent_decode(v))
            })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why the runtime refuses a handshake. HTTP transports answer with [`Rejection::status`]
/// before any upgrade; others send what they can and close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 401: authentication required or token invalid.
    Unauthorized(String),
    /// 403: `Origin` not allowed.
    Forbidden(String),
    /// 429: too many connections or connection attempts from this address.
    TooManyRequests(String),
    /// 503: the server is at its connection limit or shutting down.
    Unavailable(String),
}

impl Rejection {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Unauthorized(_) => 401,
            Rejection::Forbidden(_) => 403,
            Rejection::TooManyRequests(_) => 429,
            Rejection::Unavailable(_) => 503,
        }
    }

    /// Human-readable reason (never contains credentials).
    pub fn reason(&self) -> &str {
        match self {
            Rejection::Unauthorized(r)
            | Rejection::Forbidden(r)
            | Rejection::TooManyRequests(r)
            | Rejection::Unavailable(r) => r,
        }
    }
}

/// Transport failures, as the runtime needs to tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// A frame or message exceeded the transport's size limit (→ close 1009).
    #[error("message too big")]
    MessageTooBig,
    /// The peer broke the framing protocol (bad opcode, unmasked frame…) (→ close 1002).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A text frame that is not valid UTF-8 (→ close 1007).
    #[error("invalid UTF-8 in a text frame")]
    InvalidPayload,
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// An I/O error.
    #[error("i/o error: {0}")]
    Io(String),
    /// The handshake did not complete in time or failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

impl TransportError {
    /// The close code the runtime uses when this error ends a connection.
    pub fn close_code(&self) -> CloseCode {
        match self {
            TransportError::MessageTooBig => CloseCode::TOO_BIG,
            TransportError::Protocol(_) => CloseCode::PROTOCOL_ERROR,
            TransportError::InvalidPayload => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::NORMAL,
        }
    }
}

/// One received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame (one JSON command).
    Text(Bytes),
    /// A binary frame; only its length is kept (the protocol is text-only).
    Binary(usize),
    /// A heartbeat answer (or any transport-level sign of life).
    Pong,
    /// The peer closed the connection with this code, if it gave one.
    Close(Option<CloseCode>),
}

/// A connection in its handshake: not yet accepted.
#[async_trait]
pub trait Handshake: Send {
    /// What the peer presented.
    fn info(&self) -> &ConnectionInfo;

    /// Completes the handshake (for WebSocket: the upgrade) and returns the two halves.
    async fn accept(self: Box<Self>) -> Result<Channel, TransportError>;

    /// Refuses the connection (for HTTP: answers with the rejection's status).
    async fn reject(self: Box<Self>, rejection: Rejection);
}

/// The two halves of an accepted connection; the runtime reads and writes them from
/// different tasks.
pub struct Channel {
    /// Receiving half.
    pub inbound: Box<dyn Inbound>,
    /// Sending half.
    pub outbound: Box<dyn Outbound>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

/// Receiving half of a connection.
#[async_trait]
pub trait Inbound: Send {
    /// The next frame; `None` once the connection is gone, and `None` every time after.
    ///
    /// Must be cancel-safe: a call dropped while waiting loses no frame. Keeps working
    /// after [`Outbound::close`] (the runtime reads on, discarding, until the peer's close
    /// or `None`). A text frame that is not UTF-8 is [`TransportError::InvalidPayload`];
    /// one over [`MAX_FRAME_BYTES`] is [`TransportError::MessageTooBig`].
    async fn recv(&mut self) -> Option<Result<Incoming, TransportError>>;
}

/// Sending half of a connection.
#[async_trait]
pub trait Outbound: Send {
    /// Writes a batch of text frames in order and flushes once.
    ///
    /// Each frame is one encoded protocol frame: UTF-8 JSON without a raw newline. The
    /// runtime bounds the call with its write timeout; when that cancels it, the runtime
    /// calls [`close`](Self::close) next and never `send`s on this connection again.
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError>;

    /// Sends a heartbeat ping and returns `Ok(true)`; the peer's answer arrives as
    /// [`Incoming::Pong`] (or any frame: every frame counts as a sign of life).
    ///
    /// Returns `Ok(false)` when the transport has no ping: heartbeats are then **off**
    /// for that connection — the runtime stops calling `ping` and never drops the peer
    /// for silence.
    async fn ping(&mut self) -> Result<bool, TransportError> {
        Ok(false)
    }

    /// Sends the close code and a short reason (a WebSocket close frame; on transports
    /// without one, [`closed_frame`]), flushes, and half-closes the write side where the
    /// transport can. The read side stays open: the runtime drains it (see the
    /// [module docs](self)).
    async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError>;
}

/// A source of connections.
#[async_trait]
pub trait Transport: Send + 'static {
    /// The next handshake.
    ///
    /// * `Some(Ok(handshake))`: a new connection.
    /// * `Some(Err(error))`: a temporary failure (out of file descriptors, a connection
    ///   reset before it was accepted). The runtime logs it, pauses briefly (so that a
    ///   process out of descriptors does not spin) and calls `accept` again.
    /// * `None`: the transport has stopped accepting, for good.
    ///
    /// Must be cancel-safe: the runtime selects on it with its shutdown signal.
    async fn accept(&mut self) -> Option<Result<Box<dyn Handshake>, TransportError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_have_the_documented_shape() {
        let rejected = rejected_frame(&Rejection::TooManyRequests("slow \"down\"\n".into()));
        let value: serde_json::Value =
            serde_json::from_slice(&rejected).expect("the rejected frame is JSON");
        assert_eq!(
            value,
            serde_json::json!({"type": "rejected", "status": 429, "reason": "slow \"down\"\n"})
        );
        let closed = closed_frame(CloseCode::POLICY, "too many refused requests");
        assert_eq!(
            &closed[..],
            br#"{"type":"closed","code":1008,"reason":"too many refused requests"}"#
        );
        // Line transports frame by newline: a newline in a reason must stay escaped.
        assert!(!rejected.contains(&b'\n'));
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let info = ConnectionInfo {
            query: Some("a=1&token=x%2By%3D&b".into()),
            ..Default::default()
        };
        assert_eq!(info.query_param("token").as_deref(), Some("x+y="));
        assert_eq!(info.query_param("b").as_deref(), Some(""));
        assert_eq!(info.query_param("zz"), None);
        let repeated = ConnectionInfo {
            query: Some("token=a&x=1&%74oken=b".into()),
            ..Default::default()
        };
        assert_eq!(
            repeated.query_params("token").collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(ConnectionInfo::default().query_params("token").count(), 0);
    }

    #[test]
    fn broken_percent_escapes_are_kept() {
        let info = ConnectionInfo {
            query: Some("t=%&u=%4&v=%zz".into()),
            ..Default::default()
        };
        assert_eq!(info.query_param("t").as_deref(), Some("%"));
        assert_eq!(info.query_param("u").as_deref(), Some("%4"));
        assert_eq!(info.query_param("v").as_deref(), Some("%zz"));
    }

    #[test]
    fn debug_never_shows_credentials() {
        let info = ConnectionInfo {
            peer: Some(SocketAddr::from(([127, 0, 0, 1], 4000)).into()),
            client_addr: None,
            path: "/ws".into(),
            query: Some("room=a&token=SECRET1&%74oken=SECRET2&access_token=SECRET3&x".into()),
            headers: vec![
                ("origin".into(), "https://chat.example".into()),
                ("Authorization".into(), "Bearer SECRET4".into()),
                ("proxy-authorization".into(), "Basic SECRET5".into()),
                ("cookie".into(), "session=SECRET6".into()),
            ],
        };
        let shown = format!("{info:?} {info:#?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        for kept in [
            "127.0.0.1:4000",
            "/ws",
            "room=a",
            "https://chat.example",
            "&x",
        ] {
            assert!(shown.contains(kept), "{kept} missing from {shown}");
        }
        assert!(shown.contains("token=[redacted]"), "{shown}");
        assert!(
            shown.contains("\"Authorization\", \"[redacted]\""),
            "{shown}"
        );
        // Redaction is only in the display: the values are still there to check.
        assert_eq!(info.query_param("token").as_deref(), Some("SECRET1"));
    }

    #[test]
    fn peers_and_client_addresses() {
        let v4 = Peer::from(SocketAddr::from(([192, 0, 2, 1], 80)));
        assert_eq!(v4.ip(), Some(IpAddr::from([192, 0, 2, 1])));
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:80".parse().expect("addr");
        assert_eq!(Peer::from(mapped).ip(), Some(IpAddr::from([192, 0, 2, 1])));
        let unix = Peer::Unix(Some(PathBuf::from("/run/chat.sock")));
        assert_eq!(unix.ip(), None);
        assert_eq!(unix.to_string(), "unix:/run/chat.sock");
        assert_eq!(Peer::Unix(None).to_string(), "unix:(unnamed)");
        assert_eq!(Peer::Other("chan-7".into()).socket_addr(), None);

        let direct = ConnectionInfo {
            peer: Some(v4.clone()),
            ..Default::default()
        };
        assert_eq!(direct.client_ip(), Some(IpAddr::from([192, 0, 2, 1])));
        assert!(!direct.via_proxy());
        let proxied = ConnectionInfo {
            peer: Some(v4),
            client_addr: Some(IpAddr::from([198, 51, 100, 7])),
            ..Default::default()
        };
        assert_eq!(proxied.client_ip(), Some(IpAddr::from([198, 51, 100, 7])));
        assert!(proxied.via_proxy());
        let unix = ConnectionInfo {
            peer: Some(unix),
            ..Default::default()
        };
        assert_eq!(unix.client_ip(), None);
    }

    #[test]
    fn headers_are_case_insensitive() {
        let info = ConnectionInfo {
            headers: vec![("origin".into(), "http://a".into())],
            ..Default::default()
        };
        assert_eq!(info.header("Origin"), Some("http://a"));
        assert_eq!(info.origin(), Some("http://a"));
    }
}
