//! One test per rule of PROTOCOL.md (base and *ext*), with exact expected frames,
//! driven through the deterministic simulation.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Config, Rate};
use crate::ids::{ConnId, RoomName};
use crate::protocol::{CloseCode, WireError};
use crate::testkit::sim::{Sim, StoreMode};

pub(super) fn sim() -> Sim {
    Sim::new(Config::default())
}

pub(super) fn client_id(sim: &mut Sim, conn: ConnId) -> String {
    sim.engine.user_of(conn).expect("connected").to_string()
}

/// A connection with a username, inbox drained.
pub(super) fn named(sim: &mut Sim, name: &str) -> ConnId {
    let c = sim.connect();
    sim.send(c, json!({"type":"set_username","username":name}));
    sim.take(c);
    c
}

/// A named connection that joined `room` (with `keepRooms`), inbox drained.
pub(super) fn member(sim: &mut Sim, name: &str, room: &str) -> ConnId {
    let c = named(sim, name);
    sim.send(c, json!({"type":"join_room","room":room,"keepRooms":true}));
    sim.take(c);
    c
}

pub(super) fn chat(sim: &mut Sim, conn: ConnId, content: &str) {
    sim.send(conn, json!({"type":"chat_message","content":content}));
}

pub(super) fn error_code(frame: &Value) -> &str {
    assert_eq!(frame["type"], "error", "{frame}");
    frame["code"].as_str().unwrap_or("")
}

pub(super) fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message_received")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect()
}

pub(super) fn history_seqs(frame: &Value) -> Vec<u64> {
    frame["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

mod direct;
mod history;
mod identity;
mod limits;
mod messages;
mod multi_connection;
mod references;
mod resume;
mod rooms;
mod typing;
mod usernames;
