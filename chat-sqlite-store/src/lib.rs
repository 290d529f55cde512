//! # chat-sqlite-store
//!
//! A durable [`Store`] for chat-core in **one SQLite file**: history, epochs and
//! idempotency keys survive a restart, and an acknowledgement means *committed*.
//!
//! ```no_run
//! use chat_sqlite_store::{SqliteConfig, SqliteStore};
//!
//! let store = SqliteStore::open("chat-data/chat.db", SqliteConfig::default())?;
//! # Ok::<(), chat_sqlite_store::OpenError>(())
//! ```
//!
//! ## How it works
//!
//! * **One writer thread, group commit.** Appends go to a dedicated thread that owns the
//!   only writing connection. It takes every append waiting in its queue (up to
//!   [`SqliteConfig::max_batch`]), writes them in **one** transaction and commits; only
//!   then does it answer them. An acknowledgement never precedes the commit, and one
//!   `fsync` serves the whole burst, so throughput grows with the number of concurrent
//!   senders instead of being capped at one commit per message.
//! * **`seq` in the same transaction as the insert.** Each stream (a room, or the
//!   conversation of two users) has a row with its `last_seq` and `epoch`; an append bumps
//!   `last_seq` and inserts the message in the same transaction, so there is no gap and
//!   no reuse, also across restarts.
//! * **Idempotency by a unique index** on (stream, author, clientMsgId): a retry finds the
//!   original (also after a restart) and gets it back with `duplicate: true`.
//! * **Epochs are persisted.** A database gets a random epoch when it is created; every
//!   stream keeps it. `seq` never starts again within a file, so the epoch only changes
//!   when the file does (deleted, replaced): exactly when history was lost.
//! * **Reads on their own connections** (WAL lets them run while the writer commits), on
//!   [`SqliteConfig::readers`] threads. A page reads the stream's head and its messages in
//!   one read transaction (one snapshot), from the primary key (stream, seq): a page costs
//!   O(page + log n) however long the history.
//! * **Retention** ([`Retention`]): keep everything (default), the newest N per stream,
//!   and/or nothing older than a duration; old messages are deleted by the writer thread
//!   in small chunks between batches, so deleting never stalls appends for long.
//! * **Checkpoints in the background.** A checkpointer thread copies the WAL back into
//!   the file every 200 ms (`PASSIVE`: it never blocks the writer or readers), so commits
//!   do not pay for it.
//! * **Migrations** are embedded and applied on open; the schema version is
//!   `PRAGMA user_version`. A file from a newer version is refused with
//!   [`OpenError::SchemaTooNew`], never modified.
//!
//! ## What an acknowledgement promises (`synchronous`)
//!
//! The journal is **WAL**. [`Synchronous::Full`] (the default) syncs the WAL to disk at
//! every commit: an acknowledged message survives a process crash (`kill -9`), an OS
//! crash and a power loss (as far as the disk honours `fsync`). [`Synchronous::Normal`]
//! skips that sync (WAL is synced only at checkpoints): an acknowledged message survives
//! a process crash — the commit is in the OS's page cache — but the last commits before
//! a power loss or OS crash may roll back (the database stays consistent). Group commit
//! makes `Full` cheap enough to be the default; see docs/BENCHMARKS.md.
//!
//! ## Failures
//!
//! Nothing a database says becomes a panic. Opening fails with an [`OpenError`] that
//! names the file and the cause (a schema from a newer version, a read-only file, a
//! directory that cannot be created, not a database). At run time a full disk
//! (or [`SqliteConfig::max_bytes`]), a read-only file or a busy database answers
//! [`StoreError::Unavailable`] (nothing was stored); an I/O error *during the commit*
//! answers [`StoreError::Indeterminate`] (the commit may have reached the disk).

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use chat_core::{
    Appended, Epoch, NewDm, NewRoomMessage, Page, PageRange, RoomName, Store, StoreError, StoredDm,
    StoredMessage, UserId, async_trait,
};
use tokio::sync::oneshot;

