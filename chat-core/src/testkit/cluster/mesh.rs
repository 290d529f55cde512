//! [`Mesh`]: several engines wired into one cluster by hand — a shared
//! [`SimStore`], a [`BusCore`] between them — deterministic like [`Sim`](super::super::sim::Sim):
//! no tokio, no clock, and the bus moves only when the test calls [`Mesh::settle`].
//!
//! Store requests are performed at once; cluster ops queue until `settle`, so two
//! nodes' requests issued before it race exactly as they would on a real bus (performed
//! in the order they were emitted, node by node).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::core::{BusCore, Delivery};
use crate::cluster::{ClusterOp, NodeId};
use crate::engine::{Config, Engine, Identity, Input, Output};
use crate::ids::{ConnId, IdGenerator, UserId, Username};
use crate::protocol::{Decoded, decode_frame};
use crate::testkit::sim::{Clients, Frame, SimStore};
use crate::transport::CloseCode;

/// Anonymous user ids unique across the mesh's nodes.
#[derive(Debug)]
struct NodeIds {
    node: u128,
    next: u128,
}

impl IdGenerator for NodeIds {
    fn user_id(&mut self) -> UserId {
        self.next += 1;
        UserId::from(uuid::Uuid::from_u128(((self.node + 1) << 64) | self.next))
    }
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    /// `None` once crashed.
    engine: Option<Engine>,
}

/// A deterministic cluster of engines: a shared [`SimStore`], a [`BusCore`] between
/// them, no tokio, no clock. Store requests are performed at once; cluster ops queue
/// until [`settle`](Self::settle), so requests two nodes issue before it race exactly
/// as on a real bus (performed in the order they were emitted).
#[derive(Debug)]
pub struct Mesh {
    /// The store every node shares.
    pub store: SimStore,
    /// The bus between the nodes (its fault knobs included).
    pub bus: BusCore,
    /// The simulated time.
    pub now: Instant,
    nodes: Vec<Node>,
    /// Ops emitted and not yet performed by the bus, with their node.
    ops: VecDeque<(usize, ClusterOp)>,
    owner: HashMap<ConnId, usize>,
    clients: Clients,
    next_conn: u64,
}

impl Mesh {
    /// `nodes` engines with `config` (made cluster nodes), named `n0`, `n1`…
    #[allow(clippy::disallowed_methods)] // the simulation's one clock read: a base instant
    pub fn new(nodes: usize, mut config: Config) -> Self {
        config.cluster = true;
        let mut bus = BusCore::default();
        let nodes = (0..nodes)
            .map(|i| {
                let id = NodeId::parse(&format!("n{i}")).expect("valid node id");
                bus.add_node(&id);
                let ids = NodeIds {
                    node: i as u128,
                    next: 0,
                };
                Node {
                    id,
                    engine: Some(Engine::new(config.clone(), Box::new(ids))),
                }
            })
            .collect();
        Mesh {
            store: SimStore::default(),
            bus,
            now: Instant::now(),
            nodes,
            ops: VecDeque::new(),
            owner: HashMap::new(),
            clients: Clients::default(),
            next_conn: 0,
        }
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.nodes[i].id.clone()
    }

    /// Node `i`'s engine (panics once it crashed).
    pub fn engine(&self, i: usize) -> &Engine {
        self.nodes[i].engine.as_ref().expect("the node is running")
    }

    /// Opens an anonymous connection on node `node`.
    pub fn connect(&mut self, node: usize) -> ConnId {
        self.connect_with(node, None)
    }

    /// Opens an authenticated connection on `node` for `user` named `name`.
    pub fn connect_as(&mut self, node: usize, user: &str, name: &str) -> ConnId {
        let identity = Identity {
            user_id: UserId::parse(user).expect("valid test user id"),
            username: Username::parse(name).expect("valid test username"),
        };
        self.connect_with(node, Some(identity))
    }

