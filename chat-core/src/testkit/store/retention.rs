//! Opt-in retention cases, for stores that keep only the newest N messages per stream.

use crate::ids::Seq;
use crate::store::Store;

use super::stream::{DmStream, RoomStream, Sender, Stream, interesting, latest, sweep};
use crate::message::Stored;

async fn retention<T: Stream>(stream: &T, retained: usize) {
    assert!(
        retained >= 1,
        "a store that keeps no message cannot run this case"
    );
    let name = stream.name();
    let epoch = stream.read(latest(1)).await.epoch;
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
            retry.message.content().as_str(),
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
