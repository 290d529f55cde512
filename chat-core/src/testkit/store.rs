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
//! No case sleeps or measures time; concurrency cases synchronise by joining tasks.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::task::JoinSet;

use crate::ids::{MessageId, Seq};
use crate::message::Timestamp;
use crate::store::{PageRange, Store};

mod stream;

use stream::{
    DmStream, Msg, RoomStream, Sender, Stream, append_dm, append_room, assert_well_formed, dm,
    dm_page, interesting, room, room_message, room_page, seqs, sweep, user,
};

/// Messages per writer task in the concurrency cases.
const PER_TASK: u64 = 50;
/// Writer tasks in the concurrency cases (8 × 50 = 400 messages in one stream).
const TASKS: u64 = 8;

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

// --- room sequencing ---------------------------------------------------------------------

/// `append_room` numbers a room's messages 1, 2, 3… with no gap, whoever writes.
pub async fn room_seq_starts_at_one_and_is_gapless<S: Store>(store: S) {
    let general = RoomStream::new(&store, "general");
    for n in 1..=20 {
        let appended = general.append(Sender::nth(n), &format!("m{n}"), None).await;
        assert_eq!(appended.message.seq, Seq(n), "the {n}th append");
        assert!(!appended.duplicate, "a new message is not a duplicate");
    }
}

/// Each room has its own numbering; interleaved appends do not affect each other.
pub async fn rooms_are_numbered_independently<S: Store>(store: S) {
    let rooms = [
        RoomStream::new(&store, "one"),
        RoomStream::new(&store, "two"),
        RoomStream::new(&store, "three"),
    ];
    let mut heads = [0u64; 3];
    for (n, i) in [0, 1, 0, 2, 1, 0, 2, 0, 1, 0].into_iter().enumerate() {
        heads[i] += 1;
        let appended = rooms[i].append(Sender::nth(n as u64), "hi", None).await;
        assert_eq!(
            appended.message.seq,
            Seq(heads[i]),
            "{}: append {n} of the interleaving",
            rooms[i].name()
        );
    }
    for (r, head) in rooms.iter().zip(heads) {
        let page = r.read(PageRange::Latest { limit: 100 }).await;
        assert_eq!(page.last_seq, Seq(head), "{}: head", r.name());
        assert_eq!(seqs(&page), (1..=head).collect::<Vec<_>>(), "{}", r.name());
        assert!(
            page.messages.iter().all(|m| m.room == r.room),
            "{}: a page holds only its room's messages",
            r.name()
        );
    }
    let empty = room_page(
        &store,
        &room("never-written"),
        PageRange::Latest { limit: 10 },
    )
    .await;
    assert_eq!(empty.last_seq, Seq(0), "a room never written to has head 0");
    assert!(empty.messages.is_empty() && !empty.has_more);
}

/// The stored form echoes what was appended, with `id`, `seq` and a timestamp set, and a
/// page returns exactly that stored form.
pub async fn room_append_returns_the_stored_form<S: Store>(store: S) {
    let general = room("general");
    let alice = user("alice");
    let new = room_message(&general, &alice, "hello world", Some("c-1"));
    let appended = append_room(&store, new.clone()).await;
    let m = &*appended.message;
    assert!(!appended.duplicate);
    assert_eq!(m.room, new.room);
    assert_eq!(m.user_id, new.user_id);
    assert_eq!(m.username, new.username);
    assert_eq!(m.content, new.content);
    assert_eq!(m.client_msg_id, new.client_msg_id);
    assert_eq!(m.seq, Seq(1));
    assert_ne!(m.timestamp, Timestamp(0), "the store sets the timestamp");

    let plain = append_room(&store, room_message(&general, &alice, "no id", None)).await;
    assert_eq!(
        plain.message.client_msg_id, None,
        "no clientMsgId stays none"
    );
    assert_ne!(plain.message.timestamp, Timestamp(0));

    let page = room_page(&store, &general, PageRange::Latest { limit: 10 }).await;
    assert_eq!(page.messages.len(), 2);
    assert_eq!(
        *page.messages[0], *appended.message,
        "a page returns the stored form"
    );
    assert_eq!(*page.messages[1], *plain.message);
}

