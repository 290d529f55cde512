//! The writer thread: group commit, `seq` allocation, idempotency and retention.
//!
//! It owns the only writing connection. Each turn takes every append waiting in the
//! queue (up to `max_batch`), writes them in one `BEGIN IMMEDIATE` transaction and
//! commits; only after the commit succeeded are the appends answered, so an
//! acknowledgement never precedes the commit. If the batch fails, each append is tried
//! again in a transaction of its own, so one bad append cannot fail the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use chat_core::{
    Appended, Epoch, NewDm, NewRoomMessage, StoreError, StoredDm, StoredMessage, Timestamp,
};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::errors::{Stage, store_error};
use crate::rows::{Columns, MESSAGE_COLUMNS, StreamKey, sql_int};
use crate::{Retention, SqliteConfig};

type Reply<T> = oneshot::Sender<Result<Appended<T>, StoreError>>;

/// Work for the writer thread.
pub(crate) enum Write {
    /// Append a room message.
    Room(NewRoomMessage, Reply<StoredMessage>),
    /// Append a DM.
    Dm(NewDm, Reply<StoredDm>),
    /// Run retention to the end now, then answer.
    Retention(oneshot::Sender<Result<u64, StoreError>>),
}

/// Streams the writer looks at per retention step, and messages it deletes per stream
/// and criterion per step: a step is a short transaction between two batches.
const RETENTION_STREAMS_PER_STEP: i64 = 256;
const RETENTION_ROWS_PER_STREAM: i64 = 2_000;

/// What the writer has done (read by [`SqliteStore::stats`](crate::SqliteStore::stats)).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) appends: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
}

pub(crate) struct Writer {
    conn: Connection,
    counters: Arc<Counters>,
    epoch: Epoch,
    max_batch: usize,
    retention: Retention,
    /// Stream ids and epochs by key, of streams known to be committed.
    streams: HashMap<StreamKey, (i64, Epoch)>,
    /// When the next retention step is due (`None`: retention deletes nothing).
    next_retention: Option<Instant>,
    /// The retention sweep's position: the last stream id it finished.
    retention_cursor: i64,
}

/// An append's stored form, before the commit makes it an answer.
enum Stored {
    Room(Appended<StoredMessage>),
    Dm(Appended<StoredDm>),
}

