//! A bounded map from a stream key (a room, a pair of users) to its [`Log`].
//!
//! Locking: the map sits behind one `RwLock`, each log behind its own `Mutex`. The map
//! lock is held only to find (or, on a stream's first message, insert) a log, never while
//! a log is locked, so appends to different rooms do not wait for each other and an
//! append never waits for a page read of another room. Logs are never removed, so an
//! `Arc` taken from the map stays the stream's one log.
//!
//! Poisoning: a lock is poisoned only if a thread panicked while holding it. No code in
//! these critical sections panics on any input (an allocation failure aborts instead),
//! and a [`Log`] is consistent after each of its steps, so a poisoned lock is used as is
//! rather than turning one bug into a store that fails forever.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use chat_core::StoreError;

use crate::log::{Entry, Log};

/// The logs of one kind of stream (rooms, or DM conversations).
#[derive(Debug)]
pub(crate) struct Streams<K, M> {
    logs: RwLock<HashMap<K, Arc<Mutex<Log<M>>>>>,
    /// Messages kept per stream.
    history: usize,
    /// Streams kept at most; a new one beyond it is refused.
    max_streams: usize,
    /// "room", "conversation": for error messages.
    kind: &'static str,
}

impl<K: Eq + Hash, M: Entry> Streams<K, M> {
    pub(crate) fn new(history: usize, max_streams: usize, kind: &'static str) -> Self {
        Self {
            logs: RwLock::new(HashMap::new()),
            history,
            max_streams,
            kind,
        }
    }

    /// The log of `key`, if the stream has had a message. Reads never create a log, so
    /// reading any number of unknown rooms costs no memory.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<Mutex<Log<M>>>> {
        let logs = self.logs.read().unwrap_or_else(PoisonError::into_inner);
        logs.get(key).map(Arc::clone)
    }

    /// The log of `key`, created on the stream's first message; refused when
    /// `max_streams` streams exist already (nothing is stored then).
    pub(crate) fn get_or_create(&self, key: K) -> Result<Arc<Mutex<Log<M>>>, StoreError> {
        if let Some(log) = self.get(&key) {
            return Ok(log);
        }
        let mut logs = self.logs.write().unwrap_or_else(PoisonError::into_inner);
        let len = logs.len();
        match logs.entry(key) {
            // Another append created it between our read and write locks.
            MapEntry::Occupied(e) => Ok(Arc::clone(e.get())),
            MapEntry::Vacant(_) if len >= self.max_streams => {
                Err(StoreError::Unavailable(format!(
                    "in-memory store is full: it keeps at most {} {}s",
                    self.max_streams, self.kind
                )))
            }
            MapEntry::Vacant(e) => Ok(Arc::clone(
                e.insert(Arc::new(Mutex::new(Log::new(self.history)))),
            )),
        }
    }

    /// Number of streams that have had a message.
    pub(crate) fn len(&self) -> usize {
        self.logs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Locks a log, using it as is if a panic poisoned it (see the module docs).
pub(crate) fn lock<M>(log: &Mutex<Log<M>>) -> MutexGuard<'_, Log<M>> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}
