//! The [`Store`] conformance suite: the contract of [`crate::store`] as executable cases.
//!
//! # Using it
//!
//! A store crate adds `chat-core` with the `testkit` feature to its dev-dependencies and
//! runs the suite from an integration test, with a factory that returns a **fresh, empty
//! store** for each case:
//!
//! ```ignore
//! // my-store/tests/conformance.rs
//! use chat_core::testkit::store;
//! use my_store::MyStore;
//!
//! // A multi-threaded runtime, so that the concurrency cases really run in parallel.
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn my_store_conforms() {
//!     store::run_all(MyStore::new).await;
//! }
//!
//! // Stores that need async setup (a database pool, a temporary schema):
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn my_sql_store_conforms() {
//!     store::run_all_with(|| async { MySqlStore::connect_to_fresh_schema().await }).await;
//! }
//!
//! // Opt-in: a store that keeps only the newest N messages per stream.
//! #[tokio::test]
//! async fn my_store_drops_the_oldest() {
//!     store::retention_drops_oldest(MyStore::with_history(20), 20).await;
//!     store::dm_retention_drops_oldest(MyStore::with_dm_history(20), 20).await;
//! }
//! ```
//!
//! Each case is also a public function taking a fresh store, so a failing case can be run
//! on its own (`store::duplicate_client_msg_id_returns_the_original(MyStore::new()).await`).
//!
//! # What the suite assumes of the store under test
//!
//! * It is empty, and keeps at least 400 messages per room and per conversation (the
//!   concurrency cases write 400 to one stream); [`run_all`] contains no case that
//!   relies on old messages being dropped — those are the opt-in retention cases.
//! * It keeps at least the newest message of every stream it has written, so a `Latest`
//!   page of a non-empty stream ends at its head.
//! * Errors fail the case: the suite never injects faults, so rules about failures ("a
//!   failed append consumes no `seq`") are for each implementation's own tests.
//!
//! # How pages are checked
//!
//! Every page any case reads is checked for the rules that hold whatever the history
//! (contiguous, oldest first, within its limit, nothing past `last_seq`, `Latest` ending
//! at `last_seq`). The page cases then compare whole pages against a deliberately naive
//! reference model, for every range and limit around the edges: an empty stream, the
//! exact boundary, a limit larger than the history, a bound beyond the head. Messages a
//! store has dropped count as not existing: a page that reaches the oldest retained
//! message says `has_more: false`.
//!
//! No case sleeps or measures time; concurrency cases synchronise with barriers and by
//! joining tasks. They catch a missing lock reliably, but a race with a window of a few
//! instructions only sometimes: a pass there is evidence, not proof.
//!
//! # Cases
//!
//! One public function per rule, each taking a fresh store: sequencing
//! ([`room_seq_starts_at_one_and_is_gapless`], [`rooms_are_numbered_independently`],
//! [`dm_seq_is_shared_by_both_directions`], [`dm_conversations_are_numbered_independently`]),
//! the stored form ([`room_append_returns_the_stored_form`],
//! [`dm_append_returns_the_stored_form`], [`message_ids_are_unique`]), pages
//! ([`room_page_edges`], [`room_pages_match_the_model`],
//! [`room_pages_walk_the_history_exactly_once`] and their `dm_` twins,
//! [`epoch_is_stable_across_calls`], [`read_your_writes`]), idempotency
//! ([`duplicate_client_msg_id_returns_the_original`], [`client_msg_id_is_scoped_to_the_user`],
//! [`client_msg_id_is_scoped_to_the_room`], [`no_client_msg_id_is_never_a_duplicate`],
//! [`dm_duplicate_client_msg_id_returns_the_original`],
//! [`dm_client_msg_id_is_scoped_to_sender_and_conversation`]), concurrency
//! ([`concurrent_room_appends_are_gapless`], [`concurrent_dm_appends_are_gapless`],
//! [`concurrent_duplicates_are_stored_once`], [`concurrent_reads_see_atomic_pages`],
//! [`concurrent_first_messages_create_one_stream`]), and the opt-in
//! [`retention_drops_oldest`] and [`dm_retention_drops_oldest`].
//!
//! # Durability (persistent stores only)
//!
//! [`run_reopen_all`] takes an opener instead of a store and checks what survives a
//! drop and reopen on the same file or database: every acknowledged message, field for
//! field ([`acknowledged_messages_survive_a_reopen`], and the group-commit burst
//! [`concurrent_acknowledged_appends_survive_a_reopen`]), the epochs and `seq` counters
//! ([`seq_continues_after_a_reopen`]) and idempotency ([`idempotency_survives_a_reopen`]).
//! The in-memory store is exempt: it promises nothing across a restart and does not call
//! [`run_reopen_all`].

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::store::Store;

mod concurrency;
mod durability;
mod idempotency;
mod pages;
mod retention;
mod sequencing;
mod stream;

pub use concurrency::{
    concurrent_dm_appends_are_gapless, concurrent_duplicates_are_stored_once,
    concurrent_first_messages_create_one_stream, concurrent_reads_see_atomic_pages,
    concurrent_room_appends_are_gapless,
};
pub use durability::{
    acknowledged_messages_survive_a_reopen, concurrent_acknowledged_appends_survive_a_reopen,
    idempotency_survives_a_reopen, seq_continues_after_a_reopen,
};
pub use idempotency::{
    client_msg_id_is_scoped_to_the_room, client_msg_id_is_scoped_to_the_user,
    dm_client_msg_id_is_scoped_to_sender_and_conversation,
    dm_duplicate_client_msg_id_returns_the_original, duplicate_client_msg_id_returns_the_original,
    no_client_msg_id_is_never_a_duplicate,
};
pub use pages::{
    dm_page_edges, dm_pages_match_the_model, dm_pages_walk_the_history_exactly_once,
    epoch_is_stable_across_calls, read_your_writes, room_page_edges, room_pages_match_the_model,
    room_pages_walk_the_history_exactly_once,
};
pub use retention::{dm_retention_drops_oldest, retention_drops_oldest};
pub use sequencing::{
    dm_append_returns_the_stored_form, dm_conversations_are_numbered_independently,
    dm_seq_is_shared_by_both_directions, message_ids_are_unique,
    room_append_returns_the_stored_form, room_seq_starts_at_one_and_is_gapless,
    rooms_are_numbered_independently,
};

// --- running the suite -------------------------------------------------------------------

type Case<S> = fn(S) -> Pin<Box<dyn Future<Output = ()>>>;

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        vec![$((stringify!($case), (|s: S| Box::pin($case(s)) as Pin<Box<dyn Future<Output = ()>>>) as Case<S>)),*]
    };
}

