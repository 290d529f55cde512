//! The tokio runtime: a [`Server`] drives the sans-IO [`Engine`] with a [`Store`] and any
//! [`Transport`].
//!
//! The engine decides everything; this module only moves bytes and time around it:
//!
//! ```text
//!  Transport ──accept──▶ connection task (one per connection)
//!                          admission → handshake → register
//!                          reader: recv → decode ───────────┐ bounded channel
//!                          writer: outbound queue → send ◀┐ │
//!                                                          │ ▼
//!                                     hub task: the only owner of the Engine
//!                                       handle(now, input) → drain poll_output():
//!                                         Deliver → encode once, push Bytes to queues
//!                                         Close   → close a queue
//!                                         Store   → store future polled by the hub
//!                                                   → reply into the engine
//!                                         Cluster → op queue ──▶ Cluster::run (bus task)
//!                                       cluster events ◀── bounded queue ◀──┘
//! ```
//!
//! * `hub` owns the engine (no locks; one task).
//! * `outbound` is the bounded per-connection queue and its slow-reader policy.
//! * `connection` is one connection's tasks: admission, reader, writer, heartbeat.
//! * [`Metrics`] is the server's Prometheus registry.
//! * [`Health`] says whether the hub is turning and the store answering (for `/healthz`).
//! * [`RuntimeConfig`] holds every bound and timeout, with documented defaults.
//! * [`Cluster`] is the bus that makes the server one node of a cluster
//!   ([`Server::with_cluster`]; ARCHITECTURE.md decision 19).
//!
//! # Time and tasks
//!
//! The runtime reads tokio's clock (so tests with `start_paused` control all of it, the
//! engine's timers included) in one function, `now`, and spawns its long-lived tasks in
//! one function, `spawn`; connection tasks live in a `JoinSet` so that shutdown can wait
//! for them and abort stragglers. Store operations are no tasks: the hub polls them
//! (the `store_driver` module) and drops those left when it stops.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn chat_core::Store>) -> Result<(), chat_core::RuntimeError> {
//! use chat_core::{ChannelTransport, RuntimeConfig, Server};
//!
//! let (transport, connector) = ChannelTransport::new();
//! let server = Server::new(chat_core::Config::default(), RuntimeConfig::default(), store);
//! let handle = server.spawn(transport);
//! // … connector.connect(info).await gives clients …
//! handle.shutdown();
//! handle.join().await
//! # }
//! ```

mod admission;
mod cluster;
mod config;
mod connection;
mod health;
mod hub;
mod metrics;
mod outbound;
mod process;
mod random_ids;
mod store_driver;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use admission::{Admission, Admitted, AllowAnonymous};
pub use cluster::{
    BusCounter, BusStopped, Cluster, ClusterEventReceiver, ClusterEvents, ClusterHealth,
    ClusterOpSender, ClusterOps, EVENT_QUEUE, HubStopped,
};
pub use config::RuntimeConfig;
pub use health::{
    HUB_STALL, Health, HealthReport, HubStatus, STORE_FAILING_HOLD, STORE_FAILURES, StoreStatus,
};
pub use metrics::Metrics;
pub use random_ids::RandomUserIds;

use crate::engine::{self, Engine};
use crate::ids::IdGenerator;
use crate::store::Store;
use crate::transport::{Rejection, Transport};
use connection::Context;
use hub::{Hub, HubSender};
use store_driver::StoreDriver;

/// How long the accept loop waits after a failed `accept` before trying again.
const ACCEPT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The runtime's one clock read. It is tokio's clock, so paused-time tests drive the
/// heartbeat, the engine's timers and every timeout alike.
pub(crate) fn now() -> tokio::time::Instant {
    // The engine takes `now` as an argument; this is where the runtime reads it.
    #[allow(clippy::disallowed_methods)]
    tokio::time::Instant::now()
}

/// The runtime's one place that starts free-standing tasks (the hub, a spawned server).
fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // Only the runtime spawns; everything it spawns is joined or aborted on shutdown.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(task)
}

/// The runtime's one timer: the engine's next deadline, store timeouts, token expiry and
/// the accept loop's retry pause all wait with it, on tokio's clock (see [`now`]).
pub(crate) fn sleep_until(deadline: tokio::time::Instant) -> tokio::time::Sleep {
    // Waiting belongs to the runtime; the engine only names its deadlines.
    #[allow(clippy::disallowed_methods)]
    tokio::time::sleep_until(deadline)
}

/// Why [`Server::run`] failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The task that owns the engine died (a panic in the engine is a bug).
    #[error("the hub task failed: {0}")]
    HubFailed(String),
    /// The task running a [`Server::spawn`]ed server died.
    #[error("the server task failed: {0}")]
    ServerFailed(String),
}

