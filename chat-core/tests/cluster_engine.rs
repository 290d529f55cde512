//! Engines of a cluster, wired by hand through the deterministic `Mesh` (a shared
//! store, the in-process bus core between them): the exact frames clients on different
//! nodes see, with and without faults (ARCHITECTURE.md decision 18).
//!
//! Run: `cargo test -p chat-core --features testkit --test cluster_engine`.
#![cfg(feature = "testkit")]

use std::time::Duration;

use serde_json::{Value, json};

use chat_core::testkit::cluster::Mesh;
use chat_core::{Config, ConnId};

fn mesh(nodes: usize) -> Mesh {
    Mesh::new(nodes, Config::unlimited())
}

/// Sends a frame and lets the bus settle.
fn send(m: &mut Mesh, conn: ConnId, frame: Value) {
    m.send(conn, frame);
    m.settle();
}

/// An anonymous connection on `node` named `name`; returns it and its user id.
fn named(m: &mut Mesh, node: usize, name: &str) -> (ConnId, String) {
    let c = m.connect(node);
    m.settle();
    send(m, c, json!({"type":"set_username","username":name}));
    let frames = m.take(c);
    assert_eq!(frames[1], json!({"type":"username_set","username":name}));
    let id = frames[0]["clientId"].as_str().expect("present").to_owned();
    (c, id)
}

/// `named`, then joined to `room`; its join frames are taken.
fn member(m: &mut Mesh, node: usize, name: &str, room: &str) -> (ConnId, String) {
    let (c, id) = named(m, node, name);
    send(m, c, json!({"type":"join_room","room":room}));
    m.take(c);
    (c, id)
}

fn user(id: &str, name: &str) -> Value {
    json!({"id":id,"username":name})
}

#[test]
fn members_on_other_nodes_are_listed_and_announced() {
    let mut m = mesh(2);
    let (a, alice) = member(&mut m, 0, "alice", "lobby");
    let (b, bob) = named(&mut m, 1, "bob");
    send(&mut m, b, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        m.take(b),
        vec![
            json!({"type":"room_joined","room":"lobby"}),
            json!({"type":"message_history","room":"lobby","messages":[],"epoch":"sim-epoch",
                   "lastSeq":0,"recovered":false,"hasMore":false}),
            json!({"type":"room_users","room":"lobby",
                   "users":[user(&bob, "bob"), user(&alice, "alice")]}),
        ],
        "local users first, then those on other nodes"
    );
    assert_eq!(
        m.take(a),
        vec![json!({"type":"user_joined","room":"lobby","username":"bob","userId":bob})]
    );
    send(&mut m, b, json!({"type":"leave_room"}));
    assert_eq!(
        m.take(a),
        vec![json!({"type":"user_left","room":"lobby","username":"bob","userId":bob})]
    );
}

#[test]
fn a_user_on_two_nodes_is_one_member() {
    let mut m = mesh(2);
    let (watcher, w) = member(&mut m, 0, "watcher", "lobby");
    let on0 = m.connect_as(0, "u-1", "carol");
    let on1 = m.connect_as(1, "u-1", "carol");
    m.settle();
    for c in [on0, on1] {
        assert_eq!(
            m.take(c),
            vec![
                json!({"type":"connection","clientId":"u-1"}),
                json!({"type":"username_set","username":"carol"}),
            ],
            "both connections get the name claimed for the user"
        );
    }
    send(&mut m, on1, json!({"type":"join_room","room":"lobby"}));
    send(&mut m, on0, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        m.take(watcher),
        vec![json!({"type":"user_joined","room":"lobby","username":"carol","userId":"u-1"})],
        "one user_joined for the user, not one per node"
    );
    let frames = m.take(on0);
    assert_eq!(
        frames[2]["users"],
        json!([user(&w, "watcher"), user("u-1", "carol")]),
        "listed once"
    );
    send(&mut m, on1, json!({"type":"leave_room"}));
    assert_eq!(
        m.take(watcher),
        Vec::<Value>::new(),
        "still present on node 0"
    );
    send(&mut m, on0, json!({"type":"leave_room"}));
    assert_eq!(
        m.take(watcher),
        vec![json!({"type":"user_left","room":"lobby","username":"carol","userId":"u-1"})]
    );
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message_received")
        .map(|f| f["seq"].as_u64().expect("present"))
        .collect()
}

