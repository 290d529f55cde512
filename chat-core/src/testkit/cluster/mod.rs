//! Cluster test support: an in-process bus and the conformance checks every
//! [`Cluster`] implementation runs.
//!
//! * [`BusCore`]: the bus's semantics as one synchronous state machine (registry,
//!   routing, fault knobs).
//! * [`MemoryCluster`] / [`MemoryBus`]: several servers in one process sharing a bus —
//!   for runtime tests with [`ChannelTransport`](crate::ChannelTransport) and a shared
//!   store.
//! * [`Mesh`]: several engines wired by hand, deterministic (no tokio).
//! * [`run_all`]: the conformance checks. A bus implementation calls it with a factory
//!   of nodes that share one bus (e.g. one Redis with one key prefix):
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     let prefix = unique_prefix();
//!     chat_core::testkit::cluster::run_all(|node| {
//!         Arc::new(RedisCluster::new(&url, &prefix, NodeId::parse(node).unwrap()))
//!             as Arc<dyn Cluster>
//!     })
//!     .await;
//! }
//! ```
//!
//! Each check panics with the rule it found broken.

mod core;
mod memory;
mod mesh;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use self::core::{BusCore, Delivery};
pub use memory::{MemoryBus, MemoryCluster};
pub use mesh::Mesh;

use crate::cluster::{ClusterEvent, ClusterOp, ClusterReply, NodeId, RemoteMember};
use crate::engine::Ticket;
use crate::ids::{ClientMsgId, Content, MessageId, RoomName, Seq, UserId, Username};
use crate::message::{StoredDm, StoredMessage, Timestamp};
use crate::runtime::{Cluster, ClusterEventReceiver, ClusterEvents, ClusterOpSender, ClusterOps};

/// How long a check waits for an event that must come.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Distinguishes the names of one run from another's on a shared bus.
static RUN: AtomicU64 = AtomicU64::new(0);

/// Tickets of [`Probe::sync`].
static SYNCS: AtomicU64 = AtomicU64::new(0);

/// One node under test: its op sender and its event receiver, while `run` is polled
/// alongside the check.
struct Probe {
    ops: ClusterOpSender,
    events: ClusterEventReceiver,
    node: NodeId,
}

impl Probe {
    fn send(&self, op: ClusterOp) {
        self.ops.send(op).expect("the bus stopped early");
    }

    /// The next event; panics after [`EVENT_WAIT`].
    async fn next(&mut self, what: &str) -> ClusterEvent {
        match tokio::time::timeout(EVENT_WAIT, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("{}: the bus stopped while waiting for {what}", self.node),
            Err(_) => panic!(
                "{}: no event within {EVENT_WAIT:?}; expected {what}",
                self.node
            ),
        }
    }

    /// Waits until the bus performed every op this node sent so far (ops are performed
    /// in order: the answer to a lookup sent now comes after them).
    async fn sync(&mut self) {
        let ticket = Ticket(u64::MAX - SYNCS.fetch_add(1, Ordering::Relaxed));
        self.send(ClusterOp::LookupUser {
            ticket,
            user: UserId::parse("sync").expect("valid user id"),
        });
        self.reply(ticket).await;
    }

    /// The reply to `ticket`, skipping other events.
    async fn reply(&mut self, ticket: Ticket) -> ClusterReply {
        loop {
            if let ClusterEvent::Reply { ticket: t, reply } = self.next("a reply").await
                && t == ticket
            {
                return reply;
            }
        }
    }

    /// The next `RoomMembers` of `room`, skipping other events.
    async fn members(&mut self, room: &RoomName) -> Vec<RemoteMember> {
        loop {
            if let ClusterEvent::RoomMembers { room: r, members } =
                self.next("a member snapshot").await
                && r == *room
            {
                return members;
            }
        }
    }
}

/// Starts `cluster`'s `run` as a future the caller polls (no task is spawned).
fn start(cluster: &Arc<dyn Cluster>) -> (Probe, impl Future<Output = ()> + '_) {
    let (ops, run_ops) = ClusterOps::channel();
    let (events_tx, events) = ClusterEvents::channel(1024);
    let probe = Probe {
        ops,
        events,
        node: cluster.node().clone(),
    };
    (probe, cluster.run(run_ops, events_tx))
}

