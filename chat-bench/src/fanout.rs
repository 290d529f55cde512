//! The `fanout` scenario: C clients in R rooms, S of them sending, closed loop or fixed rate.
//!
//! Client `i` joins room `bench-(i mod R)`; clients `0..S` are the senders, so the senders
//! spread over the rooms first. Against a cluster (several servers) the clients are dealt
//! round robin over the nodes, rotated by room ([`FanoutConfig::node_of`]), so every room
//! has members on every node and the senders too are spread over the nodes. Every client reads from the moment it joined (so no server
//! queue fills while the others join); once all are in, a plan is published: warm-up,
//! then the measured [`Window`]. In closed loop a sender keeps at most `window` messages in
//! flight, each acknowledged by its own `message_received`; at a fixed rate each sender
//! sends on its own schedule (open loop: a late server does not slow the senders down,
//! so its lateness shows up as latency instead of being hidden).
//!
//! After the window the senders stop, the readers drain until every delivery expected
//! has arrived or the drain deadline passes, and the difference is the loss. Each client's
//! own view is checked too: it must have received exactly what its room was sent in the
//! window, without gap, duplicate or reordering (of senders' counters and of `seq`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::BenchError;
use crate::client::{self, Event, Target, Ws};
use crate::procfs::{CpuMark, Proc};
use crate::report::{ByNode, Fanout, Report};
use crate::stats::{DeliveryCounts, DeliveryTracker, Latency, Window};
use crate::tag::{self, Tag};

/// How senders pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Each sender keeps at most this many messages in flight.
    ClosedLoop {
        /// Messages in flight per sender.
        window: usize,
    },
    /// All senders together send this many messages per second.
    FixedRate {
        /// Messages per second over all senders.
        messages_per_s: f64,
    },
}

/// A `fanout` run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The server (node 0 of a cluster).
    pub target: Target,
    /// More servers of the same cluster (empty: one server); see [`Self::node_of`].
    pub other_nodes: Vec<Target>,
    /// Clients connected.
    pub clients: usize,
    /// Rooms they are spread over.
    pub rooms: usize,
    /// Senders (clients `0..senders`).
    pub senders: usize,
    /// How senders pace themselves.
    pub pace: Pace,
    /// Sending before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How long to wait after the window for deliveries still in flight.
    pub drain: Duration,
    /// Joins in flight at once while connecting.
    pub connect_concurrency: usize,
    /// The server's PID, for its CPU time.
    pub server_pid: Option<u32>,
    /// Free-form label copied to the report.
    pub label: String,
    /// Makes usernames unique between runs against one server.
    pub salt: u32,
    /// Give every message a `clientMsgId` (*ext*; the idempotency path of a durable
    /// store). Off for like-for-like runs against the base-protocol reference.
    pub client_msg_ids: bool,
}

impl FanoutConfig {
    fn check(&self) -> Result<(), BenchError> {
        self.target.check()?;
        for node in &self.other_nodes {
            node.check()?;
        }
        let bad = |what: &str| Err(BenchError::Config(what.to_owned()));
        if self.clients == 0 || self.rooms == 0 || self.senders == 0 {
            return bad("clients, rooms and senders must be at least 1");
        }
        if self.rooms > self.clients || self.senders > self.clients {
            return bad("rooms and senders cannot exceed clients");
        }
        if u32::try_from(self.senders).is_err() {
            return bad("too many senders");
        }
        match self.pace {
            Pace::ClosedLoop { window: 0 } => bad("window must be at least 1"),
            Pace::FixedRate { messages_per_s }
                if !messages_per_s.is_finite() || messages_per_s <= 0.0 =>
            {
                bad("rate must be above 0")
            }
            _ if self.duration.is_zero() => bad("duration must be above 0"),
            _ if self.connect_concurrency == 0 => bad("connect concurrency must be at least 1"),
            _ => Ok(()),
        }
    }

    /// The server client `index` connects to: node `(i / R + i mod R) mod N` of the `N`
    /// nodes. Within a room (`i mod R` fixed) its successive members go round robin over
    /// the nodes, so a room of at least `N` members has some on every node and every
    /// message crosses the bus; the rotation by room puts the senders (clients `0..S`, the
    /// first member of each room) round robin over the nodes as well.
    pub fn node_of(&self, index: usize) -> &Target {
        match self.node_index(index) {
            0 => &self.target,
            n => &self.other_nodes[n - 1],
        }
    }

