//! Engine benchmarks: what one chat message costs the engine in a room of 1, 100 and
//! 10,000 members (per recipient), what a join and a leave cost as the room grows, and
//! what the runtime's fan-out (encode once, one `Bytes` clone per recipient) costs.
//!
//! ```text
//! cargo bench -p chat-core --features testkit --bench engine
//! ```
//!
//! Only the engine is timed: store work is done by [`SimStore`] outside the timed
//! sections, and deliveries are counted from `Recipients` without walking them, except
//! in the benchmarks whose name says they walk (`+walk`) or fan out.
//!
//! Results, machine facts and how to read them: `docs/BENCHMARKS.md`.

// A benchmark reads the clock to time things; the engine itself is still only handed
// `now`, as everywhere else.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_core::protocol::{ServerEvent, encode};
use chat_core::testkit::sim::SimStore;
use chat_core::{
    ClientCommand, ClientMsgId, Config, ConnId, Content, Engine, Identity, Input, MessageId,
    NewRoomMessage, Output, Recipients, RoomName, Seq, SequentialIds, StoreOp, StoreReply,
    StoreRequest, StoredMessage, Timestamp, UserId, Username,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const ROOM: &str = "general";
const CONTENT: &str = "Deploy done, dashboards are green. Any 502s?";
/// Messages in the room before the benchmark starts, so joins carry a full history.
const HISTORY: usize = 50;
/// Messages prepared (appended to the store) per timed batch of round trips.
const BATCH: u64 = 1024;

/// An engine with one room, driven synchronously; store work is done by [`SimStore`].
struct Bench {
    engine: Engine,
    store: SimStore,
    now: Instant,
    room: RoomName,
    sender: ConnId,
    next_conn: u64,
    /// Makes every stored `clientMsgId` unique (the store deduplicates on it).
    next_msg: u64,
}

impl Bench {
    /// A room `general` with `members` member connections (one user each) and
    /// [`HISTORY`] stored messages. Rate limits are off.
    fn with_members(members: usize) -> Self {
        let mut store = SimStore::default();
        // Keep the store's log short: the benchmarks append millions of messages, and
        // each append scans the log for a duplicate `clientMsgId`.
        store.retain = HISTORY + 14;
        let mut b = Bench {
            engine: Engine::new(Config::unlimited(), Box::new(SequentialIds::default())),
            store,
            now: Instant::now(),
            room: RoomName::parse(ROOM).expect("valid room"),
            sender: ConnId(1),
            next_conn: 0,
            next_msg: 0,
        };
        let author = UserId::parse("author").expect("valid user id");
        for _ in 0..HISTORY {
            let m = b.new_message(&author);
            let _ = b.store.perform(StoreOp::AppendRoom(m));
        }
        let start = Instant::now();
        for _ in 0..members {
            let conn = b.connect();
            b.drive(join(conn));
        }
        assert_eq!(b.engine.members_of(&b.room).len(), members);
        if members >= 1_000 {
            // Quadratic in total by nature: the k-th joiner gets a `room_users` of k.
            println!(
                "setup: {members} connections joined one by one in {:.1?}",
                start.elapsed()
            );
        }
        b
    }

    /// Opens an authenticated connection for a fresh user.
    fn connect(&mut self) -> ConnId {
        self.next_conn += 1;
        let n = self.next_conn;
        let identity = Identity {
            user_id: UserId::parse(&format!("u{n}")).expect("valid user id"),
            username: Username::parse(&format!("user{n}")).expect("valid username"),
        };
        let conn = ConnId(n);
        self.drive(Input::Connected {
            conn,
            identity: Some(identity),
        });
        conn
    }

    /// Feeds an input and drains the outputs, performing store work at once.
    fn drive(&mut self, input: Input) {
        let mut next = Some(input);
        while let Some(input) = next.take() {
            self.engine.handle(self.now, input);
            while let Some(output) = self.engine.poll_output() {
                if let Output::Store(StoreRequest { ticket, op }) = output {
                    let reply = self.store.perform(op);
                    next = Some(Input::StoreReply { ticket, reply });
                }
            }
        }
    }

    fn new_message(&mut self, author: &UserId) -> NewRoomMessage {
        self.next_msg += 1;
        let client_msg_id = format!("c-{}", self.next_msg);
        NewRoomMessage {
            room: self.room.clone(),
            user_id: author.clone(),
            username: "alice".into(),
            content: Content::parse(CONTENT).expect("non-empty content"),
            client_msg_id: Some(ClientMsgId::parse(&client_msg_id).expect("valid clientMsgId")),
        }
    }

    /// `count` messages appended to the store now (consecutive `seq`s continuing the
    /// room's stream), as append replies ready to be fed back.
    fn prepare_appends(&mut self, count: u64) -> Vec<StoreReply> {
        let author = self
            .engine
            .user_of(self.sender)
            .expect("the sender is connected")
            .clone();
        (0..count)
            .map(|_| {
                let m = self.new_message(&author);
                self.store.perform(StoreOp::AppendRoom(m))
            })
            .collect()
    }
}

fn join(conn: ConnId) -> Input {
    Input::Command {
        conn,
        command: ClientCommand::JoinRoom {
            room: ROOM.into(),
            since: None,
            epoch: None,
            keep_rooms: false,
        },
        reference: None,
    }
}

fn leave(conn: ConnId) -> Input {
    Input::Command {
        conn,
        command: ClientCommand::LeaveRoom {
            room: Some(ROOM.into()),
        },
        reference: None,
    }
}

fn chat(conn: ConnId) -> Input {
    Input::Command {
        conn,
        command: ClientCommand::ChatMessage {
            content: CONTENT.into(),
            room: Some(ROOM.into()),
            client_msg_id: Some("c-18f2a9-42".into()),
        },
        reference: None,
    }
}

/// How many connections receive a delivery, without walking a room's member list.
fn recipient_count(to: &Recipients) -> usize {
    match to {
        Recipients::One(_) => 1,
        Recipients::List(l) => l.len(),
        // `except` only ever names members.
        Recipients::Room { members, except } => members.len() - except.len(),
    }
}

/// Walks the recipient list as the runtime does, touching every id.
fn walk(to: &Recipients) -> usize {
    let mut n = 0;
    for conn in to.iter() {
        black_box(conn);
        n += 1;
    }
    n
}

fn expect_store(output: Option<Output>) -> StoreRequest {
    match output {
        Some(Output::Store(request)) => request,
        other => panic!("expected a store request, got {other:?}"),
    }
}

/// One chat message's full engine round trip, `iters` times: `chat_message` command,
/// the append request it emits, the (prepared) append reply, and draining the
/// `message_received` broadcast. Returns the time spent in the engine.
fn chat_round_trips(b: &mut Bench, iters: u64, members: usize, walk_recipients: bool) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        left -= n;
        let replies = b.prepare_appends(n);
        let inputs: Vec<Input> = (0..n).map(|_| chat(b.sender)).collect();
        let mut delivered = 0usize;
        let start = Instant::now();
        for (input, reply) in inputs.into_iter().zip(replies) {
            b.engine.handle(b.now, input);
            let ticket = expect_store(b.engine.poll_output()).ticket;
            b.engine.handle(b.now, Input::StoreReply { ticket, reply });
            while let Some(output) = b.engine.poll_output() {
                if let Output::Deliver { to, .. } = &output {
                    delivered += if walk_recipients {
                        walk(to)
                    } else {
                        recipient_count(to)
                    };
                }
            }
        }
        total += start.elapsed();
        assert_eq!(
            delivered,
            members * n as usize,
            "every member got every message"
        );
    }
    total
}

