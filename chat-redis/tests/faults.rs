//! The bus under faults, driven op by op (no engine): a crashed node is reaped within
//! its bound, a Redis restart is healed by the nodes re-asserting what they hold and
//! resending every room's snapshot, a dropped subscriber resubscribes and resyncs, a
//! node cut off by a partition (a TCP proxy that stalls its traffic: half-open
//! connections) is reaped and comes back when it heals, the health follows, and DMs
//! announced while a node's subscriber was dropped reach it once each, in order.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

#[path = "../../chat-postgres-store/tests/support/proxy.rs"]
#[allow(unreachable_pub, dead_code)]
mod proxy;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::runtime::{ClusterEventReceiver, ClusterOpSender};
use chat_core::{
    Cluster, ClusterEvent, ClusterEvents, ClusterOp, ClusterOps, ClusterReply, RoomName, Ticket,
    UserId, Username,
};
use chat_redis::{RedisCluster, RedisClusterConfig};
use support::{RedisServer, TestPrefix, redis_url};

const WAIT: Duration = Duration::from_secs(15);

/// One node: its bus running on a task, its op sender and event receiver.
struct Node {
    bus: Arc<RedisCluster>,
    ops: Option<ClusterOpSender>,
    events: ClusterEventReceiver,
    run: tokio::task::JoinHandle<()>,
    /// The room's remote members as this node's engine would know them.
    members: BTreeSet<(String, String)>,
}

impl Node {
    async fn start(config: RedisClusterConfig) -> Node {
        Self::start_with(config, 1024).await
    }

    /// With an event queue of `capacity` into the (simulated) server.
    async fn start_with(config: RedisClusterConfig, capacity: usize) -> Node {
        let bus = Arc::new(RedisCluster::connect(config).await.unwrap());
        let (ops, run_ops) = ClusterOps::channel();
        let (events_tx, events) = ClusterEvents::channel(capacity);
        let run = tokio::spawn({
            let bus = Arc::clone(&bus);
            async move { bus.run(run_ops, events_tx).await }
        });
        Node {
            bus,
            ops: Some(ops),
            events,
            run,
            members: BTreeSet::new(),
        }
    }

    fn send(&self, op: ClusterOp) {
        self.ops.as_ref().unwrap().send(op).unwrap();
    }

    /// Applies events (as the engine would: snapshots replace, joins and leaves edit)
    /// until `done` says so; returns the events seen.
    async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&Node, &ClusterEvent) -> bool,
    ) -> Vec<ClusterEvent> {
        let mut seen = Vec::new();
        loop {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}; saw {seen:?}"))
                .expect("the bus runs");
            match &event {
                ClusterEvent::RoomMembers { members, .. } => {
                    self.members = members
                        .iter()
                        .map(|m| (m.node.to_string(), m.user.to_string()))
                        .collect();
                }
                ClusterEvent::Joined { node, user, .. } => {
                    self.members.insert((node.to_string(), user.to_string()));
                }
                ClusterEvent::Left { node, user, .. } => {
                    self.members.remove(&(node.to_string(), user.to_string()));
                }
                ClusterEvent::NodeDown { node } => {
                    self.members.retain(|(n, _)| n != node.as_str());
                }
                _ => {}
            }
            let finished = done(self, &event);
            seen.push(event);
            if finished {
                return seen;
            }
        }
    }
}

