//! # chat-memory-store
//!
//! An in-memory [`Store`] for `chat-core`: the reference implementation of the trait,
//! for development, tests, and single-process servers that can afford to lose history
//! on restart.
//!
//! * **Bounded.** Each room keeps its newest [`MemoryConfig::room_history`] messages and
//!   each DM conversation its newest [`MemoryConfig::dm_history`]; older ones are dropped
//!   (pages then start later, and the engine sees the gap). The idempotency index holds
//!   exactly the `(user, clientMsgId)` keys of retained messages. The whole store holds
//!   at most [`MemoryConfig::max_bytes`] (256 MiB by default), and at most
//!   [`MemoryConfig::max_rooms`] rooms and [`MemoryConfig::max_dm_conversations`]
//!   conversations: past any of them it forgets the least recently used streams, see
//!   [Bounds](#bounds).
//! * **Epochs.** A store draws a random [`Epoch`] when it is created, so a client
//!   resuming with a `seq` from before a restart is told its position is void; a stream
//!   forgotten to stay within the bounds starts again under a new epoch, for the same
//!   reason.
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
//! let store = MemoryStore::with_config(MemoryConfig::default().with_room_history(500));
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
//! Clients choose room names freely and every anonymous reconnect is a new user, so the
//! number of streams is the attacker's to choose: the store bounds its memory and, when
//! a bound is reached, forgets whole **idle streams, least recently used first** (an
//! append or a page read is a use) instead of refusing new ones:
//!
//! * **Bytes.** Every message is counted (struct, `Arc`, log slot, strings, its
//!   idempotency entry) and every stream costs a fixed overhead plus its key. Past
//!   [`MemoryConfig::max_bytes`], streams are forgotten until 90 % of it is left; the
//!   stream being written is never the one forgotten, so a budget smaller than one
//!   stream's history is exceeded by at most that stream.
//! * **Streams.** Creating a room beyond [`MemoryConfig::max_rooms`] (a conversation
//!   beyond [`MemoryConfig::max_dm_conversations`]) first forgets the least recently
//!   used sixteenth of them.
//!
//! A forgotten stream loses its messages and its idempotency keys. Its next message
//! starts again at `seq` 1 under a **new epoch** (the store's random part plus the
//! number of evictions so far), never under one the stream had, so a client that
//! resumes with the old `(epoch, since)` gets `recovered: false` rather than silently
//! skipping messages, and an engine running on the store sees the new epoch in the
//! append reply and restarts the room's stream for its members (`stream_reset`).
//! Page reads never allocate, whatever room they name. No append is ever refused for
//! lack of room.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::SystemTime;

use async_trait::async_trait;
use chat_core::{
    Appended, Epoch, MessageId, NewDm, NewRoomMessage, Page, PageRange, RoomName, Seq, Store,
    StoreError, StoredDm, StoredMessage, Timestamp, UserId,
};

mod log;
mod streams;

use log::Entry;
use streams::{Shared, Stream, Streams};

/// Limits of a [`MemoryStore`]. Start from the default and change fields or chain the
/// `with_*` setters: `MemoryConfig::default().with_room_history(200)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Messages kept per room; older ones are dropped. Default 1000. At least 1 is kept
    /// (0 counts as 1), so a room's newest message can always be read back.
    pub room_history: usize,
    /// Messages kept per DM conversation (pair of users). Default 1000; 0 counts as 1.
    pub dm_history: usize,
    /// Rooms kept at most; a message to a new room beyond it first forgets the least
    /// recently used rooms (a sixteenth of them). Default 10 000.
    pub max_rooms: usize,
    /// DM conversations kept at most; beyond it, as for rooms. Default 100 000.
    pub max_dm_conversations: usize,
    /// Bytes the store may hold, messages and per-stream overhead together (an
    /// estimate: strings, structs, index entries; allocator rounding not counted).
    /// Past it, the least recently used streams (rooms and conversations alike; a page
    /// read counts as a use) are forgotten until 90 % of it is left; the stream being
    /// written is never the one forgotten. Default 256 MiB — a small server's share; a
    /// full default-length room of 1000 messages of 1000 ASCII characters takes ~1.3 MB.
    pub max_bytes: usize,
}

/// [`MemoryConfig::max_bytes`]'s default: 256 MiB.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            room_history: 1000,
            dm_history: 1000,
            max_rooms: 10_000,
            max_dm_conversations: 100_000,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