fn chat_message(c: &mut Criterion) {
    let mut g = c.benchmark_group("chat_message");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    for members in [1usize, 100, 10_000] {
        // Built on first use, so a filtered run (`-- chat_message/engine/1`) builds only
        // the rooms it needs.
        let mut room = None;
        g.throughput(Throughput::Elements(members as u64));
        g.bench_function(BenchmarkId::new("engine", members), |bencher| {
            let b = room.get_or_insert_with(|| Bench::with_members(members));
            bencher.iter_custom(|iters| chat_round_trips(b, iters, members, false))
        });
        g.bench_function(BenchmarkId::new("engine+walk", members), |bencher| {
            let b = room.get_or_insert_with(|| Bench::with_members(members));
            bencher.iter_custom(|iters| chat_round_trips(b, iters, members, true))
        });
    }
    g.finish();
}

/// Which half of a join/leave cycle is timed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timed {
    Join,
    Leave,
}

/// `iters` join/leave cycles of one extra connection (a new user) in a room of
/// `members`; times the joins or the leaves. A join is timed from the `join_room`
/// command to its last output (`user_joined` to all, `room_joined`, `message_history`,
/// `room_users`), dropping the outputs included; the store read is not timed.
fn join_leave_cycles(
    b: &mut Bench,
    joiner: ConnId,
    iters: u64,
    members: usize,
    timed: Timed,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        // Join: command → store read → activation.
        let start = Instant::now();
        b.engine.handle(b.now, join(joiner));
        let StoreRequest { ticket, op } = expect_store(b.engine.poll_output());
        let join_first = start.elapsed();
        let reply = b.store.perform(op);
        let start = Instant::now();
        b.engine.handle(b.now, Input::StoreReply { ticket, reply });
        let (mut others, mut room_users) = (0, 0);
        while let Some(output) = b.engine.poll_output() {
            if let Output::Deliver { to, event } = &output {
                match &**event {
                    ServerEvent::UserJoined { .. } => others += recipient_count(to),
                    ServerEvent::RoomUsers { users, .. } => room_users = users.len(),
                    _ => {}
                }
            }
        }
        let join_second = start.elapsed();
        assert_eq!((others, room_users), (members, members + 1));

        // Leave: command → `user_left` to all, `room_left` to the leaver.
        let start = Instant::now();
        b.engine.handle(b.now, leave(joiner));
        let mut others = 0;
        while let Some(output) = b.engine.poll_output() {
            if let Output::Deliver { to, event } = &output
                && matches!(**event, ServerEvent::UserLeft { .. })
            {
                others += recipient_count(to);
            }
        }
        let leave_time = start.elapsed();
        assert_eq!(others, members);

        total += match timed {
            Timed::Join => join_first + join_second,
            Timed::Leave => leave_time,
        };
    }
    total
}

