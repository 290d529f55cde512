//! Three example servers in one cluster (`--redis`, one PostgreSQL database): clients
//! spread over them chat in shared rooms, DM across nodes, see each other's typing and
//! the same member lists; every client's view of each room is the same `seq` sequence
//! without gap or duplicate (checked with `support::jepsen`). Plus the username race
//! (two nodes, one name, the same moment: exactly one wins) and a clean shutdown (its
//! users leave every list at once).
//!
//! Needs `CHAT_TEST_REDIS_URL` and `CHAT_TEST_POSTGRES_URL` (skipped with a note
//! without them; a failure under `CI=true`). Each test has its own database and its own
//! Redis key prefix.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use support::cluster::{Recorder, members_agree, settle, start_node, traffic};
use support::postgres::{self, TestDb};
use support::redis::{self, TestPrefix};
use support::{PROMPT, jepsen, start_refused};

/// Both services, or `None` (skipped, with a note) when one is not configured.
fn services(test: &str) -> Option<(String, String)> {
    let redis = redis::server_url(test)?;
    let postgres = postgres::server_url(test)?;
    Some((redis, postgres))
}

/// `GET /healthz`: (status, body).
async fn healthz(addr: std::net::SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PROMPT, stream.read_to_string(&mut response))
        .await
        .expect("a response in time")
        .unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn users(ids: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
    ids.into_iter().map(|i| format!("u{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_rooms_presence_typing_and_dms() {
    let Some((redis, pg)) = services("three_nodes_share_rooms_presence_typing_and_dms") else {
        return;
    };
    let db = TestDb::create(&pg);
    let prefix = TestPrefix::new(&redis);
    let nodes: Vec<_> = (1..=3)
        .map(|n| start_node(&db.url, &redis, &prefix.prefix, &format!("n{n}")))
        .collect();

    // Nine users, three per node; everyone in the lobby, two smaller rooms across nodes.
    let mut clients = Vec::new();
    for i in 0..9 {
        let node = i % 3;
        let label = format!("u{i}@n{}", node + 1);
        let client = Recorder::connect(
            nodes[node].addr,
            &format!("u{i}"),
            &format!("user{i}"),
            &label,
        )
        .await;
        client.join("lobby").await;
        client.join(if i < 5 { "r1" } else { "r2" }).await;
        clients.push(client);
    }
    members_agree(&clients, "lobby", &users(0..9), PROMPT)
        .await
        .unwrap();
    // Each node's /healthz names it and reports its bus.
    for (n, node) in nodes.iter().enumerate() {
        assert_eq!(
            healthz(node.addr).await,
            (200, format!("ok (node n{}: bus ok)", n + 1))
        );
    }
    members_agree(&clients[..5], "r1", &users(0..5), PROMPT)
        .await
        .unwrap();
    members_agree(&clients[5..], "r2", &users(5..9), PROMPT)
        .await
        .unwrap();

    // u1 also on n3: still one member everywhere.
    let u1_again = Recorder::connect(nodes[2].addr, "u1", "user1", "u1@n3").await;
    u1_again.join("lobby").await;
    let mut everyone = clients.clone();
    everyone.push(u1_again.clone());
    members_agree(&everyone, "lobby", &users(0..9), PROMPT)
        .await
        .unwrap();
    // Both of u1's connections kept the name it had.
    assert!(u1_again.with(|s| {
        s.frames
            .iter()
            .any(|f| f["type"] == "username_set" && f["username"] == "user1")
    }));

    // Typing crosses nodes (and is not stored).
    assert!(
        clients[0]
            .send(json!({"type": "typing_start", "room": "lobby"}))
            .await
    );
    for other in [&clients[1], &clients[2], &u1_again] {
        assert!(
            other
                .wait(PROMPT, |s| s
                    .frames
                    .iter()
                    .any(|f| f["type"] == "typing_indicator"
                        && f["userId"] == "u0"
                        && f["isTyping"] == true))
                .await,
            "typing reached {}",
            other.user()
        );
    }

    // A DM from n1 reaches both of u1's connections (n2 and n3); the sender gets its copy.
    assert!(
        clients[0]
            .send(json!({"type": "private_message", "targetId": "u1", "content": "psst", "clientMsgId": "dm-1"}))
            .await
    );
    for target in [&clients[1], &u1_again] {
        assert!(
            target
                .wait(PROMPT, |s| s
                    .frames
                    .iter()
                    .any(|f| f["type"] == "private_message"
                        && f["fromId"] == "u0"
                        && f["content"] == "psst"))
                .await,
            "the DM reached {}",
            target.with(|s| s.history.label.clone())
        );
    }
    assert!(
        clients[0]
            .wait(PROMPT, |s| s.frames.iter().any(|f| f["type"]
                == "private_message_sent"
                && f["clientMsgId"] == "dm-1"))
            .await
    );
    // A DM to a user online on another node only; an unknown user is not found.
    assert!(
        clients[2]
            .send(json!({"type": "private_message", "targetId": "u7", "content": "hi 7"}))
            .await
    );
    assert!(
        clients[7]
            .wait(PROMPT, |s| s.frames.iter().any(|f| f["type"]
                == "private_message"
                && f["content"] == "hi 7"))
            .await
    );
    assert!(
        clients[2]
            .send(json!({"type": "private_message", "targetId": "nobody", "content": "?"}))
            .await
    );
    assert!(
        clients[2]
            .wait(PROMPT, |s| {
                s.frames
                    .iter()
                    .any(|f| f["type"] == "error" && f["code"] == "user_not_found")
            })
            .await
    );

    // Traffic from everyone into their rooms, then the histories are checked.
    traffic(&everyone, 20, Duration::from_millis(10)).await;
    let settled = settle(&everyone, Duration::from_secs(60)).await;
    let histories: Vec<_> = everyone.iter().map(Recorder::history).collect();
    let report = jepsen::check(&histories);
    println!("three nodes, no fault: {report}");
    assert!(settled, "the clients did not settle:\n{report}");
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(report.acknowledged, report.sent, "{report}");
    // One message per seq: the room's head is the number of messages sent into it.
    let lobby_sent = histories
        .iter()
        .flat_map(|h| &h.sent)
        .filter(|(room, _)| room == "lobby")
        .count() as u64;
    assert_eq!(clients[4].with(|s| s.rooms["lobby"].cursor), lobby_sent);

    // u1 closing one of its two connections is no departure; leaving the lobby is.
    u1_again.close().await;
    clients[1].leave("lobby").await;
    let without_u1: BTreeSet<String> = users((0..9).filter(|&i| i != 1));
    let remaining: Vec<_> = clients
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, c)| c.clone())
        .collect();
    members_agree(&remaining, "lobby", &without_u1, PROMPT)
        .await
        .unwrap();
    for c in &remaining {
        let left_events = c.with(|s| {
            s.frames
                .iter()
                .filter(|f| f["type"] == "user_left" && f["userId"] == "u1" && f["room"] == "lobby")
                .count()
        });
        assert_eq!(left_events, 1, "{} saw u1 leave once", c.user());
    }

    // A clean shutdown of n3 removes its users from every list at once (well within the
    // lease, which only bounds crashes).
    let mut nodes = nodes;
    let n3 = nodes.pop().unwrap();
    let started = std::time::Instant::now();
    assert!(n3.terminate().success());
    let on_n1_n2: Vec<_> = remaining
        .iter()
        .filter(|c| !c.with(|s| s.history.label.ends_with("@n3")))
        .cloned()
        .collect();
    let expected = users([0, 3, 4, 6, 7]);
    members_agree(&on_n1_n2, "lobby", &expected, Duration::from_secs(5))
        .await
        .unwrap();
    println!(
        "clean shutdown: users gone from every list after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_one_name_at_the_same_moment_one_wins() {
    let Some((redis, pg)) = services("two_nodes_claiming_one_name_at_the_same_moment") else {
        return;
    };
    let db = TestDb::create(&pg);
    let prefix = TestPrefix::new(&redis);
    let a = start_node(&db.url, &redis, &prefix.prefix, "a");
    let b = start_node(&db.url, &redis, &prefix.prefix, "b");
    let rounds = 10;
    let mut exact = 0;
    for round in 0..rounds {
        let name = format!("Racer{round}");
        let (xu, yu) = (format!("x{round}"), format!("y{round}"));
        let (x, y) = tokio::join!(
            Recorder::connect(a.addr, &xu, &name, "x@a"),
            Recorder::connect(b.addr, &yu, &name, "y@b"),
        );
        let mut names = Vec::new();
        for c in [&x, &y] {
            assert!(
                c.wait(PROMPT, |s| s
                    .frames
                    .iter()
                    .any(|f| f["type"] == "username_set"))
                    .await
            );
            names.push(c.with(|s| {
                s.frames
                    .iter()
                    .find(|f| f["type"] == "username_set")
                    .and_then(|f| f["username"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            }));
        }
        names.sort();
        assert_eq!(
            names,
            [name.clone(), format!("{name} (2)")],
            "round {round}"
        );
        exact += 1;
        x.close().await;
        y.close().await;
    }
    println!("username race: {rounds} rounds, exactly one winner in {exact}");
}

#[test]
fn a_node_refuses_to_start_without_a_shared_store_or_a_reachable_redis() {
    let (status, stderr) = start_refused(&["--redis", "redis://127.0.0.1:1"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("add --store postgres://"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let Some(pg) = postgres::server_url("a_node_refuses_to_start_without_a_reachable_redis") else {
        return;
    };
    let db = TestDb::create(&pg);
    let (status, stderr) = start_refused(&[
        "--store",
        &db.url,
        "--redis",
        "redis://:hunter2@127.0.0.1:1",
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot join the cluster through redis://:***@127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