/// Message ids are unique across rooms and conversations of one store.
pub async fn message_ids_are_unique<S: Store>(store: S) {
    let mut ids: HashSet<MessageId> = HashSet::new();
    let mut count = 0;
    for name in ["a", "b", "c"] {
        let r = RoomStream::new(&store, name);
        for n in 1..=10 {
            ids.insert(
                r.append(Sender::nth(n), "same text", None)
                    .await
                    .message
                    .id(),
            );
            count += 1;
        }
    }
    for (a, b) in [("alice", "bob"), ("alice", "carol")] {
        let c = DmStream::new(&store, a, b);
        for n in 1..=10 {
            ids.insert(
                c.append(Sender::nth(n), "same text", None)
                    .await
                    .message
                    .id(),
            );
            count += 1;
        }
    }
    assert_eq!(ids.len(), count, "every stored message has its own id");
}

// --- pages -------------------------------------------------------------------------------

/// The page rules written out for a stream holding seqs 1..=10: range, seqs, `has_more`.
pub(crate) const PAGE_TABLE: &[(PageRange, &[u64], bool)] = &[
    (PageRange::Latest { limit: 3 }, &[8, 9, 10], true),
    (
        PageRange::Latest { limit: 9 },
        &[2, 3, 4, 5, 6, 7, 8, 9, 10],
        true,
    ),
    (
        PageRange::Latest { limit: 10 },
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        false,
    ),
    (
        PageRange::Latest { limit: 11 },
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        false,
    ),
    (
        PageRange::Latest { limit: 100 },
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        false,
    ),
    (
        PageRange::Before {
            seq: Seq(8),
            limit: 3,
        },
        &[5, 6, 7],
        true,
    ),
    (
        PageRange::Before {
            seq: Seq(5),
            limit: 3,
        },
        &[2, 3, 4],
        true,
    ),
    (
        PageRange::Before {
            seq: Seq(4),
            limit: 3,
        },
        &[1, 2, 3],
        false,
    ),
    (
        PageRange::Before {
            seq: Seq(3),
            limit: 5,
        },
        &[1, 2],
        false,
    ),
    (
        PageRange::Before {
            seq: Seq(2),
            limit: 1,
        },
        &[1],
        false,
    ),
    (
        PageRange::Before {
            seq: Seq(1),
            limit: 5,
        },
        &[],
        false,
    ),
    (
        PageRange::Before {
            seq: Seq(0),
            limit: 5,
        },
        &[],
        false,
    ),
    (
        PageRange::Before {
            seq: Seq(11),
            limit: 3,
        },
        &[8, 9, 10],
        true,
    ),
    (
        PageRange::Before {
            seq: Seq(100),
            limit: 10,
        },
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        false,
    ),
    (
        PageRange::After {
            seq: Seq(0),
            limit: 3,
        },
        &[1, 2, 3],
        true,
    ),
    (
        PageRange::After {
            seq: Seq(0),
            limit: 10,
        },
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        false,
    ),
    (
        PageRange::After {
            seq: Seq(6),
            limit: 3,
        },
        &[7, 8, 9],
        true,
    ),
    (
        PageRange::After {
            seq: Seq(7),
            limit: 3,
        },
        &[8, 9, 10],
        false,
    ),
    (
        PageRange::After {
            seq: Seq(5),
            limit: 100,
        },
        &[6, 7, 8, 9, 10],
        false,
    ),
    (
        PageRange::After {
            seq: Seq(9),
            limit: 1,
        },
        &[10],
        false,
    ),
    (
        PageRange::After {
            seq: Seq(10),
            limit: 5,
        },
        &[],
        false,
    ),
    (
        PageRange::After {
            seq: Seq(20),
            limit: 5,
        },
        &[],
        false,
    ),
];

/// The ranges of an empty stream: all empty, `has_more: false`, head 0.
const EMPTY_RANGES: &[PageRange] = &[
    PageRange::Latest { limit: 50 },
    PageRange::Before {
        seq: Seq(1),
        limit: 50,
    },
    PageRange::Before {
        seq: Seq(100),
        limit: 50,
    },
    PageRange::After {
        seq: Seq(0),
        limit: 50,
    },
    PageRange::After {
        seq: Seq(5),
        limit: 50,
    },
];

async fn page_edges<T: Stream>(stream: &T) {
    let name = stream.name();
    for &range in EMPTY_RANGES {
        let page = stream.read(range).await;
        assert!(page.messages.is_empty(), "{name}: empty stream, {range:?}");
        assert!(
            !page.has_more,
            "{name}: empty stream has no more, {range:?}"
        );
        assert_eq!(page.last_seq, Seq(0), "{name}: empty stream has head 0");
    }
    for n in 1..=10 {
        stream.append(Sender::nth(n), &format!("m{n}"), None).await;
    }
    for (range, want, more) in PAGE_TABLE {
        let page = stream.read(*range).await;
        assert_eq!(seqs(&page), want.to_vec(), "{name}: messages of {range:?}");
        assert_eq!(page.has_more, *more, "{name}: has_more of {range:?}");
        assert_eq!(page.last_seq, Seq(10), "{name}: last_seq of {range:?}");
    }
}

