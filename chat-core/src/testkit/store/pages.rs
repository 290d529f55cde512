//! Pages: `Latest`, `Before` and `After` at their edges, against the reference model,
//! walked end to end; plus the epoch and read-your-writes rules pages carry.

use std::sync::Arc;

use crate::ids::{MessageId, Seq};
use crate::store::{PageRange, Store};

use super::stream::{DmStream, RoomStream, Sender, Stream, after, before, latest, seqs, sweep};
use crate::message::Stored;

/// The page rules written out for a stream holding seqs 1..=10: range, seqs, `has_more`.
#[rustfmt::skip]
pub(super) const PAGE_TABLE: &[(PageRange, &[u64], bool)] = &[
    // The newest `limit`; more exist unless the page reaches seq 1.
    (latest(3),       &[8, 9, 10],                       true),
    (latest(9),       &[2, 3, 4, 5, 6, 7, 8, 9, 10],     true),
    (latest(10),      &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  false), // exact boundary
    (latest(11),      &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  false),
    (latest(100),     &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  false),
    // The newest `limit` below `seq`.
    (before(8, 3),    &[5, 6, 7],                        true),
    (before(5, 3),    &[2, 3, 4],                        true),
    (before(4, 3),    &[1, 2, 3],                        false), // exact boundary
    (before(3, 5),    &[1, 2],                           false),
    (before(2, 1),    &[1],                              false),
    (before(1, 5),    &[],                               false),
    (before(0, 5),    &[],                               false),
    (before(11, 3),   &[8, 9, 10],                       true),  // just past the head
    (before(100, 10), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  false),
    // The oldest `limit` above `seq`; more exist unless the page reaches the head.
    (after(0, 3),     &[1, 2, 3],                        true),
    (after(0, 10),    &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  false), // exact boundary
    (after(6, 3),     &[7, 8, 9],                        true),
    (after(7, 3),     &[8, 9, 10],                       false), // exact boundary
    (after(5, 100),   &[6, 7, 8, 9, 10],                 false),
    (after(9, 1),     &[10],                             false),
    (after(10, 5),    &[],                               false), // at the head
    (after(20, 5),    &[],                               false), // past the head
];

/// The ranges of an empty stream: all empty, `has_more: false`, head 0.
const EMPTY_RANGES: &[PageRange] = &[
    latest(50),
    before(1, 50),
    before(100, 50),
    after(0, 50),
    after(5, 50),
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
    let epoch = stream.read(latest(1)).await.epoch;
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
    let mut page = stream.read(latest(5)).await;
    let mut seen: Vec<Arc<T::Msg>> = Vec::new();
    loop {
        let mut older = page.messages.clone();
        older.append(&mut seen);
        seen = older;
        if !page.has_more {
            break;
        }
        let oldest = seen.first().map_or(0, |m| m.seq().0);
        page = stream.read(before(oldest, 5)).await;
    }
    let walked: Vec<MessageId> = seen.iter().map(|m| m.id()).collect();
    assert_eq!(
        walked, ids,
        "{name}: walking backwards must visit each message once, in order"
    );

    // Forwards, the way a reconnecting client catches up: After the newest seen.
    let mut newest = 0;
    let mut walked = Vec::new();
    loop {
        let page = stream.read(after(newest, 4)).await;
        walked.extend(page.messages.iter().map(|m| m.id()));
        if let Some(last) = page.messages.last() {
            newest = last.seq().0;
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

/// A stream's `epoch` is the same in every page one store returns and in every append
/// reply (`Appended::epoch`): before the first message, after appends and duplicates,
/// for every range — as long as the store forgets nothing (a store that evicts whole
/// streams gives an evicted one a new epoch; the suite never writes enough for that).
pub async fn epoch_is_stable_across_calls<S: Store>(store: S) {
    async fn check<T: Stream>(stream: &T) {
        let name = stream.name();
        let epoch = stream.read(latest(10)).await.epoch;
        for n in 1..=3 {
            let appended = stream
                .append(Sender::nth(n), "hi", Some(&format!("e{n}")))
                .await;
            assert_eq!(appended.epoch, epoch, "{name}: epoch of append {n}");
        }
        let again = stream.append(Sender::nth(1), "again", Some("e1")).await;
        assert_eq!(again.epoch, epoch, "{name}: epoch of a duplicate");
        for range in [latest(10), before(2, 10), after(1, 10), after(99, 10)] {
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
            for range in [latest(1), after(seq.0 - 1, 1), before(seq.0 + 1, 1)] {
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