/// Every case of [`run_all`], in order, by name.
fn cases<S: Store>() -> Vec<(&'static str, Case<S>)> {
    cases![
        room_seq_starts_at_one_and_is_gapless,
        rooms_are_numbered_independently,
        room_append_returns_the_stored_form,
        message_ids_are_unique,
        room_page_edges,
        room_pages_match_the_model,
        room_pages_walk_the_history_exactly_once,
        epoch_is_stable_across_calls,
        read_your_writes,
        duplicate_client_msg_id_returns_the_original,
        client_msg_id_is_scoped_to_the_user,
        client_msg_id_is_scoped_to_the_room,
        no_client_msg_id_is_never_a_duplicate,
        dm_seq_is_shared_by_both_directions,
        dm_conversations_are_numbered_independently,
        dm_append_returns_the_stored_form,
        dm_page_edges,
        dm_pages_match_the_model,
        dm_pages_walk_the_history_exactly_once,
        dm_duplicate_client_msg_id_returns_the_original,
        dm_client_msg_id_is_scoped_to_sender_and_conversation,
        concurrent_room_appends_are_gapless,
        concurrent_dm_appends_are_gapless,
        concurrent_duplicates_are_stored_once,
        concurrent_reads_see_atomic_pages,
        concurrent_first_messages_create_one_stream,
    ]
}

/// Runs every case (not the opt-in retention cases) against a fresh store from `make`.
///
/// Panics on the first broken rule with the message
/// ``Store conformance case `NAME` failed: RULE``.
pub async fn run_all<S: Store, F: Fn() -> S>(make: F) {
    run_all_with(|| std::future::ready(make())).await;
}

/// [`run_all`] for stores whose construction is async (connecting to a database,
/// creating a fresh schema): `make` is called once per case.
pub async fn run_all_with<S, F, Fut>(mut make: F)
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    for (name, case) in cases::<S>() {
        let store = make().await;
        if let Err(panic) = (CatchUnwind(case(store))).await {
            panic!(
                "Store conformance case `{name}` failed: {}",
                panic_message(&*panic)
            );
        }
    }
}

/// Runs every reopen case (durability across a restart) for a **persistent** store.
///
/// `fresh` is called once per case and returns an *opener* for a new, empty location (a
/// temporary file, a new database or schema). Each call of the opener opens a store on
/// that location: the first sees it empty, later calls see what earlier stores left
/// there. A case drops its store before calling the opener again.
///
/// ```ignore
/// store::run_reopen_all(|| async {
///     let dir = Arc::new(tempfile::tempdir().unwrap());
///     move || {
///         let (dir, path) = (Arc::clone(&dir), dir.path().join("chat.db"));
///         async move { let _keep = dir; SqliteStore::open(&path).unwrap() }
///     }
/// })
/// .await;
/// ```
///
/// The in-memory store does not run these: it promises nothing across a restart (a new
/// one starts every stream under a new epoch, which is how resuming clients learn their
/// position is void). That exemption is expressed by this suite being opt-in, next to
/// [`run_all`], rather than a case the in-memory store would have to skip.
///
/// Panics on the first broken rule with the message
/// ``Store conformance case `NAME` failed: RULE``.
pub async fn run_reopen_all<F, FutO, O, FutS, S>(mut fresh: F)
where
    F: FnMut() -> FutO,
    FutO: Future<Output = O>,
    O: FnMut() -> FutS + 'static,
    FutS: Future<Output = S> + 'static,
    S: Store,
{
    type ReopenCase<O> = fn(O) -> Pin<Box<dyn Future<Output = ()>>>;
    let cases: [(&str, ReopenCase<O>); 4] = [
        ("acknowledged_messages_survive_a_reopen", |o| {
            Box::pin(acknowledged_messages_survive_a_reopen(o))
        }),
        ("seq_continues_after_a_reopen", |o| {
            Box::pin(seq_continues_after_a_reopen(o))
        }),
        ("idempotency_survives_a_reopen", |o| {
            Box::pin(idempotency_survives_a_reopen(o))
        }),
        ("concurrent_acknowledged_appends_survive_a_reopen", |o| {
            Box::pin(concurrent_acknowledged_appends_survive_a_reopen(o))
        }),
    ];
    for (name, case) in cases {
        let opener = fresh().await;
        if let Err(panic) = (CatchUnwind(case(opener))).await {
            panic!(
                "Store conformance case `{name}` failed: {}",
                panic_message(&*panic)
            );
        }
    }
}

/// Polls a future, turning a panic into an `Err` so [`run_all_with`] can name the case.
/// (A spawned task would do the same, but would require `Send` futures from the caller's
/// factory and a runtime that allows spawning.)
struct CatchUnwind<F: ?Sized>(Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        // Unwind safety: after a panic the future is never polled again, only dropped.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)")
}
