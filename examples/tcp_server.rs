//! A chat server you can talk to with `nc`: newline-delimited JSON over TCP, on the
//! public `Transport` trait, with the in-memory store.
//!
//! ```sh
//! cargo run --release --example tcp_server          # listens on 127.0.0.1:4000
//! nc 127.0.0.1 4000
//! {"type":"set_username","username":"alice"}
//! {"type":"join_room","room":"lobby"}
//! {"type":"chat_message","content":"hello"}
//! ```
//!
//! Ctrl-C shuts down gracefully: every client gets a final `closed` line (code 1001).

use std::net::SocketAddr;
use std::sync::Arc;

use chat_core::{Config, RuntimeConfig, Server};
use chat_examples::tcp::TcpLineTransport;
use chat_memory_store::MemoryStore;
use clap::Parser;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Chat over newline-delimited JSON on TCP (try it with `nc`)")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CHAT_TCP_ADDR", default_value = "127.0.0.1:4000")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let (transport, addr) = TcpLineTransport::bind(args.addr).await?;
    println!(
        "chat server listening on {addr} — connect with: nc {} {}",
        addr.ip(),
        addr.port()
    );
    let server = Server::new(
        Config::default(),
        RuntimeConfig::default(),
        Arc::new(MemoryStore::new()),
    );
    server
        .run(transport, async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}