    /// The index of [`Self::node_of`]'s node: 0 for `target`, `n` for `other_nodes[n - 1]`.
    pub fn node_index(&self, index: usize) -> usize {
        (index / self.rooms + index % self.rooms) % (1 + self.other_nodes.len())
    }

    /// The room of client `index`.
    pub fn room_of(&self, index: usize) -> usize {
        index % self.rooms
    }

    /// Members of room `room` (clients whose index is `room` modulo the room count).
    pub fn members_of(&self, room: usize) -> u64 {
        let full = self.clients / self.rooms;
        let extra = usize::from(room < self.clients % self.rooms);
        (full + extra) as u64
    }
}

/// When to send, published once every client has joined.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Sending starts (warm-up).
    begin: Instant,
    /// The measured window on the tag clock.
    window: Window,
    /// The end of the window as an `Instant`.
    end: Instant,
}

/// What one sender did.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    in_window: u64,
}

/// What one reader saw.
struct Seen {
    tracker: DeliveryTracker,
    /// Latency of the window's messages whose sender is on this client's node.
    same_node: Latency,
    /// Latency of those whose sender is on another node (they crossed the bus).
    cross_node: Latency,
    first_error: Option<String>,
}

/// Where a reader and the senders are: tells a delivery that crossed the bus from one
/// that did not.
#[derive(Clone)]
struct Nodes {
    /// The reader's node.
    mine: usize,
    /// The node of each sender, by sender index.
    of_sender: Arc<[usize]>,
}