#[test]
fn messages_from_every_node_arrive_in_seq_order_everywhere() {
    let mut m = mesh(3);
    let (a, _) = member(&mut m, 0, "alice", "lobby");
    let (b, _) = member(&mut m, 1, "bob", "lobby");
    let (c, _) = member(&mut m, 2, "carol", "lobby");
    m.take(a);
    m.take(b);
    // Three nodes post before the bus moves: announcements cross in flight.
    m.send(a, json!({"type":"chat_message","content":"a1"}));
    m.send(b, json!({"type":"chat_message","content":"b1"}));
    m.send(c, json!({"type":"chat_message","content":"c1"}));
    m.send(a, json!({"type":"chat_message","content":"a2"}));
    m.settle();
    for conn in [a, b, c] {
        let frames = m.take(conn);
        assert_eq!(seqs(&frames), vec![1, 2, 3, 4], "{conn:?} saw {frames:?}");
        let contents: Vec<&str> = frames
            .iter()
            .map(|f| f["content"].as_str().expect("present"))
            .collect();
        assert_eq!(contents, ["a1", "b1", "c1", "a2"]);
    }
}

#[test]
fn a_lost_announcement_is_filled_from_the_store_before_the_next_is_delivered() {
    let mut m = mesh(2);
    let (a, _) = member(&mut m, 0, "alice", "lobby");
    let (b, _) = member(&mut m, 1, "bob", "lobby");
    m.take(a);
    m.drop_next(1, 1);
    send(&mut m, a, json!({"type":"chat_message","content":"lost"}));
    assert_eq!(m.take(b), Vec::<Value>::new(), "the announcement was lost");
    send(&mut m, a, json!({"type":"chat_message","content":"next"}));
    let frames = m.take(b);
    assert_eq!(
        seqs(&frames),
        vec![1, 2],
        "the gap is read before seq 2 goes out"
    );
    assert_eq!(frames[0]["content"], "lost");
}

#[test]
fn a_resync_after_a_disconnection_sends_the_membership_diff_and_what_was_missed() {
    let mut m = mesh(2);
    let (a, _) = member(&mut m, 0, "alice", "lobby");
    let (dave, dave_id) = member(&mut m, 0, "dave", "lobby");
    let (b, _) = member(&mut m, 1, "bob", "lobby");
    m.take(a);
    m.take(dave);
    m.disconnect_node(1);
    // Meanwhile dave leaves and carol joins on node 0, alice posts: node 1 hears none
    // of it.
    send(&mut m, dave, json!({"type":"leave_room"}));
    let (carol, carol_id) = member(&mut m, 0, "carol", "lobby");
    send(
        &mut m,
        a,
        json!({"type":"chat_message","content":"while away"}),
    );
    m.take(a);
    m.take(carol);
    assert_eq!(m.take(b), Vec::<Value>::new());
    m.reconnect_node(1);
    m.settle();
    let frames = m.take(b);
    assert_eq!(
        frames[..2],
        [
            json!({"type":"user_left","room":"lobby","username":"dave","userId":dave_id}),
            json!({"type":"user_joined","room":"lobby","username":"carol","userId":carol_id}),
        ],
        "the snapshot's diff"
    );
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[2]["content"], "while away", "then the catch-up read");
    assert_eq!(frames[2]["seq"], 1);
    assert_eq!(
        m.take(a),
        Vec::<Value>::new(),
        "bob never left for the others"
    );
}

