//! The hub: the one task that owns the [`Engine`].
//!
//! The engine is a plain state machine, so exactly one task drives it and no lock guards
//! it. The hub waits on, in this order of priority:
//!
//! 1. the shutdown signal, and once shutting down, the end of the grace period;
//! 2. finished store operations that had to wait (finishing work in flight before
//!    taking new work);
//! 3. events from the cluster bus, when the server is a cluster node (remote messages
//!    and presence, answers to name claims and user lookups; a bounded channel: when it
//!    is full, the bus waits);
//! 4. the engine's next timer (`sleep_until(engine.poll_timeout())`);
//! 5. connection events: registrations, decoded commands, disconnects (a bounded
//!    channel: when it is full, connection readers stop reading and the peers meet TCP
//!    backpressure). A turn woken by one takes up to [`TURN_INPUTS`] of those already
//!    waiting, so every writer it feeds wakes once per turn and writes the turn's
//!    frames in one batch.
//!
//! After every input it drains [`Engine::poll_output`] completely:
//!
//! * `Deliver` — the event is encoded **once**; each recipient's outbound queue gets a
//!   clone of the same `Bytes` (a reference count). Connections live in a [`Slab`], so a
//!   recipient is found in O(1), and a [`ConnId`] carries the slot's generation, so a
//!   slot reused by a newer connection never receives a frame meant for the old one.
//! * `Close` — the connection's queue is told to close after flushing; the hub drops
//!   whatever that connection still sends, and reports the disconnect when its task ends.
//! * `Store` — the [`StoreDriver`] runs the operation within this task, no task spawned:
//!   a store that answers at once (the in-memory one) has its reply handed to the engine
//!   in the same turn; one that has to wait is polled in the select above, at most
//!   `store_concurrency` at once, the rest waiting in order (store calls run
//!   concurrently; the engine restores order from tickets and `seq`).
//!
//! The hub never awaits a peer or the store: pushing into a queue is synchronous and
//! bounded (see the `outbound` module), and a store future is only polled.

use std::sync::Arc;
use std::time::Duration;

use slab::Slab;
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use super::cluster::{ClusterEventReceiver, ClusterOpSender};
use super::health::Health;
use super::metrics::Metrics;
use super::now;
use super::outbound::{GlobalBudget, OutboundQueue, Pushed};
use super::store_driver::{Ending, Finished, StoreDriver};
use crate::cluster::{ClusterEvent, ClusterOp, ClusterReply};
use crate::engine::{Engine, Identity, Input, Output, Recipients};
use crate::ids::ConnId;
use crate::protocol::{self, ClientCommand, DecodeError, ServerEvent};
use crate::transport::CloseCode;

/// A connection holding less than this is never closed for the global outbound budget.
const SHED_MIN_BYTES: usize = 64 * 1024;

/// The reason of a 1013 close for the global outbound budget.
const SERVER_BUSY: &str = "server busy";

/// Most connection inputs one hub turn handles. After the input that woke it, the hub
/// takes what else is already waiting in its channel, up to this many, before it
/// yields: the writers of the recipients then wake once per turn and find all the
/// turn's frames for them, so they write them in one batch (one syscall) instead of one
/// per message. Bounded so that timers, store replies and shutdown wait at most one
/// such turn (a few hundred microseconds to a millisecond).
const TURN_INPUTS: usize = 256;

/// What connection tasks tell the hub.
#[derive(Debug)]
pub(crate) enum HubMsg {
    /// A handshake was accepted: register it. The hub answers with the connection's id,
    /// or drops `reply` when it no longer takes connections (shutting down).
    Open {
        identity: Option<Identity>,
        queue: Arc<OutboundQueue>,
        reply: oneshot::Sender<ConnId>,
    },
    /// A decoded command.
    Command {
        conn: ConnId,
        command: ClientCommand,
    },
    /// A frame that did not decode.
    Malformed { conn: ConnId, error: DecodeError },
    /// The connection's task has ended; this is the last message about `conn`.
    Closed { conn: ConnId },
}

/// The connection side of the hub's inputs.
#[derive(Debug, Clone)]
pub(crate) struct HubSender {
    /// Bounded, ordered: everything a connection says, in order.
    pub(crate) tx: mpsc::Sender<HubMsg>,
    /// Unbounded fallback for `Closed` when a connection task dies without reaching its
    /// normal end (a panicking transport). At most one message per connection, so
    /// bounded by the connection limit.
    pub(crate) lost: mpsc::UnboundedSender<ConnId>,
}

/// What the hub knows about one open connection.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    queue: Arc<OutboundQueue>,
    /// The engine or the queue decided to close it: its further commands are dropped.
    closing: bool,
}

