//! `MemoryStore` against chat-core's shared `Store` conformance suite.

use chat_core::testkit::store;
use chat_memory_store::{MemoryConfig, MemoryStore};

fn with_history(room_history: usize, dm_history: usize) -> MemoryStore {
    MemoryStore::with_config(
        MemoryConfig::default()
            .with_room_history(room_history)
            .with_dm_history(dm_history),
    )
}

// Multi-threaded, so the concurrency cases race on real threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_store_conformance_suite() {
    store::run_all(MemoryStore::new).await;
}

// The suite also runs on a current-thread runtime (the concurrency cases then check
// interleavings at `.await`s), and with an async factory.
#[tokio::test]
async fn memory_store_conforms_on_a_current_thread_runtime() {
    store::run_all_with(|| async { MemoryStore::new() }).await;
}

#[tokio::test]
async fn memory_store_drops_the_oldest_room_messages() {
    for retained in [1, 2, 7, 50] {
        store::retention_drops_oldest(with_history(retained, 1000), retained).await;
    }
}

#[tokio::test]
async fn memory_store_drops_the_oldest_dms() {
    for retained in [1, 2, 7, 50] {
        store::dm_retention_drops_oldest(with_history(1000, retained), retained).await;
    }
}

#[tokio::test]
async fn memory_store_default_keeps_exactly_1000_per_stream() {
    store::retention_drops_oldest(MemoryStore::new(), 1000).await;
    store::dm_retention_drops_oldest(MemoryStore::new(), 1000).await;
}

// The reopen cases are for persistent stores; the in-memory store promises nothing across
// a restart and does not run them. These two tests check the cases themselves: an
// "opener" that hands out one shared store (a restart that lost nothing) passes, and one
// that hands out a new store each time (what a restart of this store really is) fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reopen_cases_pass_when_nothing_is_lost() {
    store::run_reopen_all(|| async {
        let location = std::sync::Arc::new(MemoryStore::new());
        move || std::future::ready(std::sync::Arc::clone(&location))
    })
    .await;
}

#[tokio::test]
#[should_panic(expected = "must survive a reopen")]
async fn the_reopen_cases_fail_when_a_reopen_loses_the_history() {
    store::acknowledged_messages_survive_a_reopen(|| std::future::ready(MemoryStore::new())).await;
}
