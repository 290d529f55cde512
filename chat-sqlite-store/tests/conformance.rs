//! `SqliteStore` against chat-core's `Store` conformance suite, including the reopen
//! (durability) cases, on temporary files.

use std::sync::Arc;

use chat_core::testkit::store;
use chat_sqlite_store::{SqliteConfig, SqliteStore, Synchronous};
use tempfile::TempDir;

/// A `SqliteStore` that also keeps its temporary directory alive (the directory goes
/// when the last store opened in it is dropped).
struct Temporary(SqliteStore, #[allow(dead_code)] Arc<TempDir>);

fn open_in(dir: &Arc<TempDir>, config: SqliteConfig) -> Temporary {
    let store = SqliteStore::open(dir.path().join("chat.db"), config).expect("open");
    Temporary(store, Arc::clone(dir))
}

#[chat_core::async_trait]
impl chat_core::Store for Temporary {
    async fn append_room(
        &self,
        m: chat_core::NewRoomMessage,
    ) -> Result<chat_core::Appended<chat_core::StoredMessage>, chat_core::StoreError> {
        self.0.append_room(m).await
    }
    async fn room_page(
        &self,
        room: &chat_core::RoomName,
        range: chat_core::PageRange,
    ) -> Result<chat_core::Page<chat_core::StoredMessage>, chat_core::StoreError> {
        self.0.room_page(room, range).await
    }
    async fn append_dm(
        &self,
        m: chat_core::NewDm,
    ) -> Result<chat_core::Appended<chat_core::StoredDm>, chat_core::StoreError> {
        self.0.append_dm(m).await
    }
    async fn dm_page(
        &self,
        a: &chat_core::UserId,
        b: &chat_core::UserId,
        range: chat_core::PageRange,
    ) -> Result<chat_core::Page<chat_core::StoredDm>, chat_core::StoreError> {
        self.0.dm_page(a, b, range).await
    }
}

fn temporary(config: SqliteConfig) -> Temporary {
    open_in(
        &Arc::new(tempfile::tempdir().expect("temporary directory")),
        config,
    )
}

// Multi-threaded, so the concurrency cases race on real threads (and against the
// writer's group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_the_store_conformance_suite() {
    store::run_all(|| temporary(SqliteConfig::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_with_synchronous_normal_and_one_reader() {
    store::run_all(|| {
        temporary(
            SqliteConfig::default()
                .with_synchronous(Synchronous::Normal)
                .with_readers(1),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_keeps_everything_across_a_reopen() {
    store::run_reopen_all(|| async {
        let dir = Arc::new(tempfile::tempdir().expect("temporary directory"));
        move || std::future::ready(open_in(&dir, SqliteConfig::default()))
    })
    .await;
}