/// `ConnId` layout: generation in the high 32 bits, slab slot in the low 32.
fn conn_id(generation: u32, slot: usize) -> Option<ConnId> {
    let slot = u32::try_from(slot).ok()?;
    Some(ConnId((u64::from(generation) << 32) | u64::from(slot)))
}

/// The connection behind `id`, if it is still the one that got that id.
fn lookup(conns: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    let slot = usize::try_from(id.0 & u64::from(u32::MAX)).ok()?;
    conns.get_mut(slot).filter(|c| c.id == id)
}

/// The engine's owner. See the module docs.
pub(crate) struct Hub {
    /// Outbound bytes held across all connections, and its bound.
    outbound_budget: Arc<GlobalBudget>,
    engine: Engine,
    metrics: Metrics,
    conns: Slab<Conn>,
    generation: u32,
    /// Runs the engine's store requests within this task (see the `store_driver` module).
    stores: StoreDriver,
    /// Store operations running and waiting, as last reported to the metrics.
    store_reported: (usize, usize),
    /// When the current turn began: the time every input of the turn is handled at.
    at: Instant,
    grace: Duration,
    /// Set once shutdown began: the hub refuses registrations and stops when every
    /// connection and store request is done, or at this instant.
    shutdown_deadline: Option<Instant>,
    /// Told about every turn and store outcome, for `/healthz`.
    health: Health,
    /// Spares the shedding scan while nothing could be shed (see [`ShedGate`]).
    shed_gate: ShedGate,
    /// The cluster bus's op queue, when this server is a cluster node.
    cluster: Option<ClusterOpSender>,
    /// What the bus hands in, until [`run`](Self::run) takes it.
    cluster_events: Option<ClusterEventReceiver>,
}

/// When over the global outbound budget with no connection holding
/// [`SHED_MIN_BYTES`], scanning (locking) every queue on every hub turn would find
/// nothing again: the gate remembers the lowest usage since a scan found nothing and
/// allows the next scan only once usage has grown by [`SHED_MIN_BYTES`] from it (no
/// connection can reach the minimum sooner without the total growing, unless others
/// drain meanwhile). Falling back under the budget forgets it.
#[derive(Debug, Default)]
struct ShedGate {
    nothing_at: Option<usize>,
}

impl ShedGate {
    /// Whether a shedding scan may find something at usage `used` over `max`.
    fn scan(&mut self, used: usize, max: usize) -> bool {
        if used <= max {
            self.nothing_at = None;
            return false;
        }
        match self.nothing_at {
            Some(at) if used < at => {
                self.nothing_at = Some(used);
                false
            }
            Some(at) => used >= at.saturating_add(SHED_MIN_BYTES),
            None => true,
        }
    }

    /// A scan at usage `used` found no connection to shed.
    fn found_nothing(&mut self, used: usize) {
        self.nothing_at = Some(used);
    }
}

impl Hub {
    pub(crate) fn new(
        engine: Engine,
        stores: StoreDriver,
        metrics: Metrics,
        grace: Duration,
        outbound_budget: Arc<GlobalBudget>,
    ) -> Self {
        Hub {
            outbound_budget,
            engine,
            metrics,
            conns: Slab::new(),
            generation: 0,
            stores,
            store_reported: (0, 0),
            at: now(),
            grace,
            shutdown_deadline: None,
            health: Health::default(),
            shed_gate: ShedGate::default(),
            cluster: None,
            cluster_events: None,
        }
    }

    /// Makes this hub a cluster node: the engine's cluster ops go to `ops`, and what
    /// the bus hands in comes from `events`.
    pub(crate) fn with_cluster(
        mut self,
        ops: ClusterOpSender,
        events: ClusterEventReceiver,
    ) -> Self {
        self.cluster = Some(ops);
        self.cluster_events = Some(events);
        self
    }

    /// Queues an op for the bus. Without a bus (a single node, or one whose `run`
    /// ended) the op has nowhere to go: what waits for an answer is answered as the bus
    /// would when unavailable (`Failed`, `RoomUnavailable`), so no connection waits
    /// forever.
    fn send_to_bus(&mut self, op: ClusterOp) {
        self.metrics.cluster_op(op.kind());
        let unsent = match &self.cluster {
            Some(ops) => ops.send(op).err().map(|e| e.0),
            None => Some(op),
        };
        let answer = match unsent {
            Some(ClusterOp::Subscribe { room }) => ClusterEvent::RoomUnavailable { room },
            Some(op) => match op.ticket() {
                Some(ticket) => ClusterEvent::Reply {
                    ticket,
                    reply: ClusterReply::Failed,
                },
                None => return,
            },
            None => return,
        };
        self.bus_event(answer);
    }