/// The parts of an append the SQL needs, room or DM alike.
struct NewRow<'a> {
    key: StreamKey,
    author: &'a str,
    author_name: &'a str,
    recipient: Option<(&'a str, &'a str)>,
    content: &'a str,
    client_msg_id: Option<&'a str>,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        epoch: Epoch,
        config: &SqliteConfig,
        counters: Arc<Counters>,
    ) -> Self {
        let retention = config.retention;
        Self {
            conn,
            counters,
            epoch,
            max_batch: config.max_batch.max(1),
            retention,
            streams: HashMap::new(),
            next_retention: retention
                .deletes()
                .then(|| Instant::now() + retention.interval),
            retention_cursor: 0,
        }
    }

    /// Serves appends until every sender is gone, then returns (closing the database).
    pub(crate) fn run(mut self, writes: Receiver<Write>) {
        loop {
            let first = match self.next_retention {
                Some(due) => {
                    match writes.recv_timeout(due.saturating_duration_since(Instant::now())) {
                        Ok(write) => write,
                        Err(RecvTimeoutError::Timeout) => {
                            self.retention_step();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match writes.recv() {
                    Ok(write) => write,
                    Err(_) => return,
                },
            };
            let mut batch = Vec::with_capacity(64);
            let mut retention_now = Vec::new();
            let mut next = Some(first);
            while let Some(write) = next {
                match write {
                    Write::Retention(reply) => retention_now.push(reply),
                    append => batch.push(append),
                }
                next = if batch.len() < self.max_batch {
                    writes.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            for reply in retention_now {
                let _ = reply.send(self.retention_to_the_end());
            }
            if self.next_retention.is_some_and(|due| due <= Instant::now()) && writes.is_empty() {
                self.retention_step();
            }
        }
    }

    /// Writes `batch` in one transaction and answers it after the commit; on failure,
    /// each append alone.
    fn commit_batch(&mut self, batch: Vec<Write>) {
        let now = Timestamp::from_system_time(SystemTime::now());
        match self.transaction(&batch, now) {
            Ok(stored) => answer(batch, stored.into_iter().map(Ok).collect()),
            // One append, or a commit whose outcome is unknown (writing the appends
            // again could store them twice): every append gets this answer.
            Err(e) if batch.len() == 1 || e.is_indeterminate() => {
                let outcomes = batch.iter().map(|_| Err(e.clone())).collect();
                answer(batch, outcomes);
            }
            Err(e) => {
                tracing::warn!(error = %e.chain(), appends = batch.len(),
                    "SQLite group commit failed; writing its appends one by one");
                for write in batch {
                    let one = [write];
                    let outcome = self
                        .transaction(&one, now)
                        .map(|mut stored| stored.remove(0));
                    let [write] = one;
                    answer(vec![write], vec![outcome]);
                }
            }
        }
    }

    /// One transaction for `batch`; the stored forms in order, or why nothing was written
    /// (or, for a failed commit, maybe written).
    fn transaction(&mut self, batch: &[Write], now: Timestamp) -> Result<Vec<Stored>, StoreError> {
        let mut created = Vec::new();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| store_error(e, Stage::Statement, "begin"))?;
        let mut stored = Vec::with_capacity(batch.len());
        for write in batch {
            let one = match write {
                Write::Room(m, _) => {
                    let row = NewRow {
                        key: StreamKey::room(&m.room),
                        author: m.user_id.as_str(),
                        author_name: &m.username,
                        recipient: None,
                        content: m.content.as_str(),
                        client_msg_id: m.client_msg_id.as_ref().map(|c| c.as_str()),
                    };
                    let (id, epoch) =
                        stream(&tx, &self.streams, &mut created, &row.key, &self.epoch)?;
                    match existing(&tx, id, &row)? {
                        Some(columns) => Stored::Room(Appended {
                            message: columns.into_room_message(&m.room)?.into(),
                            duplicate: true,
                            epoch,
                        }),
                        None => {
                            let (seq, message_id) = insert(&tx, id, &row, now)?;
                            Stored::Room(Appended {
                                message: StoredMessage {
                                    id: message_id,
                                    room: m.room.clone(),
                                    seq,
                                    user_id: m.user_id.clone(),
                                    username: m.username.clone(),
                                    content: m.content.clone(),
                                    timestamp: now,
                                    client_msg_id: m.client_msg_id.clone(),
                                }
                                .into(),
                                duplicate: false,
                                epoch,
                            })
                        }
                    }
                }
                Write::Dm(m, _) => {
                    let row = NewRow {
                        key: StreamKey::dm(&m.from, &m.to),
                        author: m.from.as_str(),
                        author_name: &m.from_username,
                        recipient: Some((m.to.as_str(), &m.to_username)),
                        content: m.content.as_str(),
                        client_msg_id: m.client_msg_id.as_ref().map(|c| c.as_str()),
                    };
                    let (id, epoch) =
                        stream(&tx, &self.streams, &mut created, &row.key, &self.epoch)?;
                    match existing(&tx, id, &row)? {
                        Some(columns) => Stored::Dm(Appended {
                            message: columns.into_dm()?.into(),
                            duplicate: true,
                            epoch,
                        }),
                        None => {
                            let (seq, message_id) = insert(&tx, id, &row, now)?;
                            Stored::Dm(Appended {
                                message: StoredDm {
                                    id: message_id,
                                    seq,
                                    from: m.from.clone(),
                                    from_username: m.from_username.clone(),
                                    to: m.to.clone(),
                                    to_username: m.to_username.clone(),
                                    content: m.content.clone(),
                                    timestamp: now,
                                    client_msg_id: m.client_msg_id.clone(),
                                }
                                .into(),
                                duplicate: false,
                                epoch,
                            })
                        }
                    }
                }
                Write::Retention(_) => continue,
            };
            stored.push(one);
        }
        if let Err(e) = tx.commit() {
            self.counters.failed_commits.fetch_add(1, Ordering::Relaxed);
            return Err(store_error(e, Stage::Commit, "commit"));
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters
            .appends
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        // Only now are the streams created by this transaction known to exist.
        self.streams.extend(created);
        Ok(stored)
    }

    /// Deletes what the retention settings say, a bounded amount per call; schedules the
    /// next step (soon if there is more to delete). Returns the rows deleted.
    fn retention_step(&mut self) -> u64 {
        let outcome = self.retention_pass();
        let (deleted, more) = match outcome {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "SQLite retention step failed; will retry");
                (0, false)
            }
        };
        self.next_retention = Some(if more {
            Instant::now()
        } else {
            Instant::now() + self.retention.interval
        });
        deleted
    }

    fn retention_to_the_end(&mut self) -> Result<u64, StoreError> {
        if !self.retention.deletes() {
            return Ok(0);
        }
        self.retention_cursor = 0;
        let mut total = 0;
        loop {
            let (deleted, more) = self.retention_pass()?;
            total += deleted;
            if !more {
                self.next_retention = Some(Instant::now() + self.retention.interval);
                return Ok(total);
            }
        }
    }

    /// One step: up to `RETENTION_STREAMS_PER_STEP` streams after the cursor. Returns
    /// the rows deleted and whether the sweep has more to do.
    fn retention_pass(&mut self) -> Result<(u64, bool), StoreError> {
        let cutoff = self.retention.max_age.map(|age| {
            let t = SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            Timestamp::from_system_time(t).0
        });
        let err = |e| store_error(e, Stage::Statement, "retention");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let streams: Vec<(i64, i64)> = tx
            .prepare_cached("SELECT id, last_seq FROM streams WHERE id > ?1 ORDER BY id LIMIT ?2")
            .and_then(|mut s| {
                s.query_map(
                    params![self.retention_cursor, RETENTION_STREAMS_PER_STEP],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect()
            })
            .map_err(err)?;
        let mut deleted = 0u64;
        let mut stream_backlog = false;
        let mut cursor = self.retention_cursor;
        for &(id, last_seq) in &streams {
            if let Some(keep) = self.retention.keep_last {
                let keep = i64::try_from(keep.get()).unwrap_or(i64::MAX);
                let n = tx
                    .prepare_cached(
                        "DELETE FROM messages WHERE stream = ?1 AND seq <= ?2 \
                         AND seq < (SELECT MIN(seq) FROM messages WHERE stream = ?1) + ?3",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            id,
                            last_seq.saturating_sub(keep),
                            RETENTION_ROWS_PER_STREAM
                        ])
                    })
                    .map_err(err)?;
                deleted += n as u64;
                stream_backlog |= n as i64 == RETENTION_ROWS_PER_STREAM;
            }
            if let Some(cutoff) = cutoff {
                let cutoff = sql_int(cutoff)?;
                // Only a prefix of the stream may go (pages are contiguous runs of seq):
                // up to the first message, among the oldest few, that is young enough.
                let n = tx
                    .prepare_cached(
                        "WITH oldest AS (SELECT seq, ts FROM messages WHERE stream = ?1 \
                                         ORDER BY seq LIMIT ?3) \
                         DELETE FROM messages WHERE stream = ?1 AND seq < COALESCE( \
                             (SELECT MIN(seq) FROM oldest WHERE ts >= ?2), \
                             (SELECT MAX(seq) + 1 FROM oldest), 0)",
                    )
                    .and_then(|mut s| s.execute(params![id, cutoff, RETENTION_ROWS_PER_STREAM]))
                    .map_err(err)?;
                deleted += n as u64;
                stream_backlog |= n as i64 == RETENTION_ROWS_PER_STREAM;
            }
            cursor = id;
            if stream_backlog {
                // Come back to this stream next step.
                cursor = id - 1;
                break;
            }
        }
        tx.commit()
            .map_err(|e| store_error(e, Stage::Commit, "retention commit"))?;
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        let more = stream_backlog || streams.len() as i64 == RETENTION_STREAMS_PER_STEP;
        self.retention_cursor = if more { cursor } else { 0 };
        if deleted > 0 {
            tracing::debug!(deleted, "SQLite retention deleted old messages");
        }
        Ok((deleted, more))
    }
}

