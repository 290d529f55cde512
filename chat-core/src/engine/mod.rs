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

mod config;
mod direct;
mod io;
mod join;
mod messages;
mod outbox;
mod rate;
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

use crate::ids::{ClientMsgId, ConnId, IdGenerator, RoomName, UserId};
use crate::protocol::{
    ClientCommand, CloseCode, DecodeError, Refusal, RequestRef, ServerEvent, WireError,
};
use outbox::Outbox;
use rate::Bucket;
use room::Room;
use users::Users;

/// A frame waiting behind a command that needs the store.
#[derive(Debug)]
enum Queued {
    Command(ClientCommand, Option<RequestRef>),
    Malformed(DecodeError, Option<RequestRef>),
}

impl Queued {
    /// What an error answering this frame echoes.
    fn echo(&self) -> Echo {
        match self {
            Queued::Command(command, reference) => Echo {
                reference: reference.clone(),
                client_msg_id: message_id(command).and_then(Result::ok),
            },
            Queued::Malformed(_, reference) => Echo {
                reference: reference.clone(),
                client_msg_id: None,
            },
        }
    }
}

/// The `clientMsgId` of a `chat_message` or `private_message`, parsed.
fn message_id(command: &ClientCommand) -> Option<Result<ClientMsgId, crate::ids::NameError>> {
    match command {
        ClientCommand::ChatMessage { client_msg_id, .. }
        | ClientCommand::PrivateMessage { client_msg_id, .. } => {
            client_msg_id.as_deref().map(ClientMsgId::parse)
        }
        _ => None,
    }
}

/// What every `error` answering one request carries back (PROTOCOL.md *Errors*): the
/// request's `ref` and, for a chat or private message, its valid `clientMsgId`.
#[derive(Debug, Clone, Default)]
struct Echo {
    reference: Option<RequestRef>,
    client_msg_id: Option<ClientMsgId>,
}

impl Echo {
    fn stamp(&self, mut error: WireError) -> WireError {
        error.reference.clone_from(&self.reference);
        error.client_msg_id.clone_from(&self.client_msg_id);
        error
    }
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
    /// The echo of the request being answered: the one executing, or the one `busy`
    /// waits for (a connection's commands run one at a time, decision 3), so a store
    /// failure that arrives later still names its request.
    answering: Echo,
    limits: Limits,
}

impl Conn {
    /// The room a command means: the named one (which must be joined) or the most
    /// recently joined one.
    fn resolve_room(&self, named: Option<&str>) -> Result<RoomName, Refusal> {
        match named {
            Some(raw) => {
                let room = RoomName::parse(raw).map_err(|e| Refusal::from(&e))?;
                if self.rooms.contains(&room) {
                    Ok(room)
                } else {
                    Err(Refusal::NotInThatRoom)
                }
            }
            None => self.rooms.last().cloned().ok_or(Refusal::NoRoomJoined),
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
            Input::Command {
                conn,
                command,
                reference,
            } => self.on_frame(now, conn, Queued::Command(command, reference)),
            Input::Malformed {
                conn,
                error,
                reference,
            } => self.on_frame(now, conn, Queued::Malformed(error, reference)),
            Input::Disconnected { conn } => self.drop_conn(conn),
            Input::StoreReply { ticket, reply } => self.on_store_reply(now, ticket, reply),
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
                let name = self.users.free_name(username, &user_id);
                (user_id, Some(name))
            }
            None => (self.ids.user_id(), None),
        };
        let c = &self.config;
        self.conns.insert(
            conn,
            Conn {
                user: user.clone(),
                rooms: Vec::new(),
                inbox: VecDeque::new(),
                busy: None,
                answering: Echo::default(),
                limits: Limits {
                    message: Bucket::new(c.message_rate),
                    typing: Bucket::new(c.typing_rate),
                    join: Bucket::new(c.join_rate),
                    history: Bucket::new(c.history_rate),
                    refusal: Bucket::new(c.refusal_budget),
                },
            },
        );
        self.users.attach(&user, conn, name);
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
                // Answers the refused frame, not the one the connection waits for.
                let error = frame.echo().stamp(Refusal::TooManyQueued.to_wire());
                self.refuse_wire(now, conn, error);
            }
            return;
        }
        self.execute(now, conn, frame);
    }

    fn execute(&mut self, now: Instant, conn: ConnId, frame: Queued) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let (command, reference) = match frame {
            Queued::Command(command, reference) => (command, reference),
            Queued::Malformed(error, reference) => {
                c.answering = Echo {
                    reference,
                    client_msg_id: None,
                };
                let error = c.answering.stamp(error.to_wire());
                return self.refuse_wire(now, conn, error);
            }
        };
        // Parsed once: echoed on any error, and used by the handler.
        let msg_id = message_id(&command);
        c.answering = Echo {
            reference,
            client_msg_id: msg_id.clone().and_then(Result::ok),
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
            ClientCommand::ChatMessage { content, room, .. } => {
                self.cmd_chat(now, conn, &content, room.as_deref(), msg_id)
            }
            ClientCommand::PrivateMessage {
                target_id, content, ..
            } => self.cmd_private(now, conn, &target_id, &content, msg_id),
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

    /// Answers the request being handled with `refusal`. Each refusal spends the
    /// connection's refusal budget; a connection that keeps provoking errors is closed
    /// with 1008.
    fn refuse(&mut self, now: Instant, conn: ConnId, refusal: Refusal) {
        let error = self.echoed(conn, refusal.to_wire());
        self.refuse_wire(now, conn, error);
    }

    /// The error of the request `conn` is answering, with its echo.
    fn echoed(&self, conn: ConnId, error: WireError) -> WireError {
        match self.conns.get(&conn) {
            Some(c) => c.answering.stamp(error),
            None => error,
        }
    }

    /// Answers the request `conn` is answering with an error that is not the client's
    /// fault (a store failure): no refusal budget is spent. Nothing is sent to a
    /// connection that is gone.
    fn answer_error(&mut self, conn: ConnId, refusal: Refusal) {
        if self.conns.contains_key(&conn) {
            let error = self.echoed(conn, refusal.to_wire());
            self.out.error(conn, error);
        }
    }

    /// [`refuse`](Self::refuse) with an error already built and echoed.
    fn refuse_wire(&mut self, now: Instant, conn: ConnId, error: WireError) {
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
    fn rate_limited(&mut self, now: Instant, conn: ConnId, refusal: Refusal, wait: Duration) {
        let mut error = self.echoed(conn, refusal.to_wire());
        let ms = wait.as_nanos().div_ceil(1_000_000);
        error.retry_after_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
        self.refuse_wire(now, conn, error);
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
            self.answer_error(conn, Refusal::StoreUnavailable);
        }
        self.forget_if_idle(&name);
    }

    /// Drops a room nobody needs any more.
    fn forget_if_idle(&mut self, name: &RoomName) {
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
