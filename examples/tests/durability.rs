//! Durable history end to end, against the real example server binary on each durable
//! backend of [`support::backends`] (SQLite; PostgreSQL when `CHAT_TEST_POSTGRES_URL` is set):
//!
//! * **Crash**: 60 concurrent senders with unique `clientMsgId`s record which sends were
//!   acknowledged; the server is `kill -9`ed mid-stream and restarted on the same
//!   database. Every acknowledged message is in the history exactly once, with the `seq`
//!   its acknowledgement gave; each room's `seq`s are contiguous; resending the
//!   unacknowledged ones with the same ids creates no duplicates.
//! * **Lossless reconnect**: a client away while others keep sending comes back with
//!   `since`/`epoch` and gets exactly what it missed, in order (`recovered: true`) —
//!   also when the server was restarted in between.
//!
//! The counts (sent, acknowledged, found after the restart) are printed: run with
//! `cargo test -p chat-examples --test durability -- --nocapture`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use support::{Backend, Client, PROMPT, ServerProcess, backends};
use tokio::sync::Notify;

const SENDERS: usize = 60;
const ROOMS: usize = 3;
/// The server is killed once this many sends were acknowledged in total.
const KILL_AFTER_ACKS: u64 = 600;
/// Each sender stops here if the kill has not come (it always comes first).
const MAX_PER_SENDER: usize = 1000;

fn room_of(sender: usize) -> String {
    format!("crash-{}", sender % ROOMS)
}

fn client_msg_id(sender: usize, n: usize) -> String {
    format!("s{sender}-m{n}")
}

/// What one sender saw before the kill.
#[derive(Debug, Default)]
struct Sent {
    /// Acknowledged: clientMsgId → the seq its `message_received` carried.
    acked: HashMap<String, u64>,
    /// Written to the socket but never acknowledged (at most one: a sender waits for
    /// each acknowledgement before the next send).
    unacked: Vec<(String, String)>,
    sent: usize,
}

/// Sends messages one after another, each waiting for its own `message_received`, until
/// the connection dies.
/// Acknowledgements the senders received, and a signal when there are enough to kill.
#[derive(Default)]
struct Acks {
    count: AtomicU64,
    enough: Notify,
}

impl Acks {
    fn record(&self) {
        if self.count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_ACKS {
            // A stored permit: the waiter wakes even if it is not waiting yet.
            self.enough.notify_one();
        }
    }
}

async fn sender(addr: std::net::SocketAddr, i: usize, acks: Arc<Acks>) -> (usize, Sent) {
    let user = format!("sender{i}");
    let room = room_of(i);
    let mut client = Client::connect(addr, &user).await;
    client.join(&room, json!({})).await;
    let mut sent = Sent::default();
    for n in 0..MAX_PER_SENDER {
        let id = client_msg_id(i, n);
        let content = format!("{user} message {n}");
        let frame =
            json!({"type": "chat_message", "room": room, "content": content, "clientMsgId": id});
        if client.send(frame).await.is_err() {
            return (i, sent);
        }
        sent.sent += 1;
        // Our own message comes back as a `message_received` with our clientMsgId; the
        // other senders' messages of the room are skipped.
        let acked = loop {
            match client.next().await {
                Some(f) if f["type"] == "message_received" && f["clientMsgId"] == id.as_str() => {
                    break f["seq"].as_u64();
                }
                Some(f) if f["type"] == "error" => panic!("{user}: error {f}"),
                Some(_) => {}
                None => break None,
            }
        };
        match acked {
            Some(seq) => {
                sent.acked.insert(id, seq);
                acks.record();
            }
            None => {
                sent.unacked.push((id, content));
                return (i, sent);
            }
        }
    }
    (i, sent)
}

/// Reads every message of `room` from the server: seqs contiguous from 1, each
/// clientMsgId once; returns them by clientMsgId (with their seq).
async fn read_room(
    addr: std::net::SocketAddr,
    backend: Backend,
    room: &str,
) -> BTreeMap<String, u64> {
    let mut reader = Client::connect(addr, "reader").await;
    let (newest, _) = reader.join(room, json!({})).await;
    let all = reader.whole_history(room, newest).await;
    reader.close().await;
    let seqs: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{}: room {room}: seq must be contiguous from 1",
        backend.name()
    );
    let mut by_id = BTreeMap::new();
    for m in &all {
        let id = m["clientMsgId"].as_str().unwrap().to_owned();
        let seq = m["seq"].as_u64().unwrap();
        if let Some(first) = by_id.insert(id.clone(), seq) {
            panic!(
                "{}: room {room}: clientMsgId {id} stored twice (seq {first} and {seq})",
                backend.name()
            );
        }
    }
    by_id
}