/// Runs the scenario.
pub async fn run(cfg: &FanoutConfig) -> Result<Report, BenchError> {
    cfg.check()?;
    let (plan_tx, plan_rx) = watch::channel(None::<Plan>);
    let (stop_tx, stop_rx) = watch::channel(false);
    let received = Arc::new(AtomicU64::new(0));
    let sender_nodes: Arc<[usize]> = (0..cfg.senders).map(|i| cfg.node_index(i)).collect();
    // The window is only known once everyone joined; readers get it through the plan.
    // Each reader with its client's room, to check its view against what the room was sent.
    let mut readers: Vec<(usize, JoinHandle<Seen>)> = Vec::with_capacity(cfg.clients);
    let mut senders: Vec<(usize, JoinHandle<Result<Sent, BenchError>>)> = Vec::new();

    // Boxed, not stack-pinned, so dropping it cancels the joins still in flight.
    let mut joins = Box::pin(
        futures_util::stream::iter(0..cfg.clients)
            .map(|i| {
                let target = cfg.node_of(i).clone();
                let name = client::username(cfg.salt, i);
                let room = format!("bench-{}", cfg.room_of(i));
                async move { (i, client::connect_and_join(&target, i, &name, &room).await) }
            })
            .buffer_unordered(cfg.connect_concurrency),
    );
    let mut failure = None;
    while let Some((i, joined)) = joins.next().await {
        let ws = match joined {
            Ok(ws) => ws,
            Err(e) => {
                failure = Some(BenchError::Protocol(format!(
                    "client {i} could not join: {e}"
                )));
                break;
            }
        };
        let (sink, stream) = ws.split();
        let sender_id = (i < cfg.senders).then(|| u32::try_from(i).unwrap_or(u32::MAX));
        let acks = match (sender_id, cfg.pace) {
            (Some(_), Pace::ClosedLoop { window }) => Some(Arc::new(Semaphore::new(window))),
            _ => None,
        };
        readers.push((
            cfg.room_of(i),
            tokio::spawn(read_loop(
                stream,
                Nodes {
                    mine: cfg.node_index(i),
                    of_sender: Arc::clone(&sender_nodes),
                },
                plan_rx.clone(),
                sender_id,
                acks.clone(),
                Arc::clone(&received),
                stop_rx.clone(),
            )),
        ));
        if let Some(id) = sender_id {
            let pace = SenderPace {
                id,
                senders: cfg.senders,
                pace: cfg.pace,
                acks,
                client_msg_ids: cfg.client_msg_ids,
            };
            senders.push((i, tokio::spawn(send_loop(sink, pace, plan_rx.clone()))));
        }
    }
    drop(joins);
    if let Some(e) = failure {
        for (_, r) in &readers {
            r.abort();
        }
        for (_, s) in &senders {
            s.abort();
        }
        return Err(e);
    }

    let begin = Instant::now();
    let base_ns = tag::now_ns();
    let start_ns = base_ns + duration_ns(cfg.warmup);
    let window = Window {
        start_ns,
        end_ns: start_ns + duration_ns(cfg.duration),
    };
    let end = begin + cfg.warmup + cfg.duration;
    // Readers and senders hold receivers, so the send cannot fail; if they are all gone,
    // nothing is sent and the report shows it.
    let _ = plan_tx.send(Some(Plan { begin, window, end }));

    tokio::time::sleep_until(begin + cfg.warmup).await;
    let mark = CpuMark::now(cfg.server_pid)?;
    tokio::time::sleep_until(end).await;
    let cpu = mark.elapsed()?;

    let mut sent = 0u64;
    let mut expected = 0u64;
    let mut sent_to_room = vec![0u64; cfg.rooms];
    for (i, handle) in senders {
        let s = handle
            .await
            .map_err(|e| BenchError::Protocol(format!("sender {i} panicked: {e}")))??;
        sent += s.in_window;
        expected += s.in_window * cfg.members_of(cfg.room_of(i));
        sent_to_room[cfg.room_of(i)] += s.in_window;
    }
    // Bounded: the drain deadline.
    let drain_deadline = Instant::now() + cfg.drain;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);

    let mut counts = DeliveryCounts::default();
    let mut latency = Latency::new();
    let mut same_node = Latency::new();
    let mut cross_node = Latency::new();
    let mut first_error = None;
    let mut clients_wrong = 0u64;
    for (room, handle) in readers {
        let seen = handle
            .await
            .map_err(|e| BenchError::Protocol(format!("reader panicked: {e}")))?;
        clients_wrong += u64::from(!seen.tracker.counts.is_exact(sent_to_room[room]));
        counts.merge(&seen.tracker.counts);
        latency.merge(&seen.tracker.latency);
        same_node.merge(&seen.same_node);
        cross_node.merge(&seen.cross_node);
        first_error = first_error.or(seen.first_error);
    }
    if let Some(message) = first_error {
        eprintln!("fanout [{}]: first error frame: {message}", cfg.label);
    }

    let seconds = window.seconds();
    let received_in_window = counts.received_in_window;
    let fanout = Fanout {
        clients: cfg.clients,
        rooms: cfg.rooms,
        senders: cfg.senders,
        window: match cfg.pace {
            Pace::ClosedLoop { window } => Some(window),
            Pace::FixedRate { .. } => None,
        },
        rate: match cfg.pace {
            Pace::FixedRate { messages_per_s } => Some(messages_per_s),
            Pace::ClosedLoop { .. } => None,
        },
        seconds,
        sent,
        sent_per_s: sent as f64 / seconds,
        expected,
        deliveries_per_s: received_in_window as f64 / seconds,
        loss: i64::try_from(expected).unwrap_or(i64::MAX)
            - i64::try_from(received_in_window).unwrap_or(i64::MAX),
        counts,
        clients_wrong,
        latency: latency.percentiles(),
        latency_by_node: (!cfg.other_nodes.is_empty()).then(|| ByNode {
            same_node: same_node.percentiles(),
            cross_node: cross_node.percentiles(),
        }),
        server_cpu_us_per_delivery: cpu.server_per(received_in_window),
    };
    Ok(Report {
        scenario: "fanout",
        label: cfg.label.clone(),
        cpu,
        tool_rss_kib: Proc::Myself.rss_kib()?,
        fanout: Some(fanout),
        idle: None,
        connect: None,
    })
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits for the plan; `None` when the run was abandoned before it was published.
async fn wait_plan(plan: &mut watch::Receiver<Option<Plan>>) -> Option<Plan> {
    // Bounded: the value is set once, or the sender is dropped and `changed` fails.
    loop {
        if let Some(p) = *plan.borrow_and_update() {
            return Some(p);
        }
        plan.changed().await.ok()?;
    }
}

