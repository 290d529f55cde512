//! # chat-redis
//!
//! A Redis bus for `chat-core` clusters: several server processes behind a load
//! balancer share rooms, presence, usernames and direct messages. [`RedisCluster`]
//! implements [`chat_core::Cluster`]; give it to the server
//! ([`Server::with_cluster`](chat_core::Server::with_cluster)) together with a store
//! that every node shares (`chat-postgres-store`). PostgreSQL stays the source of truth
//! for messages and their `seq`; Redis carries announcements and a registry of who is
//! where. No sticky sessions are needed: a client may reconnect to any node and resume
//! with `since`/`epoch`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use chat_redis::{RedisCluster, RedisClusterConfig};
//!
//! # async fn start() -> Result<(), chat_redis::ConnectError> {
//! let bus = RedisCluster::connect(
//!     RedisClusterConfig::new("redis://127.0.0.1:6379").node_id("node-a"),
//! )
//! .await?;
//! let bus: Arc<dyn chat_core::Cluster> = Arc::new(bus);
//! # drop(bus);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! * **Announcements** travel on Redis pub/sub, one message per event per node that
//!   subscribed: a node subscribes only to the rooms its connections are in and the
//!   users it has online. A room message is published once, after the store
//!   acknowledged it; every node with members in the room delivers it in `seq` order.
//!   Pub/sub is at-most-once: a node that misses messages (Redis restarted, its
//!   subscriber was dropped or cut off, it was paused) resubscribes and gets the room's
//!   member snapshot again, which makes the engine read what it missed from the store
//!   before delivering anything newer. A message published while Redis was away is
//!   kept by its origin and published again when Redis is back.
//! * **The registry** (who is in which room on which node, who is online where, who
//!   holds which name) is changed only by Lua scripts, each atomic. Every node holds a
//!   **lease** it renews every `renew_every`; a node that stops renewing (crash,
//!   partition, pause) is **reaped** by the first other node that notices: its room
//!   entries are removed (announcing `left`), its users' names released and
//!   `node_down` announced. A crashed node's users leave every member list within
//!   `lease + renew_every` (10 s + 2.5 s by default, so ≤ 15 s). A clean shutdown reaps
//!   the node at once.
//! * **Repairs.** Each node keeps its own record of what it holds. When it finds its
//!   lease gone (Redis lost its data, or it was paused long enough to be reaped) or a
//!   write of it failed, it writes its record again (announcing its members again), so
//!   the registry heals without anyone's help. A node whose lease has run out cannot
//!   write registry entries (the scripts refuse), so a node waking from a pause cannot
//!   resurrect what was reaped before it re-registers.
//! * **Usernames** are claimed in one script (`names`: name key → user, where the key
//!   is `Username::key`, so confusable spellings collide): two nodes claiming one name
//!   at the same moment cannot both win. A rename claims the new name, then releases
//!   the old; whatever a user holds is released when its last node lets it go (or is
//!   reaped).
//! * **Room snapshots are ordered with the room's stream.** The script that reads a
//!   room's members publishes the snapshot on the asking node's own channel in the
//!   same atomic step; Redis delivers a subscriber's messages in publish order, so the
//!   snapshot arrives after exactly the announcements it reflects.
//! * **DMs have a backlog.** A DM is announced on each of its users' channels by a
//!   script that first appends it to the user's DM stream (`XADD … MAXLEN ~
//!   dm_backlog`, expiring `dm_backlog_ttl` after the last DM) and publishes the
//!   entry's id with it. Each node keeps, per local user, the last entry it handed to
//!   its engine; after every (re)subscription it reads the streams after those
//!   entries (64 users per round trip, 100 entries per read, at most `dm_backlog` per
//!   user) and hands what it finds to the engine as ordinary DMs, each stream in
//!   order, before the new subscription's live messages. A DM that arrives twice
//!   (both users local, or read back and live) is delivered once: the subscriber and
//!   the engine drop DM ids they have seen.
//!
//! # Redis layout (prefix `chat:` by default, [`RedisClusterConfig::prefix`])
//!
//! | key / channel | type | contents |
//! |---|---|---|
//! | `chat:nodes` | ZSET | node → lease deadline (ms, Redis `TIME`) |
//! | `chat:node:{node}:members` | SET | `room\0user` entries the node announced |
//! | `chat:node:{node}:users` | SET | users the node has online or claimed a name for |
//! | `chat:room:{room}:members` | HASH | `node\0user` → display name |
//! | `chat:user:{user}` | HASH | node → display name (where the user is online) |
//! | `chat:names` | HASH | name key → user id (cluster-wide unique names) |
//! | `chat:unames:{user}` | SET | the name keys the user holds (released with its last node) |
//! | `chat:r:{room}` | channel | `joined`, `left`, `message`, `typing` of the room |
//! | `chat:dms:{user}` | STREAM | DM announcements to or from the user (`e` → envelope); about `dm_backlog` (at least that many) kept, expires `dm_backlog_ttl` after the last |
//! | `chat:u:{user}` | channel | `dm` to or from the user (with `sid`, its entry id in `chat:dms:{user}`) |
//! | `chat:n:{node}` | channel | the node's own room snapshots (`members`) |
//! | `chat:cluster` | channel | `node_down` |
//!
//! Messages are JSON objects `{"from": NODE, "kind": …}`; a node ignores its own.
//! Streams need Redis ≥ 5 (the scripts use effects replication, the default since 5).
//!
//! # Metrics
//!
//! [`BusStats`] are what [`RedisCluster::stats`] returns and what the server's
//! `/metrics` shows through [`Cluster::counters`] as `chat_cluster_bus_<field>_total`
//! (`chat_cluster_bus_published_total`, `…_resyncs_total`, `…_reasserts_total`,
//! `…_hub_timeouts_total`, `…_dm_recovered_total`…), one set per node. The
//! reaping script builds keys from the prefix, so the cluster needs one Redis (or one
//! shard with replicas), not Redis Cluster.
//!
//! # What a client sees during a fault
//!
//! * **A node crashes:** its clients reconnect (to any node) and resume with
//!   `since`/`epoch`, losing nothing that was acknowledged. Its users stay listed
//!   elsewhere until they are reaped (≤ `lease + renew_every`), then `user_left`.
//! * **Redis restarts or drops a subscriber:** live delivery between nodes pauses;
//!   when the bus is back, every room is resynchronised and missed messages arrive in
//!   order, without gap or duplicate. Members on other nodes may briefly appear to
//!   leave and come back (`user_left`, then `user_joined`) while the nodes re-assert
//!   their entries. Joins, name changes and DMs to users on other nodes fail with
//!   `cluster_unavailable` while Redis is unreachable; messages within a room keep
//!   being stored and are delivered to other nodes once it is back.
//! * **DMs missed live are read back:** a DM announced while a node's subscriber is
//!   away (reconnecting, dropped by Redis, cut off, or the server fell behind) is in
//!   its users' DM streams; after resubscribing the node reads each local user's
//!   stream after the last entry it handed over and delivers what it missed, in
//!   order, before newer DMs. Still missed (only `dm_history` has them): more than
//!   `dm_backlog` (1000) DMs to or from one user during one outage of a node (the
//!   oldest are trimmed), a missed DM whose stream expired before the node came back
//!   (`dm_backlog_ttl`, 1 h after the user's last DM), everything while Redis itself
//!   lost its data (a restart without persistence: the DMs stored while it was away
//!   are announced again by their origin, but those announced before it died are
//!   gone with it), and DMs to a user whose stream position could not be read when
//!   it came online (Redis failing at that moment) that arrive before its first live
//!   DM or the next resubscription.
//! * **A node is paused** (GC, SIGSTOP) past its lease: the others reap it (its users
//!   leave their lists); when it resumes it notices, re-registers and re-announces its
//!   users, and catches up on what it missed from the store.
#![warn(missing_docs)]