fn room() -> RoomName {
    RoomName::parse("lobby").unwrap()
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// `node` puts `user` online, named, in the lobby.
fn arrive(node: &Node, who: &str, name: &str) {
    node.send(ClusterOp::UserOnline {
        user: user(who),
        name: None,
    });
    node.send(ClusterOp::ClaimName {
        ticket: Ticket(1),
        user: user(who),
        candidates: vec![Username::parse(name).unwrap()],
    });
    node.send(ClusterOp::Subscribe { room: room() });
    node.send(ClusterOp::Joined {
        room: room(),
        user: user(who),
        name: Arc::from(name),
    });
}

fn has(node: &Node, n: &str, u: &str) -> bool {
    node.members.contains(&(n.to_owned(), u.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_reaped_within_lease_plus_renewal() {
    let Some(url) = redis_url("a_crashed_node_is_reaped") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let config = RedisClusterConfig::new(url.as_str())
        .prefix(prefix.prefix.as_str())
        .lease(Duration::from_secs(1));
    let bound = config.crash_bound();
    let a = Node::start(config.clone().node_id("a")).await;
    let mut b = Node::start(config.clone().node_id("b")).await;
    arrive(&a, "ann", "Ann");
    b.send(ClusterOp::Subscribe { room: room() });
    b.until("ann's arrival", |b, _| has(b, "a", "ann")).await;

    // a crashes: its bus stops without leaving.
    a.run.abort();
    let crashed = Instant::now();
    let seen = b
        .until(
            "a's reaping",
            |_, e| matches!(e, ClusterEvent::NodeDown { node } if node.as_str() == "a"),
        )
        .await;
    let gone = crashed.elapsed();
    println!("crashed node reaped after {gone:?} (bound {bound:?})");
    assert!(
        gone <= bound + Duration::from_millis(500),
        "{gone:?} > {bound:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, ClusterEvent::Left { user, .. } if user.as_str() == "ann"))
    );
    assert!(!has(&b, "a", "ann"));
    // Its name is free, and it is not online anywhere.
    b.send(ClusterOp::ClaimName {
        ticket: Ticket(7),
        user: user("bob"),
        candidates: vec![Username::parse("Ann").unwrap()],
    });
    b.send(ClusterOp::LookupUser {
        ticket: Ticket(8),
        user: user("ann"),
    });
    let replies = b
        .until("the replies", |_, e| {
            matches!(
                e,
                ClusterEvent::Reply {
                    ticket: Ticket(8),
                    ..
                }
            )
        })
        .await;
    assert!(replies.contains(&ClusterEvent::Reply {
        ticket: Ticket(7),
        reply: ClusterReply::Name(Some(Username::parse("Ann").unwrap())),
    }));
    assert!(replies.contains(&ClusterEvent::Reply {
        ticket: Ticket(8),
        reply: ClusterReply::User(None),
    }));
    assert_eq!(b.bus.stats().reaped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_healed_by_reasserting_and_resyncing() {
    if redis_url("a_redis_restart_is_healed").is_none() {
        return;
    }
    let mut redis = RedisServer::start();
    let config = RedisClusterConfig::new(redis.url())
        .lease(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let mut a = Node::start(config.clone().node_id("a")).await;
    let mut b = Node::start(config.clone().node_id("b")).await;
    arrive(&a, "ann", "Ann");
    b.send(ClusterOp::Subscribe { room: room() });
    b.until("ann's arrival", |b, _| has(b, "a", "ann")).await;
    assert!(a.bus.health().is_healthy());

    // Redis goes away: a request fails, and the health says so.
    redis.kill();
    a.send(ClusterOp::LookupUser {
        ticket: Ticket(9),
        user: user("bob"),
    });
    let replies = a
        .until("the failed lookup", |_, e| {
            matches!(
                e,
                ClusterEvent::Reply {
                    ticket: Ticket(9),
                    ..
                }
            )
        })
        .await;
    assert_eq!(
        replies.last(),
        Some(&ClusterEvent::Reply {
            ticket: Ticket(9),
            reply: ClusterReply::Failed
        })
    );
    let health = a.bus.health();
    println!("health with Redis gone: {health}");
    assert!(!health.connected);

    // Back, empty: a re-asserts ann (and her name), b resyncs and sees her again.
    redis.restart();
    b.until("ann again after the restart", |b, e| {
        has(b, "a", "ann")
            && matches!(
                e,
                ClusterEvent::RoomMembers { .. } | ClusterEvent::Joined { .. }
            )
    })
    .await;
    let names: Vec<String> = match redis.command(&["HKEYS", "chat:names"]) {
        redis::Value::Array(keys) => keys
            .into_iter()
            .map(|k| redis::from_redis_value::<String>(k).unwrap())
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(names, [Username::parse("Ann").unwrap().key()]);
    let stats = a.bus.stats();
    assert!(stats.reasserts >= 1, "{stats:?}");
    assert!(b.bus.stats().subscriber_connects >= 2);
    // a's subscriber is back too once a snapshot reaches it through it.
    a.until("a's own resync", |_, e| {
        matches!(e, ClusterEvent::RoomMembers { .. })
    })
    .await;
    assert!(a.bus.health().is_healthy(), "{}", a.bus.health());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscriber_resubscribes_and_resyncs() {
    if redis_url("a_dropped_subscriber_resubscribes").is_none() {
        return;
    }
    let redis = RedisServer::start();
    let config = RedisClusterConfig::new(redis.url())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let a = Node::start(config.clone().node_id("a")).await;
    let mut b = Node::start(config.clone().node_id("b")).await;
    arrive(&a, "ann", "Ann");
    b.send(ClusterOp::Subscribe { room: room() });
    b.until("ann's arrival", |b, _| has(b, "a", "ann")).await;
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, redis::Value::Int(2), "both subscribers dropped");
    // b resubscribes and gets the room's snapshot again; then a's news reach it.
    b.until("a fresh snapshot", |_, e| {
        matches!(e, ClusterEvent::RoomMembers { .. })
    })
    .await;
    assert!(has(&b, "a", "ann"));
    a.send(ClusterOp::Left {
        room: room(),
        user: user("ann"),
    });
    b.until("ann's departure", |b, _| !has(b, "a", "ann")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_is_reaped_and_comes_back_when_the_partition_heals() {
    let Some(url) = redis_url("a_partitioned_node_is_reaped") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let upstream: std::net::SocketAddr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("CHAT_TEST_REDIS_URL is redis://IP:PORT for this test");
    let cut = proxy::Proxy::start(upstream).await;
    let config = RedisClusterConfig::new(url.as_str())
        .prefix(prefix.prefix.as_str())
        .lease(Duration::from_secs(1))
        .ping_every(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let mut a = Node::start(
        config
            .clone()
            .url(format!("redis://{}", cut.addr))
            .node_id("a"),
    )
    .await;
    let mut b = Node::start(config.node_id("b")).await;
    arrive(&a, "ann", "Ann");
    b.send(ClusterOp::Subscribe { room: room() });
    b.until("ann's arrival", |b, _| has(b, "a", "ann")).await;

    // a's traffic stalls (nothing passes, nothing is closed): the others reap it.
    cut.set(proxy::Mode::Stall);
    b.until(
        "a's reaping",
        |_, e| matches!(e, ClusterEvent::NodeDown { node } if node.as_str() == "a"),
    )
    .await;
    assert!(!has(&b, "a", "ann"));
    a.send(ClusterOp::LookupUser {
        ticket: Ticket(5),
        user: user("bob"),
    });
    let replies = a
        .until("the lookup", |_, e| {
            matches!(
                e,
                ClusterEvent::Reply {
                    ticket: Ticket(5),
                    ..
                }
            )
        })
        .await;
    assert_eq!(
        replies.last(),
        Some(&ClusterEvent::Reply {
            ticket: Ticket(5),
            reply: ClusterReply::Failed
        })
    );
    println!("partitioned: {}", a.bus.health());
    assert!(!a.bus.health().is_healthy());
    // A message stored meanwhile on a is announced once the partition heals.
    let message = Arc::new(chat_core::StoredMessage {
        id: chat_core::MessageId(uuid::Uuid::from_u128(77)),
        room: room(),
        seq: chat_core::Seq(1),
        user_id: user("ann"),
        username: Arc::from("Ann"),
        content: chat_core::Content::parse("during the partition").unwrap(),
        timestamp: chat_core::Timestamp(1),
        client_msg_id: None,
    });
    a.send(ClusterOp::Message {
        room: room(),
        message: Arc::clone(&message),
    });

    // Healed: a finds its lease gone, re-asserts ann (b sees her again) and resyncs.
    cut.set(proxy::Mode::Pass);
    let announced = ClusterEvent::Message {
        room: room(),
        message,
    };
    let seen = b.until("ann back", |b, _| has(b, "a", "ann")).await;
    if !seen.contains(&announced) {
        b.until("the message of the partition", |_, e| *e == announced)
            .await;
    }
    a.until("a's resync", |_, e| {
        matches!(e, ClusterEvent::RoomMembers { .. })
    })
    .await;
    assert!(a.bus.stats().reasserts >= 1);
    assert!(a.bus.health().is_healthy(), "{}", a.bus.health());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_falls_behind_the_bus_gets_a_resync_not_a_growing_buffer() {
    let Some(url) = redis_url("a_server_that_falls_behind_the_bus") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let config = RedisClusterConfig::new(url.as_str())
        .prefix(prefix.prefix.as_str())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let a = Node::start(config.clone().node_id("a")).await;
    let mut b = Node::start_with(
        config.node_id("b").hub_patience(Duration::from_millis(200)),
        1,
    )
    .await;
    arrive(&a, "ann", "Ann");
    b.send(ClusterOp::Subscribe { room: room() });
    b.until("ann's arrival", |b, _| has(b, "a", "ann")).await;
    // b's server stops taking events while a announces: b's queue (one event) fills.
    for seq in 1..=20 {
        a.send(ClusterOp::Typing {
            room: room(),
            user: user("ann"),
            name: Arc::from("Ann"),
            on: seq % 2 == 1,
        });
    }
    // The server stalls (the fault: it takes nothing for three times the patience).
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The subscriber gave up on the server, dropped its connection and came back: the
    // server, reading again, gets a fresh snapshot of the room.
    b.until("a resync", |_, e| {
        matches!(e, ClusterEvent::RoomMembers { .. })
    })
    .await;
    let stats = b.bus.stats();
    assert!(stats.hub_timeouts >= 1, "{stats:?}");
    assert!(stats.subscriber_connects >= 2, "{stats:?}");
    assert!(has(&b, "a", "ann"));
}

/// DM number `n` from ann (on b) to bob (on a).
fn dm(n: u128) -> Arc<chat_core::StoredDm> {
    Arc::new(chat_core::StoredDm {
        id: chat_core::MessageId(uuid::Uuid::from_u128(n)),
        seq: chat_core::Seq(u64::try_from(n).unwrap()),
        from: user("ann"),
        from_username: Arc::from("Ann"),
        to: user("bob"),
        to_username: Arc::from("Bob"),
        content: chat_core::Content::parse(&format!("dm {n}")).unwrap(),
        timestamp: chat_core::Timestamp(1),
        client_msg_id: None,
    })
}

/// `node` performs every op sent before this one: its lookup's answer is the signal.
async fn performed(node: &mut Node, ticket: u64) {
    node.send(ClusterOp::LookupUser {
        ticket: Ticket(ticket),
        user: user("nobody"),
    });
    node.until(
        "the ops performed",
        |_, e| matches!(e, ClusterEvent::Reply { ticket: t, .. } if *t == Ticket(ticket)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_announced_while_a_subscriber_is_away_are_delivered_once_in_order() {
    if redis_url("dms_announced_while_a_subscriber_is_away").is_none() {
        return;
    }
    let redis = RedisServer::start();
    // a's connections log in as their own Redis user, so the test can keep a's
    // subscriber from coming back (`off` refuses new logins, keeps the others).
    redis.command(&[
        "ACL", "SETUSER", "node-a", "on", ">secret", "~*", "&*", "+@all",
    ]);
    let config = RedisClusterConfig::new(redis.url())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let mut a = Node::start(
        config
            .clone()
            .url(format!("redis://node-a:secret@127.0.0.1:{}", redis.port))
            .node_id("a"),
    )
    .await;
    let mut b = Node::start(config.node_id("b")).await;
    a.send(ClusterOp::UserOnline {
        user: user("bob"),
        name: Some(Username::parse("Bob").unwrap()),
    });
    performed(&mut a, 1).await;

    let (live, during, after) = (5u128, 150u128, 5u128);
    let total = live + during + after;
    for n in 1..=live {
        b.send(ClusterOp::Dm { message: dm(n) });
    }
    performed(&mut b, 2).await;
    // a's subscriber is dropped and cannot come back while b announces more DMs (more
    // than one read's worth: the catch-up reads page after page).
    redis.command(&["ACL", "SETUSER", "node-a", "off"]);
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, redis::Value::Int(2), "both subscribers dropped");
    for n in live + 1..=live + during {
        b.send(ClusterOp::Dm { message: dm(n) });
    }
    performed(&mut b, 3).await;
    redis.command(&["ACL", "SETUSER", "node-a", "on"]);
    for n in live + during + 1..=total {
        b.send(ClusterOp::Dm { message: dm(n) });
    }

    let last = u64::try_from(total).unwrap();
    let seen = a
        .until(
            "every DM",
            |_, e| matches!(e, ClusterEvent::Dm { message } if message.seq.0 == last),
        )
        .await;
    let delivered: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            ClusterEvent::Dm { message } => Some(message.seq.0),
            _ => None,
        })
        .collect();
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(delivered, expected, "every DM once, in order");
    // Nothing more comes: a lookup's answer is the next event.
    performed(&mut a, 4).await;
    let stats = a.bus.stats();
    println!("a after the outage: {stats:?}");
    // Everything announced during the outage came back through the streams (and maybe
    // some of the later ones, announced before the subscriber was back).
    let recovered = stats.dm_recovered;
    assert!(
        (during..=during + after).contains(&u128::from(recovered)),
        "{stats:?}"
    );
    assert!(stats.subscriber_connects >= 2, "{stats:?}");
    // The same count is what `/metrics` shows as `chat_cluster_bus_dm_recovered_total`.
    assert!(
        a.bus
            .counters()
            .iter()
            .any(|c| c.name == "dm_recovered" && c.value == recovered),
        "{:?}",
        a.bus.counters()
    );
}
