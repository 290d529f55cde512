//! Group commit: one task writes every append that is waiting, in one transaction.
//!
//! Appends are sent to the committers over a bounded channel. A committer takes the
//! first one, then everything else already queued (up to `max_batch`), and writes the
//! batch in one transaction; each caller is answered only after `COMMIT` returned, so an
//! acknowledgement always means "committed". While a batch commits, the next one
//! gathers: the busier the store, the larger the batches, and one commit (one WAL flush)
//! serves them all.
//!
//! # One transaction, two round trips
//!
//! 1. `BEGIN`; create the batch's missing stream rows; lock all its stream rows
//!    (`FOR UPDATE`, in key order, so two writers never lock in opposite orders); look
//!    up the batch's `clientMsgId`s — four statements pipelined in one round trip. The
//!    lock is what makes `seq` gapless across processes: another store instance
//!    appending to the same stream waits until this transaction ends, then reads the
//!    head this one left. The look-up runs after the lock (a later statement, a later
//!    snapshot), so a concurrent retry from another process is either committed and
//!    seen, or waiting behind us.
//! 2. Number the new messages from each stream's head, insert them, move the heads,
//!    `COMMIT` — pipelined, one round trip.
//!
//! A deadlock or serialization failure (possible in principle when several processes
//! create the same new streams at once) rolls the whole batch back, and it is retried.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use chat_core::{ClientMsgId, Content, Epoch, MessageId, Seq, Timestamp, UserId};
use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::connection::Exclusive;
use crate::error::Failure;
use crate::stream::{MESSAGE_COLUMNS, MessageRow, StreamKey};

/// One append waiting for the committer.
pub(crate) struct Pending {
    pub(crate) key: StreamKey,
    pub(crate) sender_id: UserId,
    pub(crate) sender_name: Arc<str>,
    /// `Some` for a DM.
    pub(crate) recipient: Option<(UserId, Arc<str>)>,
    pub(crate) content: Content,
    pub(crate) client_msg_id: Option<ClientMsgId>,
    pub(crate) reply: oneshot::Sender<Result<Committed, Failure>>,
}

/// A committed append (or the original of a duplicate).
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub(crate) row: MessageRow,
    pub(crate) duplicate: bool,
    pub(crate) epoch: Epoch,
}

const ENSURE_STREAMS: &str = "\
    INSERT INTO chat_streams (kind, name, peer, epoch) \
    SELECT k.kind, k.name, k.peer, (SELECT epoch FROM chat_meta) \
    FROM unnest($1::smallint[], $2::text[], $3::text[]) AS k(kind, name, peer) \
    ORDER BY k.kind, k.name, k.peer \
    ON CONFLICT (kind, name, peer) DO NOTHING";

const LOCK_STREAMS: &str = "\
    SELECT s.id, s.kind, s.name, s.peer, s.epoch, s.last_seq, s.last_ts \
    FROM chat_streams s \
    JOIN unnest($1::smallint[], $2::text[], $3::text[]) AS k(kind, name, peer) \
      ON s.kind = k.kind AND s.name = k.name AND s.peer = k.peer \
    ORDER BY s.kind, s.name, s.peer \
    FOR UPDATE OF s";

/// Runs after [`LOCK_STREAMS`] in the same transaction: a new snapshot, taken once the
/// locks are held, so a retry committed by another process meanwhile is seen.
fn find_duplicates_sql() -> String {
    format!(
        "SELECT s.id, {MESSAGE_COLUMNS} \
         FROM unnest($1::smallint[], $2::text[], $3::text[], $4::text[], $5::text[]) \
              AS k(kind, name, peer, sender_id, client_msg_id) \
         JOIN chat_streams s ON s.kind = k.kind AND s.name = k.name AND s.peer = k.peer \
         JOIN chat_messages m ON m.stream_id = s.id AND m.sender_id = k.sender_id \
          AND m.client_msg_id = k.client_msg_id"
    )
}

