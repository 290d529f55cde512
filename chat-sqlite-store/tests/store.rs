//! The SQLite store's own promises beyond the shared suite: hostile contents round-trip
//! byte for byte, startup errors are clear, a full database answers `Unavailable`,
//! retention deletes only a prefix of each stream, and concurrent appends share commits.

use std::num::NonZeroU64;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chat_core::{
    ClientMsgId, Content, NewDm, NewRoomMessage, PageRange, RoomName, Seq, Store, StoreError,
    UserId,
};
use chat_sqlite_store::{OpenError, Retention, SCHEMA_VERSION, SqliteConfig, SqliteStore};

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("valid room")
}

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid user id")
}

fn message(room_name: &str, author: &str, text: &str, id: Option<&str>) -> NewRoomMessage {
    NewRoomMessage {
        room: room(room_name),
        user_id: user(author),
        username: format!("{author} \"the\" 'name'").into(),
        content: Content::parse(text).expect("non-empty content"),
        client_msg_id: id.map(|i| ClientMsgId::parse(i).expect("valid clientMsgId")),
    }
}

const LATEST: PageRange = PageRange::Latest { limit: 1000 };

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteConfig::default()).expect("open")
}

#[tokio::test]
async fn hostile_contents_are_stored_and_returned_byte_for_byte_also_after_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chat.db");
    let emoji_64k = "👩‍👩‍👧‍👦🏳️‍🌈😀".repeat(64 * 1024 / "👩‍👩‍👧‍👦🏳️‍🌈😀".len() + 1);
    let texts = [
        "it's \"quoted\" `back` \\ \\\\ '' \"\"".to_owned(),
        "NUL\u{0}in the\u{0}middle\u{0}".to_owned(),
        "'); DROP TABLE messages; --".to_owned(),
        "\" OR 1=1; DELETE FROM streams WHERE '1'='1".to_owned(),
        "%_*?[]{}$1 ?1 :name @x".to_owned(),
        emoji_64k.clone(),
        "\u{202e}right-to-left\u{200b}zero width\u{feff}".to_owned(),
    ];
    let store = open(&path);
    let mut acked = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let m = message(
            "rm'; --",
            "o'brien",
            text,
            Some(&format!("id'{n}\"; DROP TABLE streams; --")),
        );
        let want = m.content.clone();
        let a = store.append_room(m).await.expect("append");
        assert_eq!(a.message.content, want, "returned as given");
        acked.push(a.message);
    }
    // What the protocol allows of 64 KiB of emoji (Content keeps 1000 characters) is
    // stored whole: multi-byte and multi-codepoint characters are not split.
    let long = &acked[5].content;
    assert_eq!(long.as_str().chars().count(), 1000);
    assert!(emoji_64k.starts_with(long.as_str()));
    let dm = store
        .append_dm(NewDm {
            from: user("a\"b"),
            from_username: "x'); --".into(),
            to: user("c'd"),
            to_username: "\u{0}".into(),
            content: Content::parse(&texts[1]).expect("content"),
            client_msg_id: None,
        })
        .await
        .expect("dm");
    drop(store);

    let store = open(&path);
    let page = store
        .room_page(&room("rm'; --"), LATEST)
        .await
        .expect("page");
    assert_eq!(
        page.messages, acked,
        "every field byte for byte after a reopen"
    );
    for (read, text) in page.messages.iter().zip(&texts) {
        assert!(
            text.starts_with(read.content.as_str()),
            "{:?}",
            read.content
        );
    }
    let dms = store
        .dm_page(&user("c'd"), &user("a\"b"), LATEST)
        .await
        .expect("dm page");
    assert_eq!(dms.messages, vec![dm.message]);
    // The SQL fragments were data: both tables are still there and nothing was deleted.
    let other = store
        .append_room(message("general", "bob", "still here", None))
        .await
        .expect("append after the fragments");
    assert_eq!(other.message.seq, Seq(1));
}

#[tokio::test]
async fn a_schema_from_a_newer_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chat.db");
    drop(open(&path));
    let newer = SCHEMA_VERSION + 1;
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", newer)
            .expect("set version");
    }
    let error = SqliteStore::open(&path, SqliteConfig::default()).expect_err("refused");
    assert!(
        matches!(error, OpenError::SchemaTooNew { found, supported, .. }
            if found == newer && supported == SCHEMA_VERSION),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("newer than this server supports"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, newer, "the file was not modified");
}

/// Makes `path` unwritable even for root (`chattr +i`), or by its mode for other users;
/// undone on drop.
struct Unwritable<'a>(&'a Path, bool);

impl<'a> Unwritable<'a> {
    fn new(path: &'a Path) -> Self {
        // Root ignores permission bits; the immutable attribute stops it too.
        let immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !immutable {
            let mut perms = std::fs::metadata(path).expect("metadata").permissions();
            perms.set_readonly(true);
            std::fs::set_permissions(path, perms).expect("chmod");
        }
        Self(path, immutable)
    }
}

impl Drop for Unwritable<'_> {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(self.0)
                .status();
        }
    }
}

