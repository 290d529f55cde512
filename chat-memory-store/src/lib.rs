//! # chat-memory-store
//!
//! An in-memory [`Store`] for `chat-core`: the reference implementation of the trait,
//! for development, tests, and single-process servers that can afford to lose history
//! on restart.
//!
//! * **Bounded.** Each room keeps its newest [`MemoryConfig::room_history`] messages and
//!   each DM conversation its newest [`MemoryConfig::dm_history`]; older ones are dropped
//!   (pages then start later, and the engine sees the gap). The idempotency index holds
//!   exactly the `(user, clientMsgId)` keys of retained messages. The number of rooms and
//!   conversations is capped too ([`MemoryConfig::max_rooms`],
//!   [`MemoryConfig::max_dm_conversations`]), see [Bounds](#bounds).
//! * **Epoch per instance.** A store draws a random [`Epoch`] when it is created, so a
//!   client resuming with a `seq` from before a restart is told its position is void.
//! * **Concurrent.** One lock per room (and per conversation): appends to different
//!   rooms never wait for each other; an append and a page read of one room are each
//!   atomic, so `seq` is gapless and a page's messages, `last_seq` and `epoch` agree.
//!
//! It passes `chat_core::testkit::store`'s whole conformance suite plus its retention
//! cases (see `tests/conformance.rs`).
//!
//! # Example
//!
//! ```
//! use chat_core::{Content, NewRoomMessage, PageRange, RoomName, Seq, Store, UserId};
//! use chat_memory_store::{MemoryConfig, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::with_config(MemoryConfig {
//!     room_history: 500,
//!     ..MemoryConfig::default()
//! });
//! let general = RoomName::parse("General")?;
//! let appended = store
//!     .append_room(NewRoomMessage {
//!         room: general.clone(),
//!         user_id: UserId::parse("u-1")?,
//!         username: "alice".into(),
//!         content: Content::parse("hello").ok_or("empty message")?,
//!         client_msg_id: None,
//!     })
//!     .await?;
//! assert_eq!(appended.message.seq, Seq(1));
//!
//! let page = store.room_page(&general, PageRange::Latest { limit: 50 }).await?;
//! assert_eq!(page.last_seq, Seq(1));
//! assert_eq!(page.messages[0].content.as_str(), "hello");
//! # Ok(())
//! # }
//! ```
//!
//! # Bounds
//!
//! Rooms and conversations come into being with their first message and are never
//! removed: forgetting a stream would restart its `seq` at 1 under the same epoch, which
//! the contract forbids (a resuming client would silently skip messages). Since clients
//! choose room names freely, the number of rooms is what needs a cap: beyond
//! [`MemoryConfig::max_rooms`] rooms (or [`MemoryConfig::max_dm_conversations`]
//! conversations), a message to a *new* room fails with [`StoreError::Unavailable`] and
//! nothing is stored; existing rooms keep working. Page reads never allocate, whatever
//! room they name.
//!
//! Worst-case memory is therefore about `max_rooms × room_history + max_dm_conversations
//! × dm_history` messages, each at most ~4 KiB of content (1000 characters) plus names
//! and ids. With the defaults that is an upper bound far above any real use; lower the
//! caps for a small machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use chat_core::{
    Appended, Epoch, MessageId, NewDm, NewRoomMessage, Page, PageRange, RoomName, Seq, Store,
    StoreError, StoredDm, StoredMessage, Timestamp, UserId,
};

mod log;
mod streams;

use streams::{Streams, lock};

/// Limits of a [`MemoryStore`]. Build one with struct update syntax from the default:
/// `MemoryConfig { room_history: 200, ..MemoryConfig::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Messages kept per room; older ones are dropped. Default 1000. At least 1 is kept
    /// (0 counts as 1), so a room's newest message can always be read back.
    pub room_history: usize,
    /// Messages kept per DM conversation (pair of users). Default 1000; 0 counts as 1.
    pub dm_history: usize,
    /// Rooms kept at most; a message to a new room beyond it is refused with
    /// [`StoreError::Unavailable`]. Default 10 000.
    pub max_rooms: usize,
    /// DM conversations kept at most; a first DM between a new pair beyond it is
    /// refused with [`StoreError::Unavailable`]. Default 100 000.
    pub max_dm_conversations: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            room_history: 1000,
            dm_history: 1000,
            max_rooms: 10_000,
            max_dm_conversations: 100_000,
        }
    }
}

