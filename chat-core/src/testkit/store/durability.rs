//! Durability: what a persistent store keeps when it is dropped and opened again on the
//! same file or database (a process restart, minus the process).
//!
//! These cases take an **opener** instead of a store: a closure that opens a store on
//! one location (a file, a database, a schema). Its first call sees an empty location;
//! every later call opens what the previous stores left there. Each case drops its store
//! before it calls the opener again, so a store that flushes or joins a writer thread in
//! `Drop` is reopened only after that finished.
//!
//! Only stores that promise durability run them ([`run_reopen_all`](super::run_reopen_all)
//! is opt-in, like the retention cases). The in-memory store does not: it keeps nothing
//! across a restart, and says so to resuming clients with a new epoch.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::ids::Epoch;
use crate::store::Store;

use super::stream::{
    DmStream, RoomStream, Sender, Stream, append_room, interesting, latest, room, room_message,
    sweep, user,
};
use crate::message::Stored;

/// Messages one reopen case writes to its main stream: enough for pages to need more
/// than one read, small enough to stay quick on a store that syncs every commit.
const HISTORY: u64 = 60;

/// Writes `HISTORY` messages (every third with a `client_msg_id`), returning what the
/// store acknowledged and the stream's epoch.
async fn write_history<T: Stream>(stream: &T) -> (Vec<Arc<T::Msg>>, Epoch) {
    let mut acked = Vec::new();
    let mut epoch = None;
    for n in 1..=HISTORY {
        let id = (n % 3 == 0).then(|| format!("durable-{n}"));
        let appended = stream
            .append(Sender::nth(n), &format!("message {n}"), id.as_deref())
            .await;
        assert!(!appended.duplicate, "{}: message {n}", stream.name());
        epoch.get_or_insert_with(|| appended.epoch.clone());
        acked.push(appended.message);
    }
    let epoch = epoch.expect("HISTORY is not zero");
    (acked, epoch)
}

/// Checks that `stream`, read from a reopened store, holds exactly `acked` (every field:
/// id, seq, timestamp, authors, content, clientMsgId) under `epoch`, and that its pages
/// still follow the model.
async fn assert_kept<T: Stream>(stream: &T, acked: &[Arc<T::Msg>], epoch: &Epoch) {
    let name = stream.name();
    let page = stream.read(latest(acked.len() + 10)).await;
    assert_eq!(
        &page.epoch, epoch,
        "{name}: the epoch of a stream with messages must survive a reopen (a resume with \
         `since`/`epoch` across a restart would otherwise be refused)"
    );
    assert_eq!(
        page.messages.len(),
        acked.len(),
        "{name}: every acknowledged message must survive a reopen"
    );
    for (read, written) in page.messages.iter().zip(acked) {
        assert_eq!(
            **read,
            **written,
            "{name}: seq {} read back after a reopen differs from what was acknowledged",
            written.seq()
        );
    }
    let head = acked.len() as u64;
    let (points, limits) = interesting(1, head, acked.len());
    sweep(stream, 1, head, epoch, &points, &limits).await;
}

/// Every acknowledged room message and DM is read back after a reopen, field for field,
/// under the same epoch, and pages of the reopened history follow the model.
pub async fn acknowledged_messages_survive_a_reopen<O, Fut, S>(mut open: O)
where
    O: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    let store = open().await;
    let (general, general_epoch) = write_history(&RoomStream::new(&store, "general")).await;
    let (other, other_epoch) = write_history(&RoomStream::new(&store, "other")).await;
    let (dms, dm_epoch) = write_history(&DmStream::new(&store, "alice", "bob")).await;
    drop(store);

    let store = open().await;
    assert_kept(
        &RoomStream::new(&store, "general"),
        &general,
        &general_epoch,
    )
    .await;
    assert_kept(&RoomStream::new(&store, "other"), &other, &other_epoch).await;
    assert_kept(&DmStream::new(&store, "alice", "bob"), &dms, &dm_epoch).await;
}

async fn seq_continues<T: Stream>(stream: &T, epoch: &Epoch) {
    let name = stream.name();
    let next = stream.append(Sender::A, "after the reopen", None).await;
    assert_eq!(
        next.message.seq().0,
        HISTORY + 1,
        "{name}: numbering continues after a reopen (no seq is reused)"
    );
    assert_eq!(
        &next.epoch, epoch,
        "{name}: an append after a reopen stays in the same epoch"
    );
}