/// `Latest`, `Before` and `After` at their edges, on an empty room and a room of 10.
pub async fn room_page_edges<S: Store>(store: S) {
    page_edges(&RoomStream::new(&store, "general")).await;
}

/// DM pages follow the same edges as room pages.
pub async fn dm_page_edges<S: Store>(store: S) {
    page_edges(&DmStream::new(&store, "alice", "bob")).await;
}

async fn pages_match_the_model<T: Stream>(stream: &T) {
    let epoch = stream.read(PageRange::Latest { limit: 1 }).await.epoch;
    for head in 0..=12u64 {
        if head > 0 {
            stream
                .append(Sender::nth(head), &format!("m{head}"), None)
                .await;
        }
        // Every bound from before the first message to past the head, every limit from
        // 1 to past the history.
        let points: Vec<u64> = (0..=head + 2).collect();
        let limits: Vec<usize> = (1..=head as usize + 2).collect();
        sweep(stream, 1, head, &epoch, &points, &limits).await;
    }
}

/// Every page of a room of 0 to 12 messages, for every bound and limit around its
/// edges, equals the reference model; `last_seq` is the head and the epoch never changes.
pub async fn room_pages_match_the_model<S: Store>(store: S) {
    pages_match_the_model(&RoomStream::new(&store, "general")).await;
}

/// DM pages equal the reference model, read with the users in either order.
pub async fn dm_pages_match_the_model<S: Store>(store: S) {
    pages_match_the_model(&DmStream::new(&store, "alice", "bob")).await;
}

async fn pages_walk_the_history_exactly_once<T: Stream>(stream: &T) {
    let name = stream.name();
    let total = 23;
    let mut ids = Vec::new();
    for n in 1..=total {
        ids.push(
            stream
                .append(Sender::nth(n), &format!("m{n}"), None)
                .await
                .message
                .id(),
        );
    }
    // Backwards, the way a client scrolls up: Latest, then Before the oldest seen.
    let mut page = stream.read(PageRange::Latest { limit: 5 }).await;
    let mut seen: Vec<Arc<T::Msg>> = Vec::new();
    loop {
        let mut older = page.messages.clone();
        older.append(&mut seen);
        seen = older;
        if !page.has_more {
            break;
        }
        let oldest = seen.first().map(|m| m.seq()).unwrap_or_default();
        page = stream
            .read(PageRange::Before {
                seq: oldest,
                limit: 5,
            })
            .await;
    }
    let walked: Vec<MessageId> = seen.iter().map(|m| m.id()).collect();
    assert_eq!(
        walked, ids,
        "{name}: walking backwards must visit each message once, in order"
    );

    // Forwards, the way a reconnecting client catches up: After the newest seen.
    let mut after = Seq(0);
    let mut walked = Vec::new();
    loop {
        let page = stream
            .read(PageRange::After {
                seq: after,
                limit: 4,
            })
            .await;
        walked.extend(page.messages.iter().map(|m| m.id()));
        if let Some(last) = page.messages.last() {
            after = last.seq();
        }
        if !page.has_more {
            break;
        }
    }
    assert_eq!(
        walked, ids,
        "{name}: walking forwards must visit each message once, in order"
    );
}

/// Paging backwards (`Latest` then `Before`) and forwards (`After`) visits every message
/// of a room exactly once, in order.
pub async fn room_pages_walk_the_history_exactly_once<S: Store>(store: S) {
    pages_walk_the_history_exactly_once(&RoomStream::new(&store, "general")).await;
}

/// Paging a conversation visits every DM exactly once, in order.
pub async fn dm_pages_walk_the_history_exactly_once<S: Store>(store: S) {
    pages_walk_the_history_exactly_once(&DmStream::new(&store, "alice", "bob")).await;
}

