//! Reusable conformance suites for implementations of chat-core's traits.
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
//! and see [`store`] for how to call it. The suites panic on the first broken rule, with
//! a message naming the case and the rule, the way `assert!` does in a `#[test]`.
//!
//! This module exists only with the `testkit` feature: it is test code shipped as a
//! library, not something a server links.

pub mod store;