/// After a reopen, appends continue at the next `seq` under the same epoch, in rooms and
/// conversations; twice in a row (a store reopened from a reopened store).
pub async fn seq_continues_after_a_reopen<O, Fut, S>(mut open: O)
where
    O: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    let store = open().await;
    let (_, room_epoch) = write_history(&RoomStream::new(&store, "general")).await;
    let (_, dm_epoch) = write_history(&DmStream::new(&store, "alice", "bob")).await;
    drop(store);

    let store = open().await;
    let general = RoomStream::new(&store, "general");
    let conversation = DmStream::new(&store, "alice", "bob");
    seq_continues(&general, &room_epoch).await;
    seq_continues(&conversation, &dm_epoch).await;
    drop(store);

    let store = open().await;
    let page = RoomStream::new(&store, "general").read(latest(5)).await;
    assert_eq!(
        page.last_seq.0,
        HISTORY + 1,
        "room `general`: the append made after the first reopen survives the second"
    );
    assert_eq!(page.epoch, room_epoch);
    let page = DmStream::new(&store, "alice", "bob").read(latest(5)).await;
    assert_eq!(page.last_seq.0, HISTORY + 1);
    assert_eq!(page.epoch, dm_epoch);
}

async fn retry_after_reopen<T: Stream>(stream: &T, original: &Arc<T::Msg>) {
    let name = stream.name();
    let retry = stream
        .append(
            Sender::A,
            "retried after the restart",
            Some("before-restart"),
        )
        .await;
    assert!(
        retry.duplicate,
        "{name}: a clientMsgId used before a reopen is still a duplicate after it"
    );
    assert_eq!(
        *retry.message, **original,
        "{name}: the retry returns the original"
    );
    let other = stream
        .append(Sender::B, "same id, other user", Some("before-restart"))
        .await;
    assert!(
        !other.duplicate,
        "{name}: another user's clientMsgId is not a duplicate"
    );
    assert_eq!(
        other.message.seq(),
        original.seq().next(),
        "{name}: the duplicate consumed no seq"
    );
}

/// A `client_msg_id` used before a reopen is still a duplicate after it: the retry
/// returns the original and stores nothing (rooms and conversations).
pub async fn idempotency_survives_a_reopen<O, Fut, S>(mut open: O)
where
    O: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    let store = open().await;
    let room_original = RoomStream::new(&store, "general")
        .append(Sender::A, "original", Some("before-restart"))
        .await
        .message;
    let dm_original = DmStream::new(&store, "alice", "bob")
        .append(Sender::A, "original", Some("before-restart"))
        .await
        .message;
    drop(store);

    let store = open().await;
    retry_after_reopen(&RoomStream::new(&store, "general"), &room_original).await;
    retry_after_reopen(&DmStream::new(&store, "alice", "bob"), &dm_original).await;
}

/// Concurrent appends (the burst a group-committing store writes in one transaction)
/// are all there after a reopen: an acknowledgement never precedes the commit.
pub async fn concurrent_acknowledged_appends_survive_a_reopen<O, Fut, S>(mut open: O)
where
    O: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    const ROOMS: u64 = 4;
    const WRITERS: u64 = 16;
    const PER_WRITER: u64 = 10;
    let store = Arc::new(open().await);
    let mut tasks = JoinSet::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut acked = Vec::new();
            let author = user(&format!("writer{w}"));
            for n in 0..PER_WRITER {
                let name = room(&format!("burst{}", (w + n) % ROOMS));
                let id = format!("w{w}-n{n}");
                let message = room_message(&name, &author, &id, Some(&id));
                acked.push(append_room(&*store, message).await);
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(batch) => acked.extend(batch),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a testkit task was cancelled: {e}"),
        }
    }
    let store = Arc::into_inner(store).expect("every writer task has finished");
    drop(store);

    let store = open().await;
    for r in 0..ROOMS {
        let name = room(&format!("burst{r}"));
        let mut want: Vec<_> = acked
            .iter()
            .filter(|a| a.message.room == name)
            .map(|a| (a.message.seq, Arc::clone(&a.message), a.epoch.clone()))
            .collect();
        want.sort_by_key(|(seq, _, _)| *seq);
        let stream = RoomStream::new(&store, &format!("burst{r}"));
        let page = stream.read(latest(want.len() + 10)).await;
        assert_eq!(
            page.messages.len(),
            want.len(),
            "room `{name}`: every acknowledged concurrent append survives a reopen"
        );
        for (read, (_, written, epoch)) in page.messages.iter().zip(&want) {
            assert_eq!(read, written, "room `{name}`: seq {}", written.seq);
            assert_eq!(&page.epoch, epoch, "room `{name}`: epoch after a reopen");
        }
    }
}
