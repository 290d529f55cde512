//! Background deletion of old history (see [`Retention`]).

use std::time::SystemTime;

use chat_core::Timestamp;
use deadpool_postgres::Pool;

use crate::config::Retention;
use crate::connection::Exclusive;
use crate::error::Failure;

/// Deletes the messages of kind `$1` more than `$2` behind their stream's head. Uses
/// the primary key per stream; a stream's head is never touched, so numbering goes on.
const KEEP_LAST: &str = "\
    DELETE FROM chat_messages m USING chat_streams s \
    WHERE m.stream_id = s.id AND s.kind = $1 AND m.seq <= s.last_seq - $2";

/// Deletes messages stamped before `$1` (ms since the epoch), except each stream's
/// newest. Timestamps never go back within a stream, so this removes a prefix of each
/// stream.
const OLDER_THAN: &str = "\
    DELETE FROM chat_messages m USING chat_streams s \
    WHERE m.stream_id = s.id AND m.ts < $1 AND m.seq < s.last_seq";

/// Runs every rule once; the number of messages deleted.
pub(crate) async fn purge(pool: &Pool, retention: &Retention) -> Result<u64, Failure> {
    let connection = Exclusive::get(pool).await?;
    let client = connection.client();
    let mut deleted = 0;
    for (kind, keep) in [
        (0_i16, retention.keep_last_per_room),
        (1_i16, retention.keep_last_per_conversation),
    ] {
        if let Some(keep) = keep {
            // At least the newest message stays (the contract's rule for bounded stores).
            let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
            deleted += client
                .execute(KEEP_LAST, &[&kind, &keep])
                .await
                .map_err(Failure::before_commit)?;
        }
    }
    if let Some(age) = retention.max_age {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let cutoff = i64::try_from(Timestamp::from_system_time(cutoff).0).unwrap_or(i64::MAX);
        deleted += client
            .execute(OLDER_THAN, &[&cutoff])
            .await
            .map_err(Failure::before_commit)?;
    }
    connection.release();
    Ok(deleted)
}

/// The background task: a purge every `retention.interval`, errors logged.
pub(crate) async fn run(pool: Pool, retention: Retention) {
    // The first round one interval after opening, not at once: a store just opened is
    // busy with its first work, and `purge_now` is there for whoever wants one at once.
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + retention.interval,
        retention.interval,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A hung database must not hold a connection for ever: a round that has not
        // finished by the next one is abandoned (its connection is discarded, its
        // transaction rolled back) and tried again then.
        let round = tokio::time::timeout(retention.interval, purge(&pool, &retention)).await;
        match round {
            Err(_elapsed) => {
                tracing::warn!("retention round abandoned: not finished within its interval");
            }
            Ok(Ok(0)) => {}
            Ok(Ok(deleted)) => tracing::info!(deleted, "retention deleted old messages"),
            Ok(Err(failure)) => {
                tracing::warn!(error = %failure.detail(), "retention could not delete old messages");
            }
        }
    }
}
