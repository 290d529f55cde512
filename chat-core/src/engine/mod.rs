//! The sans-IO chat engine.

mod config;
mod io;
mod rate;

use std::collections::VecDeque;
use std::time::Instant;

pub use config::{Config, Rate};
pub use io::{Identity, Input, Output, Recipients, StoreOp, StoreReply, StoreRequest, Ticket};

use crate::ids::IdGenerator;

/// The chat state machine.
pub struct Engine {
    #[allow(dead_code)]
    config: Config,
    #[allow(dead_code)]
    ids: Box<dyn IdGenerator>,
    out: VecDeque<Output>,
}

impl Engine {
    /// A new engine.
    pub fn new(config: Config, ids: Box<dyn IdGenerator>) -> Self {
        Self { config, ids, out: VecDeque::new() }
    }
    /// Feeds one input.
    pub fn handle(&mut self, _now: Instant, _input: Input) {}
    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// Fires due timers.
    pub fn handle_timeout(&mut self, _now: Instant) {}
}