async fn crash_and_restart(backend: Backend) {
    let db = backend.database();
    let server = ServerProcess::start(&db.store);
    let addr = server.addr;
    let acks = Arc::new(Acks::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SENDERS {
        tasks.spawn(sender(addr, i, Arc::clone(&acks)));
    }
    // Kill mid-stream: once enough sends were acknowledged, while all 60 are sending.
    tokio::time::timeout(PROMPT * 3, acks.enough.notified())
        .await
        .expect("the senders get acknowledgements");
    server.kill9();
    let mut results: Vec<(usize, Sent)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done.unwrap());
    }
    let sent: usize = results.iter().map(|(_, s)| s.sent).sum();
    let acked: usize = results.iter().map(|(_, s)| s.acked.len()).sum();
    let unacked: usize = results.iter().map(|(_, s)| s.unacked.len()).sum();

    // Restart on the same database.
    let server = ServerProcess::start(&db.store);
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    for r in 0..ROOMS {
        stored.extend(read_room(server.addr, backend, &format!("crash-{r}")).await);
    }
    let mut found = 0;
    for (_, s) in &results {
        for (id, seq) in &s.acked {
            assert_eq!(
                stored.get(id),
                Some(seq),
                "{}: acknowledged message {id} (seq {seq}) must survive the crash at its seq",
                backend.name()
            );
            found += 1;
        }
    }
    let unacked_but_stored = results
        .iter()
        .flat_map(|(_, s)| &s.unacked)
        .filter(|(id, _)| stored.contains_key(id))
        .count();

    // Resend the unacknowledged ones, same user, same ids: no duplicates, each stored
    // exactly once whether or not the first attempt had landed.
    for (i, s) in &results {
        for (id, content) in &s.unacked {
            let mut client = Client::connect(server.addr, &format!("sender{i}")).await;
            let room = room_of(*i);
            client.join(&room, json!({})).await;
            client
                .send(json!({"type": "chat_message", "room": room, "content": content, "clientMsgId": id}))
                .await
                .unwrap();
            // Commands are handled in order: once this probe is acknowledged, the
            // resend before it was handled too (a duplicate already in the join
            // history is not sent again).
            let probe = format!("probe-{i}");
            client
                .send(json!({"type": "chat_message", "room": room, "content": "probe", "clientMsgId": probe}))
                .await
                .unwrap();
            loop {
                let f = client.expect("message_received").await;
                if f["clientMsgId"] == probe.as_str() {
                    break;
                }
            }
            client.close().await;
        }
    }
    let mut after: BTreeMap<String, u64> = BTreeMap::new();
    for r in 0..ROOMS {
        after.extend(read_room(server.addr, backend, &format!("crash-{r}")).await);
    }
    for (_, s) in &results {
        for (id, _) in &s.unacked {
            assert!(
                after.contains_key(id),
                "{}: resent {id} is stored",
                backend.name()
            );
        }
        for (id, seq) in &s.acked {
            assert_eq!(
                after.get(id),
                Some(seq),
                "{}: {id} unchanged by the resends",
                backend.name()
            );
        }
    }
    println!(
        "crash test [{}]: {SENDERS} senders, sent {sent}, acknowledged {acked}, \
         unacknowledged {unacked} (of which {unacked_but_stored} were stored anyway), \
         acknowledged found after the restart {found}/{acked}, \
         {} messages after resending the unacknowledged ones (no duplicates)",
        backend.name(),
        after.len() - unacked, // less the probes
    );
    assert!(acked as u64 >= KILL_AFTER_ACKS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_messages_survive_kill_9_exactly_once() {
    for backend in backends("acknowledged_messages_survive_kill_9_exactly_once") {
        crash_and_restart(backend).await;
    }
}

/// Sends `n` messages as `client` to `room`, waiting for each acknowledgement; their
/// (seq, content).
async fn send_acked(client: &mut Client, room: &str, prefix: &str, n: usize) -> Vec<(u64, String)> {
    let mut acked = Vec::new();
    for k in 0..n {
        let content = format!("{prefix} {k}");
        let id = format!("{}-{prefix}-{k}", client.user);
        client
            .send(json!({"type": "chat_message", "room": room, "content": content, "clientMsgId": id}))
            .await
            .unwrap();
        loop {
            let f = client.expect("message_received").await;
            if f["clientMsgId"] == id.as_str() {
                acked.push((f["seq"].as_u64().unwrap(), content));
                break;
            }
        }
    }
    acked
}

/// Rejoins with `since`/`epoch` and checks the replay is exactly `missed`, in order.
async fn assert_resumes(
    client: &mut Client,
    room: &str,
    since: u64,
    epoch: &str,
    missed: &[(u64, String)],
    what: &str,
) {
    let (replay, frame) = client
        .join(room, json!({"since": since, "epoch": epoch}))
        .await;
    assert_eq!(
        frame["recovered"], true,
        "{what}: resume must be recovered: {frame}"
    );
    assert_eq!(frame["epoch"], epoch, "{what}: same epoch");
    let got: Vec<(u64, String)> = replay
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, missed, "{what}: exactly the missed messages, in order");
}

