//! # chat-postgres-store
//!
//! A PostgreSQL [`Store`] for `chat-core`: history that survives restarts, shared by
//! several server processes, with acknowledgements that mean "committed".
//!
//! * **Start-up.** [`PostgresStore::open`] connects from a URL
//!   (`postgres://USER@HOST:PORT/DB`), applies the embedded schema migrations (the
//!   version is recorded in `chat_meta`) and refuses, with a clear [`OpenError`], a
//!   database migrated by a newer build, wrong credentials or an unreachable server.
//! * **Sequencing.** Each stream has a row holding its head `seq`; an append locks it,
//!   numbers the message and moves the head in the transaction that inserts the message.
//!   `seq` has no gap and no reuse, even with several processes appending to one room.
//! * **Idempotency.** A unique index on `(stream, sender, clientMsgId)`: a retry returns
//!   the stored original with `duplicate: true`, before or after a restart.
//! * **Group commit.** Appends waiting together are written in one transaction by a
//!   committer task (see [`PostgresConfig::committers`]); each is answered after
//!   `COMMIT`.
//! * **Epochs.** Drawn once per database and stored with every stream: a client's
//!   `(epoch, since)` resumes across restarts (`recovered: true`).
//! * **Pages** are index range scans of `limit + 1` rows: O(page) whatever the history.
//! * **Retention** (off by default): the newest N per room or per conversation, or
//!   messages older than a duration, deleted by a background task ([`Retention`]).
//! * **Failures.** A connection that cannot be had, a refused or rolled-back statement,
//!   or a timeout before `COMMIT` was sent is `Unavailable`; a timeout or a broken
//!   connection after `COMMIT` was sent is the indeterminate outcome (the message may be
//!   stored: resend with the same `clientMsgId`). Database text is logged, never
//!   returned: clients see a fixed text.
//!
//! Statements are parameterised, always: content is stored as given (as `bytea`, since
//! a chat message may hold a NUL that `text` cannot) and returned byte for byte.
//!
//! # Example
//!
//! ```no_run
//! use chat_postgres_store::{PostgresConfig, PostgresStore};
//!
//! # async fn start() -> Result<(), chat_postgres_store::OpenError> {
//! let store = PostgresStore::open(PostgresConfig::new(
//!     "postgres://chat@127.0.0.1:5432/chat",
//! ))
//! .await?;
//! # drop(store);
//! # Ok(())
//! # }
//! ```

mod commit;
mod config;
mod connection;
mod error;
mod read;
mod retention;
mod schema;
mod stream;

use std::sync::Arc;

