//! The subscriber: one dedicated pub/sub connection per node, with a reconnect loop.
//!
//! It owns the set of channels the node needs (the cluster channel, the node's own
//! channel, and the channels of the rooms and users the bus asked for). After every
//! (re)connection it subscribes to all of them at once and asks the bus to resync
//! (renew the lease, re-assert if Redis lost it, publish every room's member
//! snapshot): whatever was announced while it was away is then recovered by the
//! engine's catch-up read. DMs have no such read: for each subscribed user channel it
//! reads the user's DM stream after the last entry it handed over (see `dm_stream`),
//! and hands the engine what it missed before the live messages of the new
//! subscription. A ping that goes unanswered reconnects it, so a half-open connection
//! is noticed too.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chat_core::{ClusterEvent, ClusterEvents, NodeId, RemoteMember};
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::dm_stream::{DmCursor, ENTRIES_PER_READ, StreamId, USERS_PER_READ};
use crate::envelope::{self, Body, Envelope};
use crate::health::{BusState, bump};
use crate::registry::Registry;

/// What the bus asks of the subscriber.
#[derive(Debug)]
pub(crate) enum Control {
    /// Subscribe to a channel; the answer says when it is active (`true`), or that
    /// it could not be done within the bus's patience (the sender is dropped).
    Subscribe(String, Option<oneshot::Sender<()>>),
    /// Subscribe to a user's DM channel and place this node at the end of the user's
    /// DM `stream` (read back after every resubscription); answered like `Subscribe`.
    SubscribeDms {
        channel: String,
        stream: String,
        ack: oneshot::Sender<()>,
    },
    /// Unsubscribe from a channel.
    Unsubscribe(String),
}

/// What the subscriber asks of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The subscriber (re)connected: renew now and publish every room's snapshot.
    Resync,
    /// Another node reaped this one: renew now (and re-assert).
    Reaped,
}

/// DM ids seen lately: a DM reaches a node once per channel of its two users, and
/// a node with both users online must deliver it once.
struct RecentIds {
    set: HashSet<uuid::Uuid>,
    order: VecDeque<uuid::Uuid>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Records `id`; false if it was seen already.
    fn first_time(&mut self, id: uuid::Uuid) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The subscriber's configuration.
pub(crate) struct Subscriber {
    pub(crate) client: redis::Client,
    pub(crate) node: NodeId,
    pub(crate) fixed_channels: Vec<String>,
    pub(crate) command_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) ping_every: Duration,
    pub(crate) hub_patience: Duration,
    /// Most entries read back from one user's DM stream after a resubscription.
    pub(crate) dm_backlog: usize,
    pub(crate) state: Arc<BusState>,
    /// Commands (DM stream reads) go through the registry's connection: a connection
    /// in pub/sub mode takes no other command.
    pub(crate) registry: Registry,
}

/// The subscriber's own state, kept across connections.
struct Subscriptions {
    /// Every channel the node needs.
    channels: BTreeSet<String>,
    /// The subscribed user channels and where this node stands in their DM streams.
    dms: BTreeMap<String, DmCursor>,
    /// DM ids seen lately.
    recent: RecentIds,
}

/// Why a connected session ended.
#[derive(Debug, Clone)]
enum Ended {
    /// The connection failed: reconnect.
    Lost(String),
    /// The bus is gone: stop.
    Stopped,
}

