//! # chat-ws-warp
//!
//! The WebSocket [`Transport`](chat_core::Transport) for `chat-core`, on warp 0.4, with
//! the HTTP routes a chat server needs next to it: the web client, `/healthz` and
//! `/metrics`.
//!
//! ## How a connection arrives
//!
//! 1. A browser sends a WebSocket upgrade request to `/` or `/ws`.
//! 2. The socket route describes it as a [`ConnectionInfo`](chat_core::ConnectionInfo)
//!    (peer address, path, raw query, every header with a lower-case name) and queues a
//!    [`Handshake`](chat_core::Handshake) for [`WarpTransport`]'s `accept`. Nothing is
//!    upgraded yet: the request waits for the runtime's decision.
//! 3. The runtime checks `Origin`, the token, its connection cap…
//!    * `reject(Rejection)` → the request is answered with the rejection's HTTP status
//!      (401, 403, 429, 503) and its reason as plain text;
//!    * `accept()` → the `101 Switching Protocols` reply; once hyper hands the
//!      connection over, `accept` returns the [`Channel`](chat_core::Channel): an
//!      `Inbound` (text frames zero-copy as `Bytes`, binary frames as their length,
//!      pongs, the peer's close) and an `Outbound` (a batch of frames is fed and
//!      flushed once; ping; close with a code).
//!    * no decision within `handshake_timeout`, or more than `accept_backlog`
//!      handshakes waiting → `503`.
//!
//! ## Limits
//!
//! Every default is chat-sized and documented on [`WarpConfig`]: 64 KiB frames and
//! messages (checked on the frame header, so announcing a huge frame costs the server
//! nothing; breaking it ends `recv` with `TransportError::MessageTooBig` → close 1009),
//! a bounded write buffer, a bounded handshake queue, and on our own server a header
//! read timeout, header count/size limits, a connection cap and TCP_NODELAY.
//!
//! The upgrade itself is answered by this crate rather than by warp's `Ws` (which
//! still checks the request): warp 0.4 cannot set tungstenite's `read_buffer_size`,
//! whose 128 KiB default is zeroed before every read and was most of an idle
//! connection's memory. Each socket gets a 2 KiB read buffer (a larger frame reserves
//! what it needs). tungstenite reads; on our own server the frames the socket sends are
//! written by this crate: a whole batch per vectored write, each frame's shared `Bytes`
//! written as it is (never copied per recipient), tungstenite's pongs and close replies
//! slotted in between frames, and no write buffer kept between batches. Other upgraded
//! streams (under `warp::serve`) fall back to tungstenite for writing too.
//!
//! ## Serving the chat
//!
//! On its own address, with [`WarpTransport::bind`], driven by the chat runtime:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use chat_core::{Config, RuntimeConfig, Server};
//! use chat_memory_store::MemoryStore;
//! use chat_ws_warp::{HealthSource, MetricsSource, WarpConfig, WarpTransport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let chat = Server::new(Config::default(), RuntimeConfig::default(), Arc::new(MemoryStore::new()));
//! let (metrics, refusals, health) = (chat.metrics(), chat.metrics(), chat.health());
//! let config = WarpConfig::default()
//!     // The runtime encodes OpenMetrics text; the handshakes the transport refuses by
//!     // itself are added to the runtime's count.
//!     .with_metrics(Some(
//!         MetricsSource::openmetrics(move || metrics.encode_text())
//!             .counting_rejections(move |status| refusals.handshake_rejected(status)),
//!     ))
//!     // `/healthz`: 200 `ok`, or 503 with what is wrong.
//!     .with_health(Some(HealthSource::new(move || {
//!         let report = health.check();
//!         if report.is_healthy() { Ok(report.to_string()) } else { Err(report.to_string()) }
//!     })));
//! let (transport, http) = WarpTransport::bind("0.0.0.0:8080", config).await?;
//! println!("open http://{}/", http.local_addr());
//!
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! // … keep `stop` and send on it (on SIGTERM, say) …
//! # drop(stop);
//! // Runs until `stopped`, then closes every socket with 1001 and drops the transport
//! // (new handshakes get 503 from then on).
//! chat.run(transport, async { let _ = stopped.await; }).await?;
//! http.shutdown();
//! http.stopped().await;
//! # Ok(())
//! # }
//! ```
//!
//! Inside an existing warp app, with [`WarpTransport::routes`] (mount it last: its
//! socket and web client live at `/`), served by [`serve`] or by `warp::serve`:
//!
//! ```no_run
//! use chat_ws_warp::{WarpConfig, WarpTransport, serve};
//! use warp::Filter;
//!
//! # async fn run() -> std::io::Result<()> {
//! let config = WarpConfig::default().with_serve_web_client(false);
//! let (transport, chat) = WarpTransport::routes(config.clone());
//! let app = warp::path!("api" / "version").map(|| "1.0").or(chat);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let server = serve(listener, app, &config)?;
//! // … run the chat runtime with `transport` …
//! # drop(transport);
//! server.shutdown();
//! server.stopped().await;
//! # Ok(())
//! # }
//! ```
//!
//! The web client connects to `/ws` on the page's own origin, so mount the routes at the
//! root of the app when it is served.
//!
//! ## Conformance
//!
//! `echo_routes` (feature `test-hooks`, test-only) serves an echo socket on exactly the
//! same WebSocket stack (same upgrade, same tungstenite settings and limits, same error
//! translation), for the Autobahn test suite.

mod config;
#[cfg(feature = "test-hooks")]
mod echo;
mod frame;
mod handshake;
mod server;
mod socket;
mod transport;
mod web;
mod wire;

pub use config::{HealthSource, MetricsSource, OPENMETRICS_TEXT, PROMETHEUS_TEXT, WarpConfig};
#[cfg(feature = "test-hooks")]
pub use echo::echo_routes;
pub use server::{HttpServer, serve};
pub use transport::{Routes, WarpTransport};
pub use web::CONTENT_SECURITY_POLICY;