#[tokio::test]
async fn a_read_only_file_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chat.db");
    drop(open(&path));
    let guard = Unwritable::new(&path);
    if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
        panic!(
            "cannot make {} read-only here (neither chattr +i nor the mode works)",
            path.display()
        );
    }
    let error = SqliteStore::open(&path, SqliteConfig::default()).expect_err("refused");
    assert!(matches!(error, OpenError::ReadOnly { .. }), "{error:?}");
    assert!(error.to_string().contains("is read-only"), "{error}");
    drop(guard);
    // Writable again: it opens and works.
    let store = open(&path);
    store
        .append_room(message("general", "alice", "hi", None))
        .await
        .expect("writable again");
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chat.db");
    std::fs::write(&path, vec![b'x'; 8192]).expect("write");
    let error = SqliteStore::open(&path, SqliteConfig::default()).expect_err("refused");
    assert!(matches!(error, OpenError::Sqlite { .. }), "{error:?}");
    assert!(
        error.to_string().contains("cannot open the chat database"),
        "{error}"
    );

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .and_then(|c| c.execute_batch("CREATE TABLE invoices (id INTEGER)"))
        .expect("another application's database");
    let error = SqliteStore::open(&other, SqliteConfig::default()).expect_err("refused");
    assert!(matches!(error, OpenError::Foreign { .. }), "{error:?}");
    assert!(error.to_string().contains("invoices"), "{error}");
}

#[test]
fn a_directory_that_cannot_be_created_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let error =
        SqliteStore::open(file.join("chat.db"), SqliteConfig::default()).expect_err("refused");
    assert!(matches!(error, OpenError::CreateDir { .. }), "{error:?}");
}

#[tokio::test]
async fn a_full_database_answers_unavailable_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chat.db");
    let store = SqliteStore::open(
        &path,
        SqliteConfig::default().with_max_bytes(Some(256 * 1024)),
    )
    .expect("open");
    let text = "x".repeat(1000);
    let mut acked = 0u64;
    let error = loop {
        match store
            .append_room(message("general", "alice", &text, None))
            .await
        {
            Ok(a) => {
                acked += 1;
                assert_eq!(a.message.seq, Seq(acked));
                assert!(acked < 10_000, "the cap never applied");
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(error.chain().contains("full"), "{}", error.chain());
    // Reads still work and see exactly what was acknowledged; the failed appends
    // consumed no seq.
    let page = store
        .room_page(&room("general"), LATEST)
        .await
        .expect("page");
    assert_eq!(page.last_seq, Seq(acked));
    assert!(
        store
            .append_room(message("general", "alice", &text, None))
            .await
            .is_err()
    );
    drop(store);
    let store = open(&path);
    let next = store
        .append_room(message("general", "alice", "room again", None))
        .await
        .expect("without the cap");
    assert_eq!(
        next.message.seq,
        Seq(acked + 1),
        "no seq was consumed by a failure"
    );
}

async fn fill(store: &SqliteStore, n: u64) {
    for i in 1..=n {
        let id = format!("m{i}");
        store
            .append_room(message("general", "alice", &id, Some(&id)))
            .await
            .expect("append");
    }
}

#[tokio::test]
async fn retention_keeps_the_newest_n_per_stream() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(
        dir.path().join("chat.db"),
        SqliteConfig::default()
            .with_retention(Retention::default().with_keep_last(NonZeroU64::new(10))),
    )
    .expect("open");
    fill(&store, 25).await;
    assert_eq!(store.apply_retention().await.expect("retention"), 15);
    let page = store
        .room_page(&room("general"), LATEST)
        .await
        .expect("page");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (16..=25).collect::<Vec<_>>());
    assert!(!page.has_more, "the oldest retained message is the start");
    assert_eq!(page.last_seq, Seq(25));
    let before = store
        .room_page(
            &room("general"),
            PageRange::Before {
                seq: Seq(16),
                limit: 5,
            },
        )
        .await
        .expect("page");
    assert!(before.messages.is_empty() && !before.has_more);
    // A retry whose original was deleted is stored again, at the next seq.
    let again = store
        .append_room(message("general", "alice", "m3", Some("m3")))
        .await
        .expect("append");
    assert!(!again.duplicate);
    assert_eq!(again.message.seq, Seq(26));
    // A retry whose original is retained is still a duplicate.
    let dup = store
        .append_room(message("general", "alice", "m20", Some("m20")))
        .await
        .expect("append");
    assert!(dup.duplicate);
    assert_eq!(dup.message.seq, Seq(20));
}

#[tokio::test]
async fn retention_by_age_deletes_only_old_messages() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chat.db");
    let config = SqliteConfig::default()
        .with_retention(Retention::default().with_max_age(Some(Duration::from_secs(60))));
    let store = SqliteStore::open(&path, config).expect("open");
    fill(&store, 5).await;
    // Age those five by an hour. Only the wall clock ages a message (no paused clock
    // drives the store's `SystemTime`), so instead of waiting for it, their timestamps
    // are moved back through a second connection, as an hour would have.
    let db = rusqlite::Connection::open(&path).expect("a second connection");
    db.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let aged = db
        .execute("UPDATE messages SET ts = ts - 3600000", [])
        .expect("age the messages");
    assert_eq!(aged, 5);
    drop(db);
    // Young: a minute from the cutoff, whatever the machine's load.
    store
        .append_room(message("general", "bob", "young", None))
        .await
        .expect("append");
    assert_eq!(store.apply_retention().await.expect("retention"), 5);
    let page = store
        .room_page(&room("general"), LATEST)
        .await
        .expect("page");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, vec![6]);
    assert_eq!(page.last_seq, Seq(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(open(&dir.path().join("chat.db")));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..50 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for n in 0..10 {
                store
                    .append_room(message("general", &format!("u{w}"), &format!("{n}"), None))
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    let stats = store.stats();
    assert_eq!(stats.appends, 500);
    assert!(
        stats.commits < 500,
        "50 concurrent senders never shared a commit: {stats:?}"
    );
    println!(
        "500 appends from 50 concurrent senders in {} commits",
        stats.commits
    );
}
