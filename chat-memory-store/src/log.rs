//! One bounded stream: the newest messages of a room or a conversation, with the
//! idempotency index of exactly those messages.
//!
//! A `Log` only ever lives behind its own mutex (see `streams.rs`), so every method here
//! is a plain, synchronous critical section: an append and a page read each see the
//! whole log at one instant, which is what makes `seq` gapless and a page's `last_seq`,
//! `epoch` and messages atomic.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chat_core::{Appended, ClientMsgId, Epoch, Page, PageRange, Seq, StoredDm, StoredMessage};
use chat_core::{Stored, Timestamp, UserId};

/// What a log needs to know about the messages it keeps: the accessors shared by room
/// messages and DMs ([`Stored`]), and what each costs in memory.
pub(crate) trait Entry: Stored {
    /// The bytes this message holds in the store: its struct, the `Arc` around it, its
    /// slot in the log, its strings, and its idempotency entry if it has one. An
    /// estimate (allocator rounding is not counted), the same on the way in and out.
    fn bytes(&self) -> usize;
}

/// What an idempotency entry costs beyond its strings: the map slot, the key's two
/// `Arc`s and the seq.
const INDEX_ENTRY_BYTES: usize = 64;

fn index_bytes(sender: &UserId, id: Option<&ClientMsgId>) -> usize {
    id.map_or(0, |id| {
        INDEX_ENTRY_BYTES + sender.as_str().len() + id.as_str().len()
    })
}

impl Entry for StoredMessage {
    fn bytes(&self) -> usize {
        size_of::<Self>()
            + 2 * size_of::<usize>() // the Arc's counts
            + size_of::<Arc<Self>>() // the log's slot
            + self.room.as_str().len()
            + self.user_id.as_str().len()
            + self.username.len()
            + self.content.as_str().len()
            + self.client_msg_id.as_ref().map_or(0, |c| c.as_str().len())
            + index_bytes(&self.user_id, self.client_msg_id.as_ref())
    }
}

impl Entry for StoredDm {
    fn bytes(&self) -> usize {
        size_of::<Self>()
            + 2 * size_of::<usize>()
            + size_of::<Arc<Self>>()
            + self.from.as_str().len()
            + self.from_username.len()
            + self.to.as_str().len()
            + self.to_username.len()
            + self.content.as_str().len()
            + self.client_msg_id.as_ref().map_or(0, |c| c.as_str().len())
            + index_bytes(&self.from, self.client_msg_id.as_ref())
    }
}

/// The idempotency key: a `client_msg_id` is only unique per sender.
type Key = (UserId, ClientMsgId);

/// The newest `capacity` messages of one stream.
///
/// Invariants (kept by [`Log::append`] and [`Log::retire`], the only mutators):
/// * `messages` holds consecutive seqs ending at `head`, at most `capacity` of them;
/// * `by_client_id` maps a key to the seq of a message in `messages` that carries it,
///   and holds no other entry, so `by_client_id.len() <= messages.len() <= capacity`;
/// * `bytes` is the sum of [`Entry::bytes`] over `messages`;
/// * once `retired` (the stream was evicted), nothing is appended any more.
#[derive(Debug)]
pub(crate) struct Log<M> {
    messages: VecDeque<Arc<M>>,
    by_client_id: HashMap<Key, Seq>,
    head: Seq,
    capacity: usize,
    epoch: Epoch,
    bytes: usize,
    retired: bool,
}

/// What an append did to the bytes a log holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) added: usize,
    pub(crate) removed: usize,
}

impl<M: Entry> Log<M> {
    /// An empty log under `epoch`, keeping at most `capacity` (at least 1) messages.
    pub(crate) fn new(capacity: usize, epoch: Epoch) -> Self {
        let capacity = capacity.max(1);
        Self {
            // Allocate as the stream grows: most rooms never reach their capacity.
            messages: VecDeque::new(),
            by_client_id: HashMap::new(),
            head: Seq(0),
            capacity,
            epoch,
            bytes: 0,
            retired: false,
        }
    }

    /// Whether the stream was evicted: an append that finds its log retired must look
    /// the stream up again (it starts afresh under a new epoch).
    pub(crate) fn is_retired(&self) -> bool {
        self.retired
    }

    /// Marks the log evicted and frees its messages and index; returns the bytes freed.
    pub(crate) fn retire(&mut self) -> usize {
        self.retired = true;
        self.messages = VecDeque::new();
        self.by_client_id = HashMap::new();
        std::mem::take(&mut self.bytes)
    }

