//! The runtime's side of the cluster seam: the [`Cluster`] trait a bus implements
//! (e.g. `chat-redis`), and the two channels that connect it to the hub.
//!
//! ```text
//!   hub ── ClusterOp ──▶ ClusterOps (unbounded, in order) ──▶ Cluster::run ──▶ bus
//!   hub ◀── ClusterEvent ── ClusterEvents (bounded) ◀──────── Cluster::run ◀── bus
//! ```
//!
//! The hub never waits on the bus: ops are queued without bound (they are bounded by
//! what the engine does, which is rate limited; the queue's depth is the
//! `chat_cluster_queued` gauge). Events flow the other way through a bounded queue
//! ([`EVENT_QUEUE`]): when the hub is slow the bus waits, and whatever it cannot take
//! meanwhile is the bus's to buffer or to recover (a subscriber the bus server drops
//! reconnects and resyncs with [`ClusterEvent::RoomMembers`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::cluster::{ClusterEvent, ClusterOp, NodeId};

/// Capacity of the event queue from the bus into the hub: 1024.
pub const EVENT_QUEUE: usize = 1024;

/// A bus connecting this server to the other nodes of a cluster.
///
/// The runtime calls [`run`](Self::run) once per server, on a task of its own, and
/// feeds it the engine's [`ClusterOp`]s; `run` sends what other nodes announce as
/// [`ClusterEvent`]s. See ARCHITECTURE.md decision 19 for what each op and event means
/// across nodes, and `testkit::cluster::run_all` for the conformance checks every
/// implementation must pass.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// This node's id (for logs, metrics and `/healthz`).
    fn node(&self) -> &NodeId;

    /// Runs the bus for one server until `ops` is closed (the server shut down):
    /// performs each op in order, answers those with a ticket, and sends what arrives
    /// from other nodes to `events`. When it returns, this node has left the cluster
    /// cleanly: its registry entries are removed and `NodeDown` is announced.
    async fn run(&self, ops: ClusterOps, events: ClusterEvents);

    /// Cheap health for `/healthz`: connected or not, lease state, last error. Must not
    /// do I/O.
    fn health(&self) -> ClusterHealth;

    /// The bus's own counters (announcements published, resyncs, re-asserts…), read at
    /// every scrape of `/metrics`, which shows each as `chat_cluster_bus_<name>_total`.
    /// Must not do I/O. The default reports none, so implementing it is optional.
    fn counters(&self) -> Vec<BusCounter> {
        Vec::new()
    }
}

/// One of [`Cluster::counters`]: a monotonic count since the bus started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusCounter {
    /// The series' name after `chat_cluster_bus_` (and before `_total`): lowercase
    /// ASCII letters, digits and `_`, e.g. `published`. Other names are not exported.
    pub name: &'static str,
    /// One line saying what it counts (the series' `# HELP`).
    pub help: &'static str,
    /// The count.
    pub value: u64,
}

impl BusCounter {
    /// A counter named `name` (see [`name`](Self::name)).
    pub fn new(name: &'static str, help: &'static str, value: u64) -> Self {
        Self { name, help, value }
    }

    /// Whether [`name`](Self::name) can be exported.
    pub fn has_valid_name(&self) -> bool {
        !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }
}

impl fmt::Debug for dyn Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("node", self.node())
            .finish_non_exhaustive()
    }
}

/// The bus's health, as [`Cluster::health`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterHealth {
    /// This node.
    pub node: NodeId,
    /// The bus is connected (commands and subscriptions).
    pub connected: bool,
    /// This node's lease in the registry is alive (renewed in time).
    pub lease_alive: bool,
    /// The last error the bus met, if any (kept after it recovered, for the logs).
    pub last_error: Option<Arc<str>>,
}

impl ClusterHealth {
    /// A healthy report for `node`: connected, lease alive, no error. Adjust the fields.
    pub fn new(node: NodeId) -> Self {
        ClusterHealth {
            node,
            connected: true,
            lease_alive: true,
            last_error: None,
        }
    }

