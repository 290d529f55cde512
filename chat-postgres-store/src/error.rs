//! Errors: [`OpenError`] for start-up, and how a failed operation becomes a
//! [`StoreError`] the engine (and, as a code, the client) sees.

use std::sync::Arc;

use chat_core::StoreError;
use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

/// Why [`PostgresStore::open`](crate::PostgresStore::open) failed. Meant for the operator
/// starting the server (it may quote the database's own message); never sent to clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL does not parse.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// Nothing answered at the address, or not within the timeout.
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    /// The server refused the user or password.
    #[error("PostgreSQL refused the credentials: {0}")]
    Authentication(#[source] tokio_postgres::Error),
    /// The server answered with another error (a missing database, too many connections…).
    #[error("PostgreSQL refused the connection: {0}")]
    Refused(#[source] tokio_postgres::Error),
    /// The database was migrated by a newer version of this crate: running on it could
    /// corrupt data the newer version relies on.
    #[error(
        "the database has chat schema version {found}, newer than the {supported} this \
         build knows; upgrade the server or use another database"
    )]
    NewerSchema {
        /// The version recorded in the database.
        found: i32,
        /// The newest version this build can migrate to.
        supported: i32,
    },
    /// Applying a migration failed (the transaction was rolled back).
    #[error("migrating the chat schema to version {version} failed: {source}")]
    Migration {
        /// The migration that failed.
        version: i32,
        /// The database's answer.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The pool could not be built (a configuration error).
    #[error("invalid pool configuration: {0}")]
    Pool(String),
}

impl OpenError {
    /// Classifies a failure to get the first connection.
    pub(crate) fn from_pool(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => match e.as_db_error().map(|db| db.code()) {
                Some(code)
                    if *code == SqlState::INVALID_PASSWORD
                        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                {
                    OpenError::Authentication(e)
                }
                Some(_) => OpenError::Refused(e),
                None => OpenError::Unreachable(e.to_string()),
            },
            PoolError::Timeout(_) => {
                OpenError::Unreachable("no connection within the timeout".into())
            }
            other => OpenError::Pool(other.to_string()),
        }
    }
}

/// The detail of a failure, for the log only.
pub(crate) type Detail = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// How an operation failed, before it becomes a [`StoreError`].
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Certainly not done; retrying later may work (no connection, a refused or
    /// rolled-back statement, a timeout before a commit was sent).
    Unavailable(Detail),
    /// Maybe done: the commit was sent, and then the connection broke or the time ran
    /// out. Only a retry with the same `clientMsgId` tells.
    Indeterminate(Detail),
    /// The database refused the data itself (a bug or a schema problem); a retry will
    /// not help.
    Rejected(Detail),
}

impl Failure {
    /// A database error from a statement that was answered (so not committed), or a
    /// connection problem before any commit was sent.
    pub(crate) fn before_commit(e: tokio_postgres::Error) -> Self {
        match e.as_db_error().map(|db| db.code().code()) {
            // Classes 08 (connection), 40 (rollback: deadlock, serialization), 53
            // (insufficient resources: disk full, too many connections), 57 (operator
            // intervention: shutdown, cancel), 58 (system error), and 25006
            // (read-only transaction: a replica or a read-only server) can pass.
            Some(code)
                if ["08", "40", "53", "57", "58"].contains(&&code[..2]) || code == "25006" =>
            {
                Failure::Unavailable(Arc::new(e))
            }
            Some(_) => Failure::Rejected(Arc::new(e)),
            None => Failure::Unavailable(Arc::new(e)),
        }
    }

    /// An error from the group of statements that ends with `COMMIT`: an answered
    /// error means the transaction rolled back; a broken connection leaves it unknown.
    pub(crate) fn during_commit(e: tokio_postgres::Error) -> Self {
        if e.as_db_error().is_some() {
            Self::before_commit(e)
        } else {
            Failure::Indeterminate(Arc::new(e))
        }
    }

    /// Getting a connection failed: nothing was sent.
    pub(crate) fn from_pool(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => Self::before_commit(e),
            other => Failure::Unavailable(Arc::new(other)),
        }
    }

    /// Turns the failure into what the engine sees: a fixed detail naming the
    /// operation, and the database's error as the `source` (the runtime logs the chain;
    /// clients only ever get the error's code and its fixed text).
    pub(crate) fn into_store_error(self, operation: &'static str) -> StoreError {
        let (mut error, detail) = match self {
            Failure::Unavailable(detail) => (StoreError::unavailable(operation), detail),
            Failure::Indeterminate(detail) => (StoreError::indeterminate(operation), detail),
            Failure::Rejected(detail) => (StoreError::rejected(operation), detail),
        };
        if let StoreError::Unavailable { source, .. }
        | StoreError::Indeterminate { source, .. }
        | StoreError::Rejected { source, .. } = &mut error
        {
            *source = Some(detail);
        }
        error
    }

    /// The cause, for a log line written by this crate.
    pub(crate) fn detail(&self) -> &(dyn std::error::Error + Send + Sync) {
        match self {
            Failure::Unavailable(detail)
            | Failure::Indeterminate(detail)
            | Failure::Rejected(detail) => &**detail,
        }
    }
}

impl Failure {
    /// A failure described by a fixed text (no database error behind it).
    pub(crate) fn unavailable(why: &'static str) -> Self {
        Failure::Unavailable(Arc::new(Plain(why)))
    }

    /// See [`Failure::unavailable`].
    pub(crate) fn indeterminate(why: &'static str) -> Self {
        Failure::Indeterminate(Arc::new(Plain(why)))
    }

    /// See [`Failure::unavailable`].
    pub(crate) fn rejected(why: String) -> Self {
        Failure::Rejected(Arc::new(Plain(why)))
    }
}

/// A failure's detail that is only a text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Plain<T: std::fmt::Display + std::fmt::Debug>(T);