mod checkpoint;
mod errors;
mod reader;
mod rows;
mod schema;
mod writer;

pub use errors::OpenError;
pub use schema::SCHEMA_VERSION;

use reader::Read;
use rows::StreamKey;
use writer::Write;

/// How hard a commit tries to reach the disk before the append is acknowledged. See the
/// [crate docs](crate#what-an-acknowledgement-promises-synchronous).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `PRAGMA synchronous = FULL`: the WAL is synced at every commit. An acknowledged
    /// message survives a process crash, an OS crash and a power loss.
    #[default]
    Full,
    /// `PRAGMA synchronous = NORMAL`: no sync per commit. An acknowledged message survives
    /// a process crash; the last commits before a power loss or OS crash may be lost.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Which old messages are deleted (in the background, by the writer thread). Start
/// from [`Retention::default`] (nothing deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Keep only the newest N messages of each room and conversation. `None` (default):
    /// no limit.
    pub keep_last: Option<NonZeroU64>,
    /// Delete messages older than this. `None` (default): no limit. Age is judged by
    /// each stream's oldest messages first (`seq` order), so a message is deleted once
    /// it and every older message of its stream are past the age.
    pub max_age: Option<Duration>,
    /// How often the writer looks for messages to delete. Default 60 s.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_last: None,
            max_age: None,
            interval: Duration::from_secs(60),
        }
    }
}

impl Retention {
    /// True when something is ever deleted.
    fn deletes(&self) -> bool {
        self.keep_last.is_some() || self.max_age.is_some()
    }
}

chat_core::config_setters! {
    Retention {
        with_keep_last => keep_last: Option<NonZeroU64>,
        with_max_age => max_age: Option<Duration>,
        with_interval => interval: Duration,
    }
}

/// Counters of a [`SqliteStore`]'s writer ([`SqliteStore::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqliteStats {
    /// Transactions committed (appends and retention).
    pub commits: u64,
    /// Appends committed (duplicates included). `appends / commits` is the group-commit
    /// batch size.
    pub appends: u64,
    /// Commits that failed (their appends were answered with an error, or retried one
    /// by one).
    pub failed_commits: u64,
}

/// Settings of a [`SqliteStore`]. Start from [`SqliteConfig::default`] and change
/// fields or chain the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// What a commit promises. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// What is deleted. Default: nothing.
    pub retention: Retention,
    /// Reader threads (each with its own connection). Default 2; at least 1 is used.
    pub readers: usize,
    /// Most appends written in one transaction. Default 1024.
    pub max_batch: usize,
    /// Appends that may wait for the writer; past it an append answers
    /// `Unavailable` at once instead of queueing without bound. Default 65 536.
    pub max_queued_writes: usize,
    /// Cap on the database's size (`PRAGMA max_page_count`); past it appends answer
    /// `Unavailable` ("database full") as on a full disk. `None` (default): no cap.
    pub max_bytes: Option<u64>,
    /// How long a statement waits for a lock held by another process. Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            retention: Retention::default(),
            readers: 2,
            max_batch: 1024,
            max_queued_writes: 65_536,
            max_bytes: None,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

chat_core::config_setters! {
    SqliteConfig {
        with_synchronous => synchronous: Synchronous,
        with_retention => retention: Retention,
        with_readers => readers: usize,
        with_max_batch => max_batch: usize,
        with_max_queued_writes => max_queued_writes: usize,
        with_max_bytes => max_bytes: Option<u64>,
        with_busy_timeout => busy_timeout: Duration,
    }
}

/// A durable [`Store`] in one SQLite file. See the [crate docs](crate).
///
/// Dropping it finishes the appends already queued (they are committed and answered),
/// then closes the database.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    stats: Arc<writer::Counters>,
    writes: Option<crossbeam_channel::Sender<Write>>,
    reads: Option<crossbeam_channel::Sender<Read>>,
    /// Dropped to stop the checkpointer.
    checkpoints: Option<crossbeam_channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    epoch: Epoch,
}