#[test]
fn a_crashed_node_s_users_leave_when_the_bus_declares_it_down() {
    let mut m = mesh(2);
    let (a, _) = member(&mut m, 0, "alice", "lobby");
    let (b, bob) = member(&mut m, 1, "bob", "lobby");
    send(&mut m, b, json!({"type":"typing_start"}));
    m.take(a);
    m.crash(1);
    assert_eq!(
        m.take(a),
        Vec::<Value>::new(),
        "nothing until the lease expires"
    );
    m.declare_down(1);
    assert_eq!(
        m.take(a),
        vec![
            json!({"type":"typing_indicator","room":"lobby","username":"bob","userId":bob,
                   "isTyping":false}),
            json!({"type":"user_left","room":"lobby","username":"bob","userId":bob}),
        ]
    );
    // Its name is free again (`named` checks the `username_set`).
    named(&mut m, 0, "bob");
}

#[test]
fn two_nodes_claiming_one_name_at_once_exactly_one_wins() {
    let mut m = mesh(2);
    let a = m.connect(0);
    let b = m.connect(1);
    m.settle();
    m.take(a);
    m.take(b);
    m.send(a, json!({"type":"set_username","username":"sam"}));
    m.send(b, json!({"type":"set_username","username":"SAM"}));
    m.settle();
    let (fa, fb) = (m.take(a), m.take(b));
    let won = [&fa, &fb]
        .iter()
        .filter(|f| f[0]["type"] == "username_set")
        .count();
    let lost: Vec<&Value> = [&fa, &fb]
        .iter()
        .filter(|f| f[0]["type"] == "error")
        .map(|f| &f[0])
        .collect();
    assert_eq!(won, 1, "{fa:?} {fb:?}");
    assert_eq!(
        lost,
        vec![&json!({"type":"error","message":"Username taken","code":"username_taken"})]
    );
}

#[test]
fn commands_wait_for_the_name_claim() {
    let mut m = mesh(1);
    let a = m.connect(0);
    m.settle();
    m.take(a);
    m.send(a, json!({"type":"set_username","username":"alice"}));
    m.send(a, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(m.take(a), Vec::<Value>::new(), "busy until the bus answers");
    m.settle();
    assert_eq!(
        m.take_types(a),
        [
            "username_set",
            "room_joined",
            "message_history",
            "room_users"
        ]
    );
}

#[test]
fn a_bus_that_cannot_answer_gives_cluster_unavailable() {
    let mut m = mesh(2);
    let a = m.connect(0);
    m.settle();
    m.take(a);
    m.disconnect_node(0);
    send(&mut m, a, json!({"type":"set_username","username":"alice"}));
    assert_eq!(
        m.take(a),
        vec![json!({"type":"error",
                    "message":"The cluster is unavailable; nothing was changed. Try again later",
                    "code":"cluster_unavailable"})]
    );
}

#[test]
fn dms_reach_users_on_other_nodes() {
    let mut m = mesh(2);
    let (a, alice) = named(&mut m, 0, "alice");
    let (b, bob) = named(&mut m, 1, "bob");
    let b2 = m.connect_as(0, &bob, "bob");
    m.settle();
    m.take(b2);
    send(
        &mut m,
        a,
        json!({"type":"private_message","targetId":bob,"content":"hi","clientMsgId":"m1"}),
    );
    let sent = m.take(a);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["type"], "private_message_sent");
    assert_eq!(sent[0]["clientMsgId"], "m1");
    for conn in [b, b2] {
        let got = m.take(conn);
        assert_eq!(got.len(), 1, "{conn:?}: {got:?}");
        assert_eq!(got[0]["type"], "private_message");
        assert_eq!(got[0]["fromId"], alice);
        assert_eq!(got[0]["toUsername"], "bob");
        assert_eq!(got[0]["content"], "hi");
    }
    send(
        &mut m,
        a,
        json!({"type":"private_message","targetId":"nobody","content":"hi"}),
    );
    assert_eq!(
        m.take(a),
        vec![json!({"type":"error","message":"User not found","code":"user_not_found"})]
    );
}

