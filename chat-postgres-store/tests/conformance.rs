//! `PostgresStore` against chat-core's `Store` conformance suite and its reopen cases,
//! each case on a database of its own.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use chat_core::testkit::store;
use chat_core::{
    Appended, NewDm, NewRoomMessage, Page, PageRange, RoomName, Store, StoreError, StoredDm,
    StoredMessage, UserId,
};
use chat_postgres_store::PostgresStore;
use support::TestDb;

/// A store with the database it lives in: dropping it drops the database too.
struct Fresh {
    store: PostgresStore,
    _db: Arc<TestDb>,
}

#[async_trait]
impl Store for Fresh {
    async fn append_room(
        &self,
        message: NewRoomMessage,
    ) -> Result<Appended<StoredMessage>, StoreError> {
        self.store.append_room(message).await
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        self.store.room_page(room, range).await
    }

    async fn append_dm(&self, message: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        self.store.append_dm(message).await
    }

    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        self.store.dm_page(a, b, range).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_store_conformance_suite() {
    let Some(server) = support::server_url("postgres_store_passes_the_store_conformance_suite")
    else {
        return;
    };
    store::run_all_with(|| async {
        let db = TestDb::create(&server).await;
        Fresh {
            store: db.open().await,
            _db: Arc::new(db),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_keeps_everything_across_a_reopen() {
    let Some(server) = support::server_url("postgres_store_keeps_everything_across_a_reopen")
    else {
        return;
    };
    store::run_reopen_all(|| async {
        let db = Arc::new(TestDb::create(&server).await);
        move || {
            let db = Arc::clone(&db);
            async move {
                Fresh {
                    store: db.open().await,
                    _db: db,
                }
            }
        }
    })
    .await;
}
