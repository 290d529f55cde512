//! A map from a stream key (a room, a pair of users) to its [`Log`], within a byte
//! budget and a stream count, forgetting the least recently used streams to stay within
//! them.
//!
//! Locking: the map sits behind one `RwLock`, each log behind its own `Mutex`. The map
//! lock is held to find a log, to insert one (a stream's first message) and to remove
//! one (an eviction, which then locks the removed log to retire it). Nobody takes the
//! map lock while holding a log's lock, so there is no lock-order cycle; appends to
//! different rooms do not wait for each other, and an append never waits for a page
//! read of another room.
//!
//! An evicted log is *retired* under its own lock: an append that found it in the map
//! just before the eviction sees the flag and looks the stream up again (a fresh log
//! under a new epoch), so no message is ever stored in a log nobody can read, and the
//! byte count stays exact (bytes are added and removed only under the log's lock).
//!
//! Poisoning: a lock is poisoned only if a thread panicked while holding it. No code in
//! these critical sections panics on any input (an allocation failure aborts instead),
//! and a [`Log`] is consistent after each of its steps, so a poisoned lock is used as is
//! rather than turning one bug into a store that fails forever.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use chat_core::Epoch;

use crate::log::{Entry, Log};

/// What a stream costs besides its messages: the map entry, the `Arc`, the mutex, the
/// log's empty collections and its epoch. Counted with its key's bytes.
pub(crate) const STREAM_OVERHEAD_BYTES: usize = 512;

/// State shared by the room and the DM streams of one store: one byte budget, one
/// recency clock, one epoch generation.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Bytes held by every stream (messages plus per-stream overhead).
    pub(crate) used: AtomicUsize,
    /// The byte budget.
    pub(crate) max_bytes: usize,
    /// Recency clock: every touch of a stream takes the next tick.
    clock: AtomicU64,
    /// Evictions so far; part of the epoch of streams created after them.
    generation: AtomicU64,
    /// This store instance's random part of every epoch.
    base: String,
}

impl Shared {
    pub(crate) fn new(base: String, max_bytes: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max_bytes,
            clock: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            base,
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The epoch a stream created now gets, and the one an absent stream's page shows:
    /// `base` until the first eviction, then `base.N` after N evictions. A stream
    /// re-created after its eviction therefore never shows the epoch it had before.
    pub(crate) fn current_epoch(&self) -> Epoch {
        match self.generation.load(Ordering::SeqCst) {
            0 => Epoch::new(&self.base),
            n => Epoch::new(&format!("{}.{n}", self.base)),
        }
    }

    pub(crate) fn over_budget(&self) -> bool {
        self.used.load(Ordering::SeqCst) > self.max_bytes
    }

    /// What eviction brings the store down to: 90 % of the budget, so that one sort of
    /// the streams pays for many appends.
    pub(crate) fn low_water(&self) -> usize {
        self.max_bytes - self.max_bytes / 10
    }
}

/// One stream: its log and when it was last used.
#[derive(Debug)]
pub(crate) struct Stream<M> {
    log: Mutex<Log<M>>,
    last_used: AtomicU64,
}

impl<M> Stream<M> {
    /// Locks the log, using it as is if a panic poisoned it (see the module docs).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Log<M>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The logs of one kind of stream (rooms, or DM conversations).
#[derive(Debug)]
pub(crate) struct Streams<K, M> {
    logs: RwLock<HashMap<K, Arc<Stream<M>>>>,
    /// Messages kept per stream.
    history: usize,
    /// Streams kept at most; creating one beyond it evicts the least recently used.
    max_streams: usize,
    /// The bytes a key holds (for the per-stream overhead).
    key_bytes: fn(&K) -> usize,
}

impl<K: Eq + Hash + Clone, M: Entry> Streams<K, M> {
    pub(crate) fn new(history: usize, max_streams: usize, key_bytes: fn(&K) -> usize) -> Self {
        Self {
            logs: RwLock::new(HashMap::new()),
            history,
            max_streams: max_streams.max(1),
            key_bytes,
        }
    }

    fn overhead(&self, key: &K) -> usize {
        STREAM_OVERHEAD_BYTES + (self.key_bytes)(key)
    }

    /// The stream of `key`, if it has had a message (and was not evicted since), marked
    /// as used now. Reads never create a stream, so reading any number of unknown rooms
    /// costs no memory.
    pub(crate) fn get(&self, key: &K, shared: &Shared) -> Option<Arc<Stream<M>>> {
        let logs = self.logs.read().unwrap_or_else(PoisonError::into_inner);
        let stream = logs.get(key).map(Arc::clone)?;
        stream.last_used.store(shared.tick(), Ordering::Relaxed);
        Some(stream)
    }

    /// The stream of `key`, created on its first message under the current epoch. When
    /// `max_streams` exist already, the least recently used sixteenth of them (at least
    /// one) is forgotten first: a flood of new rooms pushes out idle ones instead of
    /// being refused.
    pub(crate) fn get_or_create(&self, key: &K, shared: &Shared) -> Arc<Stream<M>> {
        if let Some(stream) = self.get(key, shared) {
            return stream;
        }
        let mut logs = self.logs.write().unwrap_or_else(PoisonError::into_inner);
        if !logs.contains_key(key) && logs.len() >= self.max_streams {
            let batch = (self.max_streams / 16).max(1);
            let mut victims: Vec<(u64, K)> = logs
                .iter()
                .map(|(k, s)| (s.last_used.load(Ordering::Relaxed), k.clone()))
                .collect();
            victims.sort_unstable_by_key(|(tick, _)| *tick);
            for (_, victim) in victims.into_iter().take(batch) {
                self.remove_locked(&mut logs, &victim, shared);
            }
        }
        match logs.entry(key.clone()) {
            // Another append created it between our read and write locks.
            MapEntry::Occupied(e) => Arc::clone(e.get()),
            MapEntry::Vacant(e) => {
                shared.used.fetch_add(self.overhead(key), Ordering::SeqCst);
                let stream = Stream {
                    log: Mutex::new(Log::new(self.history, shared.current_epoch())),
                    last_used: AtomicU64::new(shared.tick()),
                };
                Arc::clone(e.insert(Arc::new(stream)))
            }
        }
    }

    /// Removes `key`'s stream (map lock held): retires its log, returns its bytes to the
    /// budget and moves the epoch generation on.
    fn remove_locked(
        &self,
        logs: &mut HashMap<K, Arc<Stream<M>>>,
        key: &K,
        shared: &Shared,
    ) -> bool {
        let Some(stream) = logs.remove(key) else {
            return false;
        };
        let freed = stream.lock().retire() + self.overhead(key);
        shared.used.fetch_sub(freed, Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Forgets `key`'s stream; false if it was not there.
    pub(crate) fn evict(&self, key: &K, shared: &Shared) -> bool {
        let mut logs = self.logs.write().unwrap_or_else(PoisonError::into_inner);
        self.remove_locked(&mut logs, key, shared)
    }

    /// Every stream with when it was last used, for choosing what to evict.
    pub(crate) fn recency(&self) -> Vec<(u64, K)> {
        let logs = self.logs.read().unwrap_or_else(PoisonError::into_inner);
        logs.iter()
            .map(|(k, s)| (s.last_used.load(Ordering::Relaxed), k.clone()))
            .collect()
    }

    /// Number of streams held.
    pub(crate) fn len(&self) -> usize {
        self.logs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
