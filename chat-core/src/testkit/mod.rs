//! Test support shipped as a library (feature `testkit`): the deterministic simulation
//! used by this crate's tests and fuzz targets, and reusable conformance suites for
//! implementations of chat-core's traits.
//!
//! Every implementation of [`Store`](crate::Store) runs the same suite, so a rule of the
//! trait's contract is written down once, as executable cases, instead of once per backend
//! (and slightly differently each time). Enable it in the implementation's
//! `[dev-dependencies]`:
//!
//! ```toml
//! [dev-dependencies]
//! chat-core = { version = "0.1", features = ["testkit"] }
//! tokio = { version = "1", features = ["rt-multi-thread", "macros"] }
//! ```
//!
//! and see `store` for how to call it. The suites panic on the first broken rule, with
//! a message naming the case and the rule, the way `assert!` does in a `#[test]`.
//!
//! * [`sim`]: a deterministic simulation of the engine with a synchronous store whose
//!   replies the test can hold and reorder.
//! * `store`: the [`Store`](crate::Store) conformance suite.
//! * `cluster`: an in-process cluster bus (`MemoryCluster`), a deterministic
//!   multi-engine harness (`Mesh`) and the conformance checks every
//!   [`Cluster`](crate::runtime::Cluster) implementation runs.
//! * [`transport`]: the conformance suite every [`Transport`](crate::Transport)
//!   implementation runs, so they all behave alike for the runtime.

#[cfg(feature = "testkit")]
pub mod cluster;
pub mod sim;
#[cfg(feature = "testkit")]
pub mod store;
#[cfg(feature = "testkit")]
pub mod transport;
