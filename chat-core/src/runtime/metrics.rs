//! [`Metrics`]: what the runtime counts, in a Prometheus registry owned by one server.
//!
//! There is no global registry: every [`Server`](super::Server) owns its own, so two
//! servers in one process (or one per test) never mix their numbers. A transport with an
//! HTTP side serves [`Metrics::encode_text`] on its `/metrics` route.
//!
//! Counters are plain atomics; the hub adds per-broadcast totals once per event rather
//! than once per recipient. A few values are read at scrape time instead: the hub's
//! queue depth (from the channel's free capacity) and the standard `process_*` series
//! (from `/proc/self`, see the `process` module), which keep their usual unprefixed
//! names next to the `chat_` ones.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, text};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::cluster::{Cluster, ClusterOpSender};
use super::health::Health;
use super::outbound::GlobalBudget;
use super::process::ProcessCollector;
use crate::transport::CloseCode;

type Labels1<V> = [(&'static str, V); 1];

/// Store latency buckets: 0.25 ms doubling to about 4 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// Hub turn buckets: 10 µs doubling to about 1.3 s.
fn turn_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
}

struct Inner {
    registry: Registry,
    /// The unprefixed `process_*` series.
    process: Registry,
    connections: Gauge,
    users: Gauge,
    rooms: Gauge,
    handshakes_rejected: Family<Labels1<u16>, Counter>,
    messages_in: Family<Labels1<&'static str>, Counter>,
    frames_queued: Counter,
    errors_sent: Family<Labels1<&'static str>, Counter>,
    rate_limited: Counter,
    slow_reader_drops: Counter,
    outbound_shed: Counter,
    lingering: Gauge,
    closes: Family<Labels1<u16>, Counter>,
    store_latency: Family<Labels1<&'static str>, Histogram, fn() -> Histogram>,
    store_failures: Family<Labels1<&'static str>, Counter>,
    store_in_flight: Gauge,
    store_queued: Gauge,
    bytes_written: Counter,
    hub_queue: Gauge,
    hub_turn: Histogram,
    /// Where the hub queue's depth is read at scrape time (set once the server runs).
    health: OnceLock<Health>,
    outbound_bytes: Gauge,
    /// Where `chat_outbound_bytes` is read at scrape time (set once the server runs).
    outbound_budget: OnceLock<Arc<GlobalBudget>>,
    cluster_ops: Family<Labels1<&'static str>, Counter>,
    cluster_events: Family<Labels1<&'static str>, Counter>,
    cluster_failed: Counter,
    cluster_queued: Gauge,
    /// Where `chat_cluster_queued` is read at scrape time (set when the server is a node).
    /// The counter only: a sender kept here would keep the bus's op queue open forever.
    cluster_sender: OnceLock<Arc<AtomicUsize>>,
    /// The bus whose [`Cluster::counters`] are read at scrape time.
    cluster_bus: Arc<OnceLock<Arc<dyn Cluster>>>,
}

/// Encodes the bus's own counters ([`Cluster::counters`]) as
/// `chat_cluster_bus_<name>_total` on every scrape.
#[derive(Debug)]
struct ClusterBusCollector(Arc<OnceLock<Arc<dyn Cluster>>>);

impl Collector for ClusterBusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(cluster) = self.0.get() else {
            return Ok(());
        };
        for counter in cluster.counters() {
            if !counter.has_valid_name() {
                continue;
            }
            // The registry adds `chat_`, the encoder `_total`.
            let name = format!("cluster_bus_{}", counter.name);
            let value = ConstCounter::new(counter.value);
            let metric =
                encoder.encode_descriptor(&name, counter.help, None, value.metric_type())?;
            value.encode(metric)?;
        }
        Ok(())
    }
}

