//! The echo server that the Autobahn|Testsuite cases run against (`conformance/run.sh`,
//! docs/CONFORMANCE.md): `chat_ws_warp::echo_routes` behind `chat_ws_warp::serve`, so
//! the cases exercise exactly the WebSocket stack the chat serves — our upgrade and
//! tungstenite settings, our HTTP server and our error translation. `echo_routes` is a
//! test hook (chat-ws-warp feature `test-hooks`), enabled by this package's
//! dev-dependencies, which examples are built with.
//!
//! ```sh
//! cargo run --release --example autobahn_echo                       # 127.0.0.1:9001
//! cargo run --release --example autobahn_echo -- --addr 127.0.0.1:0 # any free port
//! ```
//!
//! It prints `listening on ws://ADDR/` once bound and stops on Ctrl-C or SIGTERM.
//!
//! Limits: the WebSocket protocol's own (tungstenite's defaults, 16 MiB frames and
//! 64 MiB messages) instead of the chat's 64 KiB, because the 9.x cases send messages
//! of up to 16 MiB. Every other setting is the chat's default.

use std::net::SocketAddr;

use chat_ws_warp::{WarpConfig, echo_routes, serve};
use clap::Parser;
use tokio::net::TcpListener;

/// tungstenite's default `max_frame_size`.
const PROTOCOL_MAX_FRAME_BYTES: usize = 16 << 20;
/// tungstenite's default `max_message_size`.
const PROTOCOL_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Room for echoing one maximal message while the fuzzer is still sending: the largest
/// message plus tungstenite's 128 KiB flush threshold.
const MAX_WRITE_BUFFER_BYTES: usize = PROTOCOL_MAX_MESSAGE_BYTES + (1 << 20);

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "WebSocket echo server on the chat's stack, for the Autobahn test cases")]
struct Args {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, env = "AUTOBAHN_ECHO_ADDR", default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
}

/// The chat's transport configuration with the protocol's default size limits.
fn conformance_config() -> WarpConfig {
    WarpConfig::default()
        .with_max_frame_bytes(PROTOCOL_MAX_FRAME_BYTES)
        .with_max_message_bytes(PROTOCOL_MAX_MESSAGE_BYTES)
        .with_max_write_buffer_bytes(MAX_WRITE_BUFFER_BYTES)
        .with_serve_web_client(false)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = conformance_config();
    let listener = TcpListener::bind(args.addr).await?;
    let server = serve(listener, echo_routes(&config), &config)?;
    // Scripts wait for this line (and read the port from it when binding port 0).
    println!("listening on ws://{}/", server.local_addr());

    shutdown_signal().await?;
    server.shutdown();
    // Upgraded sockets are not the HTTP server's; they end when the process does.
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_the_protocol_defaults() {
        let config = conformance_config();
        assert_eq!(config.max_frame_bytes, 16 * 1024 * 1024);
        assert_eq!(config.max_message_bytes, 64 * 1024 * 1024);
        assert!(config.max_write_buffer_bytes > config.max_message_bytes);
    }

    #[test]
    fn default_address() {
        let args = Args::try_parse_from(["autobahn_echo"]).expect("defaults parse");
        assert_eq!(args.addr, "127.0.0.1:9001".parse().expect("valid"));
    }
}
