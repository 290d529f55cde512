//! The engine driven by arbitrary operation sequences through the deterministic
//! simulation: store replies held and completed in any order, time jumps, raw frames.
//! After every step the ARCHITECTURE.md properties are checked from what each
//! connection received:
//!
//! 1. gapless, exactly-once room streams (join history + live messages);
//! 2. persist before acknowledge (every delivered message is in the store);
//! 3. membership: the engine's view equals what the connections were told;
//! 4. privacy: room events only reach members, DMs only the two users;
//! 5. bounds: no leaked store tickets; at most one store request per connection ever
//!    opened plus one gap fill per room.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::Arbitrary;
use chat_core::testkit::sim::{Sim, StoreMode};
use chat_core::{Config, ConnId, RoomName};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const ROOMS: [&str; 3] = ["alpha", "beta", "gamma"];
const NAMES: [&str; 5] = ["alice", "Alice", "bob", "\u{0430}lice", "carol"];

#[derive(Arbitrary, Debug)]
enum Op {
    Connect,
    ConnectAs(u8),
    SetName(u8, u8),
    Join { conn: u8, room: u8, keep: bool, resume: Option<(u8, bool)> },
    Leave { conn: u8, room: Option<u8> },
    Chat { conn: u8, room: Option<u8>, cmid: Option<u8> },
    Dm { conn: u8, target: u8, cmid: Option<u8> },
    Typing { conn: u8, start: bool },
    History { conn: u8, room: u8, before: Option<u8>, limit: u8 },
    DmHistory { conn: u8, target: u8 },
    Disconnect(u8),
    Advance(u16),
    Complete(u8),
    FailNext,
    Raw { conn: u8, bytes: Vec<u8> },
}

/// What one connection was told about one room.
#[derive(Debug, Clone, Copy)]
struct Stream {
    next: u64,
    page_first: u64,
}

#[derive(Debug, Default)]
struct Client {
    user: String,
    streams: BTreeMap<String, Stream>,
    /// Highest seq seen per room (for resumes).
    seen: BTreeMap<String, u64>,
}

struct Harness {
    sim: Sim,
    clients: BTreeMap<ConnId, Client>,
    /// Connections ever opened: a connection that leaves while its store work is held
    /// leaves that work in flight (the runtime's store timeout bounds it in time).
    opened: usize,
}

