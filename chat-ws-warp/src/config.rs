//! [`WarpConfig`]: every limit of the WebSocket stack and the HTTP server in one place;
//! [`MetricsSource`], how `/metrics` gets its text (and where the transport's own
//! handshake refusals are counted), and [`HealthSource`], how `/healthz` gets its answer,
//! without this crate knowing the runtime.
//!
//! The defaults are chat-sized (PROTOCOL.md: 64 KiB frames and messages). Each limit says
//! what it protects against, so it can be changed knowingly.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chat_core::TrustedProxies;

/// The `write_buffer_size` every socket is built with (tungstenite's default, 128 KiB):
/// how much a batch gathers before tungstenite writes in the middle of it. A threshold,
/// not an allocation. `max_write_buffer_bytes` must exceed it or tungstenite panics when
/// the socket is built, so `WarpConfig::effective_max_write_buffer` keeps it above.
pub(crate) const WRITE_BUFFER_BYTES: usize = 128 * 1024;

/// Limits and switches for [`WarpTransport`](crate::WarpTransport) and its HTTP server.
///
/// Start from the default and change fields or chain the `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// use chat_ws_warp::WarpConfig;
///
/// let config = WarpConfig::default()
///     .with_handshake_timeout(Duration::from_secs(5))
///     .with_serve_web_client(false);
/// assert_eq!(config.max_frame_bytes, 64 * 1024);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct WarpConfig {
    /// Largest incoming frame payload, in bytes. Default 64 KiB.
    ///
    /// Checked against the frame *header* before the payload is read, so a peer that
    /// announces a huge frame gets an error (close 1009) instead of making the server
    /// reserve memory for it.
    pub max_frame_bytes: usize,
    /// Largest incoming message (all fragments together), in bytes. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Most bytes one connection may have queued for writing, in bytes. Default 8 MiB.
    ///
    /// Applies to the tungstenite fallback only (a socket under `warp::serve`, or any
    /// upgraded stream that is not our accept loop's `TcpStream`): our own writer keeps
    /// no write buffer, a `send` waits until the kernel took the batch.
    ///
    /// A cap, not an allocation: the write buffer only grows past tungstenite's 128 KiB
    /// flush threshold while the peer is not reading. It must hold that threshold plus
    /// the largest frame the server sends, or that frame can never be written: the
    /// largest is a full resume (`resume_max` = 500 messages of up to 1,000 characters,
    /// each up to 6 bytes once JSON-escaped: about 3.2 MB), hence 8 MiB. Values at or
    /// below 128 KiB are raised to just above it (tungstenite requires that).
    pub max_write_buffer_bytes: usize,
    /// Request paths that upgrade to the chat socket, relative to where the routes are
    /// mounted. Default `/` and `/ws` (the web client connects to `/ws`).
    pub socket_paths: Vec<String>,
    /// How long a WebSocket handshake may wait for the runtime's decision, and then for
    /// the upgrade to complete after it was accepted. Default 10 s.
    ///
    /// The request waits for the decision 1 s longer than this, so that the runtime,
    /// whose admission is bounded by its own `RuntimeConfig::handshake_timeout`, decides
    /// (and counts its refusal) first: keep this at least the runtime's. A request that
    /// still gets no decision in time → the client gets `503`, counted by the transport,
    /// and the runtime never sees the handshake if it had not taken it yet; no upgrade in time →
    /// [`Handshake::accept`](chat_core::Handshake::accept) fails with
    /// `TransportError::Handshake`.
    pub handshake_timeout: Duration,
    /// How many handshakes may wait for [`Transport::accept`](chat_core::Transport::accept)
    /// at once. Default 1024. Beyond it new handshakes are answered `503` at once, so a
    /// connection storm against a busy runtime costs a bounded amount of memory.
    pub accept_backlog: usize,
    /// How long `close` may spend sending the close frame to a peer that does not read.
    /// Default 1 s.
    pub close_timeout: Duration,
    /// Serve the web client (`/`, its ES modules such as `/app.js`, and `/style.css`) next to the
    /// socket. Default `true`; turn it off to mount only the socket and `/healthz`.
    pub serve_web_client: bool,
    /// Where `GET /metrics` gets its text. Default `None` (no `/metrics` route).
    pub metrics: Option<MetricsSource>,
    /// What `GET /healthz` reports. Default `None`: `/healthz` answers `200 ok` whenever
    /// the HTTP server answers at all (a liveness check of the process only).
    pub health: Option<HealthSource>,
    /// Server only ([`serve`](crate::serve), [`WarpTransport::bind`](crate::WarpTransport::bind)):
    /// how long a client may take to send a request's headers, including the wait for the
    /// next request on an idle keep-alive connection. Default 10 s. Slow-header clients
    /// (slowloris) are cut off after it.
    pub header_read_timeout: Duration,
    /// Server only: most request headers hyper accepts (more → `431`). Default 64.
    pub max_request_headers: usize,
    /// Server only: most bytes of request line plus headers (more → `431`). Default 16 KiB.
    pub max_request_header_bytes: usize,
    /// Server only: most HTTP connections served at once (before their upgrade; an
    /// upgraded WebSocket no longer counts, the runtime caps those). Default 10 000. At
    /// the cap the server stops accepting until one ends; the kernel's listen queue holds
    /// the rest.
    pub max_http_connections: usize,
    /// Server only: most HTTP connections not yet upgraded that one peer address may
    /// hold at once (IPv6 grouped by /64, as the per-IP admission limits do); `None`: no
    /// per-address cap. Default `Some(256)`: far above what browsers open to one host
    /// (about six) or what a NAT's users hold at once, far below
    /// [`max_http_connections`](Self::max_http_connections), so one address holding
    /// idle keep-alive connections cannot take every slot.
    ///
    /// Counted per **TCP peer** (the cap applies before any request is read, so before
    /// any forwarding header could name a client). Not counted: peers in
    /// [`trusted_proxies`](Self::trusted_proxies) (a proxy carries every client), and
    /// loopback peers while [`exempt_loopback`](Self::exempt_loopback) is on.
    ///
    /// Past the cap the connection is accepted (its address is only known then),
    /// answered at once with a canned `429 Too Many Requests` (`Connection: close`)
    /// without reading anything from it, and closed: it never costs a hyper task. (A
    /// client that already sent its request may see a reset instead of the answer.)
    pub max_http_connections_per_ip: Option<usize>,
    /// Reverse proxies whose `X-Forwarded-For`/`Forwarded` headers name the client
    /// ([`TrustedProxies`] has the rules). Default: none — from any peer the headers
    /// change nothing. The named client goes into
    /// [`ConnectionInfo::client_addr`](chat_core::ConnectionInfo::client_addr), which
    /// per-IP limits count and the runtime logs.
    pub trusted_proxies: TrustedProxies,
    /// Server only: loopback peers (`127.0.0.0/8`, `::1`) that are not trusted proxies
    /// are exempt from [`max_http_connections_per_ip`](Self::max_http_connections_per_ip).
    /// Default `true` (the machine itself: a test suite, a health checker); the same
    /// rule as `chat_auth::PerIpConfig::exempt_loopback`.
    pub exempt_loopback: bool,
}

