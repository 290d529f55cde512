//! Several servers in one process forming a cluster: each on its own channel transport,
//! all sharing one store and one in-process bus (`MemoryBus`). Time is tokio's paused
//! clock; nothing sleeps.
//!
//! Run: `cargo test -p chat-core --features testkit --test cluster_runtime`.
#![cfg(feature = "testkit")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use chat_core::engine::StoreOp;
use chat_core::store::{Appended, Page, PageRange, Store, StoreError};
use chat_core::testkit::cluster::MemoryBus;
use chat_core::testkit::sim::SimStore;
use chat_core::{
    ChannelTransport, ClientConnection, ClientEvent, Config, ConnectionInfo, Connector, NewDm,
    NewRoomMessage, RoomName, RuntimeConfig, Server, ServerHandle, StoreReply, StoredDm,
    StoredMessage, UserId,
};

/// The simulation's store behind a lock: one store every server shares, as the nodes
/// of a cluster share PostgreSQL.
#[derive(Default)]
struct SharedStore(Mutex<SimStore>);

impl SharedStore {
    fn perform(&self, op: StoreOp) -> StoreReply {
        self.0.lock().expect("store lock").perform(op)
    }
}

#[async_trait]
impl Store for SharedStore {
    async fn append_room(&self, m: NewRoomMessage) -> Result<Appended<StoredMessage>, StoreError> {
        match self.perform(StoreOp::AppendRoom(m)) {
            StoreReply::RoomAppended(r) => r,
            _ => unreachable!("the reply matches the op"),
        }
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let op = StoreOp::RoomPage {
            room: room.clone(),
            range,
        };
        match self.perform(op) {
            StoreReply::RoomPage(r) => r,
            _ => unreachable!("the reply matches the op"),
        }
    }

    async fn append_dm(&self, m: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        match self.perform(StoreOp::AppendDm(m)) {
            StoreReply::DmAppended(r) => r,
            _ => unreachable!("the reply matches the op"),
        }
    }

    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        let op = StoreOp::DmPage {
            a: a.clone(),
            b: b.clone(),
            range,
        };
        match self.perform(op) {
            StoreReply::DmPage(r) => r,
            _ => unreachable!("the reply matches the op"),
        }
    }
}

/// Bounds every wait in simulated time, so a bug fails instead of hanging.
const WAIT: Duration = Duration::from_secs(600);

struct Node {
    connector: Connector,
    handle: ServerHandle,
    id: chat_core::NodeId,
}

struct Cluster {
    bus: MemoryBus,
    nodes: Vec<Node>,
}

fn cluster(n: usize) -> Cluster {
    let bus = MemoryBus::new();
    let store = Arc::new(SharedStore::default());
    let nodes = (0..n)
        .map(|i| {
            let node = bus.node(&format!("node-{i}"));
            let id = chat_core::runtime::Cluster::node(&*node).clone();
            let (transport, connector) = ChannelTransport::new();
            let server = Server::new(
                Config::unlimited(),
                RuntimeConfig::default(),
                Arc::clone(&store) as Arc<dyn Store>,
            )
            .with_cluster(node);
            Node {
                connector,
                handle: server.spawn(transport),
                id,
            }
        })
        .collect();
    Cluster { bus, nodes }
}

struct Client {
    conn: ClientConnection,
    id: String,
}

impl Node {
    async fn connect(&self) -> Client {
        let conn = self
            .connector
            .connect(ConnectionInfo::default())
            .await
            .expect("connection refused");
        let mut c = Client {
            conn,
            id: String::new(),
        };
        let hello = c.next().await;
        c.id = hello["clientId"].as_str().expect("clientId").to_owned();
        c
    }

    async fn member(&self, name: &str, room: &str) -> Client {
        let mut c = self.connect().await;
        c.send(json!({"type":"set_username","username":name})).await;
        assert_eq!(c.next().await["type"], "username_set");
        c.send(json!({"type":"join_room","room":room})).await;
        assert_eq!(c.next().await["type"], "room_joined");
        assert_eq!(c.next().await["type"], "message_history");
        assert_eq!(c.next().await["type"], "room_users");
        c
    }
}

impl Client {
    async fn send(&mut self, v: Value) {
        self.conn
            .send_text(v.to_string())
            .await
            .expect("send failed");
    }

