//! The subscriber: one dedicated pub/sub connection per node, with a reconnect loop.
//!
//! It owns the set of channels the node needs (the cluster channel, the node's own
//! channel, and the channels of the rooms and users the bus asked for). After every
//! (re)connection it subscribes to all of them at once and asks the bus to resync
//! (renew the lease, re-assert if Redis lost it, publish every room's member
//! snapshot): whatever was announced while it was away is then recovered by the
//! engine's catch-up read. A ping that goes unanswered reconnects it, so a half-open
//! connection is noticed too.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chat_core::{ClusterEvent, ClusterEvents, NodeId, RemoteMember};
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::envelope::{self, Body, Envelope};
use crate::health::{BusState, bump};

/// What the bus asks of the subscriber.
#[derive(Debug)]
pub(crate) enum Control {
    /// Subscribe to a channel; the answer says when it is active (`true`), or that
    /// it could not be done within the bus's patience (the sender is dropped).
    Subscribe(String, Option<oneshot::Sender<()>>),
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
    pub(crate) state: Arc<BusState>,
}

/// Why a connected session ended.
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
        let mut channels: BTreeSet<String> = self.fixed_channels.iter().cloned().collect();
        // Subscriptions asked for while disconnected: answered once they are active.
        let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
        let mut recent = RecentIds::new(4096);
        let mut backoff = self.reconnect_min;
        let mut connections = 0u64;
        loop {
            let connected = tokio::time::timeout(
                self.command_timeout,
                self.connect(channels.iter().cloned().collect()),
            )
            .await
            .unwrap_or_else(|_| Err("timed out connecting the subscriber".into()));
            let (sink, stream) = match connected {
                Ok(pair) => pair,
                Err(e) => {
                    self.state.subscriber(false);
                    self.state.set_error(&format_args!("subscriber: {e}"));
                    debug!(error = %e, ?backoff, "cluster subscriber cannot connect");
                    // Keep taking requests while waiting to retry.
                    let pause = tokio::time::sleep(backoff);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            request = control.recv() => match request {
                                None => return,
                                Some(request) => apply_offline(request, &mut channels, &mut waiting),
                            },
                        }
                    }
                    backoff = (backoff * 2).min(self.reconnect_max);
                    continue;
                }
            };
            backoff = self.reconnect_min;
            connections += 1;
            self.state.subscriber(true);
            bump(&self.state.counters.subscriber_connects, 1);
            for ack in waiting.drain(..) {
                let _ = ack.send(());
            }
            // After a reconnection (not the first connection: nothing was missed before
            // it), whatever was announced meanwhile must be recovered.
            if connections > 1 && wake.send(Wake::Resync).is_err() {
                return;
            }
            let ended = self
                .session(
                    sink,
                    stream,
                    &mut channels,
                    &mut control,
                    &wake,
                    &events,
                    &mut recent,
                )
                .await;
            self.state.subscriber(false);
            match ended {
                Ended::Stopped => return,
                Ended::Lost(e) => {
                    self.state.set_error(&format_args!("subscriber: {e}"));
                    warn!(error = %e, "cluster subscriber lost its connection; reconnecting");
                }
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

    /// One connected session: until the connection fails or the bus stops.
    #[allow(clippy::too_many_arguments)]
    async fn session(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        channels: &mut BTreeSet<String>,
        control: &mut mpsc::UnboundedReceiver<Control>,
        wake: &mpsc::UnboundedSender<Wake>,
        events: &ClusterEvents,
        recent: &mut RecentIds,
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
                    let Some(event) = self.decode(message.get_payload_bytes(), wake, recent) else {
                        continue;
                    };
                    bump(&self.state.counters.received, 1);
                    match tokio::time::timeout(self.hub_patience, events.send(event)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Ended::Stopped,
                        // The server fell behind: what this connection buffered goes with
                        // it, and the resync after reconnecting recovers the rooms.
                        Err(_) => {
                            bump(&self.state.counters.hub_timeouts, 1);
                            return Ended::Lost(format!(
                                "the server took no event for {:?}",
                                self.hub_patience
                            ));
                        }
                    }
                }
                request = control.recv() => {
                    let Some(request) = request else { return Ended::Stopped };
                    let result = match request {
                        Control::Subscribe(channel, ack) => {
                            channels.insert(channel.clone());
                            let done = self.within(sink.subscribe(channel)).await;
                            if done.is_ok() && let Some(ack) = ack {
                                let _ = ack.send(());
                            }
                            done
                        }
                        Control::Unsubscribe(channel) => {
                            channels.remove(&channel);
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

    /// The event a published message means for this node's engine, if any.
    fn decode(
        &self,
        payload: &[u8],
        wake: &mpsc::UnboundedSender<Wake>,
        recent: &mut RecentIds,
    ) -> Option<ClusterEvent> {
        let invalid = |what: &dyn std::fmt::Display| {
            bump(&self.state.counters.invalid, 1);
            warn!(error = %what, "ignoring an invalid cluster bus message");
            None
        };
        let envelope = match Envelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(e) => return invalid(&e),
        };
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
    channels: &mut BTreeSet<String>,
    waiting: &mut Vec<oneshot::Sender<()>>,
) {
    match request {
        Control::Subscribe(channel, ack) => {
            channels.insert(channel);
            waiting.extend(ack);
        }
        Control::Unsubscribe(channel) => {
            channels.remove(&channel);
        }
    }
}