/// A stream's `epoch` is the same in every page one store returns: before the first
/// message, after appends and duplicates, for every range.
pub async fn epoch_is_stable_across_calls<S: Store>(store: S) {
    async fn check<T: Stream>(stream: &T) {
        let name = stream.name();
        let epoch = stream.read(PageRange::Latest { limit: 10 }).await.epoch;
        for n in 1..=3 {
            stream
                .append(Sender::nth(n), "hi", Some(&format!("e{n}")))
                .await;
        }
        stream.append(Sender::nth(1), "again", Some("e1")).await;
        for range in [
            PageRange::Latest { limit: 10 },
            PageRange::Before {
                seq: Seq(2),
                limit: 10,
            },
            PageRange::After {
                seq: Seq(1),
                limit: 10,
            },
            PageRange::After {
                seq: Seq(99),
                limit: 10,
            },
        ] {
            assert_eq!(
                stream.read(range).await.epoch,
                epoch,
                "{name}: epoch of {range:?}"
            );
        }
    }
    check(&RoomStream::new(&store, "general")).await;
    check(&RoomStream::new(&store, "other")).await;
    check(&DmStream::new(&store, "alice", "bob")).await;
}

/// A read started after an append returned includes the appended message, whatever the
/// range that covers it.
pub async fn read_your_writes<S: Store>(store: S) {
    async fn check<T: Stream>(stream: &T) {
        let name = stream.name();
        for n in 1..=10 {
            let appended = stream.append(Sender::nth(n), &format!("m{n}"), None).await;
            let seq = appended.message.seq();
            for range in [
                PageRange::Latest { limit: 1 },
                PageRange::After {
                    seq: Seq(seq.0 - 1),
                    limit: 1,
                },
                PageRange::Before {
                    seq: seq.next(),
                    limit: 1,
                },
            ] {
                let page = stream.read(range).await;
                assert_eq!(
                    page.messages.last().map(|m| m.id()),
                    Some(appended.message.id()),
                    "{name}: {range:?} right after appending seq {seq}"
                );
                assert_eq!(page.last_seq, seq, "{name}: head right after appending");
            }
        }
    }
    check(&RoomStream::new(&store, "general")).await;
    check(&DmStream::new(&store, "alice", "bob")).await;
}

// --- idempotency -------------------------------------------------------------------------

async fn duplicate_returns_the_original<T: Stream>(stream: &T) {
    let name = stream.name();
    let original = stream.append(Sender::A, "original", Some("x")).await;
    assert!(!original.duplicate);
    for n in 2..=4 {
        stream.append(Sender::nth(n), &format!("m{n}"), None).await;
    }
    // A retry of an older message, with different content (a client bug or an edit):
    // the original is returned, nothing is stored, no seq is used.
    let retry = stream
        .append(Sender::A, "retried with other text", Some("x"))
        .await;
    assert!(
        retry.duplicate,
        "{name}: same user and clientMsgId is a duplicate"
    );
    assert_eq!(
        *retry.message, *original.message,
        "{name}: the original is returned"
    );
    assert_eq!(
        retry.message.content(),
        "original",
        "{name}: with its original content"
    );
    let page = stream.read(PageRange::Latest { limit: 100 }).await;
    assert_eq!(
        seqs(&page),
        vec![1, 2, 3, 4],
        "{name}: a duplicate stores nothing"
    );
    let next = stream.append(Sender::B, "next", None).await;
    assert_eq!(
        next.message.seq(),
        Seq(5),
        "{name}: a duplicate consumes no seq"
    );
    let again = stream.append(Sender::A, "third try", Some("x")).await;
    assert!(again.duplicate, "{name}: still a duplicate later");
    assert_eq!(*again.message, *original.message);
}

/// Appending with a `client_msg_id` the same user already used in the room stores
/// nothing and returns the original message, original content included, marked
/// `duplicate`; no seq is consumed.
pub async fn duplicate_client_msg_id_returns_the_original<S: Store>(store: S) {
    duplicate_returns_the_original(&RoomStream::new(&store, "general")).await;
}

/// The same for DMs: same sender, same conversation.
pub async fn dm_duplicate_client_msg_id_returns_the_original<S: Store>(store: S) {
    duplicate_returns_the_original(&DmStream::new(&store, "alice", "bob")).await;
}

/// Another user using the same `client_msg_id` in the same room is not a duplicate.
pub async fn client_msg_id_is_scoped_to_the_user<S: Store>(store: S) {
    let general = RoomStream::new(&store, "general");
    let alice = general.append(Sender::A, "from alice", Some("x")).await;
    let bob = general.append(Sender::B, "from bob", Some("x")).await;
    assert!(
        !bob.duplicate,
        "another user's clientMsgId is not a duplicate"
    );
    assert_eq!(bob.message.seq, Seq(2));
    assert_eq!(bob.message.content.as_str(), "from bob");
    let alice_again = general.append(Sender::A, "again", Some("x")).await;
    let bob_again = general.append(Sender::B, "again", Some("x")).await;
    assert!(alice_again.duplicate && bob_again.duplicate);
    assert_eq!(*alice_again.message, *alice.message);
    assert_eq!(*bob_again.message, *bob.message);
}

