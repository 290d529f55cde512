//! A deterministic simulation of the engine: no tokio, no sockets, no clock.
//!
//! [`Sim`] drives an [`Engine`] the way the runtime does — it encodes every delivered
//! event with the real codec and records the frames per connection — but store work is
//! performed by [`SimStore`], a small synchronous store, and *when* it is performed is
//! up to the test: at once ([`StoreMode::Immediate`]) or held until the test completes
//! requests in any order ([`StoreMode::Held`]). Time only moves when the test says so.
//!
//! The same harness serves the unit tests, the property tests and the fuzz targets.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::engine::{
    Config, Engine, Identity, Input, Output, Recipients, StoreOp, StoreReply, StoreRequest,
};
use crate::ids::{ConnId, Epoch, MessageId, RoomName, Seq, SequentialIds, UserId, Username};
use crate::message::{NewDm, NewRoomMessage, StoredDm, StoredMessage, Timestamp};
use crate::protocol::{CloseCode, Decoded, ServerEvent, decode_frame, encode};
use crate::store::{Appended, Page, PageRange, StoreError};

/// When the simulation performs store requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// As soon as they are emitted, in order.
    Immediate,
    /// Only when the test calls [`Sim::complete`] (in any order).
    Held,
}

/// A synchronous store with the [`Store`](crate::Store) contract, for simulations.
/// Ids and timestamps come from counters, so runs are reproducible.
#[derive(Debug)]
pub struct SimStore {
    epoch: Epoch,
    /// Rooms whose stream was forgotten ([`SimStore::evict_room`]), with their new epoch.
    room_epochs: HashMap<RoomName, Epoch>,
    evictions: u64,
    rooms: HashMap<RoomName, Vec<Arc<StoredMessage>>>,
    dms: HashMap<(UserId, UserId), Vec<Arc<StoredDm>>>,
    next_id: u128,
    /// Fail this many of the next requests with `StoreError::Unavailable`.
    pub fail_next: usize,
    /// Keep at most this many messages per room (oldest dropped), like a bounded store.
    pub retain: usize,
}

impl Default for SimStore {
    fn default() -> Self {
        Self {
            epoch: Epoch::new("sim-epoch"),
            room_epochs: HashMap::new(),
            evictions: 0,
            rooms: HashMap::new(),
            dms: HashMap::new(),
            next_id: 0,
            fail_next: 0,
            retain: usize::MAX,
        }
    }
}

fn page<M>(all: &[Arc<M>], seq_of: impl Fn(&M) -> Seq, range: PageRange, epoch: &Epoch) -> Page<M> {
    let last_seq = all.last().map_or(Seq(0), |m| seq_of(m));
    let (messages, has_more): (Vec<Arc<M>>, bool) = match range {
        PageRange::Latest { limit } => {
            let start = all.len().saturating_sub(limit);
            (all[start..].to_vec(), start > 0)
        }
        PageRange::Before { seq, limit } => {
            let end = all.partition_point(|m| seq_of(m) < seq);
            let start = end.saturating_sub(limit);
            (all[start..end].to_vec(), start > 0)
        }
        PageRange::After { seq, limit } => {
            let start = all.partition_point(|m| seq_of(m) <= seq);
            let end = (start + limit).min(all.len());
            (all[start..end].to_vec(), end < all.len())
        }
    };
    Page {
        epoch: epoch.clone(),
        last_seq,
        messages,
        has_more,
    }
}