    /// Connected with a live lease.
    pub fn is_healthy(&self) -> bool {
        self.connected && self.lease_alive
    }
}

impl fmt::Display for ClusterHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}: ", self.node)?;
        match (self.connected, self.lease_alive) {
            (true, true) => f.write_str("bus ok")?,
            (false, _) => f.write_str("bus disconnected")?,
            (true, false) => f.write_str("bus lease lost")?,
        }
        if !self.is_healthy()
            && let Some(e) = &self.last_error
        {
            write!(f, " ({e})")?;
        }
        Ok(())
    }
}

/// The ops the engine emitted, in order: what [`Cluster::run`] performs.
#[derive(Debug)]
pub struct ClusterOps {
    rx: mpsc::UnboundedReceiver<ClusterOp>,
    queued: Arc<AtomicUsize>,
}

/// The hub's end of [`ClusterOps`]: queues ops without ever waiting.
#[derive(Debug, Clone)]
pub struct ClusterOpSender {
    tx: mpsc::UnboundedSender<ClusterOp>,
    queued: Arc<AtomicUsize>,
}

impl ClusterOps {
    /// A new op queue: the sender (the hub's, or a test's) and the receiver for
    /// [`Cluster::run`].
    pub fn channel() -> (ClusterOpSender, ClusterOps) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            ClusterOpSender {
                tx,
                queued: Arc::clone(&queued),
            },
            ClusterOps { rx, queued },
        )
    }

    /// The next op, or `None` once the sender is gone and every op was taken.
    pub async fn recv(&mut self) -> Option<ClusterOp> {
        let op = self.rx.recv().await;
        if op.is_some() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        op
    }

    /// The next op if one is waiting (to batch what is already queued).
    pub fn try_recv(&mut self) -> Option<ClusterOp> {
        let op = self.rx.try_recv().ok();
        if op.is_some() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        op
    }
}

/// [`ClusterOpSender::send`] found the bus gone (its `run` returned).
#[derive(Debug, Clone, PartialEq, Error)]
#[error("the cluster bus has stopped")]
pub struct BusStopped(pub ClusterOp);

impl ClusterOpSender {
    /// Queues `op` (never waits).
    pub fn send(&self, op: ClusterOp) -> Result<(), BusStopped> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(op).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            BusStopped(e.0)
        })
    }

    /// Ops queued and not yet taken by the bus.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The queue's depth counter, for a gauge that must not keep the queue open (the
    /// bus's `run` returns only once every sender is gone).
    pub(crate) fn depth(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.queued)
    }
}

/// Where [`Cluster::run`] sends what other nodes announced. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterEvents {
    tx: mpsc::Sender<ClusterEvent>,
}

/// The hub's end of [`ClusterEvents`].
#[derive(Debug)]
pub struct ClusterEventReceiver {
    rx: mpsc::Receiver<ClusterEvent>,
}

/// [`ClusterEvents::send`] found the hub gone (the server stopped).
#[derive(Debug, Clone, PartialEq, Error)]
#[error("the server is no longer taking cluster events")]
pub struct HubStopped(pub ClusterEvent);

impl ClusterEvents {
    /// A new event queue holding at most `capacity` events (at least 1).
    pub fn channel(capacity: usize) -> (ClusterEvents, ClusterEventReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (ClusterEvents { tx }, ClusterEventReceiver { rx })
    }

    /// Hands `event` to the hub, waiting while its queue is full.
    pub async fn send(&self, event: ClusterEvent) -> Result<(), HubStopped> {
        self.tx.send(event).await.map_err(|e| HubStopped(e.0))
    }

    /// Whether the hub has stopped taking events.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl ClusterEventReceiver {
    /// The next event, or `None` once every [`ClusterEvents`] is gone.
    pub async fn recv(&mut self) -> Option<ClusterEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<ClusterEvent> {
        self.rx.try_recv().ok()
    }
}