/// Names unique to one check of one run.
struct Names {
    tag: String,
}

impl Names {
    fn new(case: &str) -> Self {
        let n = RUN.fetch_add(1, Ordering::Relaxed);
        Names {
            tag: format!("{case}-{}-{n}", std::process::id()),
        }
    }
    fn node(&self, n: &str) -> String {
        format!("{}-{n}", self.tag)
    }
    fn room(&self, n: &str) -> RoomName {
        RoomName::parse(&format!("{}-{n}", self.tag)).expect("valid room")
    }
    fn user(&self, n: &str) -> UserId {
        UserId::parse(&format!("{}-{n}", self.tag)).expect("valid user id")
    }
    fn name(&self, n: &str) -> Username {
        // Usernames are at most 20 characters: a short hash of the tag keeps them unique.
        let h = self
            .tag
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        Username::parse(&format!("{n}{h:08x}")).expect("valid username")
    }
}

fn message(room: &RoomName, seq: u64, user: &UserId) -> Arc<StoredMessage> {
    Arc::new(StoredMessage {
        id: MessageId(uuid::Uuid::from_u128(u128::from(seq))),
        room: room.clone(),
        seq: Seq(seq),
        user_id: user.clone(),
        username: Arc::from("someone"),
        content: Content::parse("hello").expect("valid content"),
        timestamp: Timestamp(seq),
        client_msg_id: ClientMsgId::parse("c").ok(),
    })
}

/// Runs every check against nodes made by `new_node(id)`, which must all share one bus.
/// Node ids, rooms, users and names are unique per run, so a shared bus (one Redis)
/// can serve several runs.
pub async fn run_all<F>(new_node: F)
where
    F: Fn(&str) -> Arc<dyn Cluster>,
{
    presence_and_announcements(&new_node).await;
    name_claims(&new_node).await;
    lookups_and_dms(&new_node).await;
    clean_leave(&new_node).await;
}

/// Room snapshots list the other nodes' members; joins, leaves, messages and typing
/// reach the other subscribed nodes and never come back to their origin; an
/// unsubscribed node hears nothing more.
pub async fn presence_and_announcements<F: Fn(&str) -> Arc<dyn Cluster>>(new_node: &F) {
    let names = Names::new("presence");
    let (a, b) = (new_node(&names.node("a")), new_node(&names.node("b")));
    let (mut pa, run_a) = start(&a);
    let (mut pb, run_b) = start(&b);
    let room = names.room("r");
    let other = names.room("o");
    let (u1, u2) = (names.user("u1"), names.user("u2"));
    let check = async move {
        pa.send(ClusterOp::Subscribe { room: room.clone() });
        assert_eq!(pa.members(&room).await, vec![], "a new room has no members");
        pa.send(ClusterOp::Joined {
            room: room.clone(),
            user: u1.clone(),
            name: Arc::from("one"),
        });
        pa.sync().await;
        pb.send(ClusterOp::Subscribe { room: room.clone() });
        pb.send(ClusterOp::Subscribe {
            room: other.clone(),
        });
        let snapshot = pb.members(&room).await;
        assert_eq!(
            snapshot,
            vec![RemoteMember {
                node: pa.node.clone(),
                user: u1.clone(),
                name: Arc::from("one"),
            }],
            "the snapshot lists the other node's member"
        );
        pb.members(&other).await;
        pb.send(ClusterOp::Joined {
            room: room.clone(),
            user: u2.clone(),
            name: Arc::from("two"),
        });
        assert_eq!(
            pa.next("b's Joined").await,
            ClusterEvent::Joined {
                node: pb.node.clone(),
                room: room.clone(),
                user: u2.clone(),
                name: Arc::from("two"),
            }
        );
        let m1 = message(&room, 1, &u1);
        pa.send(ClusterOp::Message {
            room: room.clone(),
            message: m1.clone(),
        });
        pa.send(ClusterOp::Typing {
            room: room.clone(),
            user: u1.clone(),
            name: Arc::from("one"),
            on: true,
        });
        pa.send(ClusterOp::Left {
            room: room.clone(),
            user: u1.clone(),
        });
        assert_eq!(
            pb.next("a's Message").await,
            ClusterEvent::Message {
                room: room.clone(),
                message: m1,
            },
            "b gets a's message (and nothing of its own Joined back)"
        );
        assert_eq!(
            pb.next("a's Typing").await,
            ClusterEvent::Typing {
                node: pa.node.clone(),
                room: room.clone(),
                user: u1.clone(),
                name: Arc::from("one"),
                on: true,
            }
        );
        assert_eq!(
            pb.next("a's Left").await,
            ClusterEvent::Left {
                node: pa.node.clone(),
                room: room.clone(),
                user: u1.clone(),
            }
        );
        // a stops listening to the room: b's message there does not reach it, the
        // next one in a room it listens to does, first.
        pa.send(ClusterOp::Unsubscribe { room: room.clone() });
        pa.send(ClusterOp::Subscribe {
            room: other.clone(),
        });
        pa.members(&other).await;
        pb.send(ClusterOp::Message {
            room: room.clone(),
            message: message(&room, 2, &u2),
        });
        let m3 = message(&other, 1, &u2);
        pb.send(ClusterOp::Message {
            room: other.clone(),
            message: m3.clone(),
        });
        assert_eq!(
            pa.next("b's message in the other room").await,
            ClusterEvent::Message {
                room: other.clone(),
                message: m3,
            },
            "an unsubscribed room's announcements do not reach the node"
        );
        pb.send(ClusterOp::Left {
            room: room.clone(),
            user: u2.clone(),
        });
        drop((pa, pb));
    };
    tokio::join!(check, run_a, run_b);
}

