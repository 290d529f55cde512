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

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::ids::{Epoch, RoomName, Seq, UserId};
use crate::message::{NewDm, NewRoomMessage, StoredDm, StoredMessage};

/// What a store failure means to the engine: the operation had no effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The backend is unreachable, overloaded or timed out; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the data (a bug or a schema problem; retrying will not help).
    #[error("store rejected the request: {0}")]
    Rejected(String),
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
