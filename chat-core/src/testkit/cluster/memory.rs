//! [`MemoryCluster`]: an in-process cluster bus for several [`Server`](crate::Server)s in
//! one process, with the semantics of a real one ([`BusCore`]) and fault knobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::core::{BusCore, Delivery};
use crate::cluster::{ClusterEvent, NodeId};
use crate::ids::RoomName;
use crate::ids::UserId;
use crate::runtime::{Cluster, ClusterEvents, ClusterHealth, ClusterOps};

#[derive(Debug, Default)]
struct Shared {
    core: BusCore,
    /// Each running node's inbox.
    inboxes: HashMap<NodeId, mpsc::UnboundedSender<ClusterEvent>>,
}

impl Shared {
    fn route(&self, out: Vec<Delivery>) {
        for (node, event) in out {
            if let Some(inbox) = self.inboxes.get(&node) {
                // A node whose `run` ended takes nothing any more.
                let _ = inbox.send(event);
            }
        }
    }
}

/// The bus several [`MemoryCluster`] nodes share. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Mutex<Shared>>,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Plain data; a panic elsewhere cannot leave it torn.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A node of this bus named `id` (panics on an invalid id: test input).
    pub fn node(&self, id: &str) -> Arc<MemoryCluster> {
        let id = NodeId::parse(id).expect("a valid node id");
        self.lock().core.add_node(&id);
        Arc::new(MemoryCluster {
            id,
            bus: self.clone(),
        })
    }

    /// Drops the next `n` announcements meant for `node` (a lost pub/sub message).
    pub fn drop_next(&self, node: &NodeId, n: usize) {
        self.lock().core.drop_next(node, n);
    }

    /// Cuts `node` off the bus: its announcements and registry writes are lost, its
    /// requests fail, nothing reaches it; its health reports it disconnected.
    pub fn disconnect(&self, node: &NodeId) {
        self.lock().core.disconnect(node);
    }

    /// Reconnects `node`: it re-asserts what it holds, and resyncs each of its rooms
    /// (`RoomMembers`, which makes the engine read what it missed from the store).
    pub fn reconnect(&self, node: &NodeId) {
        let mut shared = self.lock();
        let out = shared.core.reconnect(node);
        shared.route(out);
    }

    /// Reaps `node` as if its lease had expired (a crashed or paused node): the others
    /// get `NodeDown`; the node is cut off until [`reconnect`](Self::reconnect)ed.
    pub fn declare_down(&self, node: &NodeId) {
        let mut shared = self.lock();
        let out = shared.core.declare_down(node);
        shared.route(out);
    }

    /// Whether `node` is in the registry (it has not left or been reaped).
    pub fn is_alive(&self, node: &NodeId) -> bool {
        self.lock().core.is_alive(node)
    }

    /// Who holds the name with `key` (see `Username::key`), if anyone.
    pub fn name_holder(&self, key: &str) -> Option<UserId> {
        self.lock().core.name_holder(key).cloned()
    }

    /// The registry's members of `room`, as (node, user).
    pub fn room_members(&self, room: &RoomName) -> Vec<(NodeId, UserId)> {
        self.lock().core.room_members(room)
    }
}

/// One node's link to a [`MemoryBus`]: give it to
/// [`Server::with_cluster`](crate::Server::with_cluster).
#[derive(Debug)]
pub struct MemoryCluster {
    id: NodeId,
    bus: MemoryBus,
}

#[async_trait::async_trait]
impl Cluster for MemoryCluster {
    fn node(&self) -> &NodeId {
        &self.id
    }

    async fn run(&self, mut ops: ClusterOps, events: ClusterEvents) {
        let (tx, mut inbox) = mpsc::unbounded_channel();
        {
            let mut shared = self.bus.lock();
            shared.core.add_node(&self.id);
            shared.inboxes.insert(self.id.clone(), tx);
        }
        loop {
            tokio::select! {
                biased;
                op = ops.recv() => match op {
                    Some(op) => {
                        let mut shared = self.bus.lock();
                        let out = shared.core.perform(&self.id, op);
                        shared.route(out);
                    }
                    None => break,
                },
                Some(event) = inbox.recv() => {
                    if events.send(event).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Leave cleanly: everything this node held goes, the others hear it at once.
        let mut shared = self.bus.lock();
        shared.inboxes.remove(&self.id);
        let out = shared.core.declare_down(&self.id);
        shared.route(out);
    }

    fn health(&self) -> ClusterHealth {
        let shared = self.bus.lock();
        let mut health = ClusterHealth::new(self.id.clone());
        health.connected = shared.core.is_connected(&self.id);
        health.lease_alive = shared.core.is_alive(&self.id);
        if !health.connected {
            health.last_error = Some(Arc::from("disconnected (MemoryBus fault knob)"));
        }
        health
    }
}
