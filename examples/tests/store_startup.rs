//! The example server refuses to start, with one clear sentence, when its store cannot be
//! used: a database from a newer schema, a file that is not a database, an unknown
//! `--store` scheme. It never panics and never modifies the file.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use chat_sqlite_store::{SCHEMA_VERSION, SqliteConfig, SqliteStore};
use support::start_refused;

#[test]
fn a_database_from_a_newer_version_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    drop(SqliteStore::open(&path, SqliteConfig::default()).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let store = format!("sqlite:{}", path.display());
    let (status, stderr) = start_refused(&["--store", &store]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("newer than this server supports"),
        "{stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1, "the file was left untouched");
}

#[test]
fn a_file_that_is_not_a_database_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    std::fs::write(&path, vec![b'#'; 4096]).unwrap();
    let (status, stderr) = start_refused(&["--store", &format!("sqlite:{}", path.display())]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot open the chat database"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unknown_store_scheme_is_refused() {
    let (status, stderr) = start_refused(&["--store", "mongodb://127.0.0.1/chat"]);
    assert!(!status.success());
    assert!(stderr.contains("unknown store `mongodb`"), "{stderr}");
}