const INSERT_MESSAGES: &str = "\
    INSERT INTO chat_messages (stream_id, seq, id, sender_id, sender_name, recipient_id, \
        recipient_name, content, ts, client_msg_id) \
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], \
        $6::text[], $7::text[], $8::bytea[], $9::bigint[], $10::text[])";

const MOVE_HEADS: &str = "\
    UPDATE chat_streams s SET last_seq = u.last_seq, last_ts = u.last_ts \
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, last_seq, last_ts) \
    WHERE s.id = u.id";

/// How many times a batch rolled back by a deadlock or serialization failure is tried.
const ATTEMPTS: usize = 3;

/// The task that owns the write path.
pub(crate) struct Committer {
    pub(crate) pool: Pool,
    pub(crate) timeout: Duration,
    pub(crate) max_batch: usize,
}

/// Why one attempt failed.
enum AttemptError {
    /// A statement failed; `commit_sent` tells whether it was in the group with `COMMIT`.
    Db {
        error: tokio_postgres::Error,
        commit_sent: bool,
    },
    Other(Failure),
}

impl Committer {
    /// Runs until every sender (every store handle) is gone. When several committers
    /// are configured they share the queue: while one waits for its `COMMIT`, the next
    /// gathers and writes its batch.
    pub(crate) async fn run(self, queue: Arc<Mutex<mpsc::Receiver<Pending>>>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            {
                let mut queue = queue.lock().await;
                let Some(first) = queue.recv().await else {
                    return;
                };
                batch.push(first);
                self.gather(&mut queue, &mut batch);
                if batch.len() < self.max_batch {
                    // Callers just answered by the previous commit are sending their
                    // next message right now: one yield lets them join this batch, for
                    // microseconds against a commit's milliseconds.
                    tokio::task::yield_now().await;
                    self.gather(&mut queue, &mut batch);
                }
            }
            // A caller that gave up was told the outcome is unknown; not writing its
            // message is one of the outcomes it was promised.
            batch.retain(|pending| !pending.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            match self.commit(&batch).await {
                Ok(done) => {
                    for (pending, committed) in batch.drain(..).zip(done) {
                        let _ = pending.reply.send(Ok(committed));
                    }
                }
                Err(failure) => {
                    for pending in batch.drain(..) {
                        let _ = pending.reply.send(Err(failure.clone()));
                    }
                }
            }
        }
    }

