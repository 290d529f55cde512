//! The sans-IO chat engine: users, rooms, DMs, typing, presence and rate limits as a
//! pure state machine.
//!
//! The engine does no I/O, reads no clock and draws no random numbers. It is driven in
//! the manner of `quinn-proto`:
//!
//! * **`handle(now, input)`** feeds something that happened ([`Input`]);
//! * **`poll_output()`** yields what must be done ([`Output`]) until it returns `None`;
//! * **`poll_timeout()`** says when the engine next needs **`handle_timeout(now)`**
//!   (typing indicators stop by themselves).
//!
//! Outputs are queued inside the engine, so feeding several inputs before draining is
//! fine. Getters ([`Engine::connection_count`] and friends) never change state.
//!
//! Handlers live in one file per concern: [`username`](self) rules, joins and leaves,
//! room messages and history, direct messages, typing. Each borrows only the parts of
//! the state it needs; replies and broadcasts go through the outbox.

mod cluster;
mod config;
mod direct;
mod io;
mod join;
mod messages;
mod outbox;
mod rate;
mod remote;
mod room;
mod typing;
mod username;
mod users;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

pub use config::{Config, Rate};
pub use io::{Identity, Input, Output, Recipients, StoreOp, StoreReply, StoreRequest, Ticket};

use crate::ids::{ConnId, IdGenerator, RoomName, UserId};
use crate::protocol::{ClientCommand, DecodeError, ErrorCode, ServerEvent, WireError};
use crate::transport::CloseCode;
use outbox::Outbox;
use rate::Bucket;
use room::Room;
use users::Users;

/// A frame waiting behind a command that needs the store.
#[derive(Debug)]
enum Queued {
    Command(ClientCommand),
    Malformed(DecodeError),
}

/// Per-connection rate limits.
#[derive(Debug)]
struct Limits {
    message: Bucket,
    typing: Bucket,
    join: Bucket,
    history: Bucket,
    refusal: Bucket,
}

/// One open connection.
#[derive(Debug)]
struct Conn {
    user: UserId,
    /// Rooms this connection is a member of, most recently joined last.
    rooms: Vec<RoomName>,
    /// Frames received while `busy`, handled in order when it clears.
    inbox: VecDeque<Queued>,
    /// The store round trip this connection waits for.
    busy: Option<Ticket>,
    limits: Limits,
}

impl Conn {
    /// The room a command means: the named one (which must be joined) or the most
    /// recently joined one.
    fn resolve_room(&self, named: Option<&str>) -> Result<RoomName, WireError> {
        let not_in_room = || WireError::new(ErrorCode::NotInRoom, "Join a room first");
        match named {
            Some(raw) => {
                let room = RoomName::parse(raw).map_err(|e| WireError::from(&e))?;
                if self.rooms.contains(&room) {
                    Ok(room)
                } else {
                    Err(WireError::new(
                        ErrorCode::NotInRoom,
                        "You are not in that room",
                    ))
                }
            }
            None => self.rooms.last().cloned().ok_or_else(not_in_room),
        }
    }
}

/// Store work in flight, by ticket.
#[derive(Debug)]
enum Pending {
    Join(join::JoinTask),
    Append { conn: ConnId, room: RoomName },
    GapFill { room: RoomName },
    History { conn: ConnId, room: RoomName },
    DmAppend { conn: ConnId },
    DmHistory { conn: ConnId, other: UserId },
}

impl Pending {
    /// The connection waiting for this reply, if any.
    fn conn(&self) -> Option<ConnId> {
        match self {
            Pending::Join(task) => Some(task.conn),
            Pending::Append { conn, .. }
            | Pending::History { conn, .. }
            | Pending::DmAppend { conn }
            | Pending::DmHistory { conn, .. } => Some(*conn),
            Pending::GapFill { .. } => None,
        }
    }
}

/// Deadlines, ordered; `poll_timeout` is the first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A typing indicator's automatic stop.
    TypingStop(RoomName, UserId),
    /// Retry a gap-fill read that failed.
    GapRetry(RoomName),
    /// A typing indicator of a user on another node stops by itself.
    RemoteTypingStop(RoomName, UserId),
}