    async fn next(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.conn.recv()).await {
            Ok(Some(ClientEvent::Text(t))) => serde_json::from_str(&t).expect("JSON"),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame of type `ty`, skipping presence frames.
    async fn expect(&mut self, ty: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == ty {
                return v;
            }
            assert!(
                ["user_joined", "user_left", "typing_indicator"]
                    .contains(&v["type"].as_str().unwrap_or("")),
                "expected {ty}, got {v}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn three_servers_share_rooms_presence_and_dms() {
    let c = cluster(3);
    let mut a = c.nodes[0].member("alice", "lobby").await;
    let mut b = c.nodes[1].member("bob", "lobby").await;
    let mut carol = c.nodes[2].connect().await;
    carol
        .send(json!({"type":"set_username","username":"carol"}))
        .await;
    carol.next().await;
    carol.send(json!({"type":"join_room","room":"lobby"})).await;
    carol.expect("room_joined").await;
    carol.expect("message_history").await;
    let users = carol.expect("room_users").await;
    let mut names: Vec<&str> = users["users"]
        .as_array()
        .expect("present")
        .iter()
        .map(|u| u["username"].as_str().expect("present"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["alice", "bob", "carol"],
        "the same members on every node"
    );
    assert_eq!(a.expect("user_joined").await["username"], "bob");
    assert_eq!(a.expect("user_joined").await["username"], "carol");
    assert_eq!(b.expect("user_joined").await["username"], "carol");

    // Messages from every node, the same seq order everywhere.
    a.send(json!({"type":"chat_message","content":"one"})).await;
    let first = a.expect("message_received").await;
    b.send(json!({"type":"chat_message","content":"two"})).await;
    carol
        .send(json!({"type":"chat_message","content":"three"}))
        .await;
    let mut views = vec![vec![(first["seq"].as_u64(), first["content"].clone())]];
    for (client, missing) in [(&mut a, 2), (&mut b, 3), (&mut carol, 3)] {
        let mut view = if missing == 2 {
            views.pop().expect("present")
        } else {
            Vec::new()
        };
        for _ in 0..missing {
            let m = client.expect("message_received").await;
            view.push((m["seq"].as_u64(), m["content"].clone()));
        }
        views.push(view);
    }
    for view in &views {
        assert_eq!(views[0], *view, "every client sees the same sequence");
        let seqs: Vec<Option<u64>> = view.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [Some(1), Some(2), Some(3)]);
    }

    // A DM across nodes.
    a.send(json!({"type":"private_message","targetId":b.id,"content":"psst"}))
        .await;
    assert_eq!(a.expect("private_message_sent").await["content"], "psst");
    let dm = b.expect("private_message").await;
    assert_eq!(
        (dm["fromUsername"].as_str(), dm["content"].as_str()),
        (Some("alice"), Some("psst"))
    );

    // Health and metrics show the bus.
    let report = c.nodes[0].handle.health().check();
    assert!(report.is_healthy(), "{report}");
    assert_eq!(report.to_string(), "ok (node node-0: bus ok)");
    assert!(report.cluster.is_some_and(|h| h.connected));
    let metrics = c.nodes[0].handle.metrics();
    assert!(metrics.cluster_ops("message") >= 1);
    assert!(metrics.cluster_events("message") >= 2);
    assert!(metrics.encode_text().contains("chat_cluster_queued"));

    // A clean shutdown removes a node's users from every list at once.
    c.nodes[1].handle.shutdown();
    let left = a.expect("user_left").await;
    assert_eq!(left["username"], "bob");
    assert_eq!(carol.expect("user_left").await["username"], "bob");
    for node in c.nodes {
        node.handle.shutdown();
        node.handle.join().await.expect("clean shutdown");
        assert!(
            !c.bus.is_alive(&node.id),
            "{}: the bus left the cluster before the server returned",
            node.id
        );
    }
    assert_eq!(
        c.bus
            .room_members(&RoomName::parse("lobby").expect("present")),
        vec![]
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_cut_off_the_bus_reports_it_and_catches_up_when_back() {
    let c = cluster(2);
    let mut a = c.nodes[0].member("alice", "lobby").await;
    let mut b = c.nodes[1].member("bob", "lobby").await;
    a.expect("user_joined").await;
    c.bus.disconnect(&c.nodes[1].id);
    let report = c.nodes[1].handle.health().check();
    assert!(!report.is_healthy());
    assert!(report.to_string().contains("bus disconnected"), "{report}");
    a.send(json!({"type":"chat_message","content":"while away"}))
        .await;
    a.expect("message_received").await;
    c.bus.reconnect(&c.nodes[1].id);
    let m = b.expect("message_received").await;
    assert_eq!(
        (m["seq"].as_u64(), m["content"].as_str()),
        (Some(1), Some("while away"))
    );
    assert!(c.nodes[1].handle.health().check().is_healthy());
    assert!(c.nodes[1].handle.metrics().cluster_events("room_members") >= 2);

    // A crashed node (its lease expired): its users leave the others' lists.
    c.bus.declare_down(&c.nodes[1].id);
    assert_eq!(a.expect("user_left").await["username"], "bob");
    for node in c.nodes {
        node.handle.shutdown();
        node.handle.join().await.expect("clean shutdown");
    }
}

/// A bus whose `run` returns at once (it could not connect, say).
struct DeadBus(chat_core::NodeId);

#[async_trait]
impl chat_core::runtime::Cluster for DeadBus {
    fn node(&self) -> &chat_core::NodeId {
        &self.0
    }

    async fn run(&self, _ops: chat_core::ClusterOps, _events: chat_core::ClusterEvents) {}

    fn health(&self) -> chat_core::ClusterHealth {
        let mut h = chat_core::ClusterHealth::new(self.0.clone());
        h.connected = false;
        h
    }
}

#[tokio::test(start_paused = true)]
async fn requests_to_a_bus_that_stopped_are_refused_not_left_waiting() {
    let (transport, connector) = ChannelTransport::new();
    let node = chat_core::NodeId::parse("dead").expect("valid");
    let server = Server::new(
        Config::unlimited(),
        RuntimeConfig::default(),
        Arc::new(SharedStore::default()) as Arc<dyn Store>,
    )
    .with_cluster(Arc::new(DeadBus(node.clone())));
    let handle = server.spawn(transport);
    let node = Node {
        connector,
        handle,
        id: node,
    };
    let mut a = node.connect().await;
    a.send(json!({"type":"set_username","username":"alice"}))
        .await;
    let unavailable = json!({"type":"error",
        "message":"The cluster is unavailable; nothing was changed. Try again later",
        "code":"cluster_unavailable"});
    assert_eq!(a.next().await, unavailable);
    let report = node.handle.health().check();
    assert!(!report.is_healthy());
    assert_eq!(report.to_string(), "node dead: bus disconnected");
    assert!(
        node.handle
            .metrics()
            .encode_text()
            .contains("chat_cluster_failed_total 1")
    );
    node.handle.shutdown();
    node.handle.join().await.expect("clean shutdown");
}