impl SqliteStore {
    /// Opens (creating the file and its directory if needed) the database at `path`,
    /// applies the embedded migrations and starts the writer and reader threads.
    ///
    /// Blocking (file I/O, migrations): call it before starting the async runtime or on
    /// a blocking thread.
    pub fn open(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = schema::open_writer(&path, &config)?;
        let epoch = schema::migrate(&mut conn, &path)?;
        let mut threads = Vec::new();
        let (read_tx, read_rx) = crossbeam_channel::unbounded();
        for n in 0..config.readers.max(1) {
            let reader = schema::open_reader(&path, &config)?;
            let rx = read_rx.clone();
            let epoch = epoch.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sqlite-reader-{n}"))
                    .spawn(move || reader::run(reader, rx, epoch))
                    .map_err(|source| OpenError::Thread { source })?,
            );
        }
        let (checkpoint_tx, checkpoint_rx) = crossbeam_channel::bounded(1);
        let checkpointer = schema::open_checkpointer(&path, &config)?;
        threads.push(
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || checkpoint::run(checkpointer, checkpoint_rx))
                .map_err(|source| OpenError::Thread { source })?,
        );
        let (write_tx, write_rx) = crossbeam_channel::bounded(config.max_queued_writes.max(1));
        let stats = Arc::new(writer::Counters::default());
        let writer = writer::Writer::new(conn, epoch.clone(), &config, Arc::clone(&stats));
        threads.push(
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || writer.run(write_rx))
                .map_err(|source| OpenError::Thread { source })?,
        );
        Ok(Self {
            path,
            stats,
            writes: Some(write_tx),
            reads: Some(read_tx),
            checkpoints: Some(checkpoint_tx),
            threads,
            epoch,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has done since the store was opened.
    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            appends: self.stats.appends.load(Ordering::Relaxed),
            failed_commits: self.stats.failed_commits.load(Ordering::Relaxed),
        }
    }

    /// The epoch of this database (every stream of it has this epoch).
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// Runs retention to the end now (it otherwise runs every
    /// [`Retention::interval`] in the background), returning the messages deleted. For
    /// tests and maintenance; does nothing when retention keeps everything.
    pub async fn apply_retention(&self) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        let writes = self
            .writes
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("the store is closed"))?;
        writes
            .send(Write::Retention(tx))
            .map_err(|_| StoreError::unavailable("the SQLite writer thread has stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError::unavailable("the SQLite writer thread stopped")))
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let writes = self
            .writes
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("the store is closed"))?;
        writes.try_send(make(tx)).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => {
                StoreError::unavailable("too many appends are waiting for the SQLite writer")
            }
            crossbeam_channel::TrySendError::Disconnected(_) => {
                StoreError::unavailable("the SQLite writer thread has stopped")
            }
        })?;
        // A dropped reply means the writer stopped while the append was queued or being
        // written: whether its transaction committed is unknown.
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::indeterminate(
                "the SQLite writer thread stopped before answering",
            ))
        })
    }

    async fn read<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Read,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let reads = self
            .reads
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("the store is closed"))?;
        reads
            .send(make(tx))
            .map_err(|_| StoreError::unavailable("the SQLite reader threads have stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError::unavailable("a SQLite reader thread stopped")))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channels ends the threads once they have answered what is queued.
        self.writes.take();
        self.reads.take();
        self.checkpoints.take();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "a SQLite store thread panicked");
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_room(
        &self,
        message: NewRoomMessage,
    ) -> Result<Appended<StoredMessage>, StoreError> {
        self.write(|reply| Write::Room(message, reply)).await
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let key = StreamKey::room(room);
        let room = room.clone();
        self.read(|reply| Read::Room {
            key,
            room,
            range,
            reply,
        })
        .await
    }

    async fn append_dm(&self, message: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        self.write(|reply| Write::Dm(message, reply)).await
    }

    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        let key = StreamKey::dm(a, b);
        self.read(|reply| Read::Dm { key, range, reply }).await
    }
}