#[test]
fn typing_crosses_nodes_and_stops_by_itself_when_the_origin_goes_quiet() {
    let mut m = mesh(2);
    let (a, alice) = member(&mut m, 0, "alice", "lobby");
    let (b, _) = member(&mut m, 1, "bob", "lobby");
    m.take(a);
    send(&mut m, a, json!({"type":"typing_start"}));
    let on = json!({"type":"typing_indicator","room":"lobby","username":"alice",
                    "userId":alice,"isTyping":true});
    let off = json!({"type":"typing_indicator","room":"lobby","username":"alice",
                     "userId":alice,"isTyping":false});
    assert_eq!(m.take(b), vec![on.clone()]);
    // A held key: the origin tells the others again once half the timeout passed, so
    // the indicator does not blink off at 5 s.
    m.advance(Duration::from_secs(3));
    send(&mut m, a, json!({"type":"typing_start"}));
    m.advance(Duration::from_millis(2500));
    m.settle();
    assert_eq!(m.take(b), Vec::<Value>::new(), "still on at 5.5 s");
    send(&mut m, a, json!({"type":"typing_stop"}));
    assert_eq!(m.take(b), vec![off.clone()]);
    // The origin goes quiet (cut off the bus): the indicator stops by itself.
    send(&mut m, a, json!({"type":"typing_start"}));
    assert_eq!(m.take(b), vec![on]);
    m.disconnect_node(0);
    m.advance(Duration::from_secs(5));
    m.settle();
    assert_eq!(m.take(b), vec![off]);
}

#[test]
fn a_first_join_without_the_bus_fails_and_a_later_one_succeeds() {
    let mut m = mesh(2);
    let (a, _) = named(&mut m, 0, "alice");
    m.disconnect_node(0);
    m.send(a, json!({"type":"join_room","room":"lobby"}));
    m.send(
        a,
        json!({"type":"chat_message","content":"queued behind the join"}),
    );
    m.settle();
    assert_eq!(
        m.take(a),
        vec![
            json!({"type":"error",
                   "message":"The cluster is unavailable; nothing was changed. Try again later",
                   "code":"cluster_unavailable"}),
            json!({"type":"error","message":"Join a room first","code":"not_in_room"}),
        ],
        "the join fails, and the command queued behind it runs after it"
    );
    m.reconnect_node(0);
    send(&mut m, a, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        m.take_types(a),
        ["room_joined", "message_history", "room_users"]
    );
    let (b, _) = member(&mut m, 1, "bob", "lobby");
    send(&mut m, b, json!({"type":"chat_message","content":"hello"}));
    assert_eq!(m.take_types(a), ["user_joined", "message_received"]);
}

#[test]
fn joins_wait_for_the_member_snapshot() {
    let mut m = mesh(2);
    let (_, bob) = member(&mut m, 1, "bob", "lobby");
    let (a, _) = named(&mut m, 0, "alice");
    // The store page is in at once; the snapshot only when the bus moves.
    m.send(a, json!({"type":"join_room","room":"lobby"}));
    m.send(a, json!({"type":"chat_message","content":"after the join"}));
    assert_eq!(
        m.take(a),
        Vec::<Value>::new(),
        "nothing before the snapshot"
    );
    m.settle();
    let frames = m.take(a);
    assert_eq!(frames[0]["type"], "room_joined");
    assert_eq!(
        frames[2]["users"][1]["id"],
        bob.as_str(),
        "the snapshot's member is listed"
    );
    assert_eq!(
        frames[3]["type"], "message_received",
        "the queued message went after the join"
    );
}

