//! Where the server keeps messages: `--store` (env `CHAT_STORE`).
//!
//! * `sqlite:PATH` — the default, `sqlite:chat-data/chat.db` (relative to the working
//!   directory; the directory and file are created on first start). History, epochs and
//!   idempotency keys survive a restart; an acknowledgement means committed.
//! * `memory` — in the process only: a restart loses every message (clients resuming
//!   after it are told so by a new epoch). For benchmarks and throwaway servers.
//!
//! A new backend is one more [`StoreChoice`] variant, its parsing in
//! [`StoreChoice::from_str`] and its opening in [`open`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chat_core::Store;
use chat_memory_store::MemoryStore;
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
        let scheme = s.split_once(':').map_or(s, |(scheme, _)| scheme);
        Err(format!(
            "unknown store `{scheme}`: expected `memory` or `sqlite:PATH` (e.g. {DEFAULT_STORE})"
        ))
    }
}

impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::Memory => f.write_str("memory"),
            StoreChoice::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, Error)]
pub(crate) enum StoreOpenError {
    /// The SQLite file could not be opened or migrated.
    #[error(transparent)]
    Sqlite(#[from] OpenError),
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
    })
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
        for choice in [StoreChoice::Memory, StoreChoice::Sqlite("a/b.db".into())] {
            assert_eq!(choice.to_string().parse(), Ok(choice));
        }
    }
}
