//! The tool end to end against an in-process bare relay on an ephemeral port: `fanout`
//! delivers every message (no loss, no gaps, `seq` checked), `connect` completes every
//! join, and `idle` reads a server RSS.

use std::net::SocketAddr;
use std::time::Duration;

use chat_bench::client::Target;
use chat_bench::fanout::{self, FanoutConfig, Pace};
use chat_bench::relay::{self, RelayConfig};
use chat_bench::{idle, storm};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn start_relay() -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (
        addr,
        tokio::spawn(relay::serve(listener, RelayConfig::default())),
    )
}

fn fanout_config(addr: SocketAddr, pace: Pace) -> FanoutConfig {
    FanoutConfig {
        other_nodes: Vec::new(),
        target: Target::new(addr).expect("target"),
        clients: 12,
        rooms: 3,
        senders: 3,
        pace,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(500),
        drain: Duration::from_secs(5),
        connect_concurrency: 4,
        server_pid: Some(std::process::id()),
        label: "relay".to_owned(),
        salt: 1,
        client_msg_ids: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_fanout_through_the_relay_loses_nothing() {
    let (addr, relay) = start_relay().await;
    let report = fanout::run(&fanout_config(addr, Pace::ClosedLoop { window: 4 }))
        .await
        .expect("fanout runs");
    relay.abort();
    let f = report.fanout.as_ref().expect("fanout figures");
    assert!(f.sent > 0, "{report}");
    // 3 rooms of 4, one sender each: every message reaches its 4 members.
    assert_eq!(f.expected, f.sent * 4, "{report}");
    assert_eq!(f.loss, 0, "{report}");
    assert_eq!(
        f.clients_wrong, 0,
        "every client saw exactly its room: {report}"
    );
    assert_eq!(f.counts.received_in_window, f.expected, "{report}");
    assert_eq!(f.counts.gaps + f.counts.duplicates, 0, "{report}");
    assert_eq!(f.counts.seq_gaps + f.counts.seq_duplicates, 0, "{report}");
    assert_eq!(f.counts.without_seq, 0, "the relay sends seq: {report}");
    assert_eq!(f.counts.errors, 0, "{report}");
    assert_eq!(f.latency.count, f.expected, "{report}");
    assert!(
        f.latency.p50_us > 0.0 && f.latency.p50_us <= f.latency.max_us,
        "{report}"
    );
    assert!(f.server_cpu_us_per_delivery.is_some(), "{report}");
    let v: serde_json::Value = serde_json::from_str(&report.json_line()).expect("JSON line");
    assert_eq!(v["fanout"]["loss"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_fanout_keeps_its_rate() {
    let (addr, relay) = start_relay().await;
    let cfg = fanout_config(
        addr,
        Pace::FixedRate {
            messages_per_s: 300.0,
        },
    );
    let report = fanout::run(&cfg).await.expect("fanout runs");
    relay.abort();
    let f = report.fanout.as_ref().expect("fanout figures");
    // 300 msg/s over 0.5 s: 150 messages. The window is wall-clock time on a machine
    // that may be busy (a sender starved at the window's end sends fewer, one starved
    // in the warm-up catches up inside the window), so the bounds say "paced at about
    // that rate": half to one and a half times it. Unpaced, a closed loop sends
    // thousands in the same window; a pacer that stalls sends none.
    assert!((75..=225).contains(&f.sent), "{report}");
    assert_eq!(f.loss, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_storm_and_idle_complete_against_the_relay() {
    let (addr, relay) = start_relay().await;
    let report = storm::run(&storm::StormConfig {
        target: Target::new(addr).expect("target"),
        joins: 60,
        concurrency: 10,
        rooms: 4,
        max_failures: 1,
        server_pid: Some(std::process::id()),
        label: "relay".to_owned(),
        salt: 2,
    })
    .await
    .expect("storm runs");
    let s = report.connect.as_ref().expect("connect figures");
    assert_eq!(s.completed, 60, "{report}");
    assert_eq!(s.latency.count, 60, "{report}");
    assert!(s.first_failure.is_none(), "{report}");

    let report = idle::run(&idle::IdleConfig {
        target: Target::new(addr).expect("target"),
        connections: 50,
        rooms: 5,
        concurrency: 10,
        settle: Duration::from_millis(50),
        hold: Duration::ZERO,
        server_pid: std::process::id(),
        label: "relay".to_owned(),
        salt: 3,
    })
    .await
    .expect("idle runs");
    relay.abort();
    let i = report.idle.as_ref().expect("idle figures");
    assert_eq!(i.connections, 50);
    assert!(i.rss_after_kib > 0, "{report}");
}

#[tokio::test]
async fn a_server_that_is_not_there_is_an_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = fanout::run(&fanout_config(addr, Pace::ClosedLoop { window: 1 })).await;
    assert!(err.is_err());
}

#[tokio::test]
async fn the_relay_answers_the_join_in_the_reference_order_and_relays_with_seq() {
    let (addr, relay) = start_relay().await;
    let target = Target::new(addr).expect("target");
    let mut ws = chat_bench::client::connect(&target, 0)
        .await
        .expect("connect");
    assert_eq!(next_json(&mut ws).await["type"], "connection");
    for cmd in [
        r#"{"type":"set_username","username":"  alice  "}"#,
        r#"{"type":"join_room","room":" Lobby "}"#,
        r#"{"type":"chat_message","content":" hi "}"#,
    ] {
        ws.send(Message::text(cmd)).await.expect("send");
    }
    let mut kinds = Vec::new();
    let mut last = serde_json::Value::Null;
    for _ in 0..5 {
        last = next_json(&mut ws).await;
        kinds.push(last["type"].as_str().unwrap_or_default().to_owned());
        if last["type"] == "message_history" {
            assert_eq!(last["messages"], serde_json::json!([]));
        }
        if last["type"] == "room_users" {
            assert_eq!(last["users"][0]["username"], "alice");
        }
    }
    relay.abort();
    assert_eq!(
        kinds,
        [
            "username_set",
            "room_joined",
            "message_history",
            "room_users",
            "message_received"
        ]
    );
    assert_eq!(last["room"], "lobby");
    assert_eq!(last["content"], "hi");
    assert_eq!(last["username"], "alice");
    assert_eq!(last["seq"], 1);
}

/// The next text frame as JSON, within 5 s.
async fn next_json(ws: &mut chat_bench::client::Ws) -> serde_json::Value {
    // Bounded: each read waits at most 5 s, and a relay sends no endless non-text frames.
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

#[test]
fn with_several_nodes_every_room_has_members_on_each() {
    let addr = "127.0.0.1:9".parse().expect("an address");
    let mut cfg = fanout_config(addr, Pace::ClosedLoop { window: 1 });
    cfg.clients = 18;
    cfg.rooms = 3;
    cfg.other_nodes = ["127.0.0.1:10", "127.0.0.1:11"]
        .iter()
        .map(|a| Target::new(a.parse().expect("an address")).expect("a target"))
        .collect();
    for room in 0..cfg.rooms {
        let nodes: std::collections::BTreeSet<SocketAddr> = (0..cfg.clients)
            .filter(|&i| cfg.room_of(i) == room)
            .map(|i| cfg.node_of(i).addr)
            .collect();
        assert_eq!(nodes.len(), 3, "room {room} spans every node");
    }
    // The senders (clients 0..3) are one per room, one on each node: every node
    // announces messages to the others as well as receiving theirs.
    let sender_nodes: std::collections::BTreeSet<SocketAddr> =
        (0..cfg.senders).map(|i| cfg.node_of(i).addr).collect();
    assert_eq!(sender_nodes.len(), 3, "senders spread over the nodes");
}