/// The same user using the same `client_msg_id` in another room is not a duplicate.
pub async fn client_msg_id_is_scoped_to_the_room<S: Store>(store: S) {
    let one = RoomStream::new(&store, "one");
    let two = RoomStream::new(&store, "two");
    let first = one.append(Sender::A, "in one", Some("x")).await;
    let other = two.append(Sender::A, "in two", Some("x")).await;
    assert!(
        !other.duplicate,
        "the same clientMsgId in another room is not a duplicate"
    );
    assert_eq!(other.message.room, room("two"));
    assert_eq!(other.message.seq, Seq(1));
    assert_eq!(other.message.content.as_str(), "in two");
    let retry = one.append(Sender::A, "retry", Some("x")).await;
    assert!(retry.duplicate);
    assert_eq!(*retry.message, *first.message);
}

/// Without a `client_msg_id` every append is stored, even with identical content.
pub async fn no_client_msg_id_is_never_a_duplicate<S: Store>(store: S) {
    async fn check<T: Stream>(stream: &T) {
        let mut ids = HashSet::new();
        for n in 1..=3 {
            let appended = stream.append(Sender::A, "same", None).await;
            assert!(
                !appended.duplicate,
                "{}: no clientMsgId, no duplicate",
                stream.name()
            );
            assert_eq!(appended.message.client_msg_id(), None);
            assert_eq!(appended.message.seq(), Seq(n));
            ids.insert(appended.message.id());
        }
        assert_eq!(ids.len(), 3, "{}: three messages, three ids", stream.name());
    }
    check(&RoomStream::new(&store, "general")).await;
    check(&DmStream::new(&store, "alice", "bob")).await;
}

/// A DM's `client_msg_id` is scoped to its sender and its conversation: the other
/// direction, another conversation and a room do not see it.
pub async fn dm_client_msg_id_is_scoped_to_sender_and_conversation<S: Store>(store: S) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let first = append_dm(&store, dm(&alice, &bob, "hi bob", Some("x"))).await;
    let reply = append_dm(&store, dm(&bob, &alice, "hi alice", Some("x"))).await;
    assert!(
        !reply.duplicate,
        "the other direction's sender is another user"
    );
    assert_eq!(reply.message.seq, Seq(2));
    let to_carol = append_dm(&store, dm(&alice, &carol, "hi carol", Some("x"))).await;
    assert!(!to_carol.duplicate, "another conversation is another scope");
    assert_eq!(to_carol.message.seq, Seq(1));
    let in_room = append_room(
        &store,
        room_message(&room("general"), &alice, "hi all", Some("x")),
    );
    let in_room = in_room.await;
    assert!(
        !in_room.duplicate,
        "rooms and conversations are separate scopes"
    );
    let retry = append_dm(&store, dm(&alice, &bob, "hi again", Some("x"))).await;
    assert!(retry.duplicate);
    assert_eq!(*retry.message, *first.message);
    // The retry names the conversation the other way round: still the same scope.
    let retry = append_dm(&store, dm(&bob, &alice, "and again", Some("x"))).await;
    assert!(retry.duplicate);
    assert_eq!(*retry.message, *reply.message);
}

// --- direct messages ---------------------------------------------------------------------

/// Alice → Bob and Bob → Alice are one conversation with one numbering, and
/// `dm_page(a, b)` equals `dm_page(b, a)`.
pub async fn dm_seq_is_shared_by_both_directions<S: Store>(store: S) {
    let (alice, bob) = (user("alice"), user("bob"));
    for n in 1..=6 {
        let (from, to) = if n % 2 == 1 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        let appended = append_dm(&store, dm(from, to, &format!("m{n}"), None)).await;
        assert_eq!(
            appended.message.seq,
            Seq(n),
            "the {n}th DM between alice and bob"
        );
    }
    let range = PageRange::Latest { limit: 10 };
    let ab = dm_page(&store, &alice, &bob, range).await;
    let ba = dm_page(&store, &bob, &alice, range).await;
    assert_eq!(ab, ba, "dm_page is symmetric");
    assert_well_formed("conversation alice <-> bob", range, &ab);
    assert_eq!(seqs(&ab), vec![1, 2, 3, 4, 5, 6]);
    for m in &ab.messages {
        let from_alice = m.seq.0 % 2 == 1;
        assert_eq!(
            m.from,
            if from_alice {
                alice.clone()
            } else {
                bob.clone()
            }
        );
        assert_eq!(
            m.to,
            if from_alice {
                bob.clone()
            } else {
                alice.clone()
            }
        );
    }
}