    /// Adds what is queued, up to `max_batch`.
    fn gather(&self, queue: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
        while batch.len() < self.max_batch {
            match queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
    }

    /// Writes one batch: its results in the batch's order.
    async fn commit(&self, batch: &[Pending]) -> Result<Vec<Committed>, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let commit_sent = AtomicBool::new(false);
            let outcome =
                tokio::time::timeout(self.timeout, self.attempt(batch, &commit_sent)).await;
            let error = match outcome {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(error)) => error,
                Err(_elapsed) if commit_sent.load(Ordering::Acquire) => {
                    return Err(Failure::indeterminate(
                        "no answer to COMMIT within the store timeout",
                    ));
                }
                Err(_elapsed) => {
                    return Err(Failure::unavailable(
                        "the store timeout passed before COMMIT was sent",
                    ));
                }
            };
            match error {
                AttemptError::Db { error, commit_sent } => {
                    let retry = error.code().is_some_and(|code| {
                        *code == SqlState::T_R_DEADLOCK_DETECTED
                            || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    });
                    if retry && attempt < ATTEMPTS {
                        tracing::debug!(%error, attempt, "batch rolled back; retrying");
                        continue;
                    }
                    return Err(if commit_sent {
                        Failure::during_commit(error)
                    } else {
                        Failure::before_commit(error)
                    });
                }
                AttemptError::Other(failure) => return Err(failure),
            }
        }
    }

    async fn attempt(
        &self,
        batch: &[Pending],
        commit_sent: &AtomicBool,
    ) -> Result<Vec<Committed>, AttemptError> {
        let before = |error| AttemptError::Db {
            error,
            commit_sent: false,
        };
        let connection = Exclusive::get(&self.pool)
            .await
            .map_err(AttemptError::Other)?;
        let client = connection.client();
        let ensure = client
            .prepare_cached(ENSURE_STREAMS)
            .await
            .map_err(before)?;
        let lock = client.prepare_cached(LOCK_STREAMS).await.map_err(before)?;
        let find = client
            .prepare_cached(&find_duplicates_sql())
            .await
            .map_err(before)?;

        // 1. Begin, create missing streams, lock them all, look up the clientMsgIds
        //    (one round trip: the statements are pipelined).
        let keys: BTreeSet<&StreamKey> = batch.iter().map(|pending| &pending.key).collect();
        let kinds: Vec<i16> = keys.iter().map(|key| key.kind).collect();
        let names: Vec<&str> = keys.iter().map(|key| key.name.as_str()).collect();
        let peers: Vec<&str> = keys.iter().map(|key| key.peer.as_str()).collect();
        let key_params: [&(dyn ToSql + Sync); 3] = [&kinds, &names, &peers];
        let mut probe = Probe::default();
        for pending in batch {
            if let Some(id) = &pending.client_msg_id {
                probe.kinds.push(pending.key.kind);
                probe.names.push(&pending.key.name);
                probe.peers.push(&pending.key.peer);
                probe.senders.push(pending.sender_id.as_str());
                probe.ids.push(id.as_str());
            }
        }
        let probe_params: [&(dyn ToSql + Sync); 5] = [
            &probe.kinds,
            &probe.names,
            &probe.peers,
            &probe.senders,
            &probe.ids,
        ];
        let (_, _, locked, found) = tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.execute(&ensure, &key_params),
            client.query(&lock, &key_params),
            client.query(&find, &probe_params),
        )
        .map_err(before)?;
        let mut streams = HashMap::with_capacity(locked.len());
        for row in &locked {
            let key = StreamKey {
                kind: row.try_get(1).map_err(before)?,
                name: row.try_get(2).map_err(before)?,
                peer: row.try_get(3).map_err(before)?,
            };
            let epoch: &str = row.try_get(4).map_err(before)?;
            streams.insert(
                key,
                Head {
                    id: row.try_get(0).map_err(before)?,
                    epoch: Epoch::new(epoch),
                    last_seq: row.try_get(5).map_err(before)?,
                    last_ts: row.try_get(6).map_err(before)?,
                    moved: false,
                },
            );
        }

        // 2. The originals of retries.
        let mut originals = HashMap::new();
        for row in &found {
            let stream_id: i64 = row.try_get(0).map_err(before)?;
            let original = MessageRow::read(row, 1).map_err(AttemptError::Other)?;
            if let Some(id) = original.client_msg_id.clone() {
                originals.insert((stream_id, original.sender_id.clone(), id), original);
            }
        }

        // 3. Number, insert, move the heads, commit (the second round trip).
        let now = Timestamp::from_system_time(SystemTime::now()).0;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let mut results: Vec<Committed> = Vec::with_capacity(batch.len());
        let mut fresh = NewRows::default();
        for pending in batch {
            let head = streams.get_mut(&pending.key).ok_or_else(|| {
                AttemptError::Other(Failure::rejected(
                    "a stream row vanished inside its transaction".into(),
                ))
            })?;
            if let Some(id) = &pending.client_msg_id {
                let key = (head.id, pending.sender_id.clone(), id.clone());
                if let Some(original) = originals.get(&key) {
                    results.push(Committed {
                        row: original.clone(),
                        duplicate: true,
                        epoch: head.epoch.clone(),
                    });
                    continue;
                }
            }
            head.last_seq += 1;
            head.last_ts = head.last_ts.max(now);
            head.moved = true;
            let row = MessageRow {
                seq: Seq(u64::try_from(head.last_seq).unwrap_or(0)),
                id: MessageId(uuid::Uuid::new_v4()),
                sender_id: pending.sender_id.clone(),
                sender_name: pending.sender_name.clone(),
                recipient: pending.recipient.clone(),
                content: pending.content.clone(),
                timestamp: Timestamp(u64::try_from(head.last_ts).unwrap_or(0)),
                client_msg_id: pending.client_msg_id.clone(),
            };
            fresh.push(head.id, head.last_seq, head.last_ts, &row);
            // A retry inside the same batch is a duplicate of the message just numbered.
            if let Some(id) = &pending.client_msg_id {
                originals.insert(
                    (head.id, pending.sender_id.clone(), id.clone()),
                    row.clone(),
                );
            }
            results.push(Committed {
                row,
                duplicate: false,
                epoch: head.epoch.clone(),
            });
        }
        let during = |error| AttemptError::Db {
            error,
            commit_sent: true,
        };
        if fresh.stream_ids.is_empty() {
            // Only duplicates: nothing to write, but the locks go.
            client.batch_execute("COMMIT").await.map_err(during)?;
        } else {
            let insert = client
                .prepare_cached(INSERT_MESSAGES)
                .await
                .map_err(before)?;
            let move_heads = client.prepare_cached(MOVE_HEADS).await.map_err(before)?;
            let moved: Vec<&Head> = streams.values().filter(|head| head.moved).collect();
            let ids: Vec<i64> = moved.iter().map(|head| head.id).collect();
            let seqs: Vec<i64> = moved.iter().map(|head| head.last_seq).collect();
            let stamps: Vec<i64> = moved.iter().map(|head| head.last_ts).collect();
            let contents = fresh.contents();
            let rows: [&(dyn ToSql + Sync); 10] = [
                &fresh.stream_ids,
                &fresh.seqs,
                &fresh.ids,
                &fresh.sender_ids,
                &fresh.sender_names,
                &fresh.recipient_ids,
                &fresh.recipient_names,
                &contents,
                &fresh.stamps,
                &fresh.client_msg_ids,
            ];
            let heads: [&(dyn ToSql + Sync); 3] = [&ids, &seqs, &stamps];
            commit_sent.store(true, Ordering::Release);
            tokio::try_join!(
                client.execute(&insert, &rows),
                client.execute(&move_heads, &heads),
                client.batch_execute("COMMIT"),
            )
            .map_err(during)?;
        }
        connection.release();
        Ok(results)
    }
}

