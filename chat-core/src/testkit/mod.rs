//! Reusable conformance suites (feature `testkit`): every implementation of one of the
//! crate's traits runs the same checks, so they all behave alike.
//!
//! * [`transport`] — for [`Transport`](crate::Transport) implementations.

pub mod transport;