async fn lossless_reconnect(backend: Backend) {
    let db = backend.database();
    let room = "lobby";
    let server = ServerProcess::start(&db.store);
    let mut alice = Client::connect(server.addr, "alice").await;
    let mut bob = Client::connect(server.addr, "bob").await;
    let mut carol = Client::connect(server.addr, "carol").await;
    alice.join(room, json!({})).await;
    bob.join(room, json!({})).await;
    let (_, frame) = carol.join(room, json!({})).await;
    let epoch = frame["epoch"].as_str().unwrap().to_owned();
    let before = send_acked(&mut alice, room, "before", 5).await;
    // Carol reads them live, then goes away.
    let mut carol_last = 0;
    while carol_last < before.last().unwrap().0 {
        carol_last = carol.expect("message_received").await["seq"]
            .as_u64()
            .unwrap();
    }
    carol.close().await;

    // Others keep sending while she is away (interleaved writers).
    let mut missed = send_acked(&mut alice, room, "away a", 15).await;
    missed.extend(send_acked(&mut bob, room, "away b", 15).await);
    missed.sort();
    let mut carol = Client::connect(server.addr, "carol").await;
    assert_resumes(
        &mut carol,
        room,
        carol_last,
        &epoch,
        &missed,
        &format!("{} reconnect", backend.name()),
    )
    .await;
    // And live messages continue right after the replay.
    let next = send_acked(&mut bob, room, "live", 1).await;
    let live = carol.expect("message_received").await;
    assert_eq!(live["seq"].as_u64(), Some(next[0].0));
    assert_eq!(next[0].0, missed.last().unwrap().0 + 1);
    let (carol_last, carol_epoch) = (next[0].0, epoch.clone());
    carol.close().await;

    // Away across a restart: messages before the kill, and after the restart.
    let mut missed = send_acked(&mut alice, room, "before the crash", 10).await;
    server.kill9();
    let server = ServerProcess::start(&db.store);
    let mut alice = Client::connect(server.addr, "alice").await;
    let (_, frame) = alice.join(room, json!({})).await;
    assert_eq!(
        frame["epoch"],
        carol_epoch.as_str(),
        "the epoch survives the restart"
    );
    missed.extend(send_acked(&mut alice, room, "after the restart", 10).await);
    let mut carol = Client::connect(server.addr, "carol").await;
    assert_resumes(
        &mut carol,
        room,
        carol_last,
        &carol_epoch,
        &missed,
        &format!("{} restart", backend.name()),
    )
    .await;
    println!(
        "lossless reconnect [{}]: resumed 30 missed messages, then {} across a kill -9 and restart, recovered: true",
        backend.name(),
        missed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reconnect_gets_exactly_what_it_missed_also_across_a_restart() {
    for backend in backends("a_reconnect_gets_exactly_what_it_missed_also_across_a_restart") {
        lossless_reconnect(backend).await;
    }
}
