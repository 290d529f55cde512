//! The `connect` scenario: a storm of N full joins (TCP connect, handshake,
//! `set_username`, `join_room`, the three join replies) with K in flight at once.
//!
//! Joined connections stay open (read by a holder task) until the storm ends, like users
//! arriving after a restart; they are spread over rooms so each join's `room_users` stays
//! small and the figure is about joins, not about one huge member list.

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::BenchError;
use crate::client::{self, Target};
use crate::hold;
use crate::idle::check_open_files;
use crate::procfs::{CpuMark, Proc};
use crate::report::{Report, Storm};
use crate::stats::Latency;

/// A `connect` run.
#[derive(Debug, Clone)]
pub struct StormConfig {
    /// The server.
    pub target: Target,
    /// Joins to make.
    pub joins: usize,
    /// Joins in flight at once.
    pub concurrency: usize,
    /// Rooms the joins are spread over.
    pub rooms: usize,
    /// Failed joins after which the storm stops (each one may take the join timeout).
    pub max_failures: usize,
    /// The server's PID, for its CPU time.
    pub server_pid: Option<u32>,
    /// Free-form label copied to the report.
    pub label: String,
    /// Makes usernames unique between runs against one server.
    pub salt: u32,
}

/// Runs the scenario.
pub async fn run(cfg: &StormConfig) -> Result<Report, BenchError> {
    cfg.target.check()?;
    if cfg.joins == 0 || cfg.concurrency == 0 || cfg.rooms == 0 {
        return Err(BenchError::Config(
            "joins, concurrency and rooms must be ≥ 1".into(),
        ));
    }
    check_open_files(cfg.joins)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut held = Vec::with_capacity(cfg.joins);
    let mut latency = Latency::new();
    let mut failures = 0usize;
    let mut first_failure = None;
    let mark = CpuMark::now(cfg.server_pid)?;
    let start = Instant::now();
    // Boxed, not stack-pinned, so dropping it cancels the joins still in flight.
    let mut joins = Box::pin(
        futures_util::stream::iter(0..cfg.joins)
            .map(|i| {
                let target = cfg.target.clone();
                let name = client::username(cfg.salt, i);
                let room = format!("storm-{}", i % cfg.rooms);
                async move {
                    let t0 = Instant::now();
                    let joined = client::connect_and_join(&target, i, &name, &room).await;
                    (t0.elapsed(), joined)
                }
            })
            .buffer_unordered(cfg.concurrency),
    );
    while let Some((took, joined)) = joins.next().await {
        match joined {
            Ok(ws) => {
                latency.record_ns(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                held.push(hold::spawn(ws, stop_rx.clone()));
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert_with(|| e.to_string());
                if failures >= cfg.max_failures {
                    break;
                }
            }
        }
    }
    drop(joins);
    let seconds = start.elapsed().as_secs_f64();
    let cpu = mark.elapsed()?;
    let _ = stop_tx.send(true);
    let completed = held.len();
    for handle in held {
        let _ = handle.await;
    }
    let storm = Storm {
        joins: cfg.joins,
        completed,
        concurrency: cfg.concurrency,
        rooms: cfg.rooms,
        seconds,
        joins_per_s: completed as f64 / seconds,
        latency: latency.percentiles(),
        server_cpu_us_per_join: cpu.server_per(completed as u64),
        first_failure,
    };
    Ok(Report {
        scenario: "connect",
        label: cfg.label.clone(),
        cpu,
        tool_rss_kib: Proc::Myself.rss_kib()?,
        fanout: None,
        idle: None,
        connect: Some(storm),
    })
}
