//! The [`Store`] trait: where room messages and direct messages are kept.
//!
//! The engine never awaits the store. It emits a [`StoreRequest`](crate::engine::StoreRequest)
//! output, the runtime performs it with a `Store`, and the reply comes back as an input.
//! Replies may arrive late and in any order; the engine restores the room stream's order
//! from `seq`.
//!
//! # Contract (checked by `chat_core::testkit::store`)
//!
//! * **Sequencing.** `append_room` gives each room message the next `seq` of its room:
//!   1, 2, 3… with no gap and no reuse within an epoch. A failed append consumes no `seq`.
//!   DMs are numbered the same way per conversation (the unordered pair of users).
//! * **Durability before reply.** An append returns only once the message is as durable
//!   as the store promises (memory for the in-memory store, a commit for SQL stores).
//! * **Read-your-writes.** A read started after an append returned includes that message.
//!   The engine's gapless join relies on this.
//! * **Idempotency.** Appending with a `client_msg_id` already used by the same user in
//!   the same room (or conversation) stores nothing and returns the stored message with
//!   `duplicate: true`, for as long as that message is retained.
//! * **Pages** are contiguous runs of `seq`, oldest first, with the store's `epoch` and the
//!   room's head `last_seq` read atomically with them.
//! * **Epochs.** A stream's epoch changes only when its history is lost: a restart of an
//!   in-memory store, or a store that forgets a whole idle stream to stay within its
//!   memory budget. `seq` may start again at 1 only under a new epoch, never under one
//!   it was already used with, so a client resuming with an old `(epoch, since)` is told
//!   its position is void instead of silently skipping messages. Epochs may differ
//!   between streams and may change while an engine runs: every append reply and page
//!   carries its stream's epoch, and the engine restarts a room's stream cursor (and
//!   tells its members, `stream_reset`) when it sees a new one.
//! * **Bounds.** A store may drop old messages (the in-memory store keeps the last N per
//!   room, N ≥ 1); dropped messages count as not existing (a page that reaches the oldest
//!   retained message has `has_more: false`), and the engine notices a resume that would
//!   need them instead of hiding the gap. A retry whose original was dropped is stored
//!   again. A store may also forget a whole stream (the in-memory store evicts idle
//!   streams, least recently used first, to stay within its byte budget): its messages
//!   and idempotency keys go, and it starts again at `seq` 1 under a new epoch (see
//!   Epochs). A store that refuses to grow instead answers `Unavailable`.
//! * **Limits** in [`PageRange`] are at least 1.
//! * **Failures.** [`StoreError::Unavailable`] and [`StoreError::Rejected`] promise the
//!   operation had no effect. When a store cannot know (a timeout, a connection lost
//!   during a commit) it answers [`StoreError::Indeterminate`]: the append may land; a
//!   resend with the same `client_msg_id` returns it as a `duplicate`. The runtime itself
//!   answers `Indeterminate` when a store operation outlives its timeout.
//! * **Restarts.** A persistent store (SQLite, PostgreSQL) reopened on the same file or
//!   database keeps every message it acknowledged, the epoch of every stream that has
//!   messages, the `seq` counters (no reuse) and the idempotency keys: a resume with
//!   `(epoch, since)` across a restart then loses nothing (checked by
//!   `chat_core::testkit::store::run_reopen_all`). The in-memory store promises nothing
//!   across restarts: a new one has new epochs, which tells resuming clients their
//!   position is void.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::engine::{StoreOp, StoreReply};
use crate::ids::{Epoch, RoomName, Seq, UserId};
use crate::message::{NewDm, NewRoomMessage, StoredDm, StoredMessage};

