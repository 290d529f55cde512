//! Page reads: one statement, so the page, the head and the epoch come from one snapshot.
//!
//! The messages come from the primary key `(stream_id, seq)`: an index range scan of at
//! most `limit + 1` entries (the extra one answers `has_more`), whatever the history's
//! length.

use std::time::Duration;

use chat_core::{Epoch, PageRange, Seq};
use deadpool_postgres::Pool;

use crate::connection::Exclusive;
use crate::error::Failure;
use crate::stream::{MESSAGE_COLUMNS, MessageRow, StreamKey};

/// The page of a stream, before it is given the room or DM form.
pub(crate) struct RawPage {
    pub(crate) epoch: Epoch,
    pub(crate) last_seq: Seq,
    pub(crate) rows: Vec<MessageRow>,
    pub(crate) has_more: bool,
}

fn page_sql(newest_first: bool) -> String {
    let (bound, order) = if newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    format!(
        "SELECT s.epoch, s.last_seq, {MESSAGE_COLUMNS} \
         FROM chat_streams s \
         LEFT JOIN LATERAL ( \
             SELECT seq, id, sender_id, sender_name, recipient_id, recipient_name, content, \
                    ts, client_msg_id \
             FROM chat_messages \
             WHERE stream_id = s.id AND seq {bound} $4 \
             ORDER BY seq {order} LIMIT $5) m ON true \
         WHERE s.kind = $1 AND s.name = $2 AND s.peer = $3"
    )
}

/// Reads one page within `timeout`. A stream without a row has never been written: an
/// empty page under the database's epoch (the one its first message will get).
pub(crate) async fn page(
    pool: &Pool,
    timeout: Duration,
    key: &StreamKey,
    range: PageRange,
    database_epoch: &Epoch,
) -> Result<RawPage, Failure> {
    match tokio::time::timeout(timeout, read(pool, key, range, database_epoch)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(Failure::unavailable("no page within the store timeout")),
    }
}

async fn read(
    pool: &Pool,
    key: &StreamKey,
    range: PageRange,
    database_epoch: &Epoch,
) -> Result<RawPage, Failure> {
    let (newest_first, bound, limit) = match range {
        PageRange::Latest { limit } => (true, i64::MAX, limit),
        PageRange::Before { seq, limit } => (true, to_i64(seq.0), limit),
        PageRange::After { seq, limit } => (false, to_i64(seq.0), limit),
    };
    let limit = limit.max(1);
    // One more than asked: its presence is `has_more`.
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let connection = Exclusive::get(pool).await?;
    let client = connection.client();
    let statement = client
        .prepare_cached(&page_sql(newest_first))
        .await
        .map_err(Failure::before_commit)?;
    let rows = client
        .query(
            &statement,
            &[&key.kind, &key.name, &key.peer, &bound, &fetch],
        )
        .await
        .map_err(Failure::before_commit)?;
    connection.release();

    let Some(first) = rows.first() else {
        return Ok(RawPage {
            epoch: database_epoch.clone(),
            last_seq: Seq(0),
            rows: Vec::new(),
            has_more: false,
        });
    };
    let epoch: &str = first.try_get(0).map_err(Failure::before_commit)?;
    let last_seq: i64 = first.try_get(1).map_err(Failure::before_commit)?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        // The left join gives one row of NULLs for a stream whose messages were all
        // deleted by retention.
        let seq: Option<i64> = row.try_get(2).map_err(Failure::before_commit)?;
        if seq.is_some() {
            messages.push(MessageRow::read(row, 2)?);
        }
    }
    let has_more = messages.len() > limit;
    messages.truncate(limit);
    if newest_first {
        messages.reverse();
    }
    Ok(RawPage {
        epoch: Epoch::new(epoch),
        last_seq: Seq(u64::try_from(last_seq).unwrap_or(0)),
        rows: messages,
        has_more,
    })
}

/// A `seq` bound as PostgreSQL's `bigint`; beyond it, every stored `seq` is below.
fn to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
