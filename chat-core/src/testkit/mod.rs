//! Test support shared by this crate's tests, downstream implementations and the fuzz
//! targets (feature `testkit`).
//!
//! * [`sim`]: a deterministic simulation of the engine with a synchronous store whose
//!   replies the test can hold and reorder.
//! * [`transport`]: the conformance suite every [`Transport`](crate::Transport)
//!   implementation runs, so they all behave alike for the runtime.

pub mod sim;
#[cfg(feature = "testkit")]
pub mod transport;