/// Each pair of users has its own numbering, pages show only that pair's messages, and
/// DMs do not share numbering with rooms.
pub async fn dm_conversations_are_numbered_independently<S: Store>(store: S) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let sends = [
        (&alice, &bob, 1),
        (&alice, &carol, 1),
        (&carol, &bob, 1),
        (&bob, &alice, 2),
        (&carol, &alice, 2),
        (&bob, &carol, 2),
        (&alice, &bob, 3),
    ];
    for (from, to, seq) in sends {
        let appended = append_dm(&store, dm(from, to, &format!("{from}->{to}"), None)).await;
        assert_eq!(appended.message.seq, Seq(seq), "DM {from} -> {to}");
    }
    for (a, b, head) in [(&alice, &bob, 3), (&alice, &carol, 2), (&bob, &carol, 2)] {
        let page = dm_page(&store, a, b, PageRange::Latest { limit: 10 }).await;
        assert_eq!(page.last_seq, Seq(head), "head of {a} <-> {b}");
        assert_eq!(seqs(&page), (1..=head).collect::<Vec<_>>());
        for m in &page.messages {
            let pair = [&m.from, &m.to];
            assert!(
                pair.contains(&a) && pair.contains(&b),
                "conversation {a} <-> {b} holds a DM {} -> {}",
                m.from,
                m.to
            );
        }
    }
    let room_msg = append_room(&store, room_message(&room("general"), &alice, "hi", None)).await;
    assert_eq!(
        room_msg.message.seq,
        Seq(1),
        "rooms are numbered apart from DMs"
    );
    let strangers = dm_page(
        &store,
        &alice,
        &user("dave"),
        PageRange::Latest { limit: 10 },
    )
    .await;
    assert!(strangers.messages.is_empty() && !strangers.has_more);
    assert_eq!(
        strangers.last_seq,
        Seq(0),
        "a pair that never wrote has head 0"
    );
}

/// The stored DM echoes what was appended, with `id`, `seq` and a timestamp set, and a
/// page returns exactly that stored form.
pub async fn dm_append_returns_the_stored_form<S: Store>(store: S) {
    let (alice, bob) = (user("alice"), user("bob"));
    let new = dm(&alice, &bob, "psst", Some("c-1"));
    let appended = append_dm(&store, new.clone()).await;
    let m = &*appended.message;
    assert!(!appended.duplicate);
    assert_eq!(m.from, new.from);
    assert_eq!(m.from_username, new.from_username);
    assert_eq!(m.to, new.to);
    assert_eq!(m.to_username, new.to_username);
    assert_eq!(m.content, new.content);
    assert_eq!(m.client_msg_id, new.client_msg_id);
    assert_eq!(m.seq, Seq(1));
    assert_ne!(m.timestamp, Timestamp(0), "the store sets the timestamp");
    let page = dm_page(&store, &bob, &alice, PageRange::Latest { limit: 10 }).await;
    assert_eq!(page.messages.len(), 1);
    assert_eq!(
        *page.messages[0], *appended.message,
        "a page returns the stored form"
    );
}

// --- concurrency -------------------------------------------------------------------------

/// Waits for every task; a panicking task fails the case with its own message.
async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(value) => results.push(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a testkit task was cancelled: {e}"),
        }
    }
    results
}

/// Checks that `results` (seq, id) of concurrent appends to one stream are exactly
/// 1..=total with unique ids, and that the stream reads back the same.
async fn assert_gapless<T: Stream>(stream: &T, results: Vec<(Seq, MessageId)>, total: u64) {
    let name = stream.name();
    let by_seq: BTreeMap<u64, MessageId> = results.iter().map(|(s, id)| (s.0, *id)).collect();
    assert_eq!(
        by_seq.len(),
        results.len(),
        "{name}: a seq was given to two messages"
    );
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "{name}: concurrent appends must get exactly seqs 1..={total}"
    );
    let unique: HashSet<MessageId> = by_seq.values().copied().collect();
    assert_eq!(
        unique.len(),
        by_seq.len(),
        "{name}: two messages share an id"
    );
    let mut after = Seq(0);
    loop {
        let page = stream
            .read(PageRange::After {
                seq: after,
                limit: 100,
            })
            .await;
        assert_eq!(
            page.last_seq,
            Seq(total),
            "{name}: head after the concurrent appends"
        );
        for m in &page.messages {
            assert_eq!(
                by_seq.get(&m.seq().0),
                Some(&m.id()),
                "{name}: seq {}",
                m.seq()
            );
            after = m.seq();
        }
        if !page.has_more {
            break;
        }
    }
    assert_eq!(after, Seq(total), "{name}: reading back stopped early");
}

