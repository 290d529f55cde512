//! `chat-bench`: a load tool for chat servers that speak the v1 wire protocol
//! (`docs/PROTOCOL.md`), and a bare relay that is the floor of this stack.
//!
//! The tool drives any server that answers the base protocol (`set_username` →
//! `join_room` → `chat_message`, `message_received` to every member), so the same scenario
//! loads our example server, the Node reference and the [`relay`]. It never relies on an
//! extension: loss and gaps are counted from a tag the tool writes into each message's
//! content (`sender:counter:timestamp_ns`, see [`tag`]), and the server's `seq` is checked
//! as well when the server sends one.
//!
//! [`fanout`] can also spread its clients over the nodes of a cluster (`--node`), every
//! room on every node, and then splits its latency into deliveries on the sender's node and
//! deliveries that crossed the bus (`scripts/cluster-bench.sh`).
//!
//! [`plot`] draws p99 latency against deliveries/s from a sweep's JSON lines.
//!
//! Scenarios ([`fanout`], [`idle`], [`storm`]) return a [`report::Report`], printed as a
//! human summary and, with `--json`, as one JSON line. With the server's PID they read its
//! CPU time and RSS from `/proc` ([`procfs`]), and they always report the tool's own CPU so
//! a reader can tell whether the load tool was the bottleneck.
//!
//! Every loop is bounded (by a count or a deadline) and the tool connects only to
//! `127.0.0.0/8`: it is a bench for one machine, not a load generator for other hosts.

pub mod client;
pub mod error;
pub mod fanout;
pub mod hold;
pub mod idle;
pub mod plot;
pub mod procfs;
pub mod relay;
pub mod report;
pub mod stats;
pub mod storm;
pub mod tag;

pub use error::BenchError;