#[test]
fn authenticated_names_are_disambiguated_across_nodes() {
    let mut m = mesh(2);
    let first = m.connect_as(0, "u-1", "carol");
    m.settle();
    let second = m.connect_as(1, "u-2", "Carol");
    m.settle();
    assert_eq!(
        m.take(first)[1],
        json!({"type":"username_set","username":"carol"})
    );
    assert_eq!(
        m.take(second)[1],
        json!({"type":"username_set","username":"Carol (2)"}),
        "the name another node's user holds is disambiguated, not refused"
    );
}

#[test]
fn an_authenticated_connect_without_the_bus_is_closed_with_1013() {
    let mut m = mesh(1);
    m.disconnect_node(0);
    let c = m.connect_as(0, "u-1", "carol");
    m.settle();
    assert_eq!(m.take_types(c), ["connection"]);
    let (code, reason) = m.closed(c).expect("closed");
    assert_eq!((code.0, reason), (1013, "cluster unavailable"));
}

/// A small deterministic generator (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// What one client has seen of the room: the last `seq` (`None` when not a member) and
/// who is present.
#[derive(Debug, Clone, Default)]
struct View {
    last: Option<u64>,
    present: std::collections::BTreeSet<String>,
}

/// Checks one client's new frames: every `message_received` continues its view by
/// exactly one, a join's history sets it. Returns false when a join failed because
/// the bus was unavailable (a node cut off while the join waited for it).
fn check_frames(who: usize, view: &mut View, frames: &[Value]) -> bool {
    let mut ok = true;
    for f in frames {
        match f["type"].as_str() {
            Some("message_history") if f.get("lastSeq").is_some() => {
                view.last = f["lastSeq"].as_u64();
            }
            Some("message_received") => {
                let seq = f["seq"].as_u64().expect("seq");
                let last = view.last.expect("a message only after the join's history");
                assert_eq!(seq, last + 1, "client {who}: gap or duplicate: {f}");
                view.last = Some(seq);
            }
            Some("room_users") => {
                view.present = f["users"]
                    .as_array()
                    .expect("users")
                    .iter()
                    .map(|u| u["id"].as_str().expect("id").to_owned())
                    .collect();
                assert_eq!(
                    view.present.len(),
                    f["users"].as_array().map_or(0, Vec::len),
                    "client {who}: a user listed twice: {f}"
                );
            }
            Some("user_joined") => {
                let id = f["userId"].as_str().expect("userId").to_owned();
                assert!(view.present.insert(id), "client {who}: joined twice: {f}");
            }
            Some("user_left") => {
                let id = f["userId"].as_str().expect("userId");
                assert!(
                    view.present.remove(id),
                    "client {who}: left while absent: {f}"
                );
            }
            Some("room_left") => {
                view.last = None;
                view.present.clear();
            }
            Some("error") if f["code"] == "cluster_unavailable" && view.last.is_none() => {
                ok = false;
            }
            // A message queued behind that failed join.
            Some("error") if f["code"] == "not_in_room" && !ok => {}
            Some("error") => panic!("client {who}: unexpected error {f}"),
            _ => {}
        }
    }
    ok
}