/// Two nodes claiming one name at the same moment: exactly one wins; the holder may
/// claim it again; a released name is free; a user's names go with its last node.
pub async fn name_claims<F: Fn(&str) -> Arc<dyn Cluster>>(new_node: &F) {
    let names = Names::new("names");
    let (a, b) = (new_node(&names.node("a")), new_node(&names.node("b")));
    let (mut pa, run_a) = start(&a);
    let (mut pb, run_b) = start(&b);
    let (u1, u2) = (names.user("u1"), names.user("u2"));
    let name = names.name("al");
    let check = async move {
        for (p, u) in [(&pa, &u1), (&pb, &u2)] {
            p.send(ClusterOp::UserOnline {
                user: u.clone(),
                name: None,
            });
        }
        pa.sync().await;
        pb.sync().await;
        pa.send(ClusterOp::ClaimName {
            ticket: Ticket(1),
            user: u1.clone(),
            candidates: vec![name.clone()],
        });
        pb.send(ClusterOp::ClaimName {
            ticket: Ticket(1),
            user: u2.clone(),
            candidates: vec![name.clone()],
        });
        let (ra, rb) = tokio::join!(pa.reply(Ticket(1)), pb.reply(Ticket(1)));
        let won = [&ra, &rb]
            .iter()
            .filter(|r| ***r == ClusterReply::Name(Some(name.clone())))
            .count();
        let lost = [&ra, &rb]
            .iter()
            .filter(|r| ***r == ClusterReply::Name(None))
            .count();
        assert_eq!(
            (won, lost),
            (1, 1),
            "exactly one of two simultaneous claims wins: {ra:?} {rb:?}"
        );
        let (winner, loser, pw, pl) = if ra == ClusterReply::Name(None) {
            (&u2, &u1, &mut pb, &mut pa)
        } else {
            (&u1, &u2, &mut pa, &mut pb)
        };
        pw.send(ClusterOp::ClaimName {
            ticket: Ticket(2),
            user: winner.clone(),
            candidates: vec![name.clone()],
        });
        assert_eq!(
            pw.reply(Ticket(2)).await,
            ClusterReply::Name(Some(name.clone())),
            "the holder's own name is free to it"
        );
        let second = names.name("bo");
        pl.send(ClusterOp::ClaimName {
            ticket: Ticket(3),
            user: loser.clone(),
            candidates: vec![name.clone(), second.clone()],
        });
        assert_eq!(
            pl.reply(Ticket(3)).await,
            ClusterReply::Name(Some(second.clone())),
            "the first free candidate wins"
        );
        pw.send(ClusterOp::ReleaseName {
            user: winner.clone(),
            name: name.clone(),
        });
        pl.send(ClusterOp::ReleaseName {
            user: loser.clone(),
            name: second.clone(),
        });
        pl.sync().await;
        pw.send(ClusterOp::ClaimName {
            ticket: Ticket(4),
            user: loser.clone(),
            candidates: vec![name.clone()],
        });
        assert_eq!(
            pw.reply(Ticket(4)).await,
            ClusterReply::Name(Some(name.clone())),
            "a released name is free"
        );
        // The loser now holds it; its last node going offline releases it.
        for p in [&pa, &pb] {
            p.send(ClusterOp::UserOffline {
                user: loser.clone(),
            });
        }
        pb.sync().await;
        pa.send(ClusterOp::ClaimName {
            ticket: Ticket(5),
            user: winner.clone(),
            candidates: vec![name.clone()],
        });
        assert_eq!(
            pa.reply(Ticket(5)).await,
            ClusterReply::Name(Some(name.clone())),
            "a user's names are released when no node has it"
        );
        for p in [&pa, &pb] {
            p.send(ClusterOp::UserOffline {
                user: winner.clone(),
            });
        }
        drop((pa, pb));
    };
    tokio::join!(check, run_a, run_b);
}