    /// The retained message with this `seq`, if any.
    fn get(&self, seq: Seq) -> Option<&Arc<M>> {
        let first = self.messages.front()?.seq();
        let index = seq.0.checked_sub(first.0)?;
        self.messages.get(usize::try_from(index).ok()?)
    }

    /// Stores the message `build` makes from the next seq and a timestamp, or returns the
    /// retained message that already carries `(sender, client_msg_id)`.
    ///
    /// `now` is the wall-clock time read by the caller; a stored timestamp is never older
    /// than its predecessor's, so timestamps follow `seq` order even if the clock steps
    /// back (NTP). Nothing here can fail, so an append either happens whole or not at all.
    pub(crate) fn append(
        &mut self,
        sender: &UserId,
        client_msg_id: Option<&ClientMsgId>,
        now: Timestamp,
        build: impl FnOnce(Seq, Timestamp) -> M,
    ) -> (Appended<M>, Delta) {
        let key = client_msg_id.map(|id| (sender.clone(), id.clone()));
        if let Some(key) = &key {
            // A key whose message is gone would be a broken invariant; treating it as
            // "not a duplicate" then stores the retry rather than losing it.
            if let Some(original) = self.by_client_id.get(key).and_then(|&seq| self.get(seq)) {
                let appended = Appended {
                    message: Arc::clone(original),
                    duplicate: true,
                    epoch: self.epoch.clone(),
                };
                return (appended, Delta::default());
            }
        }
        let seq = self.head.next();
        let floor = self
            .messages
            .back()
            .map(|m| m.timestamp())
            .unwrap_or_default();
        let message = Arc::new(build(seq, now.max(floor)));
        let mut delta = Delta {
            added: message.bytes(),
            removed: 0,
        };
        if self.messages.len() == self.capacity {
            delta.removed = self.evict_oldest();
        }
        self.bytes = self.bytes + delta.added - delta.removed;
        if let Some(key) = key {
            self.by_client_id.insert(key, seq);
        }
        self.messages.push_back(Arc::clone(&message));
        self.head = seq;
        let appended = Appended {
            message,
            duplicate: false,
            epoch: self.epoch.clone(),
        };
        (appended, delta)
    }

    /// Drops the oldest message and, with it, its idempotency entry: a retry of a
    /// message that is no longer retained is stored again (the contract promises
    /// deduplication only while the message is retained), and the index stays bounded by
    /// the capacity.
    fn evict_oldest(&mut self) -> usize {
        let Some(oldest) = self.messages.pop_front() else {
            return 0;
        };
        if let Some(id) = oldest.client_msg_id() {
            let key = (oldest.sender().clone(), id.clone());
            // Only if it still points at this message: the index never holds two seqs
            // for one key, but checking keeps a newer entry safe whatever happens.
            if self.by_client_id.get(&key) == Some(&oldest.seq()) {
                self.by_client_id.remove(&key);
            }
        }
        oldest.bytes()
    }

    /// Reads `range`; see [`PageRange`] for the semantics. Dropped messages count as not
    /// existing, so a page that reaches the oldest retained message has no more.
    pub(crate) fn page(&self, range: PageRange) -> Page<M> {
        let len = self.messages.len();
        // The retained window is `first..=head`, `len` messages (first = head + 1 when
        // empty). Positions below are indices into `messages`.
        let first = self.head.0 + 1 - len as u64;
        let position = |seq: u64| -> usize {
            // Index of the first retained message with a seq >= `seq`, clamped to 0..=len.
            usize::try_from(seq.saturating_sub(first)).map_or(len, |i| i.min(len))
        };
        let (start, end, has_more) = match range {
            PageRange::Latest { limit } => {
                let start = len.saturating_sub(limit);
                (start, len, start > 0)
            }
            PageRange::Before { seq, limit } => {
                let end = position(seq.0);
                let start = end.saturating_sub(limit);
                (start, end, start > 0)
            }
            PageRange::After { seq, limit } => {
                let start = position(seq.0.saturating_add(1));
                let end = start.saturating_add(limit).min(len);
                (start, end, end < len)
            }
        };
        Page {
            epoch: self.epoch.clone(),
            last_seq: self.head,
            messages: self.messages.range(start..end).cloned().collect(),
            has_more,
        }
    }

    /// Messages currently retained.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Idempotency entries currently held.
    #[cfg(test)]
    pub(crate) fn index_len(&self) -> usize {
        self.by_client_id.len()
    }
}
