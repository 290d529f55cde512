//! Concurrency: racing appends stay gapless and duplicate-free, racing reads stay atomic.
//!
//! The tasks spawned here are the testkit's own load generators. Run these cases on a
//! multi-threaded runtime so that they really race; on a current-thread runtime they
//! still check interleavings at every `.await`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::ids::{MessageId, Seq};
use crate::store::{PageRange, Store};

use super::stream::{DmStream, RoomStream, Sender, Stream, after, latest, room, room_page, seqs};
use crate::message::Stored;

/// Messages per writer task.
const PER_TASK: u64 = 50;
/// Writer tasks (8 × 50 = 400 messages in one stream).
const TASKS: u64 = 8;

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
    let mut newest = 0;
    loop {
        let page = stream.read(after(newest, 100)).await;
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
            newest = m.seq().0;
        }
        if !page.has_more {
            break;
        }
    }
    assert_eq!(newest, total, "{name}: reading back stopped early");
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
        let page = stream.read(after(seq.0 - 1, 1)).await;
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
            let stream = DmStream::racing(&*store, "alice", "bob");
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
    let page = room_page(&*store, &room("retries"), latest(100)).await;
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
                let latest = stream.read(latest(7)).await;
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
    let page = room_page(&*store, &room("busy"), latest(1)).await;
    assert_eq!(page.last_seq, Seq(total));
}

/// 8 tasks send the first messages of the same 30 rooms and 30 conversations (half of
/// them in each direction), meeting at a barrier before each new stream so that they
/// race to create it: each stream is created once, every one ends up with exactly seqs
/// 1..=8, and nothing is lost.
pub async fn concurrent_first_messages_create_one_stream<S: Store>(store: S) {
    const STREAMS: u64 = 30;
    let store = Arc::new(store);
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.spawn(async move {
            for i in 0..STREAMS {
                barrier.wait().await;
                let room = RoomStream::new(&*store, &format!("new-{i}"));
                room.append(Sender::nth(task), "first!", None).await;
                barrier.wait().await;
                let dm = DmStream::racing(&*store, "alice", &format!("friend-{i}"));
                dm.append(Sender::nth(task), "first!", None).await;
            }
        });
    }
    join_all(tasks).await;
    for i in 0..STREAMS {
        let want: Vec<u64> = (1..=TASKS).collect();
        let room = RoomStream::new(&*store, &format!("new-{i}"));
        let page = room.read(latest(100)).await;
        assert_eq!(seqs(&page), want, "{}: racing first messages", room.name());
        let dm = DmStream::new(&*store, "alice", &format!("friend-{i}"));
        let page = dm.read(latest(100)).await;
        assert_eq!(seqs(&page), want, "{}: racing first messages", dm.name());
    }
}
