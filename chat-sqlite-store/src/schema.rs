//! Opening connections and the embedded migrations.
//!
//! The schema version is `PRAGMA user_version`: 0 for a new file, [`SCHEMA_VERSION`]
//! after the migrations. Migration `n` (1-based) takes a database from version `n - 1`
//! to `n`, in one transaction with the version bump, so a crash mid-migration leaves the
//! old version. A file with a higher version than this build knows is refused untouched.

use std::path::Path;

use chat_core::Epoch;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::SqliteConfig;
use crate::errors::OpenError;

/// The embedded migrations, oldest first. Never edit a released one: add another.
const MIGRATIONS: &[&str] = &[
    // 1: streams, messages, the database's epoch.
    r#"
    CREATE TABLE store_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    -- One row per room (kind 0, a = room name, b = '') or DM conversation (kind 1, a < b
    -- the two user ids). `last_seq` is bumped in the transaction that inserts the message.
    CREATE TABLE streams (
        id       INTEGER PRIMARY KEY,
        kind     INTEGER NOT NULL,
        a        TEXT NOT NULL,
        b        TEXT NOT NULL,
        epoch    TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        UNIQUE (kind, a, b)
    );

    -- Keyed by (stream, seq): a page is one range scan of the primary key.
    CREATE TABLE messages (
        stream         INTEGER NOT NULL REFERENCES streams (id),
        seq            INTEGER NOT NULL,
        id             BLOB NOT NULL,
        author         TEXT NOT NULL,
        author_name    TEXT NOT NULL,
        recipient      TEXT,
        recipient_name TEXT,
        content        TEXT NOT NULL,
        ts             INTEGER NOT NULL,
        client_msg_id  TEXT,
        PRIMARY KEY (stream, seq)
    ) WITHOUT ROWID;

    -- Idempotency: one message per (stream, author, clientMsgId).
    CREATE UNIQUE INDEX messages_client_msg_id
        ON messages (stream, author, client_msg_id)
        WHERE client_msg_id IS NOT NULL;
    "#,
];

/// `PRAGMA page_size` of a new database file.
const PAGE_SIZE: i64 = 1024;

/// WAL pages past which the writer checkpoints by itself (64 MiB of 1 KiB pages).
const WAL_FALLBACK_PAGES: i64 = 65_536;

/// Size the WAL file is cut back to after a checkpoint (16 MiB of 1 KiB pages).
const WAL_KEPT_PAGES: i64 = 16_384;

/// The schema version this build writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> OpenError + '_ {
    move |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// The settings every connection gets.
fn configure(conn: &Connection, path: &Path, config: &SqliteConfig) -> Result<(), OpenError> {
    conn.busy_timeout(config.busy_timeout)
        .map_err(sqlite(path))?;
    conn.pragma_update(None, "synchronous", config.synchronous.pragma())
        .map_err(sqlite(path))?;
    // 32 MiB of page cache per connection (SQLite's default is 2 MiB): the inner pages
    // of both indexes and the newest leaf of every active room stay in memory.
    conn.pragma_update(None, "cache_size", -32 * 1024)
        .map_err(sqlite(path))?;
    // A statement cache large enough for every statement the store runs.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// The writing connection: WAL, the size cap, and a check that the file is writable.
pub(crate) fn open_writer(path: &Path, config: &SqliteConfig) -> Result<Connection, OpenError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite(path))?;
    // SQLite silently opens a write-protected file read-only; say so now rather than at
    // the first append.
    if conn.is_readonly("main").map_err(sqlite(path))? {
        return Err(OpenError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    // Small pages for a new file (ignored for an existing one): appends to many rooms
    // dirty one page per room per commit, and every dirty page is written whole to the
    // WAL, so 1 KiB pages write a quarter of what the default 4 KiB would.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(sqlite(path))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| read_only_or(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    configure(&conn, path, config)?;
    // Checkpoints (copying the WAL back into the file) run on the checkpointer thread
    // (`checkpoint.rs`), not inside the writer's commits; the writer's automatic one is
    // only a fallback for a WAL the checkpointer cannot keep up with.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_FALLBACK_PAGES)
        .map_err(sqlite(path))?;
    // The WAL file is cut back to this size after a checkpoint.
    conn.pragma_update(None, "journal_size_limit", WAL_KEPT_PAGES * PAGE_SIZE)
        .map_err(sqlite(path))?;
    if let Some(bytes) = config.max_bytes {
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |row| row.get(0))
            .map_err(sqlite(path))?;
        let pages = (bytes / page_size.max(512) as u64).max(1);
        conn.pragma_update(None, "max_page_count", pages as i64)
            .map_err(sqlite(path))?;
    }
    Ok(conn)
}

/// A reading connection: `query_only`, so a bug can never write through it.
pub(crate) fn open_reader(path: &Path, config: &SqliteConfig) -> Result<Connection, OpenError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite(path))?;
    configure(&conn, path, config)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(sqlite(path))?;
    Ok(conn)
}

/// The checkpointer's connection (see `checkpoint.rs`).
pub(crate) fn open_checkpointer(
    path: &Path,
    config: &SqliteConfig,
) -> Result<Connection, OpenError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite(path))?;
    configure(&conn, path, config)?;
    Ok(conn)
}

/// A write refused because the file or its directory is read-only is reported as such.
fn read_only_or(path: &Path, e: rusqlite::Error) -> OpenError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) => {
            OpenError::ReadOnly {
                path: path.to_path_buf(),
            }
        }
        _ => sqlite(path)(e),
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] and returns the database's epoch (created
/// with the database).
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<Epoch, OpenError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| read_only_or(path, e))?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite(path))?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        // A version-0 file must be empty: never add our tables to somebody else's
        // database.
        let tables: Vec<String> = tx
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' LIMIT 5")
            .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
            .map_err(sqlite(path))?;
        if !tables.is_empty() {
            return Err(OpenError::Foreign {
                path: path.to_path_buf(),
                tables: tables.join(", "),
            });
        }
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (n, migration) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(migration)
            .map_err(|e| read_only_or(path, e))?;
        tx.pragma_update(None, "user_version", n as i64 + 1)
            .map_err(|e| read_only_or(path, e))?;
    }
    let existing: Option<String> = tx
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'epoch'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite(path))?;
    let epoch = match existing {
        Some(epoch) => epoch,
        None => {
            let epoch = uuid::Uuid::new_v4().hyphenated().to_string();
            tx.execute(
                "INSERT INTO store_meta (key, value) VALUES ('epoch', ?1)",
                [&epoch],
            )
            .map_err(|e| read_only_or(path, e))?;
            epoch
        }
    };
    tx.commit().map_err(|e| read_only_or(path, e))?;
    Ok(Epoch::new(&epoch))
}