impl Subscriber {
    /// Runs until `control` is closed (the bus stopped).
    pub(crate) async fn run(
        self,
        mut control: mpsc::UnboundedReceiver<Control>,
        wake: mpsc::UnboundedSender<Wake>,
        events: ClusterEvents,
    ) {
        let mut subs = Subscriptions {
            channels: self.fixed_channels.iter().cloned().collect(),
            dms: BTreeMap::new(),
            recent: RecentIds::new(4096),
        };
        // Subscriptions asked for while disconnected: answered once they are active.
        let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
        let mut backoff = self.reconnect_min;
        let mut connections = 0u64;
        loop {
            let connected = tokio::time::timeout(
                self.command_timeout,
                self.connect(subs.channels.iter().cloned().collect()),
            )
            .await
            .unwrap_or_else(|_| Err("timed out connecting the subscriber".into()));
            let (sink, stream) = match connected {
                Ok(pair) => pair,
                Err(e) => {
                    self.state.subscriber(false);
                    self.state.set_error(&format_args!("subscriber: {e}"));
                    debug!(error = %e, ?backoff, "cluster subscriber cannot connect");
                    if !self
                        .pause(backoff, &mut control, &mut subs, &mut waiting)
                        .await
                    {
                        return;
                    }
                    backoff = (backoff * 2).min(self.reconnect_max);
                    continue;
                }
            };
            connections += 1;
            self.state.subscriber(true);
            bump(&self.state.counters.subscriber_connects, 1);
            // Users subscribed while disconnected start at their stream's end, before
            // their subscriptions count as done.
            self.place_new_cursors(&mut subs.dms).await;
            for ack in waiting.drain(..) {
                let _ = ack.send(());
            }
            // After a reconnection (not the first connection: nothing was missed before
            // it), whatever was announced meanwhile must be recovered.
            if connections > 1 && wake.send(Wake::Resync).is_err() {
                return;
            }
            // The DMs announced while away, before this subscription's live messages
            // (which wait in `stream` meanwhile).
            let caught_up = self.catch_up_dms(&mut subs, &wake, &events).await;
            let ended = match caught_up {
                Ok(()) => {
                    backoff = self.reconnect_min;
                    self.session(sink, stream, &mut subs, &mut control, &wake, &events)
                        .await
                }
                Err(ref ended) => ended.clone(),
            };
            self.state.subscriber(false);
            match ended {
                Ended::Stopped => return,
                Ended::Lost(e) => {
                    self.state.set_error(&format_args!("subscriber: {e}"));
                    warn!(error = %e, "cluster subscriber lost its connection; reconnecting");
                }
            }
            if caught_up.is_err() {
                // The stream reads failed (Redis is failing): retry after a pause, with
                // the cursors kept, rather than hammer it.
                if !self
                    .pause(backoff, &mut control, &mut subs, &mut waiting)
                    .await
                {
                    return;
                }
                backoff = (backoff * 2).min(self.reconnect_max);
            }
        }
    }