mod bus;
mod config;
mod dm_stream;
mod envelope;
mod error;
mod health;
mod keys;
mod record;
mod registry;
mod scripts;
mod subscriber;
#[cfg(test)]
mod testing;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use chat_core::{BusCounter, Cluster, ClusterEvents, ClusterHealth, ClusterOps, NodeId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

pub use config::RedisClusterConfig;
pub use error::{ConfigError, ConnectError};
pub use health::BusStats;

use crate::bus::Bus;
use crate::health::BusState;
use crate::keys::Keys;
use crate::record::Record;
use crate::registry::Registry;
use crate::subscriber::Subscriber;

/// A node's bus to a Redis-backed cluster (see the crate docs).
pub struct RedisCluster {
    node: NodeId,
    config: RedisClusterConfig,
    client: redis::Client,
    registry: Registry,
    state: Arc<BusState>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node", &self.node)
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCluster {
    /// Checks the configuration and connects to Redis (the node joins the cluster when
    /// the server runs the bus). Fails if Redis cannot be reached now: a node that
    /// starts without its bus would be a cluster of one without knowing it.
    pub async fn connect(config: RedisClusterConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let node = match &config.node_id {
            Some(id) => NodeId::parse(id).map_err(|_| ConfigError::NodeId(id.clone()))?,
            None => NodeId::parse(&format!("node-{}", uuid::Uuid::new_v4().simple()))
                .map_err(|_| ConfigError::NodeId("random".into()))?,
        };
        let client = redis::Client::open(config.url.as_str()).map_err(ConnectError::Url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_min_delay(config.reconnect_min)
            .set_max_delay(config.reconnect_max)
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), manager)
            .await
            .map_err(ConnectError::Redis)?;
        let registry = Registry::new(conn, Keys::new(&config.prefix), node.as_str().to_owned())
            .with_dm_backlog(config.dm_backlog, config.dm_backlog_ttl);
        let state = Arc::new(BusState::new(node.clone(), config.lease));
        Ok(Self {
            node,
            config,
            client,
            registry,
            state,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RedisClusterConfig {
        &self.config
    }

    /// Counters since this node connected.
    pub fn stats(&self) -> BusStats {
        self.state.stats()
    }
}

/// Aborts the subscriber task when the bus ends (or its future is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[chat_core::async_trait]
impl Cluster for RedisCluster {
    fn node(&self) -> &NodeId {
        &self.node
    }

    async fn run(&self, ops: ClusterOps, events: ClusterEvents) {
        let keys = self.registry.keys();
        let (control, control_rx) = mpsc::unbounded_channel();
        let (wake, wake_rx) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            client: self.client.clone(),
            node: self.node.clone(),
            fixed_channels: vec![
                keys.cluster_channel(),
                keys.node_channel(self.node.as_str()),
            ],
            command_timeout: self.config.command_timeout,
            reconnect_min: self.config.reconnect_min,
            reconnect_max: self.config.reconnect_max,
            ping_every: self.config.ping_every,
            hub_patience: self.config.hub_patience,
            dm_backlog: self.config.dm_backlog,
            state: Arc::clone(&self.state),
            registry: self.registry.clone(),
        };
        let _subscriber = AbortOnDrop(tokio::spawn(subscriber.run(
            control_rx,
            wake,
            events.clone(),
        )));
        let bus = Bus {
            registry: self.registry.clone(),
            node: self.node.clone(),
            config: self.config.clone(),
            state: Arc::clone(&self.state),
            control,
            events,
            record: Record::default(),
            republish: VecDeque::new(),
            dirty: false,
            unsynced: BTreeSet::new(),
            renewed_at: tokio::time::Instant::now(),
        };
        bus.run(ops, wake_rx).await;
    }

    fn health(&self) -> ClusterHealth {
        self.state.health()
    }

    /// [`BusStats`], as `chat_cluster_bus_<field>_total`.
    fn counters(&self) -> Vec<BusCounter> {
        self.stats().counters()
    }
}