/// One client's reading side: books every delivery, and acknowledges its own messages to
/// its sender in closed loop.
async fn read_loop(
    mut stream: SplitStream<Ws>,
    nodes: Nodes,
    mut plan: watch::Receiver<Option<Plan>>,
    sender_id: Option<u32>,
    acks: Option<Arc<Semaphore>>,
    received: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    // Before the plan, only joins of other clients arrive; they need no booking, but they
    // must be read so no server queue fills.
    let window = loop {
        tokio::select! {
            // Plan first: once it is out, the next frame may be a message to book.
            biased;
            p = wait_plan(&mut plan) => break p,
            frame = stream.next() => if !matches!(frame, Some(Ok(_))) { break None },
        }
    };
    let window = window.map_or(
        Window {
            start_ns: 0,
            end_ns: 0,
        },
        |p| p.window,
    );
    let mut seen = Seen {
        tracker: DeliveryTracker::new(nodes.of_sender.len(), window),
        same_node: Latency::new(),
        cross_node: Latency::new(),
        first_error: None,
    };
    loop {
        let frame = tokio::select! {
            biased;
            frame = stream.next() => frame,
            _ = stop.changed() => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        let now = tag::now_ns();
        // The hot frame skips the full parse (the tool must stay lighter than the server).
        let fast = client::scan_message_received(text.as_str());
        let event = match fast {
            Some(_) => None,
            None => match Event::parse(text.as_str()) {
                Ok(event) => Some(event),
                Err(_) => {
                    seen.tracker.counts.foreign += 1;
                    continue;
                }
            },
        };
        let kind = event.as_ref().map_or("message_received", |e| &*e.kind);
        match kind {
            "message_received" => {
                let before = seen.tracker.counts.received_in_window;
                let (content, seq) = match (&fast, &event) {
                    (Some((content, seq)), _) => (*content, *seq),
                    (None, Some(e)) => (e.content.as_deref().unwrap_or(""), e.seq),
                    (None, None) => ("", None),
                };
                let tag = seen.tracker.on_message(content, seq, now);
                if seen.tracker.counts.received_in_window > before {
                    received.fetch_add(1, Ordering::Relaxed);
                    if let Some(tag) = &tag {
                        let latency = now.saturating_sub(tag.sent_ns);
                        let sender = usize::try_from(tag.sender).unwrap_or(usize::MAX);
                        match nodes.of_sender.get(sender) {
                            Some(&node) if node == nodes.mine => seen.same_node.record_ns(latency),
                            _ => seen.cross_node.record_ns(latency),
                        }
                    }
                }
                if let (Some(Tag { sender, .. }), Some(acks)) = (tag, &acks)
                    && Some(sender) == sender_id
                {
                    acks.add_permits(1);
                }
            }
            "error" => {
                seen.tracker.on_error();
                if seen.first_error.is_none() {
                    seen.first_error = Some(text.as_str().to_owned());
                }
            }
            _ => {}
        }
    }
    seen
}

/// How one sender paces itself.
struct SenderPace {
    id: u32,
    senders: usize,
    pace: Pace,
    acks: Option<Arc<Semaphore>>,
    client_msg_ids: bool,
}

/// One sender: sends tagged messages from the plan's start to the window's end.
async fn send_loop(
    mut sink: SplitSink<Ws, Message>,
    pace: SenderPace,
    mut plan: watch::Receiver<Option<Plan>>,
) -> Result<Sent, BenchError> {
    let Some(plan) = wait_plan(&mut plan).await else {
        return Ok(Sent::default());
    };
    let mut sent = Sent::default();
    let mut counter = 0u64;
    let mut send = async |counter: u64| -> Result<bool, BenchError> {
        let sent_ns = tag::now_ns();
        if sent_ns >= plan.window.end_ns {
            return Ok(false);
        }
        let tag = Tag {
            sender: pace.id,
            counter,
            sent_ns,
        };
        let frame = if pace.client_msg_ids {
            tag::chat_message_frame_with_id(&tag)
        } else {
            tag::chat_message_frame(&tag)
        };
        sink.send(Message::text(frame))
            .await
            .map_err(|e| BenchError::ws("send chat_message", e))?;
        Ok(plan.window.contains(sent_ns))
    };
    match (pace.pace, &pace.acks) {
        (Pace::ClosedLoop { .. }, Some(acks)) => {
            // Bounded by the window's end: the permit wait times out there.
            while Instant::now() < plan.end {
                match tokio::time::timeout_at(plan.end, acks.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    Ok(Err(_)) | Err(_) => break,
                }
                let now_ns = tag::now_ns();
                if now_ns >= plan.window.end_ns {
                    break;
                }
                sent.in_window += u64::from(send(counter).await?);
                counter += 1;
            }
        }
        (Pace::FixedRate { messages_per_s }, _) => {
            // Each sender sends every `period`, the senders offset evenly within it.
            let period = Duration::from_secs_f64(pace.senders as f64 / messages_per_s);
            let offset = period.mul_f64(f64::from(pace.id) / pace.senders as f64);
            let mut next = plan.begin + offset;
            // Bounded by the window's end (checked on the clock too, in case the period
            // rounds to zero).
            while next < plan.end && Instant::now() < plan.end {
                tokio::time::sleep_until(next).await;
                sent.in_window += u64::from(send(counter).await?);
                counter += 1;
                next += period;
            }
        }
        (Pace::ClosedLoop { .. }, None) => {
            return Err(BenchError::Config(
                "closed loop without acknowledgements".to_owned(),
            ));
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clients: usize, rooms: usize, senders: usize) -> FanoutConfig {
        FanoutConfig {
            other_nodes: Vec::new(),
            target: Target::new("127.0.0.1:1".parse().expect("addr")).expect("target"),
            clients,
            rooms,
            senders,
            pace: Pace::ClosedLoop { window: 4 },
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            connect_concurrency: 8,
            server_pid: None,
            label: String::new(),
            salt: 1,
            client_msg_ids: false,
        }
    }

    #[test]
    fn members_per_room_add_up_to_the_clients() {
        let cfg = config(10, 3, 3);
        let members: Vec<u64> = (0..3).map(|r| cfg.members_of(r)).collect();
        assert_eq!(members, [4, 3, 3]);
        for r in 0..3 {
            let counted = (0..10).filter(|&i| cfg.room_of(i) == r).count() as u64;
            assert_eq!(cfg.members_of(r), counted);
        }
    }

    #[test]
    fn on_a_cluster_every_room_and_the_senders_span_the_nodes() {
        let node = |port: u16| {
            Target::new(std::net::SocketAddr::from(([127, 0, 0, 1], port))).expect("target")
        };
        let mut cfg = config(30, 10, 10);
        cfg.other_nodes = vec![node(2), node(3)];
        let port_of = |i: usize| cfg.node_of(i).addr.port();
        for room in 0..cfg.rooms {
            let mut ports: Vec<u16> = (0..cfg.clients)
                .filter(|&i| cfg.room_of(i) == room)
                .map(port_of)
                .collect();
            ports.sort_unstable();
            assert_eq!(ports, [1, 2, 3], "room {room}: one member on each node");
        }
        let senders: Vec<u16> = (0..cfg.senders).map(port_of).collect();
        assert_eq!(
            senders,
            [1, 2, 3, 1, 2, 3, 1, 2, 3, 1],
            "senders round robin"
        );
        // One room: plain round robin.
        let mut cfg = config(7, 1, 2);
        cfg.other_nodes = vec![node(2)];
        let ports: Vec<u16> = (0..7).map(|i| cfg.node_of(i).addr.port()).collect();
        assert_eq!(ports, [1, 2, 1, 2, 1, 2, 1]);
    }

    #[test]
    fn impossible_runs_are_refused() {
        assert!(config(10, 11, 1).check().is_err());
        assert!(config(10, 1, 11).check().is_err());
        assert!(config(0, 1, 1).check().is_err());
        let mut cfg = config(10, 1, 1);
        cfg.pace = Pace::FixedRate {
            messages_per_s: 0.0,
        };
        assert!(cfg.check().is_err());
        assert!(config(10, 2, 2).check().is_ok());
    }
}
