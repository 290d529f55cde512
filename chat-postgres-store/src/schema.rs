//! The embedded schema migrations, applied on start.
//!
//! Each migration is one SQL text run in one transaction together with the update of
//! `chat_meta.schema_version`. Starting servers serialise on an advisory lock, so two processes starting at once on an empty database do not both
//! create the tables. A database whose recorded version is newer than [`LATEST`] is
//! refused: it belongs to a newer build.

use tokio_postgres::Client;

use crate::error::OpenError;

/// Key of the advisory lock held while migrating (an arbitrary constant: "chat" in ASCII).
const MIGRATION_LOCK: i64 = 0x6368_6174;

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    //
    // * `chat_meta`: one row; the schema version and the database's epoch (random,
    //   drawn once: every stream is created with it, and an absent stream's page
    //   reports it, so a client's position survives restarts but not a new database).
    // * `chat_streams`: one row per room (`kind` 0, `peer` '') or DM conversation
    //   (`kind` 1, `name` < `peer`, the two user ids in sorted order). `last_seq` is
    //   the head, updated in the transaction that inserts the message, under the row's
    //   lock: that makes `seq` gapless across processes. `last_ts` keeps timestamps
    //   non-decreasing within a stream even if clocks of two servers disagree.
    // * `chat_messages`: both kinds; `recipient_*` only for DMs. `content` is `bytea`
    //   because a message may contain NUL, which `text` cannot hold. No foreign key to
    //   `chat_streams`: every insert takes its `stream_id` from a row it holds locked,
    //   and nothing deletes streams, while the key's check would cost a row lock per
    //   message (measured: docs/BENCHMARKS.md). The primary key
    //   serves every page; the partial unique index is the idempotency rule; the BRIN
    //   index (tiny, cheap to maintain on append-only data) serves age-based retention.
    r"
    CREATE TABLE chat_meta (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        schema_version integer NOT NULL,
        epoch text NOT NULL
    );
    INSERT INTO chat_meta (schema_version, epoch) VALUES (0, gen_random_uuid()::text);
    CREATE TABLE chat_streams (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind smallint NOT NULL,
        name text NOT NULL,
        peer text NOT NULL,
        epoch text NOT NULL,
        last_seq bigint NOT NULL DEFAULT 0,
        last_ts bigint NOT NULL DEFAULT 0,
        UNIQUE (kind, name, peer)
    );
    CREATE TABLE chat_messages (
        stream_id bigint NOT NULL,
        seq bigint NOT NULL,
        id uuid NOT NULL,
        sender_id text NOT NULL,
        sender_name text NOT NULL,
        recipient_id text,
        recipient_name text,
        content bytea NOT NULL,
        ts bigint NOT NULL,
        client_msg_id text,
        PRIMARY KEY (stream_id, seq)
    );
    CREATE UNIQUE INDEX chat_messages_client_msg_id
        ON chat_messages (stream_id, sender_id, client_msg_id)
        WHERE client_msg_id IS NOT NULL;
    CREATE INDEX chat_messages_ts ON chat_messages USING brin (ts);
    ",
];

/// The schema version this build migrates to.
pub const LATEST: i32 = MIGRATIONS.len() as i32;

/// Brings the database to [`LATEST`], or refuses a newer one.
///
/// The lock is a session lock taken before any transaction starts, so the version read
/// after it comes from a fresh snapshot that sees what a concurrent starter committed.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), OpenError> {
    let locking = |source| OpenError::Migration { version: 0, source };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(locking)?;
    let result = migrate_locked(client).await;
    // Released on a clean path; on a failure the connection may be unusable, and
    // closing it (the pool is dropped with the error) releases the lock anyway.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlocked.map_err(locking)?;
    Ok(())
}

async fn migrate_locked(client: &mut Client) -> Result<(), OpenError> {
    let current = read_version(client)
        .await
        .map_err(|source| OpenError::Migration { version: 0, source })?;
    if current > LATEST {
        return Err(OpenError::NewerSchema {
            found: current,
            supported: LATEST,
        });
    }
    for version in current + 1..=LATEST {
        let failed = |source| OpenError::Migration { version, source };
        let tx = client.transaction().await.map_err(failed)?;
        let sql = MIGRATIONS[(version - 1) as usize];
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute("UPDATE chat_meta SET schema_version = $1", &[&version])
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version, "applied chat schema migration");
    }
    Ok(())
}

async fn read_version(
    client: &impl tokio_postgres::GenericClient,
) -> Result<i32, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('chat_meta') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT schema_version FROM chat_meta", &[])
        .await?
        .get(0))
}

/// The database's epoch (see migration 1).
pub(crate) async fn epoch(client: &Client) -> Result<String, OpenError> {
    client
        .query_one("SELECT epoch FROM chat_meta", &[])
        .await
        .map(|row| row.get(0))
        .map_err(|source| OpenError::Migration {
            version: LATEST,
            source,
        })
}