impl Default for WarpConfig {
    fn default() -> Self {
        WarpConfig {
            max_frame_bytes: chat_core::MAX_FRAME_BYTES,
            max_message_bytes: chat_core::MAX_FRAME_BYTES,
            max_write_buffer_bytes: 8 * 1024 * 1024,
            socket_paths: vec!["/".to_owned(), "/ws".to_owned()],
            handshake_timeout: Duration::from_secs(10),
            accept_backlog: 1024,
            close_timeout: Duration::from_secs(1),
            serve_web_client: true,
            metrics: None,
            health: None,
            header_read_timeout: Duration::from_secs(10),
            max_request_headers: 64,
            max_request_header_bytes: 16 * 1024,
            max_http_connections: 10_000,
            max_http_connections_per_ip: Some(256),
            trusted_proxies: TrustedProxies::none(),
            exempt_loopback: true,
        }
    }
}

impl WarpConfig {
    /// `max_write_buffer_bytes`, raised above tungstenite's fixed flush threshold when
    /// set too low (tungstenite asserts `max_write_buffer_size > write_buffer_size` and
    /// would panic in the upgrade task).
    pub(crate) fn effective_max_write_buffer(&self) -> usize {
        self.max_write_buffer_bytes.max(WRITE_BUFFER_BYTES + 1)
    }
}

