//! The example chat server: WebSocket chat with a browser client, in one command.
//!
//! ```sh
//! cargo run --release --example server                 # http://127.0.0.1:3000
//! cargo run --release --example server -- --addr 0.0.0.0:8080
//! cargo run --release --example server -- --help       # every knob, with its default
//! # sign-in with JWTs, and only this page may connect:
//! CHAT_JWT_HS256_SECRET=… cargo run --release --example server -- \
//!     --allowed-origins http://127.0.0.1:3000
//! ```
//!
//! It wires the four pieces together: the store (SQLite in `chat-data/chat.db` under the
//! working directory by default, so history survives a restart; `--store memory` or
//! `--store sqlite:PATH` to change it), the engine's configuration,
//! the WebSocket transport (which also serves the web client, `/healthz` and
//! `/metrics`), and the runtime that drives them. Ctrl-C and SIGTERM (what `docker stop`,
//! Kubernetes and systemd send) shut down gracefully: every client is closed with 1001
//! after its queued frames are written, within `--shutdown-grace`, and the process exits
//! with status 0. `/healthz` answers 503 with the reason while the hub is stalled or
//! stopped or the store keeps failing (see `chat_core::Health`).
//!
//! With `--redis redis://HOST:PORT` (and `--store postgres://…`, one database for every
//! node) the server is a node of a cluster (`chat-redis`): several of them behind a load
//! balancer share rooms, presence, usernames and DMs, and a client may reconnect to any
//! of them. `/healthz` then names the node and reports its bus.
//!
//! Admission (`chat-auth`) runs before every upgrade: per-IP limits are on by default
//! (64 connections, 20 new at once then 5 per second, per address → 429; loopback peers
//! are exempt unless `--limit-loopback`; behind a reverse proxy, `--trusted-proxies`
//! makes them count the client the proxy names); the Origin
//! allow-list (→ 403) and JWT authentication (→ 401) are off until their flags are
//! given. See `docs/SECURITY.md`.

mod options;
mod stores;

use std::sync::Arc;

use chat_core::Server;
use chat_redis::{RedisCluster, RedisClusterConfig};
use chat_ws_warp::{HealthSource, MetricsSource, WarpTransport};
use clap::Parser;
use options::Options;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&options.log)?)
        .init();

    let admission = options.admission()?;
    // Checked before the store is opened: a refused combination creates nothing.
    let cluster = match options.cluster() {
        Ok(cluster) => cluster,
        Err(e) => {
            tracing::error!(error = %e, "cannot join the cluster");
            eprintln!("chat server: {e}");
            std::process::exit(2);
        }
    };
    tracing::info!(admission = %options.admission_summary(), "admission policies");
    let store = match stores::open(&options).await {
        Ok(store) => store,
        Err(e) => {
            // A clear sentence, not a panic or a Debug dump: the file, the cause, the fix.
            tracing::error!(store = %options.store, error = %e, "cannot open the store");
            eprintln!("chat server: cannot open the store {}: {e}", options.store);
            std::process::exit(1);
        }
    };
    tracing::info!(store = %options.store, "store opened");
    let mut chat =
        Server::new(options.engine(), options.runtime(), store).with_admission(Arc::new(admission));
    if let Some(config) = cluster {
        chat = chat.with_cluster(join_cluster(config, &options).await);
    }
    let metrics = chat.metrics();
    let refusals = chat.metrics();
    let health = chat.health();
    // The runtime's registry encodes OpenMetrics text; Prometheus scrapes it. The
    // transport adds the handshakes it refuses by itself to the runtime's count.
    let transport_config = options
        .warp()
        .with_metrics(Some(
            MetricsSource::openmetrics(move || metrics.encode_text())
                .counting_rejections(move |status| refusals.handshake_rejected(status)),
        ))
        .with_health(Some(HealthSource::new(move || {
            // A cluster node's report names the node and its bus: `ok (node n1: bus ok)`.
            let report = health.check();
            if report.is_healthy() {
                Ok(report.to_string())
            } else {
                Err(report.to_string())
            }
        })));
    let stop = stop_signal();
    let (transport, http) = WarpTransport::bind(options.addr, transport_config).await?;
    let addr = http.local_addr();
    let ready = chat.health();
    let mut running = tokio::spawn(chat.run(transport, async {
        let signal = stop.await;
        tracing::info!(signal, "closing every connection with 1001");
    }));
    // Announce the address only once the runtime runs, so whoever reads the line (a
    // supervisor, a test) finds `/healthz` at 200 rather than "hub not started".
    // `running` ending first (the server failed before its hub started) ends the wait too.
    let ended_early = tokio::select! {
        () = ready.started() => None,
        ended = &mut running => Some(ended),
    };
    tracing::info!(%addr, "chat server listening");
    println!("Chat server running: open http://{addr}/ in two browser tabs");

    match ended_early {
        Some(ended) => ended??,
        None => running.await??,
    }
    http.shutdown();
    http.stopped().await;
    tracing::info!("stopped");
    Ok(())
}

/// Connects this node's cluster bus (`--redis`), or exits with one clear sentence
/// when Redis cannot be reached.
async fn join_cluster(
    config: RedisClusterConfig,
    options: &Options,
) -> Arc<dyn chat_core::Cluster> {
    match RedisCluster::connect(config).await {
        Ok(bus) => {
            tracing::info!(
                node = %chat_core::Cluster::node(&bus),
                crash_bound = ?bus.config().crash_bound(),
                "cluster bus connected"
            );
            Arc::new(bus)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot join the cluster");
            // Logged and printed without a password the URL may hold.
            let redis = stores::without_password(options.redis.as_deref().unwrap_or_default());
            eprintln!("chat server: cannot join the cluster through {redis}: {e}");
            std::process::exit(1);
        }
    }
}

/// Listens for Ctrl-C (SIGINT) and, on Unix, SIGTERM; the future resolves at the first
/// of them and names it. SIGTERM is registered here, before the server says it listens,
/// so a supervisor's SIGTERM is never left to its default action (exit at once). A
/// signal that cannot be listened for is logged and left to its default action.
fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .inspect_err(|e| tracing::error!(error = %e, "cannot listen for SIGTERM"))
        .ok();
    async move {
        let ctrl_c = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async move {
            match term {
                Some(mut term) => {
                    term.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => "SIGINT",
            () = terminate => "SIGTERM",
        }
    }
}