fn conversation(a: &UserId, b: &UserId) -> (UserId, UserId) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl SimStore {
    /// Every message of a room still kept, oldest first.
    pub fn room_messages(&self, room: &RoomName) -> &[Arc<StoredMessage>] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// The epoch of a room's stream: the store's, or a fresh one after an eviction.
    pub fn room_epoch(&self, room: &RoomName) -> &Epoch {
        self.room_epochs.get(room).unwrap_or(&self.epoch)
    }

    /// Forgets a room's whole stream, as a store with a memory budget does with an idle
    /// one: its messages and idempotency keys are gone, and its next message starts again
    /// at `seq` 1 under a fresh epoch (`sim-epoch-evicted-N`).
    pub fn evict_room(&mut self, room: &RoomName) {
        self.rooms.remove(room);
        self.evictions += 1;
        let epoch = Epoch::new(&format!("sim-epoch-evicted-{}", self.evictions));
        self.room_epochs.insert(room.clone(), epoch);
    }

    fn next_id(&mut self) -> MessageId {
        self.next_id += 1;
        MessageId(uuid::Uuid::from_u128(self.next_id))
    }

    /// Performs one request.
    pub fn perform(&mut self, op: StoreOp) -> StoreReply {
        let failing = self.fail_next > 0;
        if failing {
            self.fail_next -= 1;
        }
        let fail = || StoreError::unavailable("simulated failure");
        match op {
            StoreOp::AppendRoom(m) => StoreReply::RoomAppended(if failing {
                Err(fail())
            } else {
                Ok(self.append_room(m))
            }),
            StoreOp::RoomPage { room, range } => StoreReply::RoomPage(if failing {
                Err(fail())
            } else {
                let all = self.room_messages(&room);
                let mut p = page(all, |m| m.seq, range, self.room_epoch(&room));
                // The head survives eviction even when every message is gone.
                p.last_seq = self
                    .rooms
                    .get(&room)
                    .and_then(|v| v.last())
                    .map_or(Seq(0), |m| m.seq);
                Ok(p)
            }),
            StoreOp::AppendDm(m) => StoreReply::DmAppended(if failing {
                Err(fail())
            } else {
                Ok(self.append_dm(m))
            }),
            StoreOp::DmPage { a, b, range } => StoreReply::DmPage(if failing {
                Err(fail())
            } else {
                let all = self
                    .dms
                    .get(&conversation(&a, &b))
                    .map_or(&[][..], Vec::as_slice);
                Ok(page(all, |m| m.seq, range, &self.epoch))
            }),
        }
    }

    fn append_room(&mut self, m: NewRoomMessage) -> Appended<StoredMessage> {
        let epoch = self.room_epoch(&m.room).clone();
        let log = self.rooms.entry(m.room.clone()).or_default();
        if let Some(cmid) = &m.client_msg_id {
            let found = log
                .iter()
                .find(|s| s.user_id == m.user_id && s.client_msg_id.as_ref() == Some(cmid));
            if let Some(found) = found {
                return Appended {
                    message: found.clone(),
                    duplicate: true,
                    epoch,
                };
            }
        }
        let seq = log.last().map_or(Seq(1), |s| s.seq.next());
        self.next_id += 1;
        let id = MessageId(uuid::Uuid::from_u128(self.next_id));
        let stored = Arc::new(StoredMessage {
            id,
            room: m.room,
            seq,
            user_id: m.user_id,
            username: m.username,
            content: m.content,
            timestamp: Timestamp(1_700_000_000_000 + seq.0),
            client_msg_id: m.client_msg_id,
        });
        let log = self.rooms.entry(stored.room.clone()).or_default();
        log.push(stored.clone());
        if log.len() > self.retain {
            let excess = log.len() - self.retain;
            log.drain(..excess);
        }
        Appended {
            message: stored,
            duplicate: false,
            epoch,
        }
    }

    fn append_dm(&mut self, m: NewDm) -> Appended<StoredDm> {
        let key = conversation(&m.from, &m.to);
        if let Some(cmid) = &m.client_msg_id {
            let found = self.dms.get(&key).and_then(|log| {
                log.iter()
                    .find(|s| s.from == m.from && s.client_msg_id.as_ref() == Some(cmid))
                    .cloned()
            });
            if let Some(found) = found {
                return Appended {
                    message: found,
                    duplicate: true,
                    epoch: self.epoch.clone(),
                };
            }
        }
        let id = self.next_id();
        let log = self.dms.entry(key).or_default();
        let seq = log.last().map_or(Seq(1), |s| s.seq.next());
        let stored = Arc::new(StoredDm {
            id,
            seq,
            from: m.from,
            from_username: m.from_username,
            to: m.to,
            to_username: m.to_username,
            content: m.content,
            timestamp: Timestamp(1_700_000_000_000 + seq.0),
            client_msg_id: m.client_msg_id,
        });
        log.push(stored.clone());
        Appended {
            message: stored,
            duplicate: false,
            epoch: self.epoch.clone(),
        }
    }
}