chat_core::config_setters! {
    MemoryConfig {
        with_room_history => room_history: usize,
        with_dm_history => dm_history: usize,
        with_max_rooms => max_rooms: usize,
        with_max_dm_conversations => max_dm_conversations: usize,
        with_max_bytes => max_bytes: usize,
    }
}

/// An in-memory [`Store`] with bounded history. See the [crate docs](crate).
#[derive(Debug)]
pub struct MemoryStore {
    shared: Shared,
    rooms: Streams<RoomName, StoredMessage>,
    /// Keyed by the pair of users in sorted order, so both directions share one log.
    dms: Streams<(UserId, UserId), StoredDm>,
    /// Operations still to fail (see `MemoryStore::fail_next`, feature `test-hooks`).
    #[cfg(any(test, feature = "test-hooks"))]
    failures: AtomicUsize,
    /// Held by the one append running an eviction round: the others go on without one
    /// (what they add, the running round or the next one sees).
    evicting: Mutex<()>,
    /// The last round freed nothing (only the stream being appended to, or nothing, was
    /// left to evict): the next round is skipped rather than sorting every stream again.
    fruitless: AtomicBool,
    /// Eviction rounds run so far (each sorts every stream); read by the tests.
    rounds: AtomicUsize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Which stream an eviction candidate is.
enum Victim {
    Room(RoomName),
    Dm((UserId, UserId)),
}

impl MemoryStore {
    /// A store with the default [`MemoryConfig`]: 1000 messages per room and per
    /// conversation, at most 10 000 rooms, 100 000 conversations and 256 MiB.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// A store with the given limits and a fresh random epoch.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            shared: Shared::new(random_uuid().hyphenated().to_string(), config.max_bytes),
            rooms: Streams::new(config.room_history, config.max_rooms, |r: &RoomName| {
                r.as_str().len()
            }),
            dms: Streams::new(
                config.dm_history,
                config.max_dm_conversations,
                |(a, b): &(UserId, UserId)| a.as_str().len() + b.as_str().len(),
            ),
            #[cfg(any(test, feature = "test-hooks"))]
            failures: AtomicUsize::new(0),
            evicting: Mutex::new(()),
            fruitless: AtomicBool::new(false),
            rounds: AtomicUsize::new(0),
        }
    }

    /// The epoch a stream created now gets (and an absent stream's page shows). Until
    /// the first eviction every stream has this store's random epoch; a stream created
    /// after N evictions has `<random>.N`, so an evicted stream that starts again never
    /// shows an epoch it had before. Different for every store instance.
    pub fn epoch(&self) -> Epoch {
        self.shared.current_epoch()
    }

    /// Rooms currently held.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// DM conversations currently held.
    pub fn dm_conversation_count(&self) -> usize {
        self.dms.len()
    }

    /// Bytes currently held (see [`MemoryConfig::max_bytes`]).
    pub fn bytes_used(&self) -> usize {
        self.shared.used.load(Ordering::SeqCst)
    }

    /// Makes the next `n` operations (appends and page reads, in whatever order they
    /// come) fail with [`StoreError::Unavailable`] without any effect: a hook for tests
    /// of how an engine or runtime handles a failing store. Replaces any count left.
    ///
    /// Test-only (feature `test-hooks`): not part of the stable API.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn fail_next(&self, n: usize) {
        self.failures.store(n, Ordering::SeqCst);
    }

    /// Consumes one injected failure, if any is left (never, without `test-hooks`).
    fn injected_failure(&self) -> Result<(), StoreError> {
        #[cfg(any(test, feature = "test-hooks"))]
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::unavailable("injected failure (fail_next)"));
        }
        Ok(())
    }

    fn empty_page<M>(&self) -> Page<M> {
        Page {
            epoch: self.shared.current_epoch(),
            last_seq: Seq(0),
            messages: Vec::new(),
            has_more: false,
        }
    }

    /// Forgets least recently used streams, other than `keep`, until the store is back
    /// to 90 % of its budget. One sort of every stream's recency per round: a round runs
    /// only after the store grew by a tenth of its budget, so its cost is spread over
    /// many appends. One append at a time runs a round (the others skip it), and a round
    /// that freed nothing makes the next one skip, so a store stuck over its budget does
    /// not sort every stream on every append.
    fn enforce_budget(&self, keep: &Victim) {
        if !self.shared.over_budget() {
            return;
        }
        let _round = match self.evicting.try_lock() {
            Ok(guard) => guard,
            // The lock guards no data: a round that panicked left nothing inconsistent.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if self.fruitless.swap(false, Ordering::SeqCst) {
            return;
        }
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let mut freed = false;
        let mut candidates: Vec<(u64, Victim)> = self
            .rooms
            .recency()
            .into_iter()
            .map(|(t, k)| (t, Victim::Room(k)))
            .chain(
                self.dms
                    .recency()
                    .into_iter()
                    .map(|(t, k)| (t, Victim::Dm(k))),
            )
            .collect();
        candidates.sort_unstable_by_key(|(tick, _)| *tick);
        let low_water = self.shared.low_water();
        for (_, victim) in candidates {
            if self.shared.used.load(Ordering::SeqCst) <= low_water {
                break;
            }
            match (&victim, keep) {
                (Victim::Room(a), Victim::Room(b)) if a == b => continue,
                (Victim::Dm(a), Victim::Dm(b)) if a == b => continue,
                (Victim::Room(r), _) => freed |= self.rooms.evict(r, &self.shared),
                (Victim::Dm(k), _) => freed |= self.dms.evict(k, &self.shared),
            };
        }
        if !freed {
            self.fruitless.store(true, Ordering::SeqCst);
        }
    }

    /// Appends to the stream of `key` (created if needed), retrying on a fresh stream if
    /// the one found was evicted meanwhile; then keeps the store within its budget.
    fn append_to<K, M: Entry>(
        &self,
        streams: &Streams<K, M>,
        key: &K,
        victim: Victim,
        sender: &UserId,
        client_msg_id: Option<&chat_core::ClientMsgId>,
        mut build: Option<impl FnOnce(Seq, Timestamp) -> M>,
    ) -> Appended<M>
    where
        K: Eq + std::hash::Hash + Clone,
    {
        let now = now();
        loop {
            let stream: Arc<Stream<M>> = streams.get_or_create(key, &self.shared);
            let mut log = stream.lock();
            if log.is_retired() {
                // Evicted between the lookup and the lock: the next lookup creates the
                // stream afresh, under a new epoch.
                continue;
            }
            let Some(make) = build.take() else {
                unreachable!("build is taken once, just before returning");
            };
            let (appended, delta) = log.append(sender, client_msg_id, now, make);
            self.shared.used.fetch_add(delta.added, Ordering::SeqCst);
            self.shared.used.fetch_sub(delta.removed, Ordering::SeqCst);
            drop(log);
            self.enforce_budget(&victim);
            return appended;
        }
    }
}