chat_core::config_setters! {
    WarpConfig {
        with_max_frame_bytes => max_frame_bytes: usize,
        with_max_message_bytes => max_message_bytes: usize,
        with_max_write_buffer_bytes => max_write_buffer_bytes: usize,
        with_socket_paths => socket_paths: Vec<String>,
        with_handshake_timeout => handshake_timeout: Duration,
        with_accept_backlog => accept_backlog: usize,
        with_close_timeout => close_timeout: Duration,
        with_serve_web_client => serve_web_client: bool,
        with_metrics => metrics: Option<MetricsSource>,
        with_health => health: Option<HealthSource>,
        with_header_read_timeout => header_read_timeout: Duration,
        with_max_request_headers => max_request_headers: usize,
        with_max_request_header_bytes => max_request_header_bytes: usize,
        with_max_http_connections => max_http_connections: usize,
        with_max_http_connections_per_ip => max_http_connections_per_ip: Option<usize>,
        with_trusted_proxies => trusted_proxies: TrustedProxies,
        with_exempt_loopback => exempt_loopback: bool,
    }
}

impl fmt::Debug for WarpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarpConfig")
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_write_buffer_bytes", &self.max_write_buffer_bytes)
            .field("socket_paths", &self.socket_paths)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("accept_backlog", &self.accept_backlog)
            .field("close_timeout", &self.close_timeout)
            .field("serve_web_client", &self.serve_web_client)
            .field("metrics", &self.metrics.is_some())
            .field("health", &self.health.is_some())
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_request_headers", &self.max_request_headers)
            .field("max_request_header_bytes", &self.max_request_header_bytes)
            .field("max_http_connections", &self.max_http_connections)
            .field(
                "max_http_connections_per_ip",
                &self.max_http_connections_per_ip,
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .field("exempt_loopback", &self.exempt_loopback)
            .finish()
    }
}

/// Prometheus text exposition format 0.0.4, the default `/metrics` content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics 1.0 text, for sources that encode with `prometheus-client`.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text behind `GET /metrics`: a function called once per scrape, and the content
/// type it produces.
///
/// This crate takes a function rather than the runtime's metrics type so it does not
/// depend on the runtime's internals:
///
/// ```
/// use chat_ws_warp::{MetricsSource, OPENMETRICS_TEXT, PROMETHEUS_TEXT};
///
/// // The chat runtime encodes OpenMetrics:
/// // `let m = server.metrics(); MetricsSource::openmetrics(move || m.encode_text())`.
/// let open = MetricsSource::openmetrics(|| "chat_connections 3\n# EOF\n".to_owned());
/// assert_eq!(open.content_type(), OPENMETRICS_TEXT);
///
/// let plain = MetricsSource::new(|| "chat_connections 3\n".to_owned());
/// assert_eq!(plain.encode(), "chat_connections 3\n");
/// assert_eq!(plain.content_type(), PROMETHEUS_TEXT);
/// ```
#[derive(Clone)]
pub struct MetricsSource {
    encode: Arc<dyn Fn() -> String + Send + Sync>,
    content_type: &'static str,
    rejected: Option<Arc<dyn Fn(u16) + Send + Sync>>,
}

impl MetricsSource {
    /// A source of Prometheus text format 0.0.4 ([`PROMETHEUS_TEXT`]).
    pub fn new(encode: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self::with_content_type(PROMETHEUS_TEXT, encode)
    }