/// One frame a simulated connection received, decoded back from its wire bytes.
pub type Frame = Value;

/// The clients' side of a simulation: what each connection received (decoded from the
/// bytes the real encoder produced) and whether the engine closed it. Shared by [`Sim`]
/// and the cluster's multi-engine `Mesh`.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    inboxes: HashMap<ConnId, VecDeque<Frame>>,
    closed: HashMap<ConnId, (CloseCode, &'static str)>,
}

impl Clients {
    /// Starts recording what `conn` receives.
    pub(crate) fn open(&mut self, conn: ConnId) {
        self.inboxes.insert(conn, VecDeque::new());
    }

    /// Records a `Deliver`: the event encoded once, as the runtime does, and decoded
    /// into every recipient's inbox.
    pub(crate) fn deliver(&mut self, to: &Recipients, event: &ServerEvent) {
        let bytes = encode(event);
        let frame: Value = serde_json::from_slice(&bytes).expect("the encoder produces JSON");
        for conn in to.iter() {
            if let Some(inbox) = self.inboxes.get_mut(&conn) {
                inbox.push_back(frame.clone());
            }
        }
    }

    /// Records a `Close`.
    pub(crate) fn close(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        self.closed.insert(conn, (code, reason));
    }

    /// Frames `conn` received since the last call, oldest first.
    pub(crate) fn take(&mut self, conn: ConnId) -> Vec<Frame> {
        self.inboxes
            .get_mut(&conn)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Frames `conn` received since the last call, as their `type`s.
    pub(crate) fn take_types(&mut self, conn: ConnId) -> Vec<String> {
        self.take(conn)
            .iter()
            .map(|f| f["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// Whether the engine closed `conn`, with code and reason.
    pub(crate) fn closed(&self, conn: ConnId) -> Option<(CloseCode, &'static str)> {
        self.closed.get(&conn).copied()
    }
}

/// A simulated server. See the [module docs](self).
#[derive(Debug)]
pub struct Sim {
    /// The engine under test.
    pub engine: Engine,
    /// The store.
    pub store: SimStore,
    /// The simulated time.
    pub now: Instant,
    mode: StoreMode,
    held: Vec<StoreRequest>,
    clients: Clients,
    next_conn: u64,
    /// Every output the engine produced, in order (for property checks).
    pub log: Vec<Output>,
    keep_log: bool,
}

impl Sim {
    /// A simulation with `config`, deterministic ids and immediate store replies.
    #[allow(clippy::disallowed_methods)] // the simulation's one clock read: a base instant
    pub fn new(config: Config) -> Self {
        Self {
            engine: Engine::new(config, Box::new(SequentialIds::default())),
            store: SimStore::default(),
            now: Instant::now(),
            mode: StoreMode::Immediate,
            held: Vec::new(),
            clients: Clients::default(),
            next_conn: 0,
            log: Vec::new(),
            keep_log: false,
        }
    }

    /// Chooses when store requests are performed.
    pub fn set_store_mode(&mut self, mode: StoreMode) {
        self.mode = mode;
        self.pump();
    }

    /// Keeps every output in [`Sim::log`].
    pub fn keep_log(&mut self) {
        self.keep_log = true;
    }

    /// Opens an anonymous connection; its `connection` frame is waiting in its inbox.
    pub fn connect(&mut self) -> ConnId {
        self.connect_with(None)
    }

    /// Opens an authenticated connection for `user` named `name`.
    pub fn connect_as(&mut self, user: &str, name: &str) -> ConnId {
        let identity = Identity {
            user_id: UserId::parse(user).expect("valid test user id"),
            username: Username::parse(name).expect("valid test username"),
        };
        self.connect_with(Some(identity))
    }

    fn connect_with(&mut self, identity: Option<Identity>) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.clients.open(conn);
        self.input(Input::Connected { conn, identity });
        conn
    }

    /// Sends a JSON value as a text frame through the real decoder.
    pub fn send(&mut self, conn: ConnId, frame: Value) {
        self.send_raw(conn, frame.to_string().as_bytes());
    }

    /// Sends raw bytes as a text frame through the real decoder.
    pub fn send_raw(&mut self, conn: ConnId, frame: &[u8]) {
        let Decoded { command, reference } = decode_frame(frame);
        let input = match command {
            Ok(command) => Input::Command {
                conn,
                command,
                reference,
            },
            Err(error) => Input::Malformed {
                conn,
                error,
                reference,
            },
        };
        self.input(input);
    }

    /// Reports a connection as gone.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.input(Input::Disconnected { conn });
    }

    /// Feeds an input and processes the resulting outputs.
    pub fn input(&mut self, input: Input) {
        self.engine.handle(self.now, input);
        self.pump();
    }

    /// Moves time forward, firing due timers.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.engine.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.engine.handle_timeout(self.now);
            self.pump();
        }
        self.now = target;
    }