#[test]
fn random_traffic_with_bus_faults_keeps_every_view_gapless_and_complete() {
    for seed in 1..=30u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut m = mesh(3);
        // Six anonymous users, two per node, and one authenticated user with a
        // connection on node 0 and one on node 2 (one member, wherever it is).
        let node_of = [0, 1, 2, 0, 1, 2, 0, 2];
        let (mut clients, mut ids): (Vec<ConnId>, Vec<String>) = (0..6)
            .map(|i| named(&mut m, node_of[i], &format!("user{i}")))
            .unzip();
        for node in [0, 2] {
            let c = m.connect_as(node, "u-x", "xena");
            m.settle();
            assert_eq!(m.take_types(c), ["connection", "username_set"]);
            clients.push(c);
            ids.push("u-x".to_owned());
        }
        let n = clients.len();
        let mut views: Vec<View> = vec![View::default(); n];
        for (i, conn) in clients.iter().enumerate() {
            send(&mut m, *conn, json!({"type":"join_room","room":"lobby"}));
            check_frames(i, &mut views[i], &m.take(*conn));
        }
        let mut joined = vec![true; n];
        let mut cut = [false; 3];
        for step in 0..300 {
            let who = rng.below(n);
            match rng.below(12) {
                0..=5 if joined[who] => {
                    let content = format!("s{seed} #{step}");
                    m.send(
                        clients[who],
                        json!({"type":"chat_message","content":content}),
                    );
                }
                6 => m.settle(),
                7 => m.drop_next(rng.below(3), 1 + rng.below(2)),
                8 => {
                    let node = rng.below(3);
                    if cut[node] {
                        m.reconnect_node(node);
                    } else {
                        m.disconnect_node(node);
                    }
                    cut[node] = !cut[node];
                }
                9 if joined[who] => {
                    m.send(clients[who], json!({"type":"leave_room"}));
                    joined[who] = false;
                }
                10 if !joined[who] && !cut[node_of[who]] => {
                    m.send(clients[who], json!({"type":"join_room","room":"lobby"}));
                    joined[who] = true;
                }
                _ => {}
            }
            for (i, conn) in clients.iter().enumerate() {
                let frames = m.take(*conn);
                if !check_frames(i, &mut views[i], &frames) {
                    joined[i] = false;
                }
            }
        }
        // Heal: no more drops, every node resyncs (a lost `Joined`/`Left` is corrected
        // by the next snapshot), and one more message from each node reveals any gap an
        // earlier drop left.
        for (node, is_cut) in cut.iter().enumerate() {
            let id = m.node_id(node);
            m.bus.stop_dropping(&id);
            if *is_cut {
                m.reconnect_node(node);
            }
        }
        m.settle();
        for (i, conn) in clients.iter().enumerate() {
            let frames = m.take(*conn);
            if !check_frames(i, &mut views[i], &frames) {
                joined[i] = false;
            }
        }
        for node in 0..3 {
            m.disconnect_node(node);
            m.reconnect_node(node);
        }
        m.settle();
        for (i, conn) in clients.iter().enumerate() {
            if !joined[i] {
                send(&mut m, *conn, json!({"type":"join_room","room":"lobby"}));
                joined[i] = true;
            }
        }
        for conn in &clients[..3] {
            send(
                &mut m,
                *conn,
                json!({"type":"chat_message","content":"final"}),
            );
        }
        let stored = m
            .store
            .room_messages(&chat_core::RoomName::parse("lobby").expect("room"))
            .len() as u64;
        let everyone: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
        for (i, conn) in clients.iter().enumerate() {
            let frames = m.take(*conn);
            assert!(check_frames(i, &mut views[i], &frames));
            assert_eq!(
                views[i].present, everyone,
                "seed {seed}: client {i}'s member list"
            );
            assert_eq!(
                views[i].last,
                Some(stored),
                "seed {seed}: client {i} saw up to {:?} of {stored}",
                views[i].last
            );
        }
    }
}

#[test]
fn a_client_resumes_on_another_node_with_exactly_what_it_missed() {
    let mut m = mesh(2);
    let (a, _) = member(&mut m, 0, "alice", "lobby");
    let (b, _) = member(&mut m, 1, "bob", "lobby");
    send(&mut m, b, json!({"type":"chat_message","content":"seen"}));
    let seen = m.take(a);
    assert_eq!(seqs(&seen), [1]);
    m.disconnect(a);
    m.settle();
    send(
        &mut m,
        b,
        json!({"type":"chat_message","content":"missed 1"}),
    );
    send(
        &mut m,
        b,
        json!({"type":"chat_message","content":"missed 2"}),
    );
    // alice comes back through the balancer, on node 1 this time.
    let (again, _) = named(&mut m, 1, "alice");
    send(
        &mut m,
        again,
        json!({"type":"join_room","room":"lobby","since":1,"epoch":"sim-epoch"}),
    );
    let frames = m.take(again);
    assert_eq!(frames[1]["type"], "message_history");
    assert_eq!(frames[1]["recovered"], true);
    let contents: Vec<&str> = frames[1]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["missed 1", "missed 2"]);
}

