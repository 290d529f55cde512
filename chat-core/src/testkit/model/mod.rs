//! The reference model of the engine (ARCHITECTURE.md, "Properties the design must
//! keep"), shared by the property tests (`tests/engine_props.rs`) and the `engine` fuzz
//! target: they only differ in where the operations come from.
//!
//! A case is a sequence of [`Op`]s — clients connecting, naming themselves, joining and
//! resuming, chatting and retrying, DMing, typing, paging history, disconnecting, time
//! passing, and the store answering late, out of order or not at all — run by a
//! [`World`] through the deterministic [`Sim`](super::sim::Sim) with every store request
//! held until an operation performs it. After **every** step, each connection's frames
//! are fed to the model and five properties are checked against it:
//!
//! 1. **gapless, exactly-once room streams** — join history then live messages are
//!    consecutive seqs; after settling, every member has the store's last seq;
//! 2. **persist before acknowledge** — every message or DM a client sees is in the store,
//!    identical, when it arrives;
//! 3. **membership consistency** — the engine's members, rooms and presence equal what
//!    the frames told each client; empty rooms are dropped; online names are unique;
//! 4. **privacy** — room events reach members only, DMs their two users only, typing
//!    indicators never the typing user;
//! 5. **bounds** — store work is one request per connection plus one per room, and a
//!    connection waiting for the store queues at most `max_queued_commands` frames.
//!
//! The model never looks inside the engine: it learns from frames (as a careful client
//! would), the store's contents and the engine's public getters, and compares them.
//!
//! ```
//! use chat_core::testkit::model::{self, Op};
//!
//! let ops = [
//!     Op::Connect { auth: None, name: Some(0), join: Some(0) },
//!     Op::Chat { conn: 0, room: None, cmid: Some(0), empty: false },
//!     Op::PerformAll,
//!     Op::Deliver { index: 0 },
//! ];
//! model::run(model::tight_config(), &ops).expect("the engine keeps its properties");
//! ```
//!
//! Layout: [`ops`] (what a case is made of), `state` (what the model knows), `world` (the
//! driver), `frames` (checks per frame), `invariants` (checks per step).

use crate::Config;
use crate::Rate;
use std::time::Duration;

/// Fails the current check with a message. Checks return `Err` rather than panic, so
/// that shrinking a property-test failure does not flood the output with panics.
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

mod frames;
mod invariants;
pub mod ops;
mod state;
mod world;

pub use ops::{Op, Resume};
pub use world::World;

/// What an internal check returns: `Err` says which property broke, and how.
type Check = Result<(), String>;

/// A property the engine broke (or a frame the model cannot explain): which one, how,
/// and after which operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(String);

/// Runs `ops` through a fresh [`World`] with `config`, then settles it;
/// `Err` names the operation after which a check failed.
pub fn run(config: Config, ops: &[Op]) -> Result<(), Violation> {
    let mut world = World::new(config);
    for (i, op) in ops.iter().enumerate() {
        world
            .apply(op)
            .map_err(|e| Violation(format!("after op #{i} {op:?}: {e}")))?;
    }
    world
        .finish()
        .map_err(|e| Violation(format!("while settling: {e}")))
}

/// Small limits, so every cap is reached within a few dozen operations, and rate limits
/// on.
pub fn tight_config() -> Config {
    let mut c = unlimited_config();
    c.message_rate = Some(Rate::per_second(6, 1));
    c.typing_rate = Some(Rate::per_second(4, 2));
    c.join_rate = Some(Rate::per_second(6, 1));
    c.history_rate = Some(Rate::per_second(4, 2));
    c.refusal_budget = Some(Rate::per_second(12, 1));
    c
}

/// The caps of [`tight_config`] without rate limits, so more messages race with joins
/// and retries.
pub fn unlimited_config() -> Config {
    let mut c = Config::unlimited();
    c.join_history = 3;
    c.history_page_max = 4;
    c.resume_max = 4;
    c.history_frame_bytes = 64 * 1024;
    c.max_rooms_per_connection = 2;
    c.max_connections_per_user = 2;
    c.max_queued_commands = 3;
    c.typing_timeout = Duration::from_secs(5);
    c
}