impl Harness {
    fn conn(&self, i: u8) -> Option<ConnId> {
        let open: Vec<ConnId> = self.clients.keys().copied().collect();
        (!open.is_empty()).then(|| open[i as usize % open.len()])
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Connect => {
                if self.clients.len() < 8 {
                    let c = self.sim.connect();
                    self.opened += 1;
                    self.clients.insert(c, Client::default());
                }
            }
            Op::ConnectAs(u) => {
                if self.clients.len() < 8 {
                    let user = ["u-1", "u-2", "u-3"][u as usize % 3];
                    let c = self.sim.connect_as(user, NAMES[u as usize % 3 * 2 % NAMES.len()]);
                    self.opened += 1;
                    self.clients.insert(c, Client::default());
                }
            }
            Op::SetName(c, n) => self.send(c, json!({"type":"set_username","username":NAMES[n as usize % NAMES.len()]})),
            Op::Join { conn, room, keep, resume } => {
                let Some(c) = self.conn(conn) else { return };
                let room = ROOMS[room as usize % ROOMS.len()];
                let mut frame = json!({"type":"join_room","room":room,"keepRooms":keep});
                if let Some((back, good_epoch)) = resume {
                    let seen = self.clients[&c].seen.get(room).copied().unwrap_or(0);
                    frame["since"] = json!(seen.saturating_sub(u64::from(back % 4)));
                    frame["epoch"] = json!(if good_epoch { "sim-epoch" } else { "stale" });
                }
                self.sim.send(c, frame);
                self.observe();
            }
            Op::Leave { conn, room } => {
                let mut frame = json!({"type":"leave_room"});
                if let Some(r) = room {
                    frame["room"] = json!(ROOMS[r as usize % ROOMS.len()]);
                }
                self.send(conn, frame);
            }
            Op::Chat { conn, room, cmid } => {
                let mut frame = json!({"type":"chat_message","content":"m"});
                if let Some(r) = room {
                    frame["room"] = json!(ROOMS[r as usize % ROOMS.len()]);
                }
                if let Some(id) = cmid {
                    frame["clientMsgId"] = json!(format!("c{}", id % 4));
                }
                self.send(conn, frame);
            }
            Op::Dm { conn, target, cmid } => {
                let Some(t) = self.conn(target) else { return };
                let target_id = self.sim.engine.user_of(t).map(|u| u.to_string()).unwrap_or_default();
                let mut frame = json!({"type":"private_message","targetId":target_id,"content":"d"});
                if let Some(id) = cmid {
                    frame["clientMsgId"] = json!(format!("d{}", id % 4));
                }
                self.send(conn, frame);
            }
            Op::Typing { conn, start } => {
                let ty = if start { "typing_start" } else { "typing_stop" };
                self.send(conn, json!({"type":ty}));
            }
            Op::History { conn, room, before, limit } => {
                let mut frame = json!({"type":"history","room":ROOMS[room as usize % ROOMS.len()],"limit":limit});
                if let Some(b) = before {
                    frame["before"] = json!(b);
                }
                self.send(conn, frame);
            }
            Op::DmHistory { conn, target } => {
                let Some(t) = self.conn(target) else { return };
                let id = self.sim.engine.user_of(t).map(|u| u.to_string()).unwrap_or_default();
                self.send(conn, json!({"type":"dm_history","userId":id}));
            }
            Op::Disconnect(c) => {
                if let Some(c) = self.conn(c) {
                    self.observe();
                    self.clients.remove(&c);
                    self.sim.disconnect(c);
                }
            }
            Op::Advance(ms) => self.sim.advance(Duration::from_millis(u64::from(ms) * 10)),
            Op::Complete(i) => {
                let held = self.sim.held().len();
                if held > 0 {
                    self.sim.complete(i as usize % held);
                }
            }
            Op::FailNext => self.sim.store.fail_next += 1,
            Op::Raw { conn, bytes } => {
                if let Some(c) = self.conn(conn) {
                    self.sim.send_raw(c, &bytes);
                }
            }
        }
        self.observe();
    }

    fn send(&mut self, conn: u8, frame: Value) {
        if let Some(c) = self.conn(conn) {
            self.sim.send(c, frame);
        }
    }

    /// Reads every connection's new frames and checks properties 1, 2 and 4.
    fn observe(&mut self) {
        let conns: Vec<ConnId> = self.clients.keys().copied().collect();
        for c in conns {
            let frames = self.sim.take(c);
            if self.sim.closed(c).is_some() {
                self.clients.remove(&c);
                continue;
            }
            for f in frames {
                self.check_frame(c, &f);
            }
        }
    }

    fn check_frame(&mut self, c: ConnId, f: &Value) {
        let client = self.clients.get_mut(&c).expect("tracked");
        let ty = f["type"].as_str().expect("every frame has a type");
        let room = f["room"].as_str().unwrap_or_default().to_owned();
        match ty {
            "connection" => client.user = f["clientId"].as_str().expect("clientId").to_owned(),
            "message_history" if f.get("recovered").is_some() => {
                let seqs: Vec<u64> = f["messages"].as_array().expect("messages").iter().map(|m| m["seq"].as_u64().expect("seq")).collect();
                let last = f["lastSeq"].as_u64().expect("lastSeq");
                assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "join history not contiguous: {seqs:?}");
                if let Some(&l) = seqs.last() {
                    assert_eq!(l, last, "join history must end at lastSeq");
                }
                for m in f["messages"].as_array().expect("messages") {
                    check_stored(&self.sim, m);
                }
                let page_first = seqs.first().copied().unwrap_or(last + 1);
                client.streams.insert(room.clone(), Stream { next: last + 1, page_first });
                let seen = client.seen.entry(room).or_default();
                *seen = (*seen).max(last);
            }
            "message_received" => {
                check_stored(&self.sim, f);
                let seq = f["seq"].as_u64().expect("seq");
                let stream = client.streams.get_mut(&room).unwrap_or_else(|| panic!("privacy: {c} got a message of {room} without being a member"));
                if seq == stream.next {
                    stream.next += 1;
                } else {
                    assert!(seq < stream.page_first, "{c} in {room}: got seq {seq}, expected {}", stream.next);
                }
                let seen = client.seen.entry(room).or_default();
                *seen = (*seen).max(seq);
            }
            "room_left" => {
                client.streams.remove(&room);
            }
            "user_joined" | "user_left" | "typing_indicator" | "room_users" => {
                assert!(client.streams.contains_key(&room), "privacy: {c} got {ty} for {room}");
                if ty == "typing_indicator" {
                    assert_ne!(f["userId"].as_str(), Some(client.user.as_str()), "typing echoed to its own user");
                }
            }
            "private_message" | "private_message_sent" => {
                let (from, to) = (f["fromId"].as_str().unwrap_or(""), f["toId"].as_str().unwrap_or(""));
                assert!(client.user == from || client.user == to, "privacy: {c} got a DM between {from} and {to}");
            }
            "error" => {
                let code = f["code"].as_str().expect("code");
                assert!(chat_core::ErrorCode::ALL.iter().any(|k| k.as_str() == code), "unknown code {code}");
            }
            _ => {}
        }
    }

    /// Property 3 and 5.
    fn check_state(&self) {
        for (c, client) in &self.clients {
            let engine: BTreeSet<String> = self.sim.engine.rooms_of(*c).iter().map(|r| r.as_str().to_owned()).collect();
            let told: BTreeSet<String> = client.streams.keys().cloned().collect();
            assert_eq!(engine, told, "membership of {c}");
        }
        for room in ROOMS {
            let name = RoomName::parse(room).expect("valid");
            for m in self.sim.engine.members_of(&name) {
                assert!(self.clients.get(&m).is_some_and(|cl| cl.streams.contains_key(room)), "{m} is a member of {room} unknown to the client");
            }
        }
        // Every request the engine waits for is really out (no leaked tickets), and there
        // is at most one per connection (live or gone) plus one gap fill per room.
        assert_eq!(self.sim.engine.pending_store_ops(), self.sim.held().len(), "leaked store tickets");
        let bound = self.opened + ROOMS.len();
        assert!(self.sim.held().len() <= bound, "store work in flight unbounded");
    }
}