use async_trait::async_trait;
use chat_core::{
    Appended, Epoch, NewDm, NewRoomMessage, Page, PageRange, RoomName, Store, StoreError, StoredDm,
    StoredMessage, UserId,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use commit::{Committed, Committer, Pending};
use error::Failure;
use stream::StreamKey;

pub use config::{PostgresConfig, Retention};
pub use error::OpenError;
pub use schema::LATEST as SCHEMA_VERSION;

/// A [`Store`] on PostgreSQL. See the [crate docs](crate).
///
/// Dropping it stops its background tasks; appends already queued are still written.
#[derive(Debug)]
pub struct PostgresStore {
    pool: Pool,
    commits: mpsc::Sender<Pending>,
    config: PostgresConfig,
    epoch: Epoch,
    retention: Option<JoinHandle<()>>,
}

impl PostgresStore {
    /// Connects, migrates and starts the committer (and the retention task, when a rule
    /// is set). Must be called inside a tokio runtime.
    pub async fn open(config: PostgresConfig) -> Result<Self, OpenError> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(OpenError::Url)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("chat-postgres-store");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| OpenError::Pool(e.to_string()))?;

        let mut first = pool.get().await.map_err(OpenError::from_pool)?;
        schema::migrate(&mut first).await?;
        let epoch = Epoch::new(&schema::epoch(&first).await?);
        drop(first);

        let (commits, queue) = mpsc::channel(config.queue.max(1));
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..config.committers.clamp(1, config.pool_size.max(1)) {
            tokio::spawn(
                Committer {
                    pool: pool.clone(),
                    timeout: config.timeout,
                    max_batch: config.max_batch.max(1),
                }
                .run(Arc::clone(&queue)),
            );
        }
        let retention = config
            .retention
            .is_enabled()
            .then(|| tokio::spawn(retention::run(pool.clone(), config.retention.clone())));
        Ok(Self {
            pool,
            commits,
            config,
            epoch,
            retention,
        })
    }

    /// The database's epoch: every stream has it (see the schema docs).
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// How many operations a runtime should keep in flight against this store: enough
    /// for full batches while reads use the other connections.
    pub fn max_in_flight(&self) -> usize {
        self.config.max_batch.max(1) + self.config.pool_size.max(1)
    }

    /// Runs the retention rules once now (the background task does this every
    /// [`Retention::interval`]); the number of messages deleted.
    pub async fn purge_now(&self) -> Result<u64, StoreError> {
        retention::purge(&self.pool, &self.config.retention)
            .await
            .map_err(|failure| failure.into_store_error("retention"))
    }

    /// Queues an append for the committer and waits for its answer, at most the store
    /// timeout.
    async fn append(
        &self,
        key: StreamKey,
        sender: (UserId, Arc<str>),
        recipient: Option<(UserId, Arc<str>)>,
        content: chat_core::Content,
        client_msg_id: Option<chat_core::ClientMsgId>,
    ) -> Result<Committed, Failure> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key,
            sender_id: sender.0,
            sender_name: sender.1,
            recipient,
            content,
            client_msg_id,
            reply,
        };
        self.commits.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Failure::unavailable("too many appends waiting for the committer")
            }
            mpsc::error::TrySendError::Closed(_) => Failure::unavailable("the committer stopped"),
        })?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            // The committer dropped the request without an answer: it stopped mid-batch.
            Ok(Err(_)) => Err(Failure::indeterminate("the committer stopped mid-batch")),
            Err(_elapsed) => Err(Failure::indeterminate("no commit within the store timeout")),
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(task) = self.retention.take() {
            task.abort();
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn append_room(
        &self,
        message: NewRoomMessage,
    ) -> Result<Appended<StoredMessage>, StoreError> {
        let room = message.room;
        let committed = self
            .append(
                StreamKey::room(&room),
                (message.user_id, message.username),
                None,
                message.content,
                message.client_msg_id,
            )
            .await
            .map_err(|failure| failure.into_store_error("append_room"))?;
        Ok(Appended {
            message: Arc::new(committed.row.into_room_message(&room)),
            duplicate: committed.duplicate,
            epoch: committed.epoch,
        })
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let page = read::page(
            &self.pool,
            self.config.timeout,
            &StreamKey::room(room),
            range,
            &self.epoch,
        )
        .await
        .map_err(|failure| failure.into_store_error("room_page"))?;
        Ok(Page {
            epoch: page.epoch,
            last_seq: page.last_seq,
            messages: page
                .rows
                .into_iter()
                .map(|row| Arc::new(row.into_room_message(room)))
                .collect(),
            has_more: page.has_more,
        })
    }

    async fn append_dm(&self, message: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        let committed = self
            .append(
                StreamKey::dm(&message.from, &message.to),
                (message.from, message.from_username),
                Some((message.to, message.to_username)),
                message.content,
                message.client_msg_id,
            )
            .await
            .map_err(|failure| failure.into_store_error("append_dm"))?;
        let dm = committed
            .row
            .into_dm()
            .map_err(|failure| failure.into_store_error("append_dm"))?;
        Ok(Appended {
            message: Arc::new(dm),
            duplicate: committed.duplicate,
            epoch: committed.epoch,
        })
    }

    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        let page = read::page(
            &self.pool,
            self.config.timeout,
            &StreamKey::dm(a, b),
            range,
            &self.epoch,
        )
        .await
        .map_err(|failure| failure.into_store_error("dm_page"))?;
        let messages = page
            .rows
            .into_iter()
            .map(|row| row.into_dm().map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(|failure| failure.into_store_error("dm_page"))?;
        Ok(Page {
            epoch: page.epoch,
            last_seq: page.last_seq,
            messages,
            has_more: page.has_more,
        })
    }
}
