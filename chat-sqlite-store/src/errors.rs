//! Errors: why a database could not be opened, and what a SQLite error at run time means
//! to the engine.

use std::path::PathBuf;

use chat_core::StoreError;
use rusqlite::ErrorCode;

/// Why [`SqliteStore::open`](crate::SqliteStore::open) failed. Each names the file and
/// says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The database's directory does not exist and could not be created.
    #[error("cannot create the directory {path} for the chat database: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// SQLite could not open or set up the file (no permission, not a database, locked).
    #[error("cannot open the chat database {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file (or its filesystem) is read-only; the store must write.
    #[error(
        "the chat database {path} is read-only; the server needs to write to it (check the \
         permissions of the file, its -wal/-shm files and its directory)"
    )]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer version of this store; it is left untouched.
    #[error(
        "the chat database {path} has schema version {found}, newer than this server \
         supports ({supported}); run a newer server, or point it at another file"
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
        supported: i64,
    },
    /// The file is a SQLite database, but not one of this store (its tables differ).
    #[error("{path} is not a chat database (schema version 0 but it has other tables: {tables})")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Some of its tables.
        tables: String,
    },
    /// WAL could not be enabled (a filesystem without shared memory, for example).
    #[error("cannot use write-ahead logging for the chat database {path} (journal mode is {mode})")]
    NotWal {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// A thread could not be started.
    #[error("cannot start a SQLite store thread: {source}")]
    Thread {
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where in an append's life an error happened: before the commit nothing can have been
/// written; a failing commit may or may not have reached the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// A statement inside the transaction (or `BEGIN`).
    Statement,
    /// `COMMIT`.
    Commit,
}

/// What a SQLite error means to the engine, with the error kept as the source.
pub(crate) fn store_error(e: rusqlite::Error, stage: Stage, what: &'static str) -> StoreError {
    let error = match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => {
            StoreError::unavailable(format!("{what}: database or disk is full"))
        }
        Some(ErrorCode::ReadOnly) => {
            StoreError::unavailable(format!("{what}: the database is read-only"))
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::unavailable(
            format!("{what}: the database is locked by another connection"),
        ),
        Some(ErrorCode::SystemIoFailure) if stage == Stage::Commit => StoreError::indeterminate(
            format!("{what}: I/O error during the commit; it may have reached the disk"),
        ),
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => {
            StoreError::rejected(format!("{what}: the database refused the data"))
        }
        _ => StoreError::unavailable(format!("{what}: SQLite error")),
    };
    error.with_source(e)
}

/// A row that does not hold what this store writes (edited by hand, or corrupt).
pub(crate) fn corrupt(what: &'static str) -> StoreError {
    StoreError::rejected(format!("a stored row has an invalid {what}"))
}