/// An in-memory [`Store`] with bounded history. See the [crate docs](crate).
#[derive(Debug)]
pub struct MemoryStore {
    epoch: Epoch,
    rooms: Streams<RoomName, StoredMessage>,
    /// Keyed by the pair of users in sorted order, so both directions share one log.
    dms: Streams<(UserId, UserId), StoredDm>,
    /// Operations still to fail (see [`MemoryStore::fail_next`]).
    failures: AtomicUsize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store with the default [`MemoryConfig`]: 1000 messages per room and per
    /// conversation, at most 10 000 rooms and 100 000 conversations.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// A store with the given limits and a fresh random epoch.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            epoch: Epoch::new(&random_uuid().hyphenated().to_string()),
            rooms: Streams::new(config.room_history, config.max_rooms, "room"),
            dms: Streams::new(
                config.dm_history,
                config.max_dm_conversations,
                "conversation",
            ),
            failures: AtomicUsize::new(0),
        }
    }

    /// This store's epoch: the same in every page it returns, different for every store
    /// instance (history does not survive one).
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// Rooms that have had at least one message.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// DM conversations that have had at least one message.
    pub fn dm_conversation_count(&self) -> usize {
        self.dms.len()
    }

    /// Makes the next `n` operations (appends and page reads, in whatever order they
    /// come) fail with [`StoreError::Unavailable`] without any effect: a hook for tests
    /// of how an engine or runtime handles a failing store. Replaces any count left.
    pub fn fail_next(&self, n: usize) {
        self.failures.store(n, Ordering::SeqCst);
    }

    /// Consumes one injected failure, if any is left.
    fn injected_failure(&self) -> Result<(), StoreError> {
        match self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Err(StoreError::Unavailable(
                "injected failure (fail_next)".into(),
            )),
            Err(_) => Ok(()),
        }
    }

    fn empty_page<M>(&self) -> Page<M> {
        Page {
            epoch: self.epoch.clone(),
            last_seq: Seq(0),
            messages: Vec::new(),
            has_more: false,
        }
    }
}

/// A random v4 UUID, for message ids and the epoch.
// The store is where ids legitimately come from (the engine's ban on random ids keeps
// the engine deterministic; the store's choices reach it as inputs).
#[allow(clippy::disallowed_methods)]
fn random_uuid() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

/// The wall-clock time of an append.
// The store is where wall-clock timestamps legitimately come from ("when the store
// accepted it"); the engine never reads a clock.
#[allow(clippy::disallowed_methods)]
fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// The key of the conversation between `a` and `b`, the same for both orders.
fn conversation(a: &UserId, b: &UserId) -> (UserId, UserId) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn append_room(
        &self,
        message: NewRoomMessage,
    ) -> Result<Appended<StoredMessage>, StoreError> {
        self.injected_failure()?;
        let log = self.rooms.get_or_create(message.room.clone())?;
        let (id, now) = (MessageId(random_uuid()), now());
        let NewRoomMessage {
            room,
            user_id,
            username,
            content,
            client_msg_id,
        } = message;
        let (sender, key) = (user_id.clone(), client_msg_id.clone());
        let appended =
            lock(&log).append(&sender, key.as_ref(), now, |seq, timestamp| StoredMessage {
                id,
                room,
                seq,
                user_id,
                username,
                content,
                timestamp,
                client_msg_id,
            });
        Ok(appended)
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        self.injected_failure()?;
        Ok(match self.rooms.get(room) {
            Some(log) => lock(&log).page(&self.epoch, range),
            None => self.empty_page(),
        })
    }

    async fn append_dm(&self, message: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        self.injected_failure()?;
        let log = self
            .dms
            .get_or_create(conversation(&message.from, &message.to))?;
        let (id, now) = (MessageId(random_uuid()), now());
        let NewDm {
            from,
            from_username,
            to,
            to_username,
            content,
            client_msg_id,
        } = message;
        let (sender, key) = (from.clone(), client_msg_id.clone());
        let appended = lock(&log).append(&sender, key.as_ref(), now, |seq, timestamp| StoredDm {
            id,
            seq,
            from,
            from_username,
            to,
            to_username,
            content,
            timestamp,
            client_msg_id,
        });
        Ok(appended)
    }

    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        self.injected_failure()?;
        Ok(match self.dms.get(&conversation(a, b)) {
            Some(log) => lock(&log).page(&self.epoch, range),
            None => self.empty_page(),
        })
    }
}

#[cfg(test)]
mod tests;