/// A user online on another node is found with its name, an offline one is not; a
/// DM reaches each node of its users once, and no other node.
pub async fn lookups_and_dms<F: Fn(&str) -> Arc<dyn Cluster>>(new_node: &F) {
    let names = Names::new("dms");
    let (a, b, c) = (
        new_node(&names.node("a")),
        new_node(&names.node("b")),
        new_node(&names.node("c")),
    );
    let (mut pa, run_a) = start(&a);
    let (mut pb, run_b) = start(&b);
    let (mut pc, run_c) = start(&c);
    let (u1, u2, u3) = (names.user("u1"), names.user("u2"), names.user("u3"));
    let name2 = names.name("bo");
    let check = async move {
        pa.send(ClusterOp::UserOnline {
            user: u1.clone(),
            name: Some(names.name("al")),
        });
        pb.send(ClusterOp::UserOnline {
            user: u2.clone(),
            name: Some(name2.clone()),
        });
        // b also has u1 (a second connection): a DM between u1 and u2 reaches b once.
        pb.send(ClusterOp::UserOnline {
            user: u1.clone(),
            name: Some(names.name("al")),
        });
        pc.send(ClusterOp::UserOnline {
            user: u3.clone(),
            name: Some(names.name("cy")),
        });
        pb.sync().await;
        pc.sync().await;
        pc.send(ClusterOp::LookupUser {
            ticket: Ticket(1),
            user: u2.clone(),
        });
        assert_eq!(
            pc.reply(Ticket(1)).await,
            ClusterReply::User(Some(name2.shared())),
            "a user online on another node is found with its name"
        );
        pc.send(ClusterOp::LookupUser {
            ticket: Ticket(2),
            user: names.user("nobody"),
        });
        assert_eq!(pc.reply(Ticket(2)).await, ClusterReply::User(None));
        let dm = Arc::new(StoredDm {
            id: MessageId(uuid::Uuid::from_u128(42)),
            seq: Seq(1),
            from: u1.clone(),
            from_username: Arc::from("al"),
            to: u2.clone(),
            to_username: Arc::from("bo"),
            content: Content::parse("psst").expect("valid content"),
            timestamp: Timestamp(1),
            client_msg_id: None,
        });
        pa.send(ClusterOp::Dm {
            message: dm.clone(),
        });
        // Then a marker c does get: whatever b and c received before it tells.
        let marker = Arc::new(StoredDm {
            id: MessageId(uuid::Uuid::from_u128(43)),
            to: u3.clone(),
            ..(*dm).clone()
        });
        pa.send(ClusterOp::Dm {
            message: marker.clone(),
        });
        assert_eq!(
            pb.next("the DM").await,
            ClusterEvent::Dm { message: dm },
            "the DM reaches the recipient's node"
        );
        assert_eq!(
            pb.next("the marker DM (b has u1)").await,
            ClusterEvent::Dm {
                message: marker.clone()
            },
            "each DM reaches a node once, even with both of its users there"
        );
        assert_eq!(
            pc.next("the marker DM").await,
            ClusterEvent::Dm { message: marker },
            "a node with neither user gets no DM of theirs"
        );
        for (p, u) in [(&pa, &u1), (&pb, &u2), (&pb, &u1), (&pc, &u3)] {
            p.send(ClusterOp::UserOffline { user: u.clone() });
        }
        pa.sync().await;
        pb.sync().await;
        pc.send(ClusterOp::LookupUser {
            ticket: Ticket(3),
            user: u2.clone(),
        });
        assert_eq!(
            pc.reply(Ticket(3)).await,
            ClusterReply::User(None),
            "an offline user is not found"
        );
        drop((pa, pb, pc));
    };
    tokio::join!(check, run_a, run_b, run_c);
}

