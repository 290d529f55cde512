//! The checkpointer thread: copies the WAL back into the database file in the
//! background, so the writer's commits do not pay for it.
//!
//! Every [`INTERVAL`] it runs a `PASSIVE` checkpoint on its own connection: it copies
//! what no reader still needs and never blocks the writer or the readers. The writer
//! keeps SQLite's automatic checkpoint only as a fallback for a WAL that grows past
//! `schema::WAL_FALLBACK_PAGES` (this thread falling far behind).

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rusqlite::Connection;

/// How often the WAL is checkpointed.
pub(crate) const INTERVAL: Duration = Duration::from_millis(200);

/// Checkpoints until `stop` is closed (the store dropped).
pub(crate) fn run(conn: Connection, stop: Receiver<()>) {
    loop {
        match stop.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {
                // (busy, frames in the WAL, frames checkpointed)
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                });
                if let Err(e) = done {
                    tracing::warn!(error = %e, "SQLite background checkpoint failed; will retry");
                }
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