/// One writer task: `PER_TASK` appends, each read back at once (read-your-writes under
/// load), seqs strictly increasing for this writer.
async fn write_many<T: Stream>(stream: &T, task: u64, sender: Sender) -> Vec<(Seq, MessageId)> {
    let name = stream.name();
    let mut out: Vec<(Seq, MessageId)> = Vec::new();
    for i in 0..PER_TASK {
        let cmid = format!("t{task}-{i}");
        let appended = stream.append(sender, &cmid, Some(&cmid)).await;
        assert!(
            !appended.duplicate,
            "{name}: task {task}, distinct clientMsgId {cmid}"
        );
        assert_eq!(
            appended.message.client_msg_id().map(|c| c.as_str()),
            Some(cmid.as_str()),
            "{name}: the clientMsgId is echoed"
        );
        let seq = appended.message.seq();
        if let Some((prev, _)) = out.last() {
            assert!(
                seq > *prev,
                "{name}: task {task} got seq {seq} after {prev}"
            );
        }
        let page = stream
            .read(PageRange::After {
                seq: Seq(seq.0 - 1),
                limit: 1,
            })
            .await;
        assert_eq!(
            page.messages.first().map(|m| m.id()),
            Some(appended.message.id()),
            "{name}: task {task} cannot read back seq {seq} it just appended"
        );
        out.push((seq, appended.message.id()));
    }
    out
}

/// 8 tasks × 50 appends to one room get exactly seqs 1..=400, no gap, no duplicate.
/// Run it on a multi-threaded runtime so the tasks really race.
pub async fn concurrent_room_appends_are_gapless<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        // The testkit's own load generators; tasks are how a runtime would race appends.
        tasks.spawn(async move {
            let stream = RoomStream::new(&*store, "busy");
            write_many(&stream, task, Sender::nth(task)).await
        });
    }
    let results = join_all(tasks).await.concat();
    assert_gapless(&RoomStream::new(&*store, "busy"), results, TASKS * PER_TASK).await;
}

/// 8 tasks × 50 DMs, half Alice → Bob and half Bob → Alice, share one gapless numbering.
pub async fn concurrent_dm_appends_are_gapless<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let stream = DmStream::new(&*store, "alice", "bob");
            write_many(&stream, task, Sender::nth(task)).await
        });
    }
    let results = join_all(tasks).await.concat();
    assert_gapless(
        &DmStream::new(&*store, "alice", "bob"),
        results,
        TASKS * PER_TASK,
    )
    .await;
}

/// 8 tasks race to append the same (user, `client_msg_id`) 20 times over: each key is
/// stored exactly once, every racer gets that one message back.
pub async fn concurrent_duplicates_are_stored_once<S: Store>(store: S) {
    const KEYS: u64 = 20;
    let store = Arc::new(store);
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let stream = RoomStream::new(&*store, "retries");
            let mut out = Vec::new();
            for key in 0..KEYS {
                let appended = stream
                    .append(Sender::A, &format!("copy {task}"), Some(&format!("k{key}")))
                    .await;
                out.push((key, appended));
            }
            out
        });
    }
    let mut by_key: BTreeMap<u64, Vec<_>> = BTreeMap::new();
    for (key, appended) in join_all(tasks).await.into_iter().flatten() {
        by_key.entry(key).or_default().push(appended);
    }
    let mut stored = Vec::new();
    for (key, racers) in &by_key {
        let originals: Vec<_> = racers.iter().filter(|a| !a.duplicate).collect();
        assert_eq!(
            originals.len(),
            1,
            "key k{key}: exactly one racer stores the message"
        );
        let original = &originals[0].message;
        for a in racers {
            assert_eq!(
                *a.message, **original,
                "key k{key}: every racer gets the original"
            );
        }
        stored.push(original.seq.0);
    }
    stored.sort_unstable();
    assert_eq!(
        stored,
        (1..=KEYS).collect::<Vec<_>>(),
        "one seq per key, no gap"
    );
    let page = room_page(&*store, &room("retries"), PageRange::Latest { limit: 100 }).await;
    assert_eq!(page.last_seq, Seq(KEYS), "duplicates consumed no seq");
}