fn join_leave(c: &mut Criterion) {
    let mut g = c.benchmark_group("room");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    for members in [100usize, 1_000, 10_000] {
        let mut room = None;
        let mut setup = || {
            let mut b = Bench::with_members(members);
            let joiner = b.connect();
            (b, joiner)
        };
        g.sample_size(if members >= 10_000 { 20 } else { 50 });
        g.throughput(Throughput::Elements(members as u64));
        g.bench_function(BenchmarkId::new("join", members), |bencher| {
            let (b, joiner) = room.get_or_insert_with(&mut setup);
            bencher.iter_custom(|iters| join_leave_cycles(b, *joiner, iters, members, Timed::Join))
        });
        g.bench_function(BenchmarkId::new("leave", members), |bencher| {
            let (b, joiner) = room.get_or_insert_with(&mut setup);
            bencher.iter_custom(|iters| join_leave_cycles(b, *joiner, iters, members, Timed::Leave))
        });
    }
    g.finish();
}

/// What the runtime does with one room broadcast: encode once, then one `Bytes` clone
/// per recipient. Two variants: the clones pushed into one reused `Vec` (the cost of the
/// clone itself: one atomic increment, and one decrement when released), and the clones
/// pushed onto per-connection queues looked up by id, as the runtime's hub does (which
/// adds a cache miss or two per recipient once the queues outgrow the cache). Every
/// clone is released inside the timed section.
fn fan_out(c: &mut Criterion) {
    const MEMBERS: usize = 10_000;
    let event = ServerEvent::MessageReceived(Arc::new(StoredMessage {
        id: MessageId(uuid::Uuid::from_u128(
            0x6f1c_2d3e_4b5a_4c6d_8e9f_0a1b_2c3d_4e5f,
        )),
        room: RoomName::parse(ROOM).expect("valid room"),
        seq: Seq(48_213),
        user_id: UserId::from(uuid::Uuid::from_u128(
            0x0e4f_9a2b_7c3d_4e1f_a5b6_c7d8_e9f0_1a2b,
        )),
        username: "alice".into(),
        content: Content::parse(CONTENT).expect("non-empty content"),
        timestamp: Timestamp(1_795_444_680_123),
        client_msg_id: Some(ClientMsgId::parse("c-18f2a9-42").expect("valid clientMsgId")),
    }));
    let members: Arc<[ConnId]> = (1..=MEMBERS as u64).map(ConnId).collect();
    let to = Recipients::Room {
        members,
        except: Default::default(),
    };

    let mut g = c.benchmark_group("fan_out");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(MEMBERS as u64));

    let mut sink: Vec<Bytes> = Vec::with_capacity(MEMBERS);
    g.bench_function(BenchmarkId::new("encode+clone", MEMBERS), |bencher| {
        bencher.iter(|| {
            let bytes = encode(black_box(&event));
            for _conn in to.iter() {
                sink.push(bytes.clone());
            }
            sink.clear();
        })
    });

    // Indexed by id like the runtime's slab; ring buffers are reused, as the runtime's.
    let mut queues: Vec<VecDeque<Bytes>> = vec![VecDeque::with_capacity(16); MEMBERS + 1];
    g.bench_function(BenchmarkId::new("encode+clone+queue", MEMBERS), |bencher| {
        bencher.iter(|| {
            let bytes = encode(black_box(&event));
            for conn in to.iter() {
                let index = usize::try_from(conn.0).expect("small ids");
                if let Some(queue) = queues.get_mut(index) {
                    queue.push_back(bytes.clone());
                }
            }
            for queue in &mut queues {
                queue.clear();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, chat_message, join_leave, fan_out);
criterion_main!(benches);