/// The stream's id and epoch, creating its row if this is its first message.
fn stream(
    tx: &Transaction<'_>,
    known: &HashMap<StreamKey, (i64, Epoch)>,
    created: &mut Vec<(StreamKey, (i64, Epoch))>,
    key: &StreamKey,
    epoch: &Epoch,
) -> Result<(i64, Epoch), StoreError> {
    if let Some(found) = known.get(key) {
        return Ok(found.clone());
    }
    if let Some((_, found)) = created.iter().find(|(k, _)| k == key) {
        return Ok(found.clone());
    }
    let err = |e| store_error(e, Stage::Statement, "stream lookup");
    let row: Option<(i64, String)> = tx
        .prepare_cached("SELECT id, epoch FROM streams WHERE kind = ?1 AND a = ?2 AND b = ?3")
        .and_then(|mut s| {
            s.query_row(params![key.kind, key.a, key.b], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(err)?;
    let found =
        match row {
            Some((id, e)) => (id, Epoch::new(&e)),
            None => {
                let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO streams (kind, a, b, epoch, last_seq) VALUES (?1, ?2, ?3, ?4, 0) \
                     RETURNING id",
                )
                .and_then(|mut s| {
                    s.query_row(params![key.kind, key.a, key.b, epoch.as_str()], |r| r.get(0))
                })
                .map_err(err)?;
                (id, epoch.clone())
            }
        };
    created.push((key.clone(), found.clone()));
    Ok(found)
}

/// The message this author already stored in the stream with this clientMsgId.
fn existing(
    tx: &Transaction<'_>,
    stream: i64,
    row: &NewRow<'_>,
) -> Result<Option<Columns>, StoreError> {
    let Some(client_msg_id) = row.client_msg_id else {
        return Ok(None);
    };
    tx.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages \
         WHERE stream = ?1 AND author = ?2 AND client_msg_id = ?3"
    ))
    .and_then(|mut s| {
        s.query_row(params![stream, row.author, client_msg_id], Columns::read)
            .optional()
    })
    .map_err(|e| store_error(e, Stage::Statement, "idempotency lookup"))
}