/// A chat server: an [`Engine`], a [`Store`] and, once [`run`](Self::run), a
/// [`Transport`].
///
/// ```no_run
/// # async fn demo<T: chat_core::Transport>(transport: T, store: std::sync::Arc<dyn chat_core::Store>) {
/// use chat_core::{RuntimeConfig, Server};
///
/// let server = Server::new(chat_core::Config::default(), RuntimeConfig::default(), store);
/// let metrics = server.metrics(); // serve metrics.encode_text() on /metrics
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// // … keep `stop` and send on it (on SIGTERM, say) to shut down gracefully …
/// server
///     .run(transport, async { let _ = stopped.await; })
///     .await
///     .expect("the server failed");
/// # drop((metrics, stop));
/// # }
/// ```
pub struct Server {
    engine: engine::Config,
    config: RuntimeConfig,
    store: Arc<dyn Store>,
    ids: Box<dyn IdGenerator>,
    admission: Arc<dyn Admission>,
    metrics: Metrics,
    health: Health,
    cluster: Option<Arc<dyn Cluster>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("engine", &self.engine)
            .field("config", &self.config)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with anonymous admission ([`AllowAnonymous`]) and random user ids
    /// ([`RandomUserIds`]).
    pub fn new(engine: engine::Config, config: RuntimeConfig, store: Arc<dyn Store>) -> Self {
        Server {
            engine,
            config,
            store,
            ids: Box::new(RandomUserIds),
            admission: Arc::new(AllowAnonymous),
            metrics: Metrics::new(),
            health: Health::default(),
            cluster: None,
        }
    }

    /// Makes this server a node of a cluster (ARCHITECTURE.md decision 19): rooms,
    /// presence, names and DMs are shared with the other nodes through `cluster`, which
    /// must share this server's store with them. Sets the engine's
    /// [`Config::cluster`](engine::Config::cluster); the bus's health joins
    /// [`health`](Self::health).
    pub fn with_cluster(mut self, cluster: Arc<dyn Cluster>) -> Self {
        self.engine.cluster = true;
        self.health.watch_cluster(Arc::clone(&cluster));
        self.metrics.watch_cluster_bus(Arc::clone(&cluster));
        self.cluster = Some(cluster);
        self
    }

    /// Replaces the source of anonymous user ids (e.g. [`SequentialIds`](crate::SequentialIds)
    /// for reproducible tests).
    pub fn with_id_generator(mut self, ids: Box<dyn IdGenerator>) -> Self {
        self.ids = ids;
        self
    }