/// Readers racing with writers only ever see contiguous pages whose messages and head
/// were read atomically (a `Latest` page ends at its `last_seq`).
pub async fn concurrent_reads_see_atomic_pages<S: Store>(store: S) {
    const WRITERS: u64 = 4;
    let total = WRITERS * PER_TASK;
    let store = Arc::new(store);
    let mut writers = JoinSet::new();
    for task in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            let stream = RoomStream::new(&*store, "busy");
            for i in 0..PER_TASK {
                stream
                    .append(Sender::nth(task), &format!("{task}/{i}"), None)
                    .await;
            }
        });
    }
    let mut readers = JoinSet::new();
    for reader in 0..2u64 {
        let store = Arc::clone(&store);
        readers.spawn(async move {
            let stream = RoomStream::new(&*store, "busy");
            let mut reads = 0u64;
            // Terminates: the writers are not waiting for the readers, so the head
            // reaches `total`. Every read is checked by `RoomStream::read`.
            loop {
                let latest = stream.read(PageRange::Latest { limit: 7 }).await;
                let head = latest.last_seq;
                let after = Seq(head.0.saturating_sub(5 + reader));
                stream
                    .read(PageRange::After {
                        seq: after,
                        limit: 3,
                    })
                    .await;
                stream
                    .read(PageRange::Before {
                        seq: head,
                        limit: 3,
                    })
                    .await;
                reads += 1;
                if head == Seq(total) {
                    break reads;
                }
                tokio::task::yield_now().await;
            }
        });
    }
    join_all(writers).await;
    join_all(readers).await;
    let page = room_page(&*store, &room("busy"), PageRange::Latest { limit: 1 }).await;
    assert_eq!(page.last_seq, Seq(total));
}

// --- retention (opt-in) ------------------------------------------------------------------

async fn retention<T: Stream>(stream: &T, retained: usize) {
    assert!(
        retained >= 1,
        "a store that keeps no message cannot run this case"
    );
    let name = stream.name();
    let epoch = stream.read(PageRange::Latest { limit: 1 }).await.epoch;
    let keep = retained as u64;
    let total = 2 * keep + 3;
    for n in 1..=total {
        let appended = stream
            .append(Sender::nth(n), &format!("m{n}"), Some(&format!("r{n}")))
            .await;
        assert_eq!(
            appended.message.seq(),
            Seq(n),
            "{name}: dropping old messages must not affect numbering"
        );
        assert!(!appended.duplicate);
        // Check the full window before anything is dropped, right after the first drop,
        // after a second full turn of the window, and at the end.
        if [keep, keep + 1, 2 * keep + 1, total].contains(&n) {
            let first = n.saturating_sub(keep) + 1;
            let (points, limits) = interesting(first, n, retained);
            sweep(stream, first, n, &epoch, &points, &limits).await;
        }
    }
    let first = total - keep + 1;
    // A retained message is still protected against retries, the oldest one included…
    for n in [first, total] {
        let retry = stream
            .append(Sender::nth(n), "retry", Some(&format!("r{n}")))
            .await;
        assert!(
            retry.duplicate,
            "{name}: retained seq {n} must still be a duplicate"
        );
        assert_eq!(retry.message.seq(), Seq(n));
        assert_eq!(
            retry.message.content(),
            format!("m{n}"),
            "{name}: original content"
        );
    }
    // …and a retry changes nothing: same window, same head.
    let (points, limits) = interesting(first, total, retained);
    sweep(stream, first, total, &epoch, &points, &limits).await;
}

/// Opt-in: for a store that keeps exactly the newest `retained` messages per room.
///
/// After `2 × retained + 3` appends, pages start at the oldest retained seq and never
/// have a gap (`After { seq: 0 }` starts at `retained + 4`), numbering and the epoch are
/// unaffected by dropping, `has_more` is false once a page reaches the oldest retained
/// message, and retries of retained messages are still duplicates.
pub async fn retention_drops_oldest<S: Store>(store: S, retained: usize) {
    retention(&RoomStream::new(&store, "general"), retained).await;
}

/// Opt-in: [`retention_drops_oldest`] for a store that keeps exactly the newest
/// `retained` DMs per conversation.
pub async fn dm_retention_drops_oldest<S: Store>(store: S, retained: usize) {
    retention(&DmStream::new(&store, "alice", "bob"), retained).await;
}