    /// Hands an event from the bus to the engine.
    fn bus_event(&mut self, event: ClusterEvent) {
        self.metrics.cluster_event(event.kind());
        if matches!(
            event,
            ClusterEvent::Reply {
                reply: ClusterReply::Failed,
                ..
            }
        ) {
            self.metrics.cluster_failed();
        }
        self.engine
            .handle(self.at.into_std(), Input::Cluster(event));
    }

    /// Reports turns and store outcomes to `health` (the server's).
    pub(crate) fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Drives the engine until shutdown completes or every connection source is gone.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<HubMsg>,
        mut lost: mpsc::UnboundedReceiver<ConnId>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut inputs_open = true;
        // Marks the hub stopped for `/healthz` however this function ends, panic included.
        let _running = self.health.hub_guard();
        // One timer for the engine and one for the grace period, re-armed in place
        // rather than rebuilt on every turn of the loop.
        let timer = sleep_until(now());
        let grace = sleep_until(now());
        tokio::pin!(timer, grace);
        let mut armed: Option<Instant> = None;
        let mut cluster_events = self.cluster_events.take();
        loop {
            let due = self.engine.poll_timeout().map(Instant::from_std);
            if due != armed {
                if let Some(at) = due {
                    timer.as_mut().reset(at);
                }
                armed = due;
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop), if self.shutdown_deadline.is_none() => {
                    self.at = now();
                    // Also reached when the server dropped the signal's sender: nobody can
                    // stop us any more, so stop now.
                    let deadline = self.at + self.grace;
                    self.begin_shutdown(deadline);
                    grace.as_mut().reset(deadline);
                }
                () = &mut grace, if self.shutdown_deadline.is_some() => {
                    tracing::warn!(
                        connections = self.conns.len(),
                        store_requests = self.stores.running() + self.stores.waiting(),
                        "shutdown grace period over; dropping what is left"
                    );
                    break;
                }
                Some(done) = self.stores.next(), if self.stores.running() > 0 => {
                    self.at = now();
                    self.store_finished(done);
                    self.start_stores();
                }
                event = next_event(&mut cluster_events), if cluster_events.is_some() => {
                    self.at = now();
                    match event {
                        Some(event) => self.bus_event(event),
                        // The bus stopped: nothing more will come from it.
                        None => cluster_events = None,
                    }
                }
                Some(conn) = lost.recv() => {
                    self.at = now();
                    self.disconnected(conn);
                }
                () = &mut timer, if armed.is_some() => {
                    self.at = now();
                    // Re-armed next turn from whatever the engine wants then.
                    armed = None;
                    self.engine.handle_timeout(self.at.into_std());
                }
                msg = rx.recv(), if inputs_open => {
                    self.at = now();
                    match msg {
                        Some(msg) => {
                            self.on_message(msg);
                            // Whatever else is already waiting joins this turn (see
                            // `TURN_INPUTS`).
                            for _ in 1..TURN_INPUTS {
                                self.drain();
                                match rx.try_recv() {
                                    Ok(msg) => self.on_message(msg),
                                    Err(_) => break,
                                }
                            }
                        }
                        None => inputs_open = false,
                    }
                }
                else => break,
            }
            self.drain();
            self.metrics
                .population(self.engine.user_count(), self.engine.room_count());
            self.report_stores();
            let turn = self.at;
            self.metrics.hub_turn(now() - turn);
            self.health.hub_turned();
            let idle = self.conns.is_empty() && self.stores.is_idle();
            if idle && (self.shutdown_deadline.is_some() || !inputs_open) {
                break;
            }
        }
        // Store operations still running are dropped with the driver; anything still
        // queued for connections is theirs to drop.
    }

    fn begin_shutdown(&mut self, deadline: Instant) {
        self.shutdown_deadline = Some(deadline);
        for (_, conn) in &mut self.conns {
            conn.closing = true;
            if conn
                .queue
                .close_after_flush(CloseCode::GOING_AWAY, "server shutting down")
            {
                self.metrics.closed(CloseCode::GOING_AWAY);
            }
        }
    }

    fn on_message(&mut self, msg: HubMsg) {
        let at = self.at.into_std();
        match msg {
            HubMsg::Open {
                identity,
                queue,
                reply,
            } => {
                if self.shutdown_deadline.is_some() {
                    return; // dropping `reply` refuses the registration
                }
                let entry = self.conns.vacant_entry();
                self.generation = self.generation.wrapping_add(1);
                let Some(id) = conn_id(self.generation, entry.key()) else {
                    return; // over 2^32 open connections: refused
                };
                if reply.send(id).is_err() {
                    return; // the connection task is gone already; nothing to undo
                }
                entry.insert(Conn {
                    id,
                    queue,
                    closing: false,
                });
                self.metrics.connection_opened();
                self.engine
                    .handle(at, Input::Connected { conn: id, identity });
            }
            HubMsg::Command { conn, command } => {
                if lookup(&mut self.conns, conn).is_some_and(|c| !c.closing) {
                    self.engine.handle(at, Input::Command { conn, command });
                }
            }
            HubMsg::Malformed { conn, error } => {
                if lookup(&mut self.conns, conn).is_some_and(|c| !c.closing) {
                    self.engine.handle(at, Input::Malformed { conn, error });
                }
            }
            HubMsg::Closed { conn } => self.disconnected(conn),
        }
    }

    fn disconnected(&mut self, conn: ConnId) {
        if lookup(&mut self.conns, conn).is_none() {
            return; // already reported
        }
        let slot = (conn.0 & u64::from(u32::MAX)) as usize;
        let entry = self.conns.remove(slot);
        entry.queue.abandon();
        self.metrics.connection_closed();
        self.engine
            .handle(self.at.into_std(), Input::Disconnected { conn });
    }

    /// Hands a finished store operation's reply to the engine.
    fn store_finished(&mut self, done: Finished) {
        let ok = done.ok();
        match done.ending {
            Ending::Answered => {}
            // A panicking store must not leave the engine waiting forever for this
            // ticket: it gets an ordinary failure ("nothing was stored").
            Ending::Panicked => tracing::error!(op = done.kind.name(), "store operation panicked"),
            Ending::TimedOut => {
                tracing::warn!(op = done.kind.name(), took = ?done.took, "store operation timed out")
            }
        }
        self.metrics.store_op(done.kind.name(), done.took, ok);
        self.health.store_result(ok);
        self.engine.handle(
            self.at.into_std(),
            Input::StoreReply {
                ticket: done.ticket,
                reply: done.reply,
            },
        );
    }

    /// Starts the store requests that may start now; those that finish at once (the
    /// in-memory store always does) are handed to the engine in this same turn.
    fn start_stores(&mut self) {
        while let Some(done) = self.stores.start(self.at) {
            self.store_finished(done);
        }
    }

    /// Publishes the store operations running and waiting, when they changed.
    fn report_stores(&mut self) {
        let now = (self.stores.running(), self.stores.waiting());
        if now != self.store_reported {
            self.store_reported = now;
            self.metrics.store_work(now.0, now.1);
        }
    }

    /// Carries out everything the engine asked for.
    fn drain(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            self.carry_out(output);
        }
        self.shed_outbound();
    }

    fn carry_out(&mut self, output: Output) {
        {
            match output {
                Output::Deliver { to, event } => self.deliver(&to, &event),
                Output::Close { conn, code, reason } => {
                    // The engine closes only for abuse (refusal budget, per-user cap) or
                    // an authenticated name conflict.
                    tracing::warn!(%conn, code = code.0, reason, "closing connection");
                    if let Some(c) = lookup(&mut self.conns, conn) {
                        c.closing = true;
                        if c.queue.close_after_flush(code, reason) {
                            self.metrics.closed(code);
                        }
                    }
                }
                Output::Store(request) => {
                    self.stores.request(request, self.at);
                    self.start_stores();
                }
                Output::Cluster(op) => self.send_to_bus(op),
            }
        }
    }

    /// Keeps the server-wide outbound bytes within `outbound_global_bytes`: while over
    /// it, closes the open connection holding the most bytes (queued plus in flight),
    /// at once and with its queue freed (1013 "server busy"), as long as one holds at
    /// least [`SHED_MIN_BYTES`]. Connections with little queued (a healthy reader) are
    /// never closed for it, so the total may stay over the budget while every holder is
    /// under that minimum. One scan per shed connection, only when over budget, and not
    /// again after a scan found nothing until usage grew (see [`ShedGate`]).
    fn shed_outbound(&mut self) {
        loop {
            let used = self.outbound_budget.used();
            if !self.shed_gate.scan(used, self.outbound_budget.max) {
                return;
            }
            let largest = self
                .conns
                .iter()
                .filter(|(_, c)| !c.closing)
                .map(|(_, c)| (c.queue.held(), c.id))
                .max_by_key(|(held, _)| *held);
            let Some((held, conn)) = largest.filter(|(held, _)| *held >= SHED_MIN_BYTES) else {
                self.shed_gate.found_nothing(used);
                return;
            };
            tracing::warn!(%conn, held, "outbound budget full: closing the largest holder with 1013");
            if let Some(c) = lookup(&mut self.conns, conn) {
                c.closing = true;
                if c.queue.close_now(CloseCode::TRY_AGAIN_LATER, SERVER_BUSY) {
                    self.metrics.closed(CloseCode::TRY_AGAIN_LATER);
                    self.metrics.outbound_shed();
                }
            }
            self.engine
                .handle(self.at.into_std(), Input::Disconnected { conn });
            // The engine may have produced departures for the others; deliver them.
            while let Some(output) = self.engine.poll_output() {
                self.carry_out(output);
            }
        }
    }

    /// The hot path: one encode, then one `Bytes` clone and one queue push per recipient.
    /// Nothing in the loop allocates (the queues' ring buffers are reused), and metrics
    /// are added once per event.
    fn deliver(&mut self, to: &Recipients, event: &ServerEvent) {
        let bytes = protocol::encode(event);
        let droppable = event.is_droppable();
        let (mut queued, mut dropped) = (0u64, 0u64);
        // Counted once for every possible recipient before pushing, the unqueued part
        // given back after: one atomic add on the shared budget per event.
        let len = bytes.len();
        let most = match to {
            Recipients::One(_) => 1,
            Recipients::List(l) => l.len(),
            Recipients::Room { members, .. } => members.len(),
        };
        self.outbound_budget.add(len.saturating_mul(most));
        // Slow readers found on this delivery (rare; no allocation unless one is).
        let mut overflowed: SmallVec<[ConnId; 2]> = SmallVec::new();
        for conn in to.iter() {
            let Some(c) = lookup(&mut self.conns, conn) else {
                continue; // gone, or a stale id whose slot was reused
            };
            match c.queue.push(bytes.clone(), droppable) {
                Pushed::Queued { evicted } => {
                    queued += 1;
                    dropped += evicted as u64;
                }
                Pushed::Dropped => dropped += 1,
                Pushed::Overflow { evicted } => {
                    dropped += evicted as u64;
                    overflowed.push(conn);
                    c.closing = true;
                    tracing::warn!(%conn, "slow reader: outbound queue full, closing with 1013");
                }
                Pushed::Closed => {}
            }
        }
        let unqueued = most.saturating_sub(usize::try_from(queued).unwrap_or(usize::MAX));
        self.outbound_budget.sub(len.saturating_mul(unqueued));
        self.metrics.frames_queued(queued);
        self.metrics.slow_reader_dropped(dropped);
        for conn in overflowed {
            self.metrics.closed(CloseCode::TRY_AGAIN_LATER);
            // The engine forgets the slow reader now (its user leaves its rooms) rather
            // than when its writer gives up; the later `Closed` report is then a no-op
            // for the engine and only frees the slot.
            self.engine
                .handle(self.at.into_std(), Input::Disconnected { conn });
        }
        if let ServerEvent::Error(e) = event {
            self.metrics.error_sent(e.code.as_str(), queued);
        }
    }
}