/// Takes the stream's next `seq` and inserts the message, in the caller's transaction.
fn insert(
    tx: &Transaction<'_>,
    stream: i64,
    row: &NewRow<'_>,
    now: Timestamp,
) -> Result<(chat_core::Seq, chat_core::MessageId), StoreError> {
    let err = |e| store_error(e, Stage::Statement, "insert");
    let seq: i64 = tx
        .prepare_cached(
            "UPDATE streams SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
        )
        .and_then(|mut s| s.query_row([stream], |r| r.get(0)))
        .map_err(err)?;
    let id = uuid::Uuid::new_v4();
    let (recipient, recipient_name) = row.recipient.unzip();
    tx.prepare_cached(
        "INSERT INTO messages (stream, seq, id, author, author_name, recipient, recipient_name, \
                               content, ts, client_msg_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            stream,
            seq,
            id.as_bytes().as_slice(),
            row.author,
            row.author_name,
            recipient,
            recipient_name,
            row.content,
            sql_int(now.0).unwrap_or(i64::MAX),
            row.client_msg_id,
        ])
    })
    .map_err(err)?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::rejected("a negative seq"))?;
    Ok((chat_core::Seq(seq), chat_core::MessageId(id)))
}

/// Answers each append of `batch` with its outcome (same order).
fn answer(batch: Vec<Write>, outcomes: Vec<Result<Stored, StoreError>>) {
    let mut outcomes = outcomes.into_iter();
    for write in batch {
        let outcome = outcomes.next();
        // A closed reply channel means the caller gave up (a timeout): nothing to do.
        match (write, outcome) {
            (Write::Room(_, reply), Some(Ok(Stored::Room(a)))) => drop(reply.send(Ok(a))),
            (Write::Dm(_, reply), Some(Ok(Stored::Dm(a)))) => drop(reply.send(Ok(a))),
            (Write::Room(_, reply), Some(Err(e))) => drop(reply.send(Err(e))),
            (Write::Dm(_, reply), Some(Err(e))) => drop(reply.send(Err(e))),
            (Write::Room(_, reply), _) => drop(reply.send(Err(mismatch()))),
            (Write::Dm(_, reply), _) => drop(reply.send(Err(mismatch()))),
            (Write::Retention(reply), _) => drop(reply.send(Ok(0))),
        }
    }
}

/// Outcomes and appends are built in the same order, so this never happens; if it did,
/// the append's fate would be unknown.
fn mismatch() -> StoreError {
    StoreError::indeterminate("internal error: an append's outcome was lost")
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Write::Room(..) => "Write::Room",
            Write::Dm(..) => "Write::Dm",
            Write::Retention(_) => "Write::Retention",
        })
    }
}
