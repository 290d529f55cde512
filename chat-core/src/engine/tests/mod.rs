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

/// The default configuration with `edit` applied (configs are built by assigning
/// fields, never by struct literals: they are `#[non_exhaustive]` outside this crate).
pub(super) fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    edit(&mut config);
    config
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

/// The id `SimStore` gives the `n`th message it stores (room messages and DMs count
/// together).
pub(super) fn sim_id(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}

/// The timestamp `SimStore` gives the message with `seq` (below 1,000).
pub(super) fn sim_time(seq: u64) -> String {
    format!("2023-11-14T22:13:20.{seq:03}Z")
}

/// The exact `message_received` for the `n`th stored message.
pub(super) fn received(n: u128, room: &str, seq: u64, user: &str, name: &str, text: &str) -> Value {
    json!({"type":"message_received","id":sim_id(n),"room":room,"seq":seq,"userId":user,
           "username":name,"content":text,"timestamp":sim_time(seq)})
}

/// The exact `error` frame with `code` and `message`.
pub(super) fn refusal(code: &str, message: &str) -> Value {
    json!({"type":"error","message":message,"code":code})
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
