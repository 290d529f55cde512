//! A history page of 50 from a room with 1,000,000 messages (issue 13's target: ≤ 2 ms),
//! newest, in the middle and near the start; and one append's commit (group of one).
//!
//! `cargo bench -p chat-sqlite-store --bench page` (the setup writes the million
//! messages through the store, about half a minute; the file is deleted afterwards).
//! `PAGE_BENCH_MESSAGES` changes the history's length.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use chat_core::{Content, NewRoomMessage, PageRange, RoomName, Seq, Store, UserId};
use chat_sqlite_store::{SqliteConfig, SqliteStore, Synchronous};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;

fn message(room: &RoomName, n: u64) -> NewRoomMessage {
    NewRoomMessage {
        room: room.clone(),
        user_id: UserId::parse(&format!("user{}", n % 100)).expect("user"),
        username: format!("User {}", n % 100).into(),
        content: Content::parse(&format!("message number {n} of the long history"))
            .expect("content"),
        client_msg_id: None,
    }
}

fn pages(c: &mut Criterion) {
    let total: u64 = std::env::var("PAGE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chat.db");
    let room = RoomName::parse("long").expect("room");
    {
        // The setup only: NORMAL (no fsync per commit) and many appends in flight, so
        // group commit writes thousands per transaction.
        let store = Arc::new(
            SqliteStore::open(
                &path,
                SqliteConfig::default().with_synchronous(Synchronous::Normal),
            )
            .expect("open"),
        );
        let started = Instant::now();
        runtime.block_on(async {
            futures_util::stream::iter(1..=total)
                .map(|n| {
                    let store = Arc::clone(&store);
                    let m = message(&room, n);
                    async move { store.append_room(m).await.expect("append") }
                })
                .buffer_unordered(2048)
                .for_each(|_| async {})
                .await;
        });
        eprintln!(
            "setup: {total} messages in {:.1} s ({} commits)",
            started.elapsed().as_secs_f64(),
            store.stats().commits
        );
    }
    let store = SqliteStore::open(&path, SqliteConfig::default()).expect("reopen");
    let mut group = c.benchmark_group(format!("sqlite page of 50 from {total}"));
    for (name, range) in [
        ("latest", PageRange::Latest { limit: 50 }),
        (
            "before middle",
            PageRange::Before {
                seq: Seq(total / 2),
                limit: 50,
            },
        ),
        (
            "after 1000",
            PageRange::After {
                seq: Seq(1000),
                limit: 50,
            },
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let page = runtime
                    .block_on(store.room_page(&room, range))
                    .expect("page");
                assert_eq!(page.messages.len(), 50);
                black_box(page)
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("sqlite append");
    let mut n = total;
    group.bench_function("one append, synchronous=FULL, alone", |b| {
        b.iter(|| {
            n += 1;
            runtime
                .block_on(store.append_room(message(&room, n)))
                .expect("append")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = pages
}
criterion_main!(benches);