/// A handle to one server's metrics. Cheap to clone; all clones see the same numbers.
///
/// Exposed series (OpenMetrics text, counters end in `_total`):
///
/// | name | kind | meaning |
/// |---|---|---|
/// | `chat_connections` | gauge | connections registered with the hub |
/// | `chat_users` | gauge | online users (several connections of one user count once) |
/// | `chat_rooms` | gauge | rooms with members (or a join under way) |
/// | `chat_handshakes_rejected_total{status}` | counter | handshakes refused, by HTTP status |
/// | `chat_messages_in_total{type}` | counter | frames received, by command type (`malformed`, `binary` for the undecodable) |
/// | `chat_frames_queued_total` | counter | frames queued for delivery (one per recipient) |
/// | `chat_errors_sent_total{code}` | counter | `error` events sent, by code |
/// | `chat_rate_limited_total` | counter | `error {code: rate_limited}` sent: rate-limit hits |
/// | `chat_slow_reader_drops_total` | counter | droppable frames (typing) dropped from full queues |
/// | `chat_outbound_shed_total` | counter | connections closed (1013 "server busy") to keep the global outbound budget, as opposed to slow readers overflowing their own queue |
/// | `chat_outbound_bytes` | gauge | outbound bytes held server-wide (queued plus writers' batches in flight), read at scrape time (its bound is `RuntimeConfig::outbound_global_bytes`) |
/// | `chat_connections_lingering` | gauge | closed connections waiting for the peer's close (see `RuntimeConfig::close_linger`) |
/// | `chat_closes_total{code}` | counter | connections the server decided to close, by close code (counted at the decision; the close frame follows once the writer is free) |
/// | `chat_store_seconds{op}` | histogram | store latency by operation, from the engine's request (waiting for a slot included) to the reply |
/// | `chat_store_failures_total{op}` | counter | store operations that returned an error, timed out or panicked |
/// | `chat_store_in_flight` | gauge | store operations running (at most `RuntimeConfig::store_concurrency`) |
/// | `chat_store_queued` | gauge | store requests waiting for one of those slots |
/// | `chat_bytes_written_total` | counter | bytes of frames written to peers (counted per batch the transport took) |
/// | `chat_hub_queue_depth` | gauge | inputs waiting in the hub's queue, read at scrape time (its bound is `RuntimeConfig::hub_queue`) |
/// | `chat_hub_turn_seconds` | histogram | how long one turn of the hub (handle its inputs — up to 256 connection inputs already waiting, or one store reply, timer or disconnect — and carry out the engine's outputs) takes |
/// | `chat_cluster_ops_total{op}` | counter | ops handed to the cluster bus, by kind (`message`, `joined`, `typing`…): what this node publishes or asks |
/// | `chat_cluster_events_total{event}` | counter | events from the cluster bus, by kind; `room_members` counts every member snapshot, so beyond one per room subscribed it counts resyncs after the bus reconnected |
/// | `chat_cluster_failed_total` | counter | cluster requests (name claims, user lookups) answered `Failed`: the bus was unavailable and the client got `cluster_unavailable` |
/// | `chat_cluster_queued` | gauge | ops waiting for the bus to take them, read at scrape time |
/// | `chat_cluster_bus_<name>_total` | counter | the bus's own counters ([`Cluster::counters`](super::Cluster::counters)), read at scrape time; each bus names its own. `chat-redis` reports `published`, `received`, `resyncs`, `reasserts`, `republished`, `dropped`, `subscriber_connects`, `invalid`, `reaped`, `hub_timeouts` and `dm_recovered` (see its `BusStats`) |
/// | `process_resident_memory_bytes` | gauge | resident memory (Linux only, read from `/proc/self` at scrape time, like those below) |
/// | `process_open_fds`, `process_max_fds` | gauge | open file descriptors and their soft limit |
/// | `process_cpu_seconds_total` | counter | user plus system CPU time |
/// | `process_start_time_seconds` | gauge | when the process started, in seconds since the Unix epoch |
///
/// `chat_handshakes_rejected_total` counts every refused handshake: the runtime's own
/// refusals (admission, the connection cap, shutdown) and, through
/// [`handshake_rejected`](Self::handshake_rejected), those a transport answers itself
/// (e.g. chat-ws-warp's `400` for a malformed upgrade and `503` for a full accept queue
/// or no decision in time).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every series registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chat");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Connections registered with the hub",
            connections.clone(),
        );
        let users = Gauge::default();
        registry.register(
            "users",
            "Online users (a user with several connections counts once)",
            users.clone(),
        );
        let rooms = Gauge::default();
        registry.register(
            "rooms",
            "Rooms with members or a join under way",
            rooms.clone(),
        );
        let handshakes_rejected = Family::default();
        registry.register(
            "handshakes_rejected",
            "Handshakes refused, by HTTP status",
            handshakes_rejected.clone(),
        );
        let messages_in = Family::default();
        registry.register(
            "messages_in",
            "Frames received, by command type",
            messages_in.clone(),
        );
        let frames_queued = Counter::default();
        registry.register(
            "frames_queued",
            "Frames queued for delivery, one per recipient",
            frames_queued.clone(),
        );
        let errors_sent = Family::default();
        registry.register(
            "errors_sent",
            "Error events sent, by code",
            errors_sent.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Rate-limit hits (error events with code rate_limited)",
            rate_limited.clone(),
        );
        let slow_reader_drops = Counter::default();
        registry.register(
            "slow_reader_drops",
            "Droppable frames (typing indicators) dropped from full outbound queues",
            slow_reader_drops.clone(),
        );
        let outbound_shed = Counter::default();
        registry.register(
            "outbound_shed",
            "Connections closed to keep the global outbound budget (not slow readers)",
            outbound_shed.clone(),
        );
        let outbound_bytes = Gauge::default();
        registry.register(
            "outbound_bytes",
            "Outbound bytes held server-wide: queued plus writers' batches in flight",
            outbound_bytes.clone(),
        );
        let lingering = Gauge::default();
        registry.register(
            "connections_lingering",
            "Closed connections waiting for the peer's close",
            lingering.clone(),
        );
        let closes = Family::default();
        registry.register(
            "closes",
            "Connections closed by the server, by close code",
            closes.clone(),
        );
        let store_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "store_seconds",
            "Store operation latency, by operation",
            store_latency.clone(),
        );
        let store_failures = Family::default();
        registry.register(
            "store_failures",
            "Store operations that failed, by operation",
            store_failures.clone(),
        );
        let store_in_flight = Gauge::default();
        registry.register(
            "store_in_flight",
            "Store operations running",
            store_in_flight.clone(),
        );
        let store_queued = Gauge::default();
        registry.register(
            "store_queued",
            "Store requests waiting for a free slot",
            store_queued.clone(),
        );
        let bytes_written = Counter::default();
        registry.register(
            "bytes_written",
            "Bytes of frames written to peers",
            bytes_written.clone(),
        );
        let hub_queue = Gauge::default();
        registry.register(
            "hub_queue_depth",
            "Inputs waiting in the hub's queue",
            hub_queue.clone(),
        );
        let hub_turn = turn_histogram();
        registry.register(
            "hub_turn_seconds",
            "Duration of one turn of the hub loop (one input handled, outputs carried out)",
            hub_turn.clone(),
        );
        let cluster_ops = Family::default();
        registry.register(
            "cluster_ops",
            "Ops handed to the cluster bus, by kind",
            cluster_ops.clone(),
        );
        let cluster_events = Family::default();
        registry.register(
            "cluster_events",
            "Events received from the cluster bus, by kind",
            cluster_events.clone(),
        );
        let cluster_failed = Counter::default();
        registry.register(
            "cluster_failed",
            "Cluster requests answered Failed (bus unavailable)",
            cluster_failed.clone(),
        );
        let cluster_queued = Gauge::default();
        registry.register(
            "cluster_queued",
            "Ops waiting for the cluster bus to take them",
            cluster_queued.clone(),
        );
        let cluster_bus = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ClusterBusCollector(Arc::clone(&cluster_bus))));
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                process,
                connections,
                users,
                rooms,
                handshakes_rejected,
                messages_in,
                frames_queued,
                errors_sent,
                rate_limited,
                slow_reader_drops,
                outbound_shed,
                lingering,
                closes,
                store_latency,
                store_failures,
                store_in_flight,
                store_queued,
                bytes_written,
                hub_queue,
                hub_turn,
                health: OnceLock::new(),
                outbound_bytes,
                outbound_budget: OnceLock::new(),
                cluster_ops,
                cluster_events,
                cluster_failed,
                cluster_queued,
                cluster_sender: OnceLock::new(),
                cluster_bus,
            }),
        }
    }

    /// Every series in the OpenMetrics text format (which Prometheus scrapes), ending in
    /// `# EOF`.
    pub fn encode_text(&self) -> String {
        if let Some(depth) = self.inner.health.get().and_then(Health::queue_depth) {
            self.inner
                .hub_queue
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        if let Some(budget) = self.inner.outbound_budget.get() {
            self.inner
                .outbound_bytes
                .set(i64::try_from(budget.used()).unwrap_or(i64::MAX));
        }
        if let Some(ops) = self.inner.cluster_sender.get() {
            self.inner
                .cluster_queued
                .set(i64::try_from(ops.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail; an error could only come from the writer.
        let _ = text::encode_registry(&mut out, &self.inner.registry)
            .and_then(|()| text::encode_registry(&mut out, &self.inner.process))
            .and_then(|()| text::encode_eof(&mut out));
        out
    }

    /// Counts a handshake refused with HTTP `status`. The runtime counts its own
    /// refusals; a transport that answers some handshakes without asking the runtime (a
    /// malformed upgrade, a full accept queue, no decision in time) reports them here, so
    /// `chat_handshakes_rejected_total{status}` counts every refusal.
    pub fn handshake_rejected(&self, status: u16) {
        self.inner
            .handshakes_rejected
            .get_or_create(&[("status", status)])
            .inc();
    }

    /// Handshakes refused with `status` so far.
    pub fn handshakes_rejected(&self, status: u16) -> u64 {
        self.inner
            .handshakes_rejected
            .get(&[("status", status)])
            .map_or(0, |c| c.get())
    }

    /// Bytes written to peers so far.
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes_written.get()
    }

    /// Reads the hub's queue depth through `health` at scrape time.
    pub(crate) fn watch_hub(&self, health: &Health) {
        let _ = self.inner.health.set(health.clone());
    }

    /// Reads `chat_outbound_bytes` from `budget` at scrape time.
    pub(crate) fn watch_outbound(&self, budget: &Arc<GlobalBudget>) {
        let _ = self.inner.outbound_budget.set(Arc::clone(budget));
    }

    /// Reads the `chat_cluster_bus_*` counters from `bus` at scrape time. Called when
    /// the server is made a node, before it runs, so the series are there from the
    /// first scrape of a spawned server's handle.
    pub(crate) fn watch_cluster_bus(&self, bus: Arc<dyn Cluster>) {
        let _ = self.inner.cluster_bus.set(bus);
    }

    /// Reads `chat_cluster_queued` from `ops` at scrape time.
    pub(crate) fn watch_cluster_ops(&self, ops: &ClusterOpSender) {
        let _ = self.inner.cluster_sender.set(ops.depth());
    }

    /// An op was handed to the cluster bus.
    pub(crate) fn cluster_op(&self, kind: &'static str) {
        self.inner.cluster_ops.get_or_create(&[("op", kind)]).inc();
    }

    /// An event came from the cluster bus.
    pub(crate) fn cluster_event(&self, kind: &'static str) {
        self.inner
            .cluster_events
            .get_or_create(&[("event", kind)])
            .inc();
    }

    /// A cluster request was answered `Failed`.
    pub(crate) fn cluster_failed(&self) {
        self.inner.cluster_failed.inc();
    }

    /// Ops of `kind` handed to the cluster bus so far.
    pub fn cluster_ops(&self, kind: &'static str) -> u64 {
        self.inner
            .cluster_ops
            .get(&[("op", kind)])
            .map_or(0, |c| c.get())
    }

    /// Events of `kind` received from the cluster bus so far.
    pub fn cluster_events(&self, kind: &'static str) -> u64 {
        self.inner
            .cluster_events
            .get(&[("event", kind)])
            .map_or(0, |c| c.get())
    }

    /// A connection was shed for the global outbound budget.
    pub(crate) fn outbound_shed(&self) {
        self.inner.outbound_shed.inc();
    }

    /// A closed connection starts (`true`) or ends (`false`) waiting for its peer's close.
    pub(crate) fn lingering(&self, started: bool) {
        if started {
            self.inner.lingering.inc();
        } else {
            self.inner.lingering.dec();
        }
    }

    pub(crate) fn wrote(&self, bytes: u64) {
        if bytes > 0 {
            self.inner.bytes_written.inc_by(bytes);
        }
    }

    pub(crate) fn hub_turn(&self, took: Duration) {
        self.inner.hub_turn.observe(took.as_secs_f64());
    }

    /// Connections currently registered with the hub.
    pub fn connections(&self) -> i64 {
        self.inner.connections.get()
    }

    /// Droppable frames dropped so far.
    pub fn slow_reader_drops(&self) -> u64 {
        self.inner.slow_reader_drops.get()
    }

    /// Connections the server decided to close with `code` so far.
    pub fn closes(&self, code: CloseCode) -> u64 {
        self.inner
            .closes
            .get(&[("code", code.0)])
            .map_or(0, |c| c.get())
    }

    pub(crate) fn connection_opened(&self) {
        self.inner.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.inner.connections.dec();
    }

    pub(crate) fn population(&self, users: usize, rooms: usize) {
        self.inner
            .users
            .set(i64::try_from(users).unwrap_or(i64::MAX));
        self.inner
            .rooms
            .set(i64::try_from(rooms).unwrap_or(i64::MAX));
    }

    pub(crate) fn message_in(&self, kind: &'static str) {
        self.inner
            .messages_in
            .get_or_create(&[("type", kind)])
            .inc();
    }

    pub(crate) fn frames_queued(&self, n: u64) {
        if n > 0 {
            self.inner.frames_queued.inc_by(n);
        }
    }

    pub(crate) fn error_sent(&self, code: &'static str, n: u64) {
        self.inner
            .errors_sent
            .get_or_create(&[("code", code)])
            .inc_by(n);
        if code == crate::protocol::ErrorCode::RateLimited.as_str() {
            self.inner.rate_limited.inc_by(n);
        }
    }

    pub(crate) fn slow_reader_dropped(&self, n: u64) {
        if n > 0 {
            self.inner.slow_reader_drops.inc_by(n);
        }
    }

    pub(crate) fn closed(&self, code: CloseCode) {
        self.inner.closes.get_or_create(&[("code", code.0)]).inc();
    }

    /// Store operations running and waiting for a slot now.
    pub(crate) fn store_work(&self, running: usize, waiting: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.inner.store_in_flight.set(gauge(running));
        self.inner.store_queued.set(gauge(waiting));
    }

    pub(crate) fn store_op(&self, op: &'static str, took: Duration, ok: bool) {
        self.inner
            .store_latency
            .get_or_create(&[("op", op)])
            .observe(took.as_secs_f64());
        if !ok {
            self.inner.store_failures.get_or_create(&[("op", op)]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_every_series_and_labels() {
        let m = Metrics::new();
        m.connection_opened();
        m.message_in("chat_message");
        m.error_sent("rate_limited", 2);
        m.closed(CloseCode::TRY_AGAIN_LATER);
        m.store_op("append_room", Duration::from_millis(3), true);
        m.handshake_rejected(400);
        m.wrote(1234);
        m.hub_turn(Duration::from_micros(15));
        m.outbound_shed();
        m.lingering(true);
        m.lingering(true);
        m.lingering(false);
        let budget = Arc::new(GlobalBudget::new(10));
        m.watch_outbound(&budget);
        let q = super::super::outbound::OutboundQueue::new(
            super::super::outbound::QueueLimits {
                max_frames: 4,
                max_bytes: 100,
            },
            Arc::clone(&budget),
        );
        q.push_counted(bytes::Bytes::from_static(b"12345"), false);
        let text = m.encode_text();
        for needle in [
            "chat_connections 1",
            "chat_users 0",
            "chat_messages_in_total{type=\"chat_message\"} 1",
            "chat_rate_limited_total 2",
            "chat_errors_sent_total{code=\"rate_limited\"} 2",
            "chat_closes_total{code=\"1013\"} 1",
            "chat_store_seconds_count{op=\"append_room\"} 1",
            "chat_slow_reader_drops_total 0",
            "chat_handshakes_rejected_total{status=\"400\"} 1",
            "chat_bytes_written_total 1234",
            "chat_hub_queue_depth 0",
            "chat_hub_turn_seconds_count 1",
            "chat_hub_turn_seconds_bucket{le=\"0.00002\"} 1",
            "chat_outbound_shed_total 1",
            "chat_connections_lingering 1",
            "chat_outbound_bytes 5",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // One exposition: a single `# EOF`, and it is the last line.
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        if cfg!(target_os = "linux") {
            for needle in [
                "# TYPE process_resident_memory_bytes gauge",
                "# TYPE process_open_fds gauge",
                "# TYPE process_cpu_seconds counter",
                "process_cpu_seconds_total ",
                "process_start_time_seconds ",
            ] {
                assert!(text.contains(needle), "missing {needle:?} in\n{text}");
            }
            assert!(
                !text.contains("chat_process_"),
                "process series are unprefixed"
            );
        } else {
            assert!(!text.contains("process_"), "{text}");
        }
        assert!(
            !text.contains("chat_cluster_bus_"),
            "a single node has no bus: {text}"
        );
        assert_eq!(m.handshakes_rejected(400), 1);
        assert_eq!(m.bytes_written(), 1234);
        assert_eq!(m.closes(CloseCode::TRY_AGAIN_LATER), 1);
        assert_eq!(m.closes(CloseCode::NORMAL), 0);
    }

    /// A bus that only reports counters.
    struct CountingBus(crate::cluster::NodeId);

    #[async_trait::async_trait]
    impl Cluster for CountingBus {
        fn node(&self) -> &crate::cluster::NodeId {
            &self.0
        }

        async fn run(&self, _: super::super::ClusterOps, _: super::super::ClusterEvents) {}

        fn health(&self) -> super::super::ClusterHealth {
            super::super::ClusterHealth::new(self.0.clone())
        }

        fn counters(&self) -> Vec<super::super::BusCounter> {
            use super::super::BusCounter;
            vec![
                BusCounter::new("published", "Announcements published", 7),
                BusCounter::new("dm_recovered", "DMs read back", 2),
                BusCounter::new("Not-Valid", "refused: not a metric name", 1),
            ]
        }
    }

    #[test]
    fn the_buss_own_counters_are_series_read_at_scrape_time() {
        let m = Metrics::new();
        let (ops, _queue) = super::super::ClusterOps::channel();
        let node = crate::cluster::NodeId::parse("node-1").unwrap();
        m.watch_cluster_bus(Arc::new(CountingBus(node)));
        m.watch_cluster_ops(&ops);
        let text = m.encode_text();
        for needle in [
            "# TYPE chat_cluster_bus_published counter",
            "# HELP chat_cluster_bus_published Announcements published",
            "chat_cluster_bus_published_total 7",
            "chat_cluster_bus_dm_recovered_total 2",
            "chat_cluster_queued 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("Not-Valid"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
