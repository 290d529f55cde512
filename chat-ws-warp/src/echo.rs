//! An echo socket on the chat's WebSocket stack, for protocol conformance testing
//! (Autobahn's fuzzing client): same upgrade, same tungstenite settings and limits, same
//! error translation — only the runtime is replaced by "send it back".

use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::{self, Message};
use warp::Filter;
use warp::ws::Ws;

use crate::config::WarpConfig;
use crate::handshake::cannot_upgrade;
use crate::socket::{self, Data, Socket};
use crate::transport::Routes;

/// A route that upgrades every WebSocket request (any path) and echoes each text and
/// binary message back, with the limits of `config`.
///
/// Test-only (feature `test-hooks`): not part of the stable API.
///
/// Errors end the connection with the close code the chat would use: 1009 for a frame
/// or message over the limit, 1007 for invalid UTF-8, 1002 for other protocol errors.
///
/// ```no_run
/// use chat_ws_warp::{WarpConfig, echo_routes, serve};
///
/// # async fn run() -> std::io::Result<()> {
/// let config = WarpConfig::default();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let server = serve(listener, echo_routes(&config), &config)?;
/// # server.shutdown();
/// # Ok(())
/// # }
/// ```
pub fn echo_routes(config: &WarpConfig) -> Routes {
    let socket_config = socket::websocket_config(config);
    let close_timeout = config.close_timeout;
    // The same upgrade as the chat's socket route (see `handshake::socket_route`).
    warp::ext::optional::<OnUpgrade>()
        .and(warp::ws())
        .and(warp::header::value("sec-websocket-key"))
        .map(
            move |on_upgrade: Option<OnUpgrade>, _: Ws, key: HeaderValue| {
                let Some(on_upgrade) = on_upgrade else {
                    return cannot_upgrade();
                };
                // One task per echo connection.
                tokio::spawn(async move {
                    match socket::upgrade(on_upgrade, socket_config).await {
                        Ok(socket) => echo(socket, close_timeout).await,
                        Err(err) => tracing::debug!(%err, "echo upgrade failed"),
                    }
                });
                socket::switching_protocols(key.as_bytes())
            },
        )
        .boxed()
}

async fn echo(socket: Socket, close_timeout: Duration) {
    let (mut messages, mut frames) = socket.into_parts();
    while let Some(item) = messages.next().await {
        let message = match item {
            Ok(message) => message,
            Err(err) => {
                let code: u16 = match err {
                    tungstenite::Error::Capacity(_) => 1009,
                    tungstenite::Error::Utf8(_) => 1007,
                    tungstenite::Error::Protocol(_) => 1002,
                    _ => return,
                };
                let _ = frames.close(code, "", close_timeout).await;
                return;
            }
        };
        // Pings and close frames are answered by tungstenite on the next read.
        let sent = match message {
            Message::Text(text) => frames.send(Data::Text, &[Bytes::from(text)]).await,
            Message::Binary(data) => frames.send(Data::Binary, &[data]).await,
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}
