//! Where the server keeps messages: `--store` (env `CHAT_STORE`).
//!
//! * `sqlite:PATH` — the default, `sqlite:chat-data/chat.db` (relative to the working
//!   directory; the directory and file are created on first start). History, epochs and
//!   idempotency keys survive a restart; an acknowledgement means committed.
//! * `memory` — in the process only: a restart loses every message (clients resuming
//!   after it are told so by a new epoch). For benchmarks and throwaway servers.
//! * `postgres://USER[:PASSWORD]@HOST:PORT/DB` (or `postgresql://`) — `chat-postgres-store`:
//!   several servers may share one database; the schema is migrated on start.
//!
//! A new backend is one more [`StoreChoice`] variant, its parsing in
//! [`StoreChoice::from_str`] and its opening in [`open`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chat_core::Store;
use chat_memory_store::MemoryStore;
use chat_postgres_store::PostgresStore;
use chat_sqlite_store::{OpenError, SqliteStore};
use thiserror::Error;

use crate::options::Options;

/// The default of `--store`.
pub(crate) const DEFAULT_STORE: &str = "sqlite:chat-data/chat.db";

/// A parsed `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreChoice {
    /// `memory`: `chat-memory-store`, bounded by the `--room-history`… flags.
    Memory,
    /// `sqlite:PATH`: `chat-sqlite-store` in one file.
    Sqlite(PathBuf),
    /// `postgres://…`: `chat-postgres-store` on the database at this URL.
    Postgres(String),
}

impl FromStr for StoreChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("memory") {
            return Ok(StoreChoice::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("`sqlite:` needs a file path, e.g. sqlite:chat-data/chat.db".into());
            }
            return Ok(StoreChoice::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreChoice::Postgres(s.to_owned()));
        }
        let scheme = s.split_once(':').map_or(s, |(scheme, _)| scheme);
        Err(format!(
            "unknown store `{scheme}`: expected `memory`, `sqlite:PATH` (e.g. {DEFAULT_STORE}) \
             or `postgres://USER@HOST:PORT/DB`"
        ))
    }
}

impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::Memory => f.write_str("memory"),
            StoreChoice::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            // Logged at start: a password in the URL is not.
            StoreChoice::Postgres(url) => f.write_str(&without_password(url)),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, Error)]
pub(crate) enum StoreOpenError {
    /// The SQLite file could not be opened or migrated.
    #[error(transparent)]
    Sqlite(#[from] OpenError),
    /// PostgreSQL could not be reached, refused us, or has a newer schema.
    #[error(transparent)]
    Postgres(#[from] chat_postgres_store::OpenError),
    /// The blocking open task failed.
    #[error("opening the store failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Opens the store `options` choose. Blocking work (files, migrations) runs on a
/// blocking thread.
pub(crate) async fn open(options: &Options) -> Result<Arc<dyn Store>, StoreOpenError> {
    Ok(match &options.store {
        StoreChoice::Memory => Arc::new(MemoryStore::with_config(options.memory_store())),
        StoreChoice::Sqlite(path) => {
            let (path, config) = (path.clone(), options.sqlite_store());
            let store =
                tokio::task::spawn_blocking(move || SqliteStore::open(path, config)).await??;
            Arc::new(store)
        }
        StoreChoice::Postgres(url) => {
            Arc::new(PostgresStore::open(options.postgres_store(url)).await?)
        }
    })
}

/// `url` with the password (if any) of its user part replaced by `***`.
pub(crate) fn without_password(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match authority.rfind('@').and_then(|at| {
        authority[..at]
            .find(':')
            .map(|colon| (scheme_end + colon, scheme_end + at))
    }) {
        Some((colon, at)) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_values_parse_and_unknown_schemes_are_refused() {
        assert_eq!("memory".parse(), Ok(StoreChoice::Memory));
        assert_eq!("MEMORY".parse(), Ok(StoreChoice::Memory));
        assert_eq!(
            "sqlite:/var/lib/chat/chat.db".parse(),
            Ok(StoreChoice::Sqlite("/var/lib/chat/chat.db".into()))
        );
        assert_eq!(
            DEFAULT_STORE.parse(),
            Ok(StoreChoice::Sqlite("chat-data/chat.db".into()))
        );
        assert!(
            "sqlite:"
                .parse::<StoreChoice>()
                .unwrap_err()
                .contains("needs a file path")
        );
        let unknown = "mongodb://localhost/chat"
            .parse::<StoreChoice>()
            .unwrap_err();
        assert!(unknown.contains("unknown store `mongodb`"), "{unknown}");
        assert!("chat.db".parse::<StoreChoice>().is_err());
        assert_eq!(
            "postgres://chat@db.internal:5432/chat".parse(),
            Ok(StoreChoice::Postgres(
                "postgres://chat@db.internal:5432/chat".into()
            ))
        );
        assert!(matches!(
            "postgresql://chat@127.0.0.1/chat".parse(),
            Ok(StoreChoice::Postgres(_))
        ));
        let secret = StoreChoice::Postgres("postgres://chat:hunter2@db:5432/chat".into());
        assert_eq!(secret.to_string(), "postgres://chat:***@db:5432/chat");
        for choice in [
            StoreChoice::Memory,
            StoreChoice::Sqlite("a/b.db".into()),
            StoreChoice::Postgres("postgres://chat@db:5432/chat".into()),
        ] {
            assert_eq!(choice.to_string().parse(), Ok(choice));
        }
    }
}