/// The underlying cause of a [`StoreError`] (a driver's error, an I/O error), kept for
/// the log. Shared so that a `StoreError` stays cheap to clone.
pub type StoreErrorSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What a store failure means to the engine.
///
/// The variant is the *outcome* the engine acts on; `detail` and `source` explain it to an
/// operator. **Neither reaches a client**: the engine answers each variant with an error
/// code and a fixed text ([`WireError::store_unavailable`](crate::WireError::store_unavailable),
/// [`WireError::store_timeout`](crate::WireError::store_timeout)), because a database's
/// error text can contain schema names and stored values. The runtime logs the detail and
/// the `source` chain instead.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend is unreachable, overloaded or refusing to write (a read-only file, a
    /// full disk); the operation **had no effect**. Retrying later may work.
    #[error("store unavailable: {detail}")]
    Unavailable {
        /// What failed, for the log.
        detail: Cow<'static, str>,
        /// The driver's error, if any.
        #[source]
        source: Option<StoreErrorSource>,
    },
    /// The backend refused the data (a bug or a schema problem; retrying will not help);
    /// the operation **had no effect**.
    #[error("store rejected the request: {detail}")]
    Rejected {
        /// What was refused, for the log.
        detail: Cow<'static, str>,
        /// The driver's error, if any.
        #[source]
        source: Option<StoreErrorSource>,
    },
    /// The outcome is **unknown**: the operation may or may not have taken effect (the
    /// store did not answer in time, or the connection broke while a commit was under
    /// way). An append may still be committed after this error. Resending with the same
    /// `client_msg_id` is safe (idempotency returns the original if it landed); the
    /// client hears `store_timeout`.
    #[error("store outcome unknown: {detail}")]
    Indeterminate {
        /// What happened, for the log.
        detail: Cow<'static, str>,
        /// The driver's error, if any.
        #[source]
        source: Option<StoreErrorSource>,
    },
}

impl StoreError {
    /// [`StoreError::Unavailable`] without a source.
    pub fn unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            source: None,
        }
    }

    /// [`StoreError::Rejected`] without a source.
    pub fn rejected(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::Rejected {
            detail: detail.into(),
            source: None,
        }
    }

    /// [`StoreError::Indeterminate`] without a source.
    pub fn indeterminate(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::Indeterminate {
            detail: detail.into(),
            source: None,
        }
    }

    /// The same error with `source` as its cause (replacing any earlier one).
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        let cause: StoreErrorSource = Arc::new(cause);
        match &mut self {
            Self::Unavailable { source, .. }
            | Self::Rejected { source, .. }
            | Self::Indeterminate { source, .. } => *source = Some(cause),
        }
        self
    }

    /// The operator-facing detail (without the source).
    pub fn detail(&self) -> &str {
        match self {
            Self::Unavailable { detail, .. }
            | Self::Rejected { detail, .. }
            | Self::Indeterminate { detail, .. } => detail,
        }
    }

    /// The error and its whole `source` chain on one line (`a: b: c`), for the log.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }

    /// True when the operation may have taken effect ([`StoreError::Indeterminate`]).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Self::Indeterminate { .. })
    }
}

/// Result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended<M> {
    /// The stored form (the original one when `duplicate`).
    pub message: Arc<M>,
    /// True when `client_msg_id` had been used before and nothing new was stored.
    pub duplicate: bool,
    /// The epoch of the stream the message is in (what a page read at the same instant
    /// would say). The engine compares it with the epoch its members were given: a
    /// different one means the stream was forgotten and started again.
    pub epoch: Epoch,
}

/// Which part of a stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRange {
    /// The newest `limit` messages.
    Latest {
        /// Most messages to return.
        limit: usize,
    },
    /// The newest `limit` messages with `seq < before`.
    Before {
        /// Exclusive upper bound.
        seq: Seq,
        /// Most messages to return.
        limit: usize,
    },
    /// The oldest `limit` messages with `seq > after`.
    After {
        /// Exclusive lower bound.
        seq: Seq,
        /// Most messages to return.
        limit: usize,
    },
}