    /// A source of OpenMetrics text ([`OPENMETRICS_TEXT`]), such as the chat runtime's
    /// `Metrics::encode_text`.
    pub fn openmetrics(encode: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self::with_content_type(OPENMETRICS_TEXT, encode)
    }

    /// A source whose text has another content type.
    pub fn with_content_type(
        content_type: &'static str,
        encode: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        MetricsSource {
            encode: Arc::new(encode),
            content_type,
            rejected: None,
        }
    }

    /// Also counts the handshakes the transport refuses by itself, with their HTTP
    /// status: `400` for a malformed upgrade (HTTP/1.0, a bad `Sec-WebSocket-Key`) and
    /// `503` when the accept queue is full, the runtime gives no decision within
    /// `handshake_timeout` + 1 s, or it is gone. Refusals the runtime decides (401, 403,
    /// 429, its own 503s) reach the client through
    /// [`Handshake::reject`](chat_core::Handshake::reject) and are counted by the
    /// runtime, not here, so each refusal is counted once: the request outwaits the
    /// runtime's own admission bound, and a handshake whose request gave up before the
    /// runtime took it is never handed to the runtime.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use chat_ws_warp::MetricsSource;
    ///
    /// // With the chat runtime:
    /// // `MetricsSource::openmetrics(…).counting_rejections(move |s| m.handshake_rejected(s))`.
    /// let refused = Arc::new(AtomicU64::new(0));
    /// let counter = Arc::clone(&refused);
    /// let source = MetricsSource::new(String::new)
    ///     .counting_rejections(move |_status| { counter.fetch_add(1, Ordering::Relaxed); });
    /// source.rejected(503);
    /// assert_eq!(refused.load(Ordering::Relaxed), 1);
    /// ```
    pub fn counting_rejections(mut self, count: impl Fn(u16) + Send + Sync + 'static) -> Self {
        self.rejected = Some(Arc::new(count));
        self
    }

    /// Reports a handshake the transport refused with `status` (see
    /// [`counting_rejections`](Self::counting_rejections)); nothing without a counter.
    pub fn rejected(&self, status: u16) {
        if let Some(count) = &self.rejected {
            count(status);
        }
    }

    /// Calls the source.
    pub fn encode(&self) -> String {
        (self.encode)()
    }

    /// The content type `/metrics` answers with.
    pub fn content_type(&self) -> &'static str {
        self.content_type
    }
}

impl fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSource")
            .field("content_type", &self.content_type)
            .field("counting_rejections", &self.rejected.is_some())
            .finish_non_exhaustive()
    }
}

/// What `GET /healthz` answers: a function called once per probe, returning `Ok(body)`
/// for `200` or `Err(body)` for `503 Service Unavailable`, the body as plain text.
///
/// Like [`MetricsSource`] it takes a function, so this crate does not depend on the
/// runtime. The function runs on every probe: keep it cheap (the chat runtime's
/// `Health::check` reads a few atomics and never calls the store).
///
/// ```
/// use chat_ws_warp::HealthSource;
///
/// // With the chat runtime:
/// // `let h = server.health();`
/// // `HealthSource::new(move || { let r = h.check(); if r.is_healthy() { Ok(r.to_string()) } else { Err(r.to_string()) } })`.
/// let source = HealthSource::new(|| Err("store failing: 3 operations in a row failed".to_owned()));
/// assert!(source.check().is_err());
/// ```
#[derive(Clone)]
pub struct HealthSource {
    check: Arc<dyn Fn() -> Result<String, String> + Send + Sync>,
}

impl HealthSource {
    /// A source that calls `check` on every probe.
    pub fn new(check: impl Fn() -> Result<String, String> + Send + Sync + 'static) -> Self {
        HealthSource {
            check: Arc::new(check),
        }
    }

    /// Calls the source: `Ok` is healthy (`200`), `Err` degraded (`503`).
    pub fn check(&self) -> Result<String, String> {
        (self.check)()
    }
}

impl fmt::Debug for HealthSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthSource").finish_non_exhaustive()
    }
}