/// Property 2: a delivered message is exactly what the store holds.
fn check_stored(sim: &Sim, m: &Value) {
    let room = RoomName::parse(m["room"].as_str().expect("room")).expect("valid room");
    let seq = m["seq"].as_u64().expect("seq");
    let stored = sim.store.room_messages(&room).iter().find(|s| s.seq.0 == seq).unwrap_or_else(|| panic!("delivered {room}#{seq} is not in the store"));
    assert_eq!(m["id"].as_str(), Some(stored.id.0.to_string().as_str()));
}

fuzz_target!(|ops: Vec<Op>| {
    let mut h = Harness {
        sim: Sim::new(Config::default()),
        clients: BTreeMap::new(),
        opened: 0,
    };
    h.sim.set_store_mode(StoreMode::Held);
    for op in ops.into_iter().take(200) {
        h.apply(op);
        h.check_state();
    }
    // Let everything settle: streams must catch up with the store.
    h.sim.complete_all();
    h.observe();
    h.check_state();
    for (c, client) in &h.clients {
        for (room, stream) in &client.streams {
            let name = RoomName::parse(room).expect("valid");
            let head = h.sim.store.room_messages(&name).last().map_or(0, |m| m.seq.0);
            assert_eq!(stream.next, head + 1, "{c} in {room} is behind the store after settling");
        }
    }
});