/// How long to wait before retrying a failed gap-fill read.
const GAP_RETRY: Duration = Duration::from_secs(1);

/// The chat state machine. See the [module docs](self).
pub struct Engine {
    config: Config,
    ids: Box<dyn IdGenerator>,
    conns: FxHashMap<ConnId, Conn>,
    users: Users,
    rooms: FxHashMap<RoomName, Room>,
    pending: FxHashMap<Ticket, Pending>,
    timers: BTreeSet<(Instant, Timer)>,
    out: Outbox,
    /// Cluster round trips in flight and recently seen remote DMs (empty on one node).
    cluster: cluster::ClusterState,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("connections", &self.conns.len())
            .field("users", &self.users.len())
            .field("rooms", &self.rooms.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A new engine. `ids` supplies anonymous users' ids.
    pub fn new(config: Config, ids: Box<dyn IdGenerator>) -> Self {
        Self {
            config,
            ids,
            conns: FxHashMap::default(),
            users: Users::default(),
            rooms: FxHashMap::default(),
            pending: FxHashMap::default(),
            timers: BTreeSet::new(),
            out: Outbox::default(),
            cluster: cluster::ClusterState::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feeds one input at time `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Connected { conn, identity } => self.on_connected(conn, identity),
            Input::Command { conn, command } => self.on_frame(now, conn, Queued::Command(command)),
            Input::Malformed { conn, error } => self.on_frame(now, conn, Queued::Malformed(error)),
            Input::Disconnected { conn } => self.drop_conn(conn),
            Input::StoreReply { ticket, reply } => self.on_store_reply(now, ticket, reply),
            Input::Cluster(event) => self.on_cluster(now, event),
        }
    }

    /// The next output, or `None` when there is nothing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let Some((at, timer)) = self.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::TypingStop(room, user) => self.typing_expired(&room, &user, at),
                Timer::GapRetry(room) => self.retry_gap_fill(&room),
                Timer::RemoteTypingStop(room, user) => self.remote_typing_expired(&room, &user, at),
            }
        }
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Online users (a user with several connections counts once).
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Rooms with members or joins under way.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Store round trips awaiting a reply.
    pub fn pending_store_ops(&self) -> usize {
        self.pending.len()
    }

    /// The user a connection belongs to.
    pub fn user_of(&self, conn: ConnId) -> Option<&UserId> {
        self.conns.get(&conn).map(|c| &c.user)
    }

    /// The rooms a connection is a member of, most recently joined last.
    pub fn rooms_of(&self, conn: ConnId) -> &[RoomName] {
        self.conns.get(&conn).map_or(&[], |c| &c.rooms)
    }

    /// A room's member connections, in no particular order.
    pub fn members_of(&self, room: &RoomName) -> Vec<ConnId> {
        self.rooms
            .get(room)
            .map(|r| r.members.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The user holding a display name, if online.
    pub fn username_of(&self, user: &UserId) -> Option<&str> {
        self.users.get(user)?.name.as_ref().map(|n| n.as_str())
    }

    fn on_connected(&mut self, conn: ConnId, identity: Option<Identity>) {
        if self.conns.contains_key(&conn) {
            return; // a driver bug; the connection is already known
        }
        let (user, name) = match identity {
            Some(Identity { user_id, username }) => {
                // Identity is the user id (the token's `sub`); the name is only shown.
                // A name another online user holds is disambiguated, never refused (see
                // `Users::free_name`): nobody can lock a user out by taking its name.
                let held = self.users.get(&user_id).map_or(0, |u| u.conns.len());
                if held >= self.config.max_connections_per_user {
                    self.out.close(
                        conn,
                        CloseCode::POLICY,
                        "too many connections for this user",
                    );
                    return;
                }
                // A cluster node claims the name cluster-wide first (see `cluster`).
                if self.config.cluster && self.users.get(&user_id).is_none_or(|u| u.name.is_none())
                {
                    return self.connect_claiming(conn, user_id, username);
                }
                let name = self.users.free_name(username, &user_id);
                (user_id, Some(name))
            }
            None => (self.ids.user_id(), None),
        };
        self.insert_conn(conn, &user);
        self.users.attach(&user, conn, name);
        self.announce_online(&user);
        self.out.send(
            conn,
            ServerEvent::Connection {
                client_id: user.clone(),
            },
        );
        if let Some(name) = self.users.get(&user).and_then(|u| u.display_name()) {
            self.out
                .send(conn, ServerEvent::UsernameSet { username: name });
        }
    }

    /// Registers a new connection of `user` (not yet attached to the user).
    fn insert_conn(&mut self, conn: ConnId, user: &UserId) {
        let c = &self.config;
        self.conns.insert(
            conn,
            Conn {
                user: user.clone(),
                rooms: Vec::new(),
                inbox: VecDeque::new(),
                busy: None,
                limits: Limits {
                    message: Bucket::new(c.message_rate),
                    typing: Bucket::new(c.typing_rate),
                    join: Bucket::new(c.join_rate),
                    history: Bucket::new(c.history_rate),
                    refusal: Bucket::new(c.refusal_budget),
                },
            },
        );
    }

    /// A frame from a connection: handled now, or queued behind a store round trip so a
    /// connection's commands always take effect in the order they were sent.
    fn on_frame(&mut self, now: Instant, conn: ConnId, frame: Queued) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.busy.is_some() {
            if c.inbox.len() < self.config.max_queued_commands {
                c.inbox.push_back(frame);
            } else {
                self.refuse(
                    now,
                    conn,
                    WireError::new(
                        ErrorCode::TooManyRequests,
                        "Too many requests waiting; slow down",
                    ),
                );
            }
            return;
        }
        self.execute(now, conn, frame);
    }

    fn execute(&mut self, now: Instant, conn: ConnId, frame: Queued) {
        let command = match frame {
            Queued::Command(command) => command,
            Queued::Malformed(error) => return self.refuse(now, conn, error.to_wire()),
        };
        match command {
            ClientCommand::SetUsername { username } => self.cmd_set_username(now, conn, &username),
            ClientCommand::JoinRoom {
                room,
                since,
                epoch,
                keep_rooms,
            } => self.cmd_join(now, conn, &room, since, epoch, keep_rooms),
            ClientCommand::LeaveRoom { room } => self.cmd_leave(now, conn, room.as_deref()),
            ClientCommand::ChatMessage {
                content,
                room,
                client_msg_id,
            } => self.cmd_chat(
                now,
                conn,
                &content,
                room.as_deref(),
                client_msg_id.as_deref(),
            ),
            ClientCommand::PrivateMessage {
                target_id,
                content,
                client_msg_id,
            } => self.cmd_private(now, conn, &target_id, &content, client_msg_id.as_deref()),
            ClientCommand::TypingStart { room } => {
                self.cmd_typing(now, conn, room.as_deref(), true)
            }
            ClientCommand::TypingStop { room } => {
                self.cmd_typing(now, conn, room.as_deref(), false)
            }
            ClientCommand::History {
                room,
                before,
                limit,
            } => self.cmd_history(now, conn, &room, before, limit),
            ClientCommand::DmHistory {
                user_id,
                before,
                limit,
            } => self.cmd_dm_history(now, conn, &user_id, before, limit),
        }
    }

    /// Handles queued frames until the connection waits for the store again.
    fn run_inbox(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.busy.is_some() {
                return;
            }
            let Some(frame) = c.inbox.pop_front() else {
                return;
            };
            self.execute(now, conn, frame);
        }
    }

    /// Marks `conn` as waiting for `ticket`.
    fn wait_for(&mut self, conn: ConnId, ticket: Ticket, pending: Pending) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.busy = Some(ticket);
        }
        self.pending.insert(ticket, pending);
    }

    /// Answers with an error. Each refusal spends the connection's refusal budget; a
    /// connection that keeps provoking errors is closed with 1008.
    fn refuse(&mut self, now: Instant, conn: ConnId, error: WireError) {
        self.out.error(conn, error);
        let exhausted = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.limits.refusal.take(now).is_err());
        if exhausted {
            self.close_conn(conn, CloseCode::POLICY, "too many refused requests");
        }
    }

    /// Charges a command that had no effect (an empty message, `set_username` to the
    /// name already held) to the refusal budget without an error frame: the base
    /// protocol answers such frames with silence (or `username_set`), but they still cost
    /// the server a decode and a dispatch, so a flood of them must end like any other
    /// flood — with 1008 — instead of running for free.
    fn charge_noop(&mut self, now: Instant, conn: ConnId) {
        let exhausted = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.limits.refusal.take(now).is_err());
        if exhausted {
            self.close_conn(conn, CloseCode::POLICY, "too many refused requests");
        }
    }

    /// Refuses with `rate_limited` and the time until a retry would pass.
    fn rate_limited(&mut self, now: Instant, conn: ConnId, what: &'static str, wait: Duration) {
        let mut error = WireError::new(ErrorCode::RateLimited, what);
        let ms = wait.as_nanos().div_ceil(1_000_000);
        error.retry_after_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
        self.refuse(now, conn, error);
    }

    fn close_conn(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        if self.conns.contains_key(&conn) {
            self.out.close(conn, code, reason);
            self.drop_conn(conn);
        }
    }

    /// Forgets a connection: it leaves its rooms (others see `user_left` when its user
    /// has no other connection there), and its user goes offline with its last
    /// connection. Store work it started still completes: a stored message is still
    /// delivered to the room.
    fn drop_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for room in c.rooms.iter().rev() {
            self.depart(conn, room, false);
        }
        self.users.detach(&c.user, conn);
        self.announce_offline(&c.user);
    }

    fn on_store_reply(&mut self, now: Instant, ticket: Ticket, reply: StoreReply) {
        let Some(pending) = self.pending.remove(&ticket) else {
            return; // unknown ticket: a driver bug, or a duplicate reply
        };
        let waiter = pending.conn();
        match (pending, reply) {
            (Pending::Join(task), StoreReply::RoomPage(page)) => self.on_join_page(now, task, page),
            (Pending::Append { conn, room }, StoreReply::RoomAppended(result)) => {
                self.on_appended(now, conn, &room, result)
            }
            (Pending::GapFill { room }, StoreReply::RoomPage(page)) => {
                self.on_gap_fill(now, &room, page)
            }
            (Pending::History { conn, room }, StoreReply::RoomPage(page)) => {
                self.on_history_page(now, conn, room, page)
            }
            (Pending::DmAppend { conn }, StoreReply::DmAppended(result)) => {
                self.on_dm_appended(now, conn, result)
            }
            (Pending::DmHistory { conn, other }, StoreReply::DmPage(page)) => {
                self.on_dm_page(now, conn, other, page)
            }
            (pending, _) => {
                // A reply of the wrong kind is a driver bug. Undo what the request held.
                self.abandon(pending);
            }
        }
        if let Some(conn) = waiter {
            if let Some(c) = self.conns.get_mut(&conn)
                && c.busy == Some(ticket)
            {
                c.busy = None;
            }
            self.run_inbox(now, conn);
        }
    }

    /// Releases what a request held when its reply is unusable.
    fn abandon(&mut self, pending: Pending) {
        let room = match &pending {
            Pending::Join(task) => Some(&task.room),
            Pending::Append { room, .. } | Pending::GapFill { room } => Some(room),
            _ => None,
        };
        let Some(name) = room.cloned() else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(&name) {
            match pending {
                Pending::Join(_) => r.pending_joins = r.pending_joins.saturating_sub(1),
                Pending::Append { .. } => r.stream.inflight = r.stream.inflight.saturating_sub(1),
                Pending::GapFill { .. } => r.stream.gap_fill = false,
                _ => {}
            }
        }
        if let Some(conn) = pending.conn() {
            self.out.error(conn, WireError::store_unavailable());
        }
        self.forget_if_idle(&name);
    }

    /// Drops a room nobody needs any more.
    fn forget_if_idle(&mut self, name: &RoomName) {
        self.unsubscribe_if_unneeded(name);
        if self.rooms.get(name).is_some_and(Room::is_idle) {
            self.rooms.remove(name);
        }
    }

    fn add_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.insert((at, timer));
    }
}

/// `Arc<str>` of a user's display name, or the empty string for an unnamed user.
fn display(name: Option<Arc<str>>) -> Arc<str> {
    name.unwrap_or_else(|| Arc::from(""))
}

#[cfg(test)]
mod tests;