    /// Store requests waiting in [`StoreMode::Held`].
    pub fn held(&self) -> &[StoreRequest] {
        &self.held
    }

    /// Performs the held request at `index` and feeds its reply.
    pub fn complete(&mut self, index: usize) {
        if index < self.held.len() {
            let request = self.held.remove(index);
            let reply = self.store.perform(request.op);
            self.input(Input::StoreReply {
                ticket: request.ticket,
                reply,
            });
        }
    }

    /// Removes a held request without performing it (to answer it later by hand with
    /// [`Sim::input`], e.g. with a reply computed at another moment).
    pub fn take_held(&mut self, index: usize) -> Option<StoreRequest> {
        (index < self.held.len()).then(|| self.held.remove(index))
    }

    /// Performs every held request, oldest first, until none is left.
    pub fn complete_all(&mut self) {
        while !self.held.is_empty() {
            self.complete(0);
        }
    }

    /// Frames `conn` received since the last call, oldest first.
    pub fn take(&mut self, conn: ConnId) -> Vec<Frame> {
        self.clients.take(conn)
    }

    /// Frames `conn` received since the last call, as their `type`s.
    pub fn take_types(&mut self, conn: ConnId) -> Vec<String> {
        self.clients.take_types(conn)
    }

    /// Whether the engine closed `conn`, with code and reason.
    pub fn closed(&self, conn: ConnId) -> Option<(CloseCode, &'static str)> {
        self.clients.closed(conn)
    }

    fn pump(&mut self) {
        loop {
            while let Some(output) = self.engine.poll_output() {
                if self.keep_log {
                    self.log.push(output.clone());
                }
                match output {
                    Output::Deliver { to, event } => self.clients.deliver(&to, &event),
                    Output::Close { conn, code, reason } => self.clients.close(conn, code, reason),
                    Output::Store(request) => self.held.push(request),
                    // The simulation is a single node: its engine has no cluster.
                    Output::Cluster(_) => {}
                }
            }
            if self.mode == StoreMode::Held || self.held.is_empty() {
                return;
            }
            let request = self.held.remove(0);
            let reply = self.store.perform(request.op);
            self.engine.handle(
                self.now,
                Input::StoreReply {
                    ticket: request.ticket,
                    reply,
                },
            );
        }
    }
}
