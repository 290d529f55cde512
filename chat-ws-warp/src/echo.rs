//! An echo socket on the chat's WebSocket stack, for protocol conformance testing
//! (Autobahn's fuzzing client): same warp `Ws`, same limits, same error translation —
//! only the runtime is replaced by "send it back".

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;
use warp::Filter;
use warp::reply::Reply;
use warp::ws::{Message, WebSocket, Ws};

use crate::config::WarpConfig;
use crate::socket::{self, tungstenite_error};
use crate::transport::Routes;

/// A route that upgrades every WebSocket request (any path) and echoes each text and
/// binary message back, with the limits of `config`.
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
    let config = Arc::new(config.clone());
    warp::ws()
        .map(move |ws: Ws| {
            let close_timeout = config.close_timeout;
            socket::with_limits(ws, &config)
                .on_upgrade(move |socket| echo(socket, close_timeout))
                .into_response()
        })
        .boxed()
}

async fn echo(socket: WebSocket, close_timeout: Duration) {
    let (mut sink, mut stream) = socket.split();
    while let Some(item) = stream.next().await {
        let message = match item {
            Ok(message) => message,
            Err(err) => {
                let code: u16 = match tungstenite_error(&err) {
                    Some(tungstenite::Error::Capacity(_)) => 1009,
                    Some(tungstenite::Error::Utf8(_)) => 1007,
                    Some(tungstenite::Error::Protocol(_)) => 1002,
                    _ => return,
                };
                let close = sink.send(Message::close_with(code, ""));
                let _ = tokio::time::timeout(close_timeout, close).await;
                return;
            }
        };
        // Pings and close frames are answered by tungstenite on the next read.
        if (message.is_text() || message.is_binary()) && sink.send(message).await.is_err() {
            return;
        }
    }
}
