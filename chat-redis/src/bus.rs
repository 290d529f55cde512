//! [`Bus`]: the task that performs the engine's ops, in order, against Redis, keeps
//! this node's lease, reaps expired nodes, and repairs the registry after faults.
//!
//! Ops are taken in batches (what is queued when the bus looks): consecutive
//! announcements (messages, typing, DMs) go out in one pipelined round trip, in order;
//! registry changes are one Lua script each. Nothing here waits on the hub except
//! answers to requests.
//!
//! Repairs: the node keeps its own [`Record`] of what it holds. When a renewal finds
//! the lease gone (Redis restarted, or this node was paused and reaped), or a write
//! failed, the next renewal re-asserts the record: entries Redis has but the record
//! does not are removed, every recorded entry is written again (and announced), and
//! every room's member snapshot is sent again. Announcements Redis could not take are
//! kept (up to `republish_buffer`) and published again, in order, once it can.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use chat_core::{
    ClusterEvent, ClusterEvents, ClusterOp, ClusterOps, ClusterReply, NodeId, RoomName, UserId,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::RedisClusterConfig;
use crate::envelope::{Body, Envelope, WireDm, WireMessage};
use crate::error::BusError;
use crate::health::{BusState, bump};
use crate::record::Record;
use crate::registry::{Announcement, Reaped, Registry};
use crate::subscriber::{Control, Wake};

/// Most ops taken from the queue in one batch.
const BATCH: usize = 256;

/// One announcement to publish.
struct Publish {
    announcement: Announcement,
    /// Published again if Redis could not take it (typing is not worth it).
    retry: bool,
}

impl Publish {
    fn new(channel: String, payload: String, retry: bool) -> Self {
        Self {
            announcement: Announcement {
                channel,
                payload,
                dm_stream: None,
            },
            retry,
        }
    }
}

/// The bus of one node, while it runs.
pub(crate) struct Bus {
    pub(crate) registry: Registry,
    pub(crate) node: NodeId,
    pub(crate) config: RedisClusterConfig,
    pub(crate) state: Arc<BusState>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    pub(crate) events: ClusterEvents,
    pub(crate) record: Record,
    /// Announcements Redis could not take yet, oldest first.
    pub(crate) republish: VecDeque<Announcement>,
    /// A registry write failed: re-assert at the next renewal.
    pub(crate) dirty: bool,
    /// Rooms whose snapshot could not be sent at the last resync.
    pub(crate) unsynced: BTreeSet<RoomName>,
    /// When the lease was last renewed (or tried): a long batch renews on time too.
    pub(crate) renewed_at: tokio::time::Instant,
}