/// A locked stream row, moved forward in memory until the batch is written.
struct Head {
    id: i64,
    epoch: Epoch,
    last_seq: i64,
    last_ts: i64,
    moved: bool,
}

/// The new messages of a batch, column by column (the form `unnest` takes).
#[derive(Default)]
struct NewRows {
    stream_ids: Vec<i64>,
    seqs: Vec<i64>,
    ids: Vec<uuid::Uuid>,
    sender_ids: Vec<String>,
    sender_names: Vec<String>,
    recipient_ids: Vec<Option<String>>,
    recipient_names: Vec<Option<String>>,
    contents: Vec<Content>,
    stamps: Vec<i64>,
    client_msg_ids: Vec<Option<String>>,
}

impl NewRows {
    fn push(&mut self, stream_id: i64, seq: i64, ts: i64, row: &MessageRow) {
        self.stream_ids.push(stream_id);
        self.seqs.push(seq);
        self.ids.push(row.id.0);
        self.sender_ids.push(row.sender_id.as_str().to_owned());
        self.sender_names.push(row.sender_name.to_string());
        self.recipient_ids
            .push(row.recipient.as_ref().map(|(id, _)| id.as_str().to_owned()));
        self.recipient_names
            .push(row.recipient.as_ref().map(|(_, name)| name.to_string()));
        self.contents.push(row.content.clone());
        self.stamps.push(ts);
        self.client_msg_ids
            .push(row.client_msg_id.as_ref().map(|id| id.as_str().to_owned()));
    }

    /// The texts as bytes: `content` is `bytea` (see the schema).
    fn contents(&self) -> Vec<&[u8]> {
        self.contents
            .iter()
            .map(|content| content.as_str().as_bytes())
            .collect()
    }
}

/// The batch's `clientMsgId`s with their streams and senders, column by column.
#[derive(Default)]
struct Probe<'a> {
    kinds: Vec<i16>,
    names: Vec<&'a str>,
    peers: Vec<&'a str>,
    senders: Vec<&'a str>,
    ids: Vec<&'a str>,
}