    fn connect_with(&mut self, node: usize, identity: Option<Identity>) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.owner.insert(conn, node);
        self.clients.open(conn);
        self.input(node, Input::Connected { conn, identity });
        conn
    }

    /// Sends a JSON value as a text frame through the real decoder.
    pub fn send(&mut self, conn: ConnId, frame: Value) {
        let node = self.owner[&conn];
        let Decoded { command, reference } = decode_frame(frame.to_string().as_bytes());
        let input = match command {
            Ok(command) => Input::Command {
                conn,
                command,
                reference,
            },
            Err(error) => Input::Malformed {
                conn,
                error,
                reference,
            },
        };
        self.input(node, input);
    }

    /// Reports a connection as gone.
    pub fn disconnect(&mut self, conn: ConnId) {
        let node = self.owner[&conn];
        self.input(node, Input::Disconnected { conn });
    }

    /// Feeds `input` to node `node` and carries out its outputs (cluster ops wait for
    /// [`settle`](Self::settle)).
    pub fn input(&mut self, node: usize, input: Input) {
        let Some(engine) = self.nodes[node].engine.as_mut() else {
            return;
        };
        engine.handle(self.now, input);
        self.pump(node);
    }

    fn pump(&mut self, node: usize) {
        loop {
            let Some(engine) = self.nodes[node].engine.as_mut() else {
                return;
            };
            let Some(output) = engine.poll_output() else {
                return;
            };
            match output {
                Output::Deliver { to, event } => self.clients.deliver(&to, &event),
                Output::Close { conn, code, reason } => self.clients.close(conn, code, reason),
                Output::Store(request) => {
                    let reply = self.store.perform(request.op);
                    engine.handle(
                        self.now,
                        Input::StoreReply {
                            ticket: request.ticket,
                            reply,
                        },
                    );
                }
                Output::Cluster(op) => self.ops.push_back((node, op)),
            }
        }
    }

    /// Runs the bus until nothing is left: performs every queued op in order, hands
    /// each node what it receives, and repeats with the ops those produce.
    pub fn settle(&mut self) {
        while let Some((node, op)) = self.ops.pop_front() {
            let from = self.nodes[node].id.clone();
            let out = self.bus.perform(&from, op);
            self.deliver(out);
        }
    }

    fn deliver(&mut self, out: Vec<Delivery>) {
        for (to, event) in out {
            if let Some(i) = self.nodes.iter().position(|n| n.id == to) {
                self.input(i, Input::Cluster(event));
            }
        }
    }

    /// Moves time forward on every node, firing due timers in time order.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        loop {
            let next = (0..self.nodes.len())
                .filter_map(|i| {
                    let at = self.nodes[i].engine.as_ref()?.poll_timeout()?;
                    Some((at, i))
                })
                .filter(|(at, _)| *at <= target)
                .min();
            let Some((at, i)) = next else {
                break;
            };
            self.now = self.now.max(at);
            if let Some(engine) = self.nodes[i].engine.as_mut() {
                engine.handle_timeout(self.now);
            }
            self.pump(i);
        }
        self.now = target;
    }

    /// Frames `conn` received since the last call, oldest first.
    pub fn take(&mut self, conn: ConnId) -> Vec<Frame> {
        self.clients.take(conn)
    }

    /// Frames `conn` received since the last call, as their `type`s.
    pub fn take_types(&mut self, conn: ConnId) -> Vec<String> {
        self.clients.take_types(conn)
    }

    /// Whether the engine closed `conn`, with code and reason.
    pub fn closed(&self, conn: ConnId) -> Option<(CloseCode, &'static str)> {
        self.clients.closed(conn)
    }

    /// Node `node` crashes: its engine is gone (its connections with it) and nothing
    /// it had not handed to the bus gets out. The bus notices only when told
    /// ([`declare_down`](Self::declare_down), the lease expiry).
    pub fn crash(&mut self, node: usize) {
        self.nodes[node].engine = None;
        self.ops.retain(|(n, _)| *n != node);
        self.bus.disconnect(&self.nodes[node].id.clone());
    }

    /// The bus reaps node `node` (its lease expired): the others get `NodeDown`.
    pub fn declare_down(&mut self, node: usize) {
        let id = self.nodes[node].id.clone();
        let out = self.bus.declare_down(&id);
        self.deliver(out);
    }

    /// Cuts node `node` off the bus (see [`BusCore::disconnect`]).
    pub fn disconnect_node(&mut self, node: usize) {
        let id = self.nodes[node].id.clone();
        self.bus.disconnect(&id);
    }

    /// Reconnects node `node`: it re-asserts what it holds and resyncs its rooms.
    pub fn reconnect_node(&mut self, node: usize) {
        let id = self.nodes[node].id.clone();
        let out = self.bus.reconnect(&id);
        self.deliver(out);
    }

    /// Drops the next `n` announcements meant for node `node`.
    pub fn drop_next(&mut self, node: usize, n: usize) {
        let id = self.nodes[node].id.clone();
        self.bus.drop_next(&id, n);
    }
}
