//! [`PostgresConfig`] and [`Retention`]: every knob of the store, every default documented.

use std::time::Duration;

/// How to reach the database and how the store behaves. Start from
/// [`PostgresConfig::new`] and change fields or chain the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (anything `tokio-postgres` accepts,
    /// key/value form included).
    pub url: String,
    /// Connections in the pool. Default 8: the committers use up to
    /// [`committers`](Self::committers) of them, page reads the rest. It is also the hint for how many operations a runtime
    /// should keep in flight against the store (see
    /// [`PostgresStore::max_in_flight`](crate::PostgresStore::max_in_flight)).
    pub pool_size: usize,
    /// Longest one operation may take, waiting for a connection included. Past it a
    /// read fails with `Unavailable`, and an append fails as indeterminate when its
    /// commit may already have been sent (otherwise with `Unavailable`). Default 5 s,
    /// below the runtime's own store timeout (10 s), so the store's more precise answer
    /// arrives first.
    pub timeout: Duration,
    /// Most appends written in one transaction. Default 512.
    pub max_batch: usize,
    /// Committer tasks writing batches side by side (at most `pool_size`). Default 1:
    /// one committer makes the largest batches, and batches of one room commit one
    /// after the other anyway (its head row is locked until commit). More committers
    /// split a burst into smaller transactions, each with its own WAL flush; measured
    /// here (docs/BENCHMARKS.md) that was slower even with the senders spread over ten
    /// rooms, so raise it only after measuring on your own database.
    pub committers: usize,
    /// Appends waiting for the committer at most; past it an append fails with
    /// `Unavailable` at once rather than queueing without bound. Default 8192.
    pub queue: usize,
    /// What old history to delete in the background. Default: keep everything.
    pub retention: Retention,
}

impl PostgresConfig {
    /// The defaults for a database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 8,
            timeout: Duration::from_secs(5),
            max_batch: 512,
            committers: 1,
            queue: 8192,
            retention: Retention::default(),
        }
    }
}

chat_core::config_setters! {
    PostgresConfig {
        with_url => url: String,
        with_pool_size => pool_size: usize,
        with_timeout => timeout: Duration,
        with_max_batch => max_batch: usize,
        with_committers => committers: usize,
        with_queue => queue: usize,
        with_retention => retention: Retention,
    }
}

/// Old history to delete in the background. The default keeps everything.
///
/// Deleting only ever removes the oldest messages of a stream (a prefix), so pages stay
/// contiguous; a stream's head `seq`, its epoch and its numbering are kept, so a deleted
/// message's `seq` is never reused. A retry whose original was deleted is stored again
/// (the contract's rule for dropped messages).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Keep the newest N messages of each room. Default: all.
    pub keep_last_per_room: Option<u64>,
    /// Keep the newest N messages of each DM conversation. Default: all.
    pub keep_last_per_conversation: Option<u64>,
    /// Delete messages older than this (room messages and DMs). Default: none.
    pub max_age: Option<Duration>,
    /// How often the background task deletes (its first round one interval after
    /// opening; `PostgresStore::purge_now` runs one at once). Default 60 s.
    pub interval: Duration,
}

impl Retention {
    /// Whether any rule deletes anything (the background task runs only then).
    pub fn is_enabled(&self) -> bool {
        self.keep_last_per_room.is_some()
            || self.keep_last_per_conversation.is_some()
            || self.max_age.is_some()
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_last_per_room: None,
            keep_last_per_conversation: None,
            max_age: None,
            interval: Duration::from_secs(60),
        }
    }
}

chat_core::config_setters! {
    Retention {
        with_keep_last_per_room => keep_last_per_room: Option<u64>,
        with_keep_last_per_conversation => keep_last_per_conversation: Option<u64>,
        with_max_age => max_age: Option<Duration>,
        with_interval => interval: Duration,
    }
}