impl Bus {
    /// Runs until `ops` is closed, then leaves the cluster.
    pub(crate) async fn run(
        mut self,
        mut ops: ClusterOps,
        mut wake: mpsc::UnboundedReceiver<Wake>,
    ) {
        self.start().await;
        let mut renew = tokio::time::interval(self.config.renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        loop {
            tokio::select! {
                op = ops.recv() => {
                    let Some(op) = op else { break };
                    let mut batch = vec![op];
                    while batch.len() < BATCH
                        && let Some(op) = ops.try_recv()
                    {
                        batch.push(op);
                    }
                    self.perform(batch).await;
                }
                Some(reason) = wake.recv() => {
                    debug!(?reason, "cluster bus woken");
                    if reason == Wake::Reaped {
                        self.dirty = true;
                    }
                    let resynced = self.renew().await;
                    if reason == Wake::Resync && !resynced {
                        let rooms = self.record.rooms.clone();
                        self.sync_rooms(rooms).await;
                    }
                }
                _ = renew.tick() => {
                    self.renew().await;
                }
            }
        }
        self.leave().await;
    }

    /// Clears what a previous process with this node id left (a restart reusing the
    /// id), then registers the lease.
    async fn start(&mut self) {
        let node = self.node.as_str().to_owned();
        match self.timed(self.registry.reap(&node, true)).await {
            Ok(Reaped::Removed(n)) if n > 0 => {
                info!(
                    entries = n,
                    "cleared what a previous run of this node id left"
                )
            }
            Ok(_) => {}
            Err(e) => self.failed("clear previous run", &e),
        }
        self.renew().await;
    }

    /// Leaves the cluster: every entry of this node removed, `node_down` announced.
    async fn leave(&mut self) {
        self.flush_republish().await;
        let node = self.node.as_str().to_owned();
        match self.timed(self.registry.reap(&node, true)).await {
            Ok(_) => info!("left the cluster"),
            Err(e) => warn!(
                error = %e,
                "could not leave the cluster cleanly; other nodes reap this one when its lease expires"
            ),
        }
        self.state.lease_lost();
    }

    /// Bounds one registry call: the connection manager's own timeouts apply per
    /// attempt; this bounds the whole (a reconnect included).
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, BusError>>,
    ) -> Result<T, BusError> {
        let limit = self.config.command_timeout + self.config.connect_timeout;
        match tokio::time::timeout(limit, f).await {
            Ok(result) => {
                if result.is_ok() {
                    self.state.command_ok();
                }
                result
            }
            Err(_) => Err(BusError::Redis(redis::RedisError::from(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from Redis within {limit:?}"),
                ),
            ))),
        }
    }

    /// Notes a failed registry operation: health, log, and a re-assert later.
    fn failed(&mut self, what: &str, e: &BusError) {
        self.dirty = true;
        self.state.command_failed(&format_args!("{what}: {e}"));
        warn!(error = %e, "cluster bus: {what} failed");
    }

    async fn reply(&self, ticket: chat_core::Ticket, reply: ClusterReply) {
        let _ = self
            .events
            .send(ClusterEvent::Reply { ticket, reply })
            .await;
    }

    fn envelope(&self, body: Body) -> String {
        Envelope::new(self.node.as_str(), body).encode()
    }

    /// Performs `batch` in order.
    async fn perform(&mut self, batch: Vec<ClusterOp>) {
        let keys = self.registry.keys().clone();
        let mut publishes = Vec::new();
        for op in batch {
            match op {
                ClusterOp::Message { room, message } => publishes.push(Publish::new(
                    keys.room_channel(&room),
                    self.envelope(Body::Message(WireMessage::from(&*message))),
                    true,
                )),
                ClusterOp::Typing {
                    room,
                    user,
                    name,
                    on,
                } => publishes.push(Publish::new(
                    keys.room_channel(&room),
                    self.envelope(Body::Typing {
                        room: room.as_str().to_owned(),
                        user: user.as_str().to_owned(),
                        name: name.to_string(),
                        on,
                    }),
                    false,
                )),
                ClusterOp::Dm { message } => {
                    // On each user's channel and in each user's DM stream (the DM
                    // script), so a node that was not listening can read it back.
                    let payload = self.envelope(Body::Dm(WireDm::from(&*message)));
                    let users = if message.from == message.to {
                        vec![&message.to]
                    } else {
                        vec![&message.from, &message.to]
                    };
                    for user in users {
                        publishes.push(Publish {
                            announcement: Announcement {
                                channel: keys.user_channel(user),
                                payload: payload.clone(),
                                dm_stream: Some(keys.dm_stream(user)),
                            },
                            retry: true,
                        });
                    }
                }
                other => {
                    self.publish(std::mem::take(&mut publishes)).await;
                    self.perform_one(other).await;
                    // Ops that wait (a subscription while the subscriber reconnects) must
                    // not let the lease run out.
                    if self.renewed_at.elapsed() >= self.config.renew_every {
                        self.renew().await;
                    }
                }
            }
        }
        self.publish(publishes).await;
    }

    /// Publishes announcements in order, after any still waiting to be re-published.
    async fn publish(&mut self, publishes: Vec<Publish>) {
        if publishes.is_empty() {
            return;
        }
        let count = publishes.len() as u64;
        if self.republish.is_empty() {
            let batch: Vec<Announcement> =
                publishes.iter().map(|p| p.announcement.clone()).collect();
            match self.timed(self.registry.publish(&batch)).await {
                Ok(()) => {
                    bump(&self.state.counters.published, count);
                    return;
                }
                Err(e) => {
                    self.state
                        .command_failed(&format_args!("publishing announcements: {e}"));
                    debug!(error = %e, "announcements kept for re-publishing");
                }
            }
        }
        for p in publishes.into_iter().filter(|p| p.retry) {
            self.keep_for_republish(p.announcement);
        }
        // Redis may be back already (the failure above was this batch's own).
        self.flush_republish().await;
    }

    fn keep_for_republish(&mut self, announcement: Announcement) {
        self.republish.push_back(announcement);
        while self.republish.len() > self.config.republish_buffer {
            self.republish.pop_front();
            bump(&self.state.counters.dropped, 1);
        }
    }

    /// Publishes what is waiting for re-publishing, in order, while Redis takes it.
    async fn flush_republish(&mut self) {
        while !self.republish.is_empty() {
            let n = self.republish.len().min(BATCH);
            let batch: Vec<Announcement> = self.republish.iter().take(n).cloned().collect();
            match self.timed(self.registry.publish(&batch)).await {
                Ok(()) => {
                    self.republish.drain(..n);
                    bump(&self.state.counters.published, n as u64);
                    bump(&self.state.counters.republished, n as u64);
                }
                Err(_) => return,
            }
        }
    }

    async fn perform_one(&mut self, op: ClusterOp) {
        match op {
            ClusterOp::Subscribe { room } => self.subscribe(room).await,
            ClusterOp::Unsubscribe { room } => {
                self.record.rooms.remove(&room);
                self.unsynced.remove(&room);
                let _ = self.control.send(Control::Unsubscribe(
                    self.registry.keys().room_channel(&room),
                ));
            }
            ClusterOp::Joined { room, user, name } => {
                self.record
                    .members
                    .insert((room.clone(), user.clone()), Arc::clone(&name));
                self.join(&room, &user, &name).await;
            }
            ClusterOp::Left { room, user } => {
                self.record.members.remove(&(room.clone(), user.clone()));
                let envelope = self.envelope(Body::Left {
                    room: room.as_str().to_owned(),
                    user: user.as_str().to_owned(),
                });
                match self
                    .timed(self.registry.leave(&room, &user, &envelope))
                    .await
                {
                    Ok(_) => bump(&self.state.counters.published, 1),
                    Err(e) => self.failed("leave", &e),
                }
            }
            ClusterOp::UserOnline { user, name } => {
                let entry = self.record.users.entry(user.clone()).or_default();
                entry.online = true;
                if name.is_some() {
                    entry.name = name;
                }
                // Subscribed (and placed at the end of the user's DM stream) before the
                // op counts as done: a DM stored after it reaches this node, live or
                // read back after a resubscription.
                let keys = self.registry.keys();
                let (channel, stream) = (keys.user_channel(&user), keys.dm_stream(&user));
                if !self.subscribed_dms(channel, stream).await {
                    warn!(%user, "DM channel not subscribed yet (the subscriber is reconnecting)");
                }
                self.online(&user).await;
            }
            ClusterOp::UserOffline { user } => {
                self.record.users.remove(&user);
                if let Err(e) = self.timed(self.registry.offline(&user)).await {
                    self.failed("user offline", &e);
                }
                let _ = self.control.send(Control::Unsubscribe(
                    self.registry.keys().user_channel(&user),
                ));
            }
            ClusterOp::ClaimName {
                ticket,
                user,
                candidates,
            } => {
                let reply = match self
                    .with_lease(|r| {
                        let (user, candidates) = (user.clone(), candidates.clone());
                        async move { r.claim(&user, &candidates, false).await }
                    })
                    .await
                {
                    Ok(Some(won)) => {
                        let name = candidates.get(won).cloned();
                        self.record.users.entry(user).or_default().name = name.clone();
                        ClusterReply::Name(name)
                    }
                    Ok(None) => ClusterReply::Name(None),
                    Err(e) => {
                        self.failed("claim a name", &e);
                        ClusterReply::Failed
                    }
                };
                self.reply(ticket, reply).await;
            }
            ClusterOp::ReleaseName { user, name } => {
                if let Some(entry) = self.record.users.get_mut(&user)
                    && entry.name.as_ref() == Some(&name)
                {
                    entry.name = None;
                }
                if let Err(e) = self.timed(self.registry.release(&user, &name)).await {
                    self.failed("release a name", &e);
                }
            }
            ClusterOp::LookupUser { ticket, user } => {
                let reply = match self.timed(self.registry.lookup(&user)).await {
                    Ok(name) => ClusterReply::User(name.map(Arc::from)),
                    Err(e) => {
                        self.state
                            .command_failed(&format_args!("look up a user: {e}"));
                        ClusterReply::Failed
                    }
                };
                self.reply(ticket, reply).await;
            }
            // The announcements are batched by `perform`; a new op kind is logged until
            // this bus learns it.
            other => warn!(op = other.kind(), "cluster op not supported by this bus"),
        }
    }

    /// Runs a lease-checked registry write; if the lease turned out lost, renews (and
    /// re-asserts) once and tries again.
    async fn with_lease<T, F, Fut>(&mut self, call: F) -> Result<T, BusError>
    where
        F: Fn(Registry) -> Fut,
        Fut: std::future::Future<Output = Result<T, BusError>>,
    {
        match self.timed(call(self.registry.clone())).await {
            Err(BusError::LeaseLost) => {
                self.dirty = true;
                self.renew().await;
                self.timed(call(self.registry.clone())).await
            }
            other => other,
        }
    }

    async fn join(&mut self, room: &RoomName, user: &UserId, name: &Arc<str>) {
        let envelope = self.envelope(Body::Joined {
            room: room.as_str().to_owned(),
            user: user.as_str().to_owned(),
            name: name.to_string(),
        });
        let result = self
            .with_lease(|r| {
                let (room, user, name, envelope) =
                    (room.clone(), user.clone(), name.clone(), envelope.clone());
                async move { r.join(&room, &user, &name, &envelope).await }
            })
            .await;
        match result {
            Ok(()) => bump(&self.state.counters.published, 1),
            Err(e) => self.failed("join", &e),
        }
    }

    async fn online(&mut self, user: &UserId) {
        let name = self.record.display_name(user);
        let result = self
            .with_lease(|r| {
                let (user, name) = (user.clone(), name.clone());
                async move { r.online(&user, &name).await }
            })
            .await;
        if let Err(e) = result {
            self.failed("user online", &e);
        }
    }

    /// Subscribes to `room`'s channel, then has its member snapshot published on this
    /// node's channel (the subscriber turns it into `RoomMembers`).
    async fn subscribe(&mut self, room: RoomName) {
        self.record.rooms.insert(room.clone());
        let channel = self.registry.keys().room_channel(&room);
        let ok = self.subscribed(channel).await
            && match self.timed(self.registry.sync(&room)).await {
                Ok(n) => n > 0,
                Err(e) => {
                    self.state
                        .command_failed(&format_args!("room snapshot: {e}"));
                    false
                }
            };
        if !ok {
            // Kept subscribed: the next resync sends the snapshot once the bus is back.
            self.unsynced.insert(room.clone());
            let _ = self
                .events
                .send(ClusterEvent::RoomUnavailable { room })
                .await;
        }
    }

    /// Has the subscriber subscribe to `channel`; true once it is active, false if that
    /// did not happen in time (it stays asked for: the next connection has it).
    async fn subscribed(&mut self, channel: String) -> bool {
        let (ack, subscribed) = oneshot::channel();
        let _ = self.control.send(Control::Subscribe(channel, Some(ack)));
        let limit = self.config.command_timeout + self.config.connect_timeout;
        matches!(tokio::time::timeout(limit, subscribed).await, Ok(Ok(())))
    }

    /// [`subscribed`](Self::subscribed) for a user's DM channel, whose DM `stream` the
    /// subscriber reads back after every resubscription.
    async fn subscribed_dms(&mut self, channel: String, stream: String) -> bool {
        let (ack, subscribed) = oneshot::channel();
        let _ = self.control.send(Control::SubscribeDms {
            channel,
            stream,
            ack,
        });
        // The answer follows a subscription and a stream read (bounded at twice the
        // command timeout).
        let limit = self.config.command_timeout * 3 + self.config.connect_timeout;
        matches!(tokio::time::timeout(limit, subscribed).await, Ok(Ok(())))
    }

    /// Renews the lease; re-asserts when it was lost or a write failed; reaps expired
    /// nodes; retries pending snapshots and announcements.
    /// Returns whether every room's snapshot was sent again (after a re-assert).
    async fn renew(&mut self) -> bool {
        self.renewed_at = tokio::time::Instant::now();
        let lease_ms = u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX);
        let renewal = match self.timed(self.registry.renew(lease_ms)).await {
            Ok(renewal) => renewal,
            Err(e) => {
                // Re-assert at the next renewal even if it finds the lease alive: this
                // one may still run late (a stalled connection delivers it after the
                // lease lapsed and this node was reaped) and make the lease look
                // continuous when the entries are gone.
                self.dirty = true;
                self.state
                    .command_failed(&format_args!("renew the lease: {e}"));
                warn!(error = %e, "cluster bus: cannot renew the lease");
                return false;
            }
        };
        self.state.renewed();
        let mut resynced = false;
        if !renewal.was_alive || self.dirty {
            resynced = self.reassert().await;
        }
        self.flush_republish().await;
        if !self.unsynced.is_empty() {
            let rooms = std::mem::take(&mut self.unsynced);
            self.sync_rooms(rooms).await;
        }
        for node in renewal.expired {
            match self.timed(self.registry.reap(&node, false)).await {
                Ok(Reaped::Removed(entries)) => {
                    bump(&self.state.counters.reaped, 1);
                    info!(%node, entries, "reaped a node whose lease expired");
                }
                Ok(_) => {}
                Err(e) => warn!(%node, error = %e, "cannot reap an expired node"),
            }
        }
        resynced
    }

    /// Makes the registry hold exactly this node's record again, then resends every
    /// room's snapshot. Stops at the first failure (still dirty: the next renewal
    /// tries again).
    /// Returns whether it got as far as resending the snapshots.
    async fn reassert(&mut self) -> bool {
        bump(&self.state.counters.reasserts, 1);
        match self.reassert_entries().await {
            Ok(()) => {
                self.dirty = false;
                info!(
                    members = self.record.members.len(),
                    users = self.record.users.len(),
                    "re-asserted this node's registry entries"
                );
            }
            Err(e) => {
                self.failed("re-assert", &e);
                return false;
            }
        }
        let rooms = self.record.rooms.clone();
        self.sync_rooms(rooms).await;
        true
    }

    async fn reassert_entries(&mut self) -> Result<(), BusError> {
        let registry = self.registry.clone();
        // Entries Redis holds for this node that the node no longer does.
        for (room, user) in self.timed(registry.own_members()).await? {
            let (Ok(room), Ok(user)) = (crate::envelope::room(&room), crate::envelope::user(&user))
            else {
                continue;
            };
            if !self
                .record
                .members
                .contains_key(&(room.clone(), user.clone()))
            {
                let envelope = self.envelope(Body::Left {
                    room: room.as_str().to_owned(),
                    user: user.as_str().to_owned(),
                });
                self.timed(registry.leave(&room, &user, &envelope)).await?;
            }
        }
        for user in self.timed(registry.own_users()).await? {
            let Ok(user) = crate::envelope::user(&user) else {
                continue;
            };
            if !self.record.users.contains_key(&user) {
                self.timed(registry.offline(&user)).await?;
            }
        }
        // Everything the node holds, written (and announced) again.
        let users: Vec<_> = self.record.users.clone().into_iter().collect();
        for (user, entry) in users {
            if let Some(name) = &entry.name {
                self.timed(registry.claim(&user, std::slice::from_ref(name), true))
                    .await?;
            }
            if entry.online {
                let name = self.record.display_name(&user);
                self.timed(registry.online(&user, &name)).await?;
            }
        }
        let members: Vec<_> = self.record.members.clone().into_iter().collect();
        for ((room, user), name) in members {
            let envelope = self.envelope(Body::Joined {
                room: room.as_str().to_owned(),
                user: user.as_str().to_owned(),
                name: name.to_string(),
            });
            self.timed(registry.join(&room, &user, &name, &envelope))
                .await?;
        }
        Ok(())
    }

    /// Has the snapshot of each of `rooms` published on this node's channel; rooms
    /// that fail are retried at the next renewal.
    async fn sync_rooms(&mut self, rooms: BTreeSet<RoomName>) {
        for room in rooms {
            if !self.record.rooms.contains(&room) {
                continue;
            }
            match self.timed(self.registry.sync(&room)).await {
                Ok(n) if n > 0 => {}
                // Nobody listening: the subscriber is reconnecting and resyncs after.
                Ok(_) => {}
                Err(e) => {
                    self.state
                        .command_failed(&format_args!("room snapshot: {e}"));
                    self.unsynced.insert(room);
                }
            }
        }
    }
}