    /// Connects and subscribes to `channels`.
    async fn connect(&self, channels: Vec<String>) -> Result<(PubSubSink, PubSubStream), String> {
        let pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| e.to_string())?;
        let (mut sink, stream) = pubsub.split();
        if !channels.is_empty() {
            sink.subscribe(channels).await.map_err(|e| e.to_string())?;
        }
        Ok((sink, stream))
    }

    /// Waits `pause` while recording the bus's requests for the next connection; false
    /// if the bus stopped.
    async fn pause(
        &self,
        pause: Duration,
        control: &mut mpsc::UnboundedReceiver<Control>,
        subs: &mut Subscriptions,
        waiting: &mut Vec<oneshot::Sender<()>>,
    ) -> bool {
        let pause = tokio::time::sleep(pause);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => return true,
                request = control.recv() => match request {
                    None => return false,
                    Some(request) => apply_offline(request, subs, waiting),
                },
            }
        }
    }

    /// Places every cursor not placed yet at its stream's end (an empty stream: `0-0`).
    /// One that cannot be read now stays unplaced: the first DM arriving live places
    /// it, or the next connection tries again.
    async fn place_new_cursors(&self, dms: &mut BTreeMap<String, DmCursor>) {
        let unplaced: Vec<String> = dms
            .iter()
            .filter(|(_, cursor)| cursor.last.is_none())
            .map(|(channel, _)| channel.clone())
            .collect();
        for batch in unplaced.chunks(USERS_PER_READ) {
            let streams: Vec<String> = batch.iter().map(|c| dms[c].stream.clone()).collect();
            match self.within_bus(self.registry.dm_tails(&streams)).await {
                Ok(tails) => {
                    for (channel, tail) in batch.iter().zip(tails) {
                        if let Some(cursor) = dms.get_mut(channel) {
                            cursor.advance(tail.unwrap_or(StreamId::ZERO));
                        }
                    }
                }
                Err(e) => {
                    debug!(error = %e, "cannot read where DM streams end; placed later");
                    return;
                }
            }
        }
    }

    /// Reads every placed cursor's stream after it and hands the DMs found to the
    /// engine, each stream in order: what was announced while this node was not
    /// subscribed. At most `dm_backlog` entries per user, `USERS_PER_READ` streams per
    /// round trip and `ENTRIES_PER_READ` entries per stream and round trip.
    async fn catch_up_dms(
        &self,
        subs: &mut Subscriptions,
        wake: &mpsc::UnboundedSender<Wake>,
        events: &ClusterEvents,
    ) -> Result<(), Ended> {
        // (channel, entries read so far)
        let mut work: VecDeque<(String, usize)> = subs
            .dms
            .iter()
            .filter(|(_, cursor)| cursor.last.is_some())
            .map(|(channel, _)| (channel.clone(), 0))
            .collect();
        while !work.is_empty() {
            let n = work.len().min(USERS_PER_READ);
            let batch: Vec<(String, usize)> = work.drain(..n).collect();
            let reads: Vec<(String, StreamId)> = batch
                .iter()
                .filter_map(|(channel, _)| {
                    let cursor = subs.dms.get(channel)?;
                    Some((cursor.stream.clone(), cursor.last?))
                })
                .collect();
            if reads.len() != batch.len() {
                // Cannot happen (nothing else touches the cursors meanwhile); re-plan.
                continue;
            }
            let pages = self
                .within_bus(self.registry.dm_after(&reads, ENTRIES_PER_READ))
                .await
                .map_err(|e| Ended::Lost(format!("reading missed DMs: {e}")))?;
            for ((channel, read), page) in batch.into_iter().zip(pages) {
                let full = page.len() == ENTRIES_PER_READ;
                let read = read + page.len();
                for (id, payload) in page {
                    let event = match payload.map(|p| Envelope::decode(p.as_bytes())) {
                        Some(Ok(envelope)) if matches!(envelope.body, Body::Dm(_)) => {
                            self.event(envelope, wake, &mut subs.recent)
                        }
                        Some(Ok(_)) => self.invalid(&"a DM stream entry that is not a DM"),
                        Some(Err(e)) => self.invalid(&e),
                        None => self.invalid(&"a DM stream entry without an envelope"),
                    };
                    if let Some(event) = event {
                        self.hand_over(event, events).await?;
                        bump(&self.state.counters.dm_recovered, 1);
                    }
                    if let Some(cursor) = subs.dms.get_mut(&channel) {
                        cursor.advance(id);
                    }
                }
                // Newer entries than what a full read returned were published while
                // subscribed, so they arrive live anyway: the cap only bounds the work.
                if full && read < self.dm_backlog {
                    work.push_back((channel, read));
                }
            }
        }
        Ok(())
    }

    /// Hands one event to the server, within `hub_patience`.
    async fn hand_over(&self, event: ClusterEvent, events: &ClusterEvents) -> Result<(), Ended> {
        bump(&self.state.counters.received, 1);
        match tokio::time::timeout(self.hub_patience, events.send(event)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::Stopped),
            // The server fell behind: what this connection buffered goes with it, and
            // the resync after reconnecting recovers the rooms (and the DM streams).
            Err(_) => {
                bump(&self.state.counters.hub_timeouts, 1);
                Err(Ended::Lost(format!(
                    "the server took no event for {:?}",
                    self.hub_patience
                )))
            }
        }
    }

    /// One connected session: until the connection fails or the bus stops.
    async fn session(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        subs: &mut Subscriptions,
        control: &mut mpsc::UnboundedReceiver<Control>,
        wake: &mpsc::UnboundedSender<Wake>,
        events: &ClusterEvents,
    ) -> Ended {
        let mut ping = tokio::time::interval(self.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ended::Lost("connection closed".into());
                    };
                    let envelope = match Envelope::decode(message.get_payload_bytes()) {
                        Ok(envelope) => envelope,
                        Err(e) => {
                            self.invalid(&e);
                            continue;
                        }
                    };
                    let sid = envelope.sid.as_deref().and_then(StreamId::parse);
                    if let Some(event) = self.event(envelope, wake, &mut subs.recent)
                        && let Err(ended) = self.hand_over(event, events).await
                    {
                        // Not handed over: the cursor stays before it, so the catch-up
                        // after reconnecting reads it back.
                        return ended;
                    }
                    if let (Some(sid), Some(cursor)) =
                        (sid, subs.dms.get_mut(message.get_channel_name()))
                    {
                        cursor.advance(sid);
                    }
                }
                request = control.recv() => {
                    let Some(request) = request else { return Ended::Stopped };
                    let result = match request {
                        Control::Subscribe(channel, ack) => {
                            subs.channels.insert(channel.clone());
                            let done = self.within(sink.subscribe(channel)).await;
                            if done.is_ok() && let Some(ack) = ack {
                                let _ = ack.send(());
                            }
                            done
                        }
                        Control::SubscribeDms { channel, stream, ack } => {
                            subs.channels.insert(channel.clone());
                            subs.dms
                                .entry(channel.clone())
                                .or_insert_with(|| DmCursor::new(stream));
                            let done = self.within(sink.subscribe(channel)).await;
                            if done.is_ok() {
                                // Subscribed first, then placed: a DM stored in between
                                // arrives live (and is not read back).
                                self.place_new_cursors(&mut subs.dms).await;
                                let _ = ack.send(());
                            }
                            done
                        }
                        Control::Unsubscribe(channel) => {
                            subs.channels.remove(&channel);
                            subs.dms.remove(&channel);
                            self.within(sink.unsubscribe(channel)).await
                        }
                    };
                    if let Err(e) = result {
                        return Ended::Lost(e);
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = self.within(sink.ping::<redis::Value>()).await {
                        return Ended::Lost(format!("ping: {e}"));
                    }
                }
            }
        }
    }

    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.command_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// A registry read, bounded like one command plus a reconnect.
    async fn within_bus<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, crate::error::BusError>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.command_timeout * 2, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Counts and logs a bus message that is not valid; `None` (nothing for the engine).
    fn invalid(&self, what: &dyn std::fmt::Display) -> Option<ClusterEvent> {
        bump(&self.state.counters.invalid, 1);
        warn!(error = %what, "ignoring an invalid cluster bus message");
        None
    }

    /// The event a bus message means for this node's engine, if any.
    fn event(
        &self,
        envelope: Envelope,
        wake: &mpsc::UnboundedSender<Wake>,
        recent: &mut RecentIds,
    ) -> Option<ClusterEvent> {
        let invalid = |what: &dyn std::fmt::Display| self.invalid(what);
        let own = envelope.from == self.node.as_str();
        let from = match NodeId::parse(&envelope.from) {
            Ok(node) => node,
            Err(e) => return invalid(&e),
        };
        let event = match envelope.body {
            // Snapshots come from this node's own sync script, on its own channel.
            Body::Members { room, members } if own => {
                let room = match envelope::room(&room) {
                    Ok(room) => room,
                    Err(e) => return invalid(&e),
                };
                let mut list = Vec::with_capacity(members.len());
                for (node, user, name) in members {
                    let (Ok(node), Ok(user)) = (NodeId::parse(&node), envelope::user(&user)) else {
                        return invalid(&"a member entry");
                    };
                    if node != self.node {
                        list.push(RemoteMember {
                            node,
                            user,
                            name: name.into(),
                        });
                    }
                }
                bump(&self.state.counters.resyncs, 1);
                return Some(ClusterEvent::RoomMembers {
                    room,
                    members: list,
                });
            }
            Body::NodeDown { node } if node == self.node.as_str() => {
                // Reaped while away (paused, cut off): renew and re-assert now.
                if !own {
                    let _ = wake.send(Wake::Reaped);
                }
                return None;
            }
            // The reaper's engine hears of it like everyone else's.
            Body::NodeDown { node } => match NodeId::parse(&node) {
                Ok(node) => ClusterEvent::NodeDown { node },
                Err(e) => return invalid(&e),
            },
            // A node never hands itself its own announcements.
            _ if own => return None,
            Body::Members { .. } => return None,
            Body::Joined { room, user, name } => ClusterEvent::Joined {
                node: from,
                room: envelope::room(&room).ok()?,
                user: envelope::user(&user).ok()?,
                name: name.into(),
            },
            Body::Left { room, user } => ClusterEvent::Left {
                node: from,
                room: envelope::room(&room).ok()?,
                user: envelope::user(&user).ok()?,
            },
            Body::Message(message) => match message.into_stored() {
                Ok(message) => ClusterEvent::Message {
                    room: message.room.clone(),
                    message: Arc::new(message),
                },
                Err(e) => return invalid(&e),
            },
            Body::Typing {
                room,
                user,
                name,
                on,
            } => ClusterEvent::Typing {
                node: from,
                room: envelope::room(&room).ok()?,
                user: envelope::user(&user).ok()?,
                name: name.into(),
                on,
            },
            Body::Dm(dm) => {
                if !recent.first_time(dm.id()) {
                    return None;
                }
                match dm.into_stored() {
                    Ok(message) => ClusterEvent::Dm {
                        message: Arc::new(message),
                    },
                    Err(e) => return invalid(&e),
                }
            }
        };
        Some(event)
    }
}

/// A request taken while disconnected: recorded for the next connection.
fn apply_offline(
    request: Control,
    subs: &mut Subscriptions,
    waiting: &mut Vec<oneshot::Sender<()>>,
) {
    match request {
        Control::Subscribe(channel, ack) => {
            subs.channels.insert(channel);
            waiting.extend(ack);
        }
        Control::SubscribeDms {
            channel,
            stream,
            ack,
        } => {
            subs.channels.insert(channel.clone());
            subs.dms
                .entry(channel)
                .or_insert_with(|| DmCursor::new(stream));
            waiting.push(ack);
        }
        Control::Unsubscribe(channel) => {
            subs.channels.remove(&channel);
            subs.dms.remove(&channel);
        }
    }
}