    /// Replaces the admission policy (authentication, `Origin` checks, per-address
    /// limits).
    pub fn with_admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// This server's metrics; the handle stays valid after the server stops.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// This server's health (see [`Health`]): serve `health.check()` on `/healthz`. Until
    /// the server runs it reports the hub as not started, and after it stops as stopped.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves `transport` until `shutdown` resolves, then shuts down gracefully: stops
    /// accepting, gives every connection what is queued for it and a 1001 close ("server
    /// shutting down"), lingers until each peer has answered it (see
    /// [`RuntimeConfig::close_linger`]), lets store requests in flight finish — all within
    /// [`RuntimeConfig::shutdown_grace`] — aborts whatever is left, and returns. A cluster
    /// node then lets its bus perform the departures the closed connections caused and
    /// leave the cluster (within what is left of the grace period) before returning.
    ///
    /// If the transport stops accepting (its `accept` returns `None`), open connections
    /// are served on, and `run` returns once they have all ended (or at `shutdown`). A
    /// temporary accept error (`Some(Err(_))`) is logged and accepting resumes after a
    /// short pause.
    pub async fn run<T: Transport>(
        self,
        mut transport: T,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let Server {
            engine,
            config,
            store,
            ids,
            admission,
            metrics,
            health,
            cluster,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(config.hub_queue.max(1));
        metrics.watch_hub(&health);
        health.hub_started(tx.downgrade());
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let outbound_budget = Arc::new(outbound::GlobalBudget::new(config.outbound_global_bytes));
        metrics.watch_outbound(&outbound_budget);
        let mut hub = Hub::new(
            Engine::new(engine, ids),
            StoreDriver::new(store, config.store_timeout, config.store_concurrency),
            metrics.clone(),
            config.shutdown_grace,
            Arc::clone(&outbound_budget),
        )
        .with_health(health);
        // The bus runs on a task of its own; it stops when the hub, its op sender's only
        // owner, is gone (after the engine emitted every departure at shutdown).
        let mut bus = None;
        if let Some(cluster) = cluster {
            let (op_tx, ops) = ClusterOps::channel();
            let (events, event_rx) = ClusterEvents::channel(EVENT_QUEUE);
            metrics.watch_cluster_ops(&op_tx);
            hub = hub.with_cluster(op_tx, event_rx);
            bus = Some(spawn(async move { cluster.run(ops, events).await }));
        }
        let config_grace = config.shutdown_grace;
        let mut hub_task = spawn(hub.run(rx, lost_rx, stop_rx.clone()));
        let ctx = Arc::new(Context {
            config,
            admission,
            metrics,
            hub: HubSender { tx, lost: lost_tx },
            shutdown: stop_rx,
            open: AtomicUsize::new(0),
            outbound_budget,
        });
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);

        // Accept until told to stop or the transport stops.
        let stopped = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break true,
                handshake = transport.accept() => match handshake {
                    Some(Ok(handshake)) => {
                        while let Some(done) = connections.try_join_next() {
                            log_task_end(done);
                        }
                        match ctx.try_reserve() {
                            Some(slot) => {
                                // Connection tasks live in this set, so shutdown joins them.
                                #[allow(clippy::disallowed_methods)]
                                connections.spawn(connection::serve(handshake, Arc::clone(&ctx), slot));
                            }
                            None => {
                                let ctx = Arc::clone(&ctx);
                                let why = Rejection::Unavailable("server full".into());
                                // As above: the refusal is joined on shutdown too.
                                #[allow(clippy::disallowed_methods)]
                                connections.spawn(async move { connection::reject(handshake, why, &ctx).await });
                            }
                        }
                    }
                    Some(Err(e)) => {
                        // Temporary (out of file descriptors, say): retrying at once would
                        // spin; closing connections may free what is missing meanwhile.
                        tracing::warn!(error = %e, "accept failed; retrying shortly");
                        tokio::select! {
                            biased;
                            () = &mut shutdown => break true,
                            () = sleep_until(now() + ACCEPT_RETRY_PAUSE) => {}
                        }
                    }
                    None => break false,
                },
                done = &mut hub_task => {
                    stop_bus(bus, now() + config_grace).await;
                    return hub_result(done);
                }
            }
        };
        // Dropping the transport closes its listener: nobody new gets in.
        drop(transport);
        let grace = ctx.config.shutdown_grace;
        // Connection tasks hold their own handles; once they are all gone the hub's input
        // closes and it stops by itself.
        drop(ctx);

        if !stopped {
            tokio::select! {
                () = &mut shutdown => {}
                done = &mut hub_task => {
                    connections.shutdown().await;
                    stop_bus(bus, now() + grace).await;
                    return hub_result(done);
                }
            }
        }
        // Graceful shutdown: the hub closes every connection after its queue is flushed
        // and stops when all are gone or the grace period is over.
        let grace_over = now() + grace;
        let _ = stop_tx.send(true);
        let done = hub_task.await;
        // The hub is gone, and with it the bus's op queue: the bus has every departure the
        // engine emitted while closing the connections, performs them, leaves the cluster
        // and returns — within what is left of the grace period.
        stop_bus(bus, grace_over).await;
        // Connections the hub has forgotten may still be lingering after their 1001 (see
        // `RuntimeConfig::close_linger`): aborting them now would reset the peers and
        // lose the close. They get what is left of the grace period.
        let _ = tokio::time::timeout_at(grace_over, async {
            while let Some(done) = connections.join_next().await {
                log_task_end(done);
            }
        })
        .await;
        // Whatever is still running (a handshake in progress, a writer stuck on a peer
        // that does not read) is aborted.
        connections.shutdown().await;
        hub_result(done)
    }

    /// Runs the server on a task of its own; the returned handle shuts it down and waits
    /// for it.
    pub fn spawn<T: Transport>(self, transport: T) -> ServerHandle {
        let metrics = self.metrics();
        let health = self.health();
        let (stop, mut stopped) = watch::channel(false);
        let task = spawn(async move {
            let shutdown = async move {
                // A dropped handle detaches the server: it then runs until the transport
                // stops.
                if stopped.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            self.run(transport, shutdown).await
        });
        ServerHandle {
            stop,
            task,
            metrics,
            health,
        }
    }
}

/// Waits for the bus task to leave the cluster until `deadline`, then aborts it.
async fn stop_bus(bus: Option<JoinHandle<()>>, deadline: tokio::time::Instant) {
    let Some(mut bus) = bus else {
        return;
    };
    match tokio::time::timeout_at(deadline, &mut bus).await {
        Ok(Err(e)) if e.is_panic() => tracing::error!(error = %e, "the cluster bus panicked"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("the cluster bus did not leave the cluster within the grace period");
            bus.abort();
        }
    }
}

fn hub_result(done: Result<(), tokio::task::JoinError>) -> Result<(), RuntimeError> {
    done.map_err(|e| RuntimeError::HubFailed(e.to_string()))
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "connection task panicked");
    }
}

/// Controls a server started with [`Server::spawn`]. Dropping it detaches the server.
#[derive(Debug)]
pub struct ServerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), RuntimeError>>,
    metrics: Metrics,
    health: Health,
}

impl ServerHandle {
    /// Starts a graceful shutdown (see [`Server::run`]); [`join`](Self::join) waits for it.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until the server has stopped.
    pub async fn join(self) -> Result<(), RuntimeError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(RuntimeError::ServerFailed(e.to_string())),
        }
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The server's health.
    pub fn health(&self) -> &Health {
        &self.health
    }
}