/// A node whose `run` returns (its op queue closed) leaves at once: the others hear
/// that its members left (`Left` or `NodeDown`), its users are offline and its names
/// free.
pub async fn clean_leave<F: Fn(&str) -> Arc<dyn Cluster>>(new_node: &F) {
    let names = Names::new("leave");
    let (a, b) = (new_node(&names.node("a")), new_node(&names.node("b")));
    let (mut pa, run_a) = start(&a);
    let (pb, run_b) = start(&b);
    let room = names.room("r");
    let (u1, u2) = (names.user("u1"), names.user("u2"));
    let name = names.name("al");
    let check = async move {
        pa.send(ClusterOp::UserOnline {
            user: u1.clone(),
            name: None,
        });
        pa.send(ClusterOp::Subscribe { room: room.clone() });
        pa.members(&room).await;
        pb.send(ClusterOp::Subscribe { room: room.clone() });
        pb.send(ClusterOp::UserOnline {
            user: u2.clone(),
            name: Some(name.clone()),
        });
        pb.send(ClusterOp::ClaimName {
            ticket: Ticket(1),
            user: u2.clone(),
            candidates: vec![name.clone()],
        });
        pb.send(ClusterOp::Joined {
            room: room.clone(),
            user: u2.clone(),
            name: Arc::from("two"),
        });
        assert!(matches!(
            pa.next("b's Joined").await,
            ClusterEvent::Joined { .. }
        ));
        let b_node = pb.node.clone();
        // b's server stops: its op queue closes, its `run` leaves the cluster.
        drop(pb);
        let mut left = false;
        while !left {
            match pa.next("b's departure").await {
                ClusterEvent::NodeDown { node } => {
                    assert_eq!(node, b_node);
                    left = true;
                }
                ClusterEvent::Left { node, user, .. } => {
                    assert_eq!((node, user), (b_node.clone(), u2.clone()));
                }
                other => panic!("unexpected {other:?} while b leaves"),
            }
        }
        pa.send(ClusterOp::Subscribe { room: room.clone() });
        assert_eq!(pa.members(&room).await, vec![], "b's members are gone");
        pa.send(ClusterOp::LookupUser {
            ticket: Ticket(2),
            user: u2.clone(),
        });
        assert_eq!(pa.reply(Ticket(2)).await, ClusterReply::User(None));
        pa.send(ClusterOp::ClaimName {
            ticket: Ticket(3),
            user: u1.clone(),
            candidates: vec![name.clone()],
        });
        assert_eq!(
            pa.reply(Ticket(3)).await,
            ClusterReply::Name(Some(name.clone())),
            "b's names are free"
        );
        pa.send(ClusterOp::UserOffline { user: u1.clone() });
        drop(pa);
    };
    tokio::join!(check, run_a, run_b);
}