/// Steady traffic of its own must not hold back a lost remote message on a cluster
/// node: the gap is read once the appends that were in flight when it was seen have
/// answered, even though newer ones are in flight by then.
#[test]
fn a_lost_remote_message_is_read_despite_steady_local_appends() {
    use chat_core::cluster::{ClusterEvent, ClusterOp, ClusterReply};
    use chat_core::testkit::sim::{Sim, StoreMode};
    use chat_core::{Input, NewRoomMessage, Output, StoreOp, StoreReply, UserId};

    let mut config = Config::unlimited();
    config.cluster = true;
    let mut s = Sim::new(config);
    s.keep_log();
    // The sim drops cluster ops; its log keeps them, and the test answers as the bus.
    let answer_bus = |s: &mut Sim| {
        let ops: Vec<ClusterOp> = s
            .log
            .drain(..)
            .filter_map(|o| match o {
                Output::Cluster(op) => Some(op),
                _ => None,
            })
            .collect();
        for op in ops {
            let event = match op {
                ClusterOp::ClaimName {
                    ticket, candidates, ..
                } => ClusterEvent::Reply {
                    ticket,
                    reply: ClusterReply::Name(candidates.into_iter().next()),
                },
                ClusterOp::Subscribe { room } => ClusterEvent::RoomMembers {
                    room,
                    members: vec![],
                },
                _ => continue,
            };
            s.input(Input::Cluster(event));
        }
    };
    let (a, b) = (s.connect(), s.connect());
    for (c, name) in [(a, "alice"), (b, "bob")] {
        s.send(c, json!({"type":"set_username","username":name}));
        answer_bus(&mut s);
        s.send(c, json!({"type":"join_room","room":"lobby"}));
        answer_bus(&mut s);
    }
    s.take(a);
    let room = chat_core::RoomName::parse("lobby").expect("room");
    // Another node stores seq 1 (its announcement is lost) and seq 2.
    let remote = |s: &mut Sim, text: &str| {
        let op = StoreOp::AppendRoom(NewRoomMessage {
            room: room.clone(),
            user_id: UserId::parse("remote").expect("id"),
            username: "remote".into(),
            content: chat_core::Content::parse(text).expect("content"),
            client_msg_id: None,
        });
        match s.store.perform(op) {
            StoreReply::RoomAppended(Ok(appended)) => appended.message,
            other => panic!("{other:?}"),
        }
    };
    remote(&mut s, "lost");
    let second = remote(&mut s, "announced");
    // Local traffic: one append in flight when the gap shows.
    s.set_store_mode(StoreMode::Held);
    s.send(a, json!({"type":"chat_message","content":"mine 1"}));
    s.input(Input::Cluster(ClusterEvent::Message {
        room: room.clone(),
        message: second,
    }));
    assert_eq!(
        s.held().len(),
        1,
        "waits for the append that may fill the gap"
    );
    // Another append goes out before the first answers: it cannot fill the gap.
    s.send(b, json!({"type":"chat_message","content":"mine 2"}));
    s.complete(0);
    assert!(
        s.held()
            .iter()
            .any(|r| matches!(r.op, StoreOp::RoomPage { .. })),
        "the gap is read although an append is still in flight: {:?}",
        s.held()
    );
    s.set_store_mode(StoreMode::Immediate);
    let contents: Vec<String> = s
        .take(a)
        .iter()
        .filter(|f| f["type"] == "message_received")
        .map(|f| f["content"].as_str().expect("content").to_owned())
        .collect();
    assert_eq!(contents, ["lost", "announced", "mine 1", "mine 2"]);
}
