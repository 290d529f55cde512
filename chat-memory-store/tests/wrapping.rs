//! A store that wraps the `Arc<dyn Store>` `Server::new` takes (and a `Box<dyn Store>`)
//! is itself a conforming store: `Store` is implemented for `Arc<S>` and `Box<S>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chat_core::testkit::store;
use chat_core::{
    Appended, NewDm, NewRoomMessage, Page, PageRange, RoomName, Store, StoreError, StoredDm,
    StoredMessage, UserId, async_trait,
};
use chat_memory_store::MemoryStore;

/// Counts appends and forwards everything to any store, here an `Arc<dyn Store>`.
struct Counting<S> {
    inner: S,
    appends: Arc<AtomicUsize>,
}

#[async_trait]
impl<S: Store> Store for Counting<S> {
    async fn append_room(
        &self,
        message: NewRoomMessage,
    ) -> Result<Appended<StoredMessage>, StoreError> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.inner.append_room(message).await
    }

    async fn room_page(
        &self,
        room: &RoomName,
        range: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        self.inner.room_page(room, range).await
    }

    async fn append_dm(&self, message: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.inner.append_dm(message).await
    }

    async fn dm_page(
        &self,
        a: &UserId,
        b: &UserId,
        range: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        self.inner.dm_page(a, b, range).await
    }
}

#[tokio::test]
async fn a_wrapper_around_an_arc_dyn_store_conforms() {
    let appends = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&appends);
    store::run_all(move || {
        let shared: Arc<dyn Store> = Arc::new(MemoryStore::new());
        Counting {
            inner: shared,
            appends: Arc::clone(&counted),
        }
    })
    .await;
    assert!(
        appends.load(Ordering::Relaxed) > 0,
        "the suite's appends went through the wrapper"
    );
}

#[tokio::test]
async fn a_boxed_store_conforms() {
    store::run_all(|| -> Box<dyn Store> { Box::new(MemoryStore::new()) }).await;
}