/// A contiguous run of a stream, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<M> {
    /// The stream's epoch at read time.
    pub epoch: Epoch,
    /// The stream's newest `seq` at read time (`Seq(0)` when empty).
    pub last_seq: Seq,
    /// The messages, oldest first, with consecutive `seq`s.
    pub messages: Vec<Arc<M>>,
    /// `Latest`/`Before`: older messages exist before the first one returned.
    /// `After`: newer messages exist after the last one returned.
    pub has_more: bool,
}

/// Keeps room messages and direct messages. See the module docs for the contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends a room message, assigning `id`, `seq` and `timestamp`.
    async fn append_room(
        &self,
        message: NewRoomMessage,
    ) -> Result<Appended<StoredMessage>, StoreError>;

    /// Reads part of a room's stream, with the epoch and head read atomically.
    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError>;

    /// Appends a direct message, assigning `id`, `seq` (per conversation) and `timestamp`.
    async fn append_dm(&self, message: NewDm) -> Result<Appended<StoredDm>, StoreError>;

    /// Reads part of the conversation between two users (order of `a` and `b` is
    /// irrelevant).
    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError>;
}

/// Forwards every [`Store`] method through a smart pointer, so one list of methods serves
/// both implementations below. A method added to [`Store`] later must be added here too,
/// or the wrappers would fall back to its default instead of the inner store's own.
macro_rules! forward_store {
    ($(#[$doc:meta])* $pointer:ident) => {
        $(#[$doc])*
        #[async_trait]
        impl<S: Store + ?Sized> Store for $pointer<S> {
            async fn append_room(
                &self,
                message: NewRoomMessage,
            ) -> Result<Appended<StoredMessage>, StoreError> {
                (**self).append_room(message).await
            }

            async fn room_page(
                &self,
                room: &RoomName,
                range: PageRange,
            ) -> Result<Page<StoredMessage>, StoreError> {
                (**self).room_page(room, range).await
            }

            async fn append_dm(&self, message: NewDm) -> Result<Appended<StoredDm>, StoreError> {
                (**self).append_dm(message).await
            }

            async fn dm_page(
                &self,
                a: &UserId,
                b: &UserId,
                range: PageRange,
            ) -> Result<Page<StoredDm>, StoreError> {
                (**self).dm_page(a, b, range).await
            }
        }
    };
}

forward_store!(
    /// A store shared as an `Arc` — including the `Arc<dyn Store>`
    /// [`Server::new`](crate::Server::new) takes — can itself be wrapped by another store
    /// (a cache, metrics, fault injection) or handed to code that wants a `Store` by value.
    Arc
);
forward_store!(
    /// A `Box<dyn Store>` is a store.
    Box
);

/// Performing a [`StoreOp`] is the one piece of store work every driver shares. It lives
/// here, next to the [`Store`] trait it calls, rather than in the engine, which is sans-IO
/// and never awaits, or in the `runtime`, since a driver built without that feature (a
/// test harness, another executor) needs it too.
impl StoreOp {
    /// Performs this operation with `store`. This is all a driver needs to do with an
    /// [`Output::Store`](crate::engine::Output::Store) besides handing the result back.
    ///
    /// A failure is logged here (with the `tracing` of the `runtime` feature), with its
    /// detail and source chain: the engine answers clients with a fixed text only.
    pub async fn perform(self, store: &dyn Store) -> StoreReply {
        let reply = self.perform_quietly(store).await;
        #[cfg(feature = "runtime")]
        if let Some((op, e)) = reply.failure() {
            tracing::warn!(op, error = %e.chain(), "store operation failed");
        }
        reply
    }

    async fn perform_quietly(self, store: &dyn Store) -> StoreReply {
        match self {
            StoreOp::AppendRoom(m) => StoreReply::RoomAppended(store.append_room(m).await),
            StoreOp::RoomPage { room, range } => {
                StoreReply::RoomPage(store.room_page(&room, range).await)
            }
            StoreOp::AppendDm(m) => StoreReply::DmAppended(store.append_dm(m).await),
            StoreOp::DmPage { a, b, range } => {
                StoreReply::DmPage(store.dm_page(&a, &b, range).await)
            }
        }
    }
}