/// A random v4 UUID, for message ids and the epoch.
// The store is where ids legitimately come from (the engine's ban on random ids keeps
// the engine deterministic; the store's choices reach it as inputs).
fn random_uuid() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

/// The wall-clock time of an append.
// The store is where wall-clock timestamps legitimately come from ("when the store
// accepted it"); the engine never reads a clock.
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
        let id = MessageId(random_uuid());
        let key = message.room.clone();
        let (sender, client_msg_id) = (message.user_id.clone(), message.client_msg_id.clone());
        let NewRoomMessage {
            room,
            user_id,
            username,
            content,
            client_msg_id: cmid,
        } = message;
        let build = |seq, timestamp| StoredMessage {
            id,
            room,
            seq,
            user_id,
            username,
            content,
            timestamp,
            client_msg_id: cmid,
        };
        Ok(self.append_to(
            &self.rooms,
            &key,
            Victim::Room(key.clone()),
            &sender,
            client_msg_id.as_ref(),
            Some(build),
        ))
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        self.injected_failure()?;
        Ok(match self.rooms.get(room, &self.shared) {
            Some(stream) => stream.lock().page(range),
            None => self.empty_page(),
        })
    }

    async fn append_dm(&self, message: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        self.injected_failure()?;
        let id = MessageId(random_uuid());
        let key = conversation(&message.from, &message.to);
        let (sender, client_msg_id) = (message.from.clone(), message.client_msg_id.clone());
        let NewDm {
            from,
            from_username,
            to,
            to_username,
            content,
            client_msg_id: cmid,
        } = message;
        let build = |seq, timestamp| StoredDm {
            id,
            seq,
            from,
            from_username,
            to,
            to_username,
            content,
            timestamp,
            client_msg_id: cmid,
        };
        Ok(self.append_to(
            &self.dms,
            &key,
            Victim::Dm(key.clone()),
            &sender,
            client_msg_id.as_ref(),
            Some(build),
        ))
    }

    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        self.injected_failure()?;
        Ok(match self.dms.get(&conversation(a, b), &self.shared) {
            Some(stream) => stream.lock().page(range),
            None => self.empty_page(),
        })
    }
}

#[cfg(test)]
mod tests;
