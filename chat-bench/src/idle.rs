//! The `idle` scenario: N joined connections held; the server's RSS before and after gives
//! its memory per connection.
//!
//! One process holds up to its open-files limit (20,000 here, so 18,000 connections fit in
//! one run); the clients are spread over `127.0.0.x` source addresses so ephemeral ports do
//! not run out. The tool checks the limit first and says how to raise it.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::BenchError;
use crate::client::{self, Target};
use crate::hold;
use crate::procfs::{self, CpuMark, Proc};
use crate::report::{Idle, Report};

/// An `idle` run.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// The server.
    pub target: Target,
    /// Connections to hold.
    pub connections: usize,
    /// Rooms they are spread over (the join replies list a room's members, so one room
    /// of 10,000 would measure `room_users`, not idle connections).
    pub rooms: usize,
    /// Joins in flight at once.
    pub concurrency: usize,
    /// Wait between the last join and the RSS reading.
    pub settle: Duration,
    /// Extra time to hold the connections after the reading.
    pub hold: Duration,
    /// The server's PID (required: RSS is the figure).
    pub server_pid: u32,
    /// Free-form label copied to the report.
    pub label: String,
    /// Makes usernames unique between runs against one server.
    pub salt: u32,
}

/// Fails early, with the fix, when this process may not open `sockets` more files.
pub fn check_open_files(sockets: usize) -> Result<(), BenchError> {
    let needed = sockets as u64 + 64;
    match procfs::open_files_soft_limit() {
        Some(limit) if limit < needed => Err(BenchError::Config(format!(
            "{sockets} connections need ~{needed} open files but the soft limit is {limit}: \
             run `ulimit -n $(ulimit -Hn)` first (scripts/bench.sh does), or use fewer"
        ))),
        _ => Ok(()),
    }
}

/// Runs the scenario.
pub async fn run(cfg: &IdleConfig) -> Result<Report, BenchError> {
    cfg.target.check()?;
    if cfg.connections == 0 || cfg.rooms == 0 || cfg.concurrency == 0 {
        return Err(BenchError::Config(
            "connections, rooms and concurrency must be ≥ 1".into(),
        ));
    }
    check_open_files(cfg.connections)?;
    let server = Proc::Pid(cfg.server_pid);
    let rss_before_kib = server.rss_kib()?;
    let mark = CpuMark::now(Some(cfg.server_pid))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let mut held = Vec::with_capacity(cfg.connections);
    // Boxed, not stack-pinned, so dropping it cancels the joins still in flight.
    let mut joins = Box::pin(
        futures_util::stream::iter(0..cfg.connections)
            .map(|i| {
                let target = cfg.target.clone();
                let name = client::username(cfg.salt, i);
                let room = format!("idle-{}", i % cfg.rooms);
                async move { (i, client::connect_and_join(&target, i, &name, &room).await) }
            })
            .buffer_unordered(cfg.concurrency),
    );
    let mut failure = None;
    while let Some((i, joined)) = joins.next().await {
        match joined {
            Ok(ws) => held.push(hold::spawn(ws, stop_rx.clone())),
            Err(e) => {
                failure = Some(BenchError::Protocol(format!(
                    "connection {i} could not join ({} held): {e}",
                    held.len()
                )));
                break;
            }
        }
    }
    drop(joins);
    let join_seconds = start.elapsed().as_secs_f64();
    if let Some(e) = failure {
        let _ = stop_tx.send(true);
        return Err(e);
    }
    tokio::time::sleep(cfg.settle).await;
    let rss_after_kib = server.rss_kib()?;
    let cpu = mark.elapsed()?;
    tokio::time::sleep(cfg.hold).await;
    let _ = stop_tx.send(true);
    let mut errors = 0;
    let mut closed_early = 0;
    for handle in held {
        if let Ok(h) = handle.await {
            errors += h.errors;
            closed_early += u64::from(h.closed_early);
        }
    }
    if closed_early > 0 {
        return Err(BenchError::Protocol(format!(
            "the server closed {closed_early} idle connections while they were held"
        )));
    }
    let idle = Idle {
        connections: cfg.connections,
        rooms: cfg.rooms,
        rss_before_kib,
        rss_after_kib,
        kib_per_connection: (rss_after_kib as f64 - rss_before_kib as f64) / cfg.connections as f64,
        join_seconds,
        errors,
    };
    Ok(Report {
        scenario: "idle",
        label: cfg.label.clone(),
        cpu,
        tool_rss_kib: Proc::Myself.rss_kib()?,
        fanout: None,
        idle: Some(idle),
        connect: None,
    })
}
