//! Reader threads: pages, each from one read transaction (one WAL snapshot), so the
//! head (`last_seq`), the epoch and the messages agree, and reads never wait for the
//! writer's commits.

use chat_core::{Epoch, Page, PageRange, RoomName, Seq, StoreError, StoredDm, StoredMessage};
use crossbeam_channel::Receiver;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::errors::{Stage, store_error};
use crate::rows::{Columns, MESSAGE_COLUMNS, StreamKey, sql_int};

type Reply<T> = oneshot::Sender<Result<Page<T>, StoreError>>;

/// A page to read.
pub(crate) enum Read {
    Room {
        key: StreamKey,
        room: RoomName,
        range: PageRange,
        reply: Reply<StoredMessage>,
    },
    Dm {
        key: StreamKey,
        range: PageRange,
        reply: Reply<StoredDm>,
    },
}

/// Serves reads until the store is dropped.
pub(crate) fn run(mut conn: Connection, reads: Receiver<Read>, epoch: Epoch) {
    for read in reads {
        match read {
            Read::Room {
                key,
                room,
                range,
                reply,
            } => {
                let page = page(&mut conn, &key, range, &epoch, |c| {
                    c.into_room_message(&room)
                });
                let _ = reply.send(page);
            }
            Read::Dm { key, range, reply } => {
                let page = page(&mut conn, &key, range, &epoch, Columns::into_dm);
                let _ = reply.send(page);
            }
        }
    }
}

/// Reads one page of the stream `key`: its head and epoch, and at most `limit` messages
/// (one more is read to learn `has_more`), all from the primary key (stream, seq).
fn page<T>(
    conn: &mut Connection,
    key: &StreamKey,
    range: PageRange,
    default_epoch: &Epoch,
    convert: impl Fn(Columns) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let err = |e| store_error(e, Stage::Statement, "page");
    let tx = conn.transaction().map_err(err)?;
    let stream: Option<(i64, String, i64)> = tx
        .prepare_cached(
            "SELECT id, epoch, last_seq FROM streams WHERE kind = ?1 AND a = ?2 AND b = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![key.kind, key.a, key.b], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(err)?;
    let Some((id, epoch, last_seq)) = stream else {
        // Never written: empty, under the database's epoch (the one its first message
        // will get).
        return Ok(Page {
            epoch: default_epoch.clone(),
            last_seq: Seq(0),
            messages: Vec::new(),
            has_more: false,
        });
    };
    let (sql, bound, limit, newest_first) = match range {
        PageRange::Latest { limit } => (
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE stream = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ),
            i64::MAX,
            limit,
            true,
        ),
        PageRange::Before { seq, limit } => (
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE stream = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ),
            sql_int(seq.0).unwrap_or(i64::MAX),
            limit,
            true,
        ),
        PageRange::After { seq, limit } => (
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE stream = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"
            ),
            sql_int(seq.0).unwrap_or(i64::MAX),
            limit,
            false,
        ),
    };
    let limit = limit.max(1);
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let mut rows: Vec<Columns> = tx
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params![id, bound, fetch], Columns::read)?
                .collect()
        })
        .map_err(err)?;
    drop(tx);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    if newest_first {
        rows.reverse();
    }
    let messages = rows
        .into_iter()
        .map(|c| convert(c).map(std::sync::Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        epoch: Epoch::new(&epoch),
        last_seq: Seq(u64::try_from(last_seq).unwrap_or(0)),
        messages,
        has_more,
    })
}