/// The bus's next event (the receiver is there: see the select guard).
async fn next_event(events: &mut Option<ClusterEventReceiver>) -> Option<ClusterEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_embed_generation_and_slot() {
        let mut slab = Slab::new();
        let key = slab.insert(());
        let a = conn_id(1, key).unwrap();
        let b = conn_id(2, key).unwrap();
        assert_ne!(a, b, "a reused slot gets a new id");
        assert_eq!(a.0 & u64::from(u32::MAX), key as u64);
        assert!(conn_id(1, usize::MAX).is_none() || usize::BITS == 32);
    }

    #[test]
    fn shedding_scans_again_only_once_usage_grew_by_the_minimum() {
        let mut gate = ShedGate::default();
        let max = 1_000_000;
        assert!(!gate.scan(max, max), "not over: no scan");
        assert!(gate.scan(max + 1, max));
        gate.found_nothing(max + 1);
        // Every later turn at the same or slightly higher usage is spared the scan.
        assert!(!gate.scan(max + 1, max));
        assert!(!gate.scan(max + SHED_MIN_BYTES, max));
        assert!(gate.scan(max + 1 + SHED_MIN_BYTES, max));
        // Growth counts from the lowest usage seen since.
        gate.found_nothing(max + 1 + SHED_MIN_BYTES);
        assert!(!gate.scan(max + 10, max));
        assert!(gate.scan(max + 10 + SHED_MIN_BYTES, max));
        // Back under the budget forgets it.
        gate.found_nothing(max + 10 + SHED_MIN_BYTES);
        assert!(!gate.scan(max, max));
        assert!(gate.scan(max + 1, max));
    }
}
