//! Measures the PostgreSQL store against a real server: acknowledged appends per second
//! and ack latency at a given number of concurrent senders, and the time to read a page
//! of 50 from a room with 1,000,000 messages.
//!
//! ```sh
//! cargo run --release -p chat-postgres-store --example pg_bench -- \
//!     postgres://postgres@127.0.0.1:5432/postgres acks 100 10 [ROOMS]
//! cargo run --release -p chat-postgres-store --example pg_bench -- \
//!     postgres://postgres@127.0.0.1:5432/postgres page 1000000
//! ```
//!
//! Each run creates a database `chat_bench_<random>` next to the one in the URL and
//! drops it at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::{ClientMsgId, Content, NewRoomMessage, PageRange, RoomName, Seq, Store, UserId};
use chat_postgres_store::{PostgresConfig, PostgresStore};
use tokio_postgres::NoTls;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pg_bench URL acks SENDERS SECONDS [ROOMS] | pg_bench URL page MESSAGES";
    let (url, scenario) = match (args.first(), args.get(1)) {
        (Some(url), Some(scenario)) => (url.clone(), scenario.clone()),
        _ => return Err(usage.into()),
    };
    let number = |i: usize, default: u64| -> Result<u64, Error> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };

    let name = format!("chat_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = connect(&url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let db_url = with_database(&url, &name);
    let result = match scenario.as_str() {
        "acks" => {
            let rooms = number(4, 1)?.max(1) as usize;
            acks(&db_url, number(2, 100)? as usize, number(3, 10)?, rooms).await
        }
        "page" => page(&db_url, number(2, 1_000_000)?).await,
        _ => Err(usage.into()),
    };
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await?;
    result
}

async fn acks(url: &str, senders: usize, seconds: u64, rooms: usize) -> Result<(), Error> {
    let mut config = PostgresConfig::new(url);
    if let Ok(committers) = std::env::var("PG_BENCH_COMMITTERS") {
        config.committers = committers.parse()?;
    }
    let committers = config.committers;
    let store = Arc::new(PostgresStore::open(config).await?);
    let room = RoomName::parse("bench-0")?;
    let warmup = Duration::from_secs(1);
    let run = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..senders {
        let store = Arc::clone(&store);
        let room = RoomName::parse(&format!("bench-{}", sender % rooms))?;
        tasks.spawn(async move {
            let user = UserId::parse(&format!("sender-{sender}"))?;
            let content = Content::parse("a message of an ordinary length, about sixty bytes")
                .ok_or("empty")?;
            let mut latencies = Vec::new();
            let mut n = 0_u64;
            loop {
                let sent = Instant::now();
                if sent.duration_since(start) >= warmup + run {
                    break;
                }
                n += 1;
                store
                    .append_room(NewRoomMessage {
                        room: room.clone(),
                        user_id: user.clone(),
                        username: "bench".into(),
                        content: content.clone(),
                        client_msg_id: Some(ClientMsgId::parse(&format!("m{n}"))?),
                    })
                    .await?;
                if sent.duration_since(start) >= warmup {
                    latencies.push(sent.elapsed());
                }
            }
            Ok::<_, Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    latencies.sort();
    let count = latencies.len();
    let last = store
        .room_page(&room, PageRange::Latest { limit: 1 })
        .await?
        .last_seq;
    println!(
        "acks senders={senders} rooms={rooms} committers={committers} seconds={seconds} \
         acked={count} acked_per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} \
         room0_stored={}",
        count as f64 / run.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        last.0,
    );
    Ok(())
}

async fn page(url: &str, messages: u64) -> Result<(), Error> {
    // Creates the schema.
    let store = PostgresStore::open(PostgresConfig::new(url)).await?;
    let client = connect(url).await?;
    let loading = Instant::now();
    let messages = i64::try_from(messages)?;
    client
        .execute(
            "INSERT INTO chat_streams (kind, name, peer, epoch, last_seq, last_ts) \
             SELECT 0, 'big', '', epoch, $1, 0 FROM chat_meta",
            &[&messages],
        )
        .await?;
    // The whole history in one statement.
    client
        .execute(
            "INSERT INTO chat_messages (stream_id, seq, id, sender_id, sender_name, content, ts) \
             SELECT s.id, g, gen_random_uuid(), 'user-' || (g % 100), 'someone', \
                    convert_to('message number ' || g || ' of the big room', 'UTF8'), \
                    1700000000000 + g \
             FROM chat_streams s, generate_series(1, $1::bigint) AS g WHERE s.name = 'big'",
            &[&messages],
        )
        .await?;
    client.batch_execute("ANALYZE").await?;
    println!(
        "loaded {messages} messages in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let room = RoomName::parse("big")?;
    let reads = 2000_u64;
    for (label, range) in [
        ("latest", PageRange::Latest { limit: 50 }),
        (
            "before_middle",
            PageRange::Before {
                seq: Seq(u64::try_from(messages / 2)?),
                limit: 50,
            },
        ),
        (
            "after_start",
            PageRange::After {
                seq: Seq(1000),
                limit: 50,
            },
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..reads {
            let started = Instant::now();
            let page = store.room_page(&room, range).await?;
            times.push(started.elapsed());
            if page.messages.len() != 50 {
                return Err("a page of 50 expected".into());
            }
        }
        times.sort();
        println!(
            "page {label} limit=50 history={messages} reads={reads} p50_ms={:.3} p99_ms={:.3}",
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.99)),
        );
    }
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let query = url.find('?');
    let path = url[scheme_end..].find('/').map(|i| scheme_end + i);
    let tail = query.map_or("", |q| &url[q..]);
    let base_end = path.or(query).unwrap_or(url.len());
    format!("{}/{database}{tail}", &url[..base_end])
}
