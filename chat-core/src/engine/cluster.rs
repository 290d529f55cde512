//! The engine's side of a cluster (ARCHITECTURE.md decision 18): the ops it emits for
//! the other nodes and what it does with the [`ClusterEvent`]s they send.
//!
//! Everything here is gated on [`Config::cluster`](super::Config::cluster): a single
//! node emits no [`ClusterOp`] and ignores cluster inputs.
//!
//! * **Rooms**: the first local joiner subscribes the node to the room; joins activate
//!   once the member snapshot is in ([`remote`](super::remote)); every snapshot (the
//!   first, and each resync after the bus reconnected) starts a catch-up read from the
//!   store, which recovers messages announced while the node was not listening.
//!   Remote messages enter the room stream like another writer's append: delivered in
//!   `seq` order, duplicates ignored, a gap filled from the store.
//! * **Names** are claimed on the bus (one atomic claim): `set_username` and an
//!   authenticated connect keep the connection busy until the answer.
//! * **DMs** to a user not online here look the user up on the bus; a stored DM is
//!   announced to the nodes of both users.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use super::remote::{Parked, Sync};
use super::{Engine, Pending, Timer};
use crate::cluster::{ClusterEvent, ClusterOp, ClusterReply, NodeId};
use crate::engine::{StoreOp, Ticket};
use crate::ids::{ClientMsgId, ConnId, Content, Epoch, MessageId, RoomName, UserId, Username};
use crate::message::{NewDm, StoredDm, StoredMessage};
use crate::protocol::{ErrorCode, ServerEvent, WireError};
use crate::store::Page;
use crate::transport::CloseCode;

/// Remote DM ids remembered to drop a second copy (a node subscribed to both users of
/// a DM may be handed it twice).
const SEEN_DMS: usize = 1024;

/// A connection waiting for the bus.
#[derive(Debug)]
enum Wait {
    /// An authenticated connection's name claim.
    Connect {
        conn: ConnId,
        user: UserId,
        wanted: Username,
    },
    /// `set_username`.
    Rename { conn: ConnId, user: UserId },
    /// A DM whose target is not online here.
    DmTarget { conn: ConnId, draft: NewDm },
}

impl Wait {
    fn conn(&self) -> ConnId {
        match self {
            Wait::Connect { conn, .. }
            | Wait::Rename { conn, .. }
            | Wait::DmTarget { conn, .. } => *conn,
        }
    }
}

/// The engine's cluster bookkeeping beyond the rooms.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    waits: FxHashMap<Ticket, Wait>,
    seen_dms: VecDeque<MessageId>,
    seen_set: FxHashSet<MessageId>,
}

impl ClusterState {
    /// Whether the DM `id` was seen before; remembers it.
    fn seen_before(&mut self, id: MessageId) -> bool {
        if !self.seen_set.insert(id) {
            return true;
        }
        self.seen_dms.push_back(id);
        if self.seen_dms.len() > SEEN_DMS
            && let Some(old) = self.seen_dms.pop_front()
        {
            self.seen_set.remove(&old);
        }
        false
    }
}

impl Engine {
    /// An event from the cluster bus. Ignored by an engine that is not a cluster node.
    pub(super) fn on_cluster(&mut self, now: Instant, event: ClusterEvent) {
        if !self.config.cluster {
            return;
        }
        match event {
            ClusterEvent::Reply { ticket, reply } => self.on_cluster_reply(now, ticket, reply),
            ClusterEvent::RoomMembers { room, members } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                if r.remote.sync == Sync::Off {
                    return; // an answer to a subscription given up since
                }
                let stopped = r.remote_snapshot(&mut self.out, &room, members);
                self.drop_remote_typing_timers(&room, stopped);
                self.on_synced(now, &room);
            }
            ClusterEvent::RoomUnavailable { room } => self.on_room_unavailable(now, &room),
            ClusterEvent::Joined { ref room, .. }
            | ClusterEvent::Left { ref room, .. }
            | ClusterEvent::Typing { ref room, .. } => {
                let Some(r) = self.rooms.get_mut(room) else {
                    return;
                };
                match r.remote.sync {
                    Sync::Off => {}
                    Sync::Waiting => r.remote.backlog.push(event),
                    Sync::Synced => self.apply_presence(now, event),
                }
            }
            ClusterEvent::Message { room, message } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.accept(message);
                    r.deliver_ready(&mut self.out);
                }
                self.check_gap(&room);
            }
            ClusterEvent::Dm { message } => self.on_remote_dm(&message),
            ClusterEvent::NodeDown { node } => self.on_node_down(&node),
        }
    }

    /// Applies a remote `Joined`, `Left` or `Typing` to a synced room.
    fn apply_presence(&mut self, now: Instant, event: ClusterEvent) {
        match event {
            ClusterEvent::Joined {
                node,
                room,
                user,
                name,
            } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.remote_joined(&mut self.out, &room, node, user, name);
                }
            }
            ClusterEvent::Left { node, room, user } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                if let Some(deadline) = r.remote_left(&mut self.out, &room, &node, &user) {
                    self.drop_remote_typing_timers(&room, vec![(user, deadline)]);
                }
            }
            ClusterEvent::Typing { room, user, on, .. } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                let deadline = on.then(|| now + self.config.typing_timeout);
                let before = r.remote_typing(&mut self.out, &room, &user, deadline);
                if let Some(old) = before {
                    self.timers
                        .remove(&(old, Timer::RemoteTypingStop(room.clone(), user.clone())));
                }
                // Armed only if the indicator took (a user listed in the room).
                let on_now = self
                    .rooms
                    .get(&room)
                    .and_then(|r| r.remote.users.get(&user))
                    .is_some_and(|u| u.typing.is_some());
                if let Some(at) = deadline.filter(|_| on_now) {
                    self.add_timer(at, Timer::RemoteTypingStop(room, user));
                }
            }
            _ => {}
        }
    }

    /// A remote typing indicator's automatic stop (only if it still has this deadline).
    pub(super) fn remote_typing_expired(&mut self, room: &RoomName, user: &UserId, at: Instant) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let current = r.remote.users.get(user).and_then(|u| u.typing);
        if current == Some(at) {
            r.remote_typing(&mut self.out, room, user, None);
        }
    }

    fn drop_remote_typing_timers(&mut self, room: &RoomName, stopped: Vec<(UserId, Instant)>) {
        for (user, deadline) in stopped {
            self.timers
                .remove(&(deadline, Timer::RemoteTypingStop(room.clone(), user)));
        }
    }

    /// The room's member snapshot is in: the announcements that raced it are replayed,
    /// the joins waiting for it proceed, and a catch-up read recovers what was announced
    /// while this node was not listening.
    fn on_synced(&mut self, now: Instant, room: &RoomName) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.stream.catch_up = true;
        let first = r.remote.sync == Sync::Waiting;
        r.remote.sync = Sync::Synced;
        let backlog = std::mem::take(&mut r.remote.backlog);
        let parked = std::mem::take(&mut r.remote.parked);
        for event in backlog {
            self.apply_presence(now, event);
        }
        if first {
            for Parked { task, page, ticket } in parked {
                let conn = task.conn;
                self.release_busy(conn, ticket);
                self.on_join_page(now, task, Ok(page));
                self.run_inbox(now, conn);
            }
        }
        self.check_gap(room);
    }

    /// The bus could not subscribe to the room: the joins waiting for it fail.
    fn on_room_unavailable(&mut self, now: Instant, room: &RoomName) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.remote.sync != Sync::Waiting {
            // A synced room keeps its view; the bus resyncs it when it can.
            return;
        }
        r.remote.sync = Sync::Off;
        r.remote.backlog.clear();
        let parked = std::mem::take(&mut r.remote.parked);
        for Parked { task, ticket, .. } in parked {
            let conn = task.conn;
            self.release_busy(conn, ticket);
            self.abort_join(&task, Some(WireError::cluster_unavailable()));
            self.run_inbox(now, conn);
        }
        self.forget_if_idle(room);
    }

    /// `node` left the cluster: its users leave every room here.
    fn on_node_down(&mut self, node: &NodeId) {
        let mut names: Vec<RoomName> = self.rooms.keys().cloned().collect();
        names.sort();
        for name in names {
            let Some(r) = self.rooms.get_mut(&name) else {
                continue;
            };
            let stopped = r.remote_node_down(&mut self.out, &name, node);
            self.drop_remote_typing_timers(&name, stopped);
        }
    }

    /// A DM stored by another node, to or from users online here.
    fn on_remote_dm(&mut self, message: &Arc<StoredDm>) {
        if self.cluster.seen_before(message.id) {
            return;
        }
        let targets: SmallVec<[ConnId; 4]> = self
            .users
            .get(&message.to)
            .map(|u| u.conns.iter().copied().collect())
            .unwrap_or_default();
        let senders: SmallVec<[ConnId; 4]> = self
            .users
            .get(&message.from)
            .map(|u| {
                u.conns
                    .iter()
                    .copied()
                    .filter(|c| !targets.contains(c))
                    .collect()
            })
            .unwrap_or_default();
        self.out
            .send_list(&targets, ServerEvent::PrivateMessage(message.clone()));
        self.out
            .send_list(&senders, ServerEvent::PrivateMessageSent(message.clone()));
    }

    /// The first local joiner of a room subscribes the node to it.
    pub(super) fn subscribe_if_needed(&mut self, room: &RoomName) {
        if !self.config.cluster {
            return;
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.remote.sync == Sync::Off {
            r.remote.sync = Sync::Waiting;
            self.out
                .cluster(ClusterOp::Subscribe { room: room.clone() });
        }
    }

    /// A room without local members or joiners: the node stops listening to it.
    pub(super) fn unsubscribe_if_unneeded(&mut self, room: &RoomName) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.remote.sync == Sync::Off || !r.members.is_empty() || r.pending_joins > 0 {
            return;
        }
        r.remote.sync = Sync::Off;
        r.remote.backlog.clear();
        let typing: Vec<(UserId, Instant)> = r
            .remote
            .users
            .drain(..)
            .filter_map(|(user, u)| Some((user, u.typing?)))
            .collect();
        self.drop_remote_typing_timers(room, typing);
        self.out
            .cluster(ClusterOp::Unsubscribe { room: room.clone() });
    }

    /// Holds a join's page until its room is synced (subscribing again if an earlier
    /// attempt failed); returns it when the join may proceed.
    pub(super) fn park_unless_synced(
        &mut self,
        task: super::join::JoinTask,
        page: Page<StoredMessage>,
    ) -> Option<(super::join::JoinTask, Page<StoredMessage>)> {
        if !self.config.cluster {
            return Some((task, page));
        }
        self.subscribe_if_needed(&task.room);
        let synced = self
            .rooms
            .get(&task.room)
            .is_none_or(|r| r.remote.sync == Sync::Synced);
        if synced {
            return Some((task, page));
        }
        // The connection stays busy, so its later commands wait for the join.
        let ticket = self.out.ticket();
        if let Some(c) = self.conns.get_mut(&task.conn) {
            c.busy = Some(ticket);
        }
        if let Some(r) = self.rooms.get_mut(&task.room) {
            r.remote.parked.push(Parked { task, page, ticket });
        }
        None
    }

    /// Announces a room message the store acknowledged (unless it went to a stream the
    /// store has forgotten since: that one counts as not stored).
    pub(super) fn announce_message(
        &mut self,
        room: &RoomName,
        message: &Arc<StoredMessage>,
        epoch: &Epoch,
    ) {
        if !self.config.cluster || self.rooms.get(room).is_some_and(|r| r.is_retired(epoch)) {
            return;
        }
        self.out.cluster(ClusterOp::Message {
            room: room.clone(),
            message: message.clone(),
        });
    }

    /// `user` just attached a connection: its first one puts it online on the bus.
    pub(super) fn announce_online(&mut self, user: &UserId) {
        if !self.config.cluster {
            return;
        }
        if let Some(u) = self.users.get(user)
            && u.conns.len() == 1
        {
            self.out.cluster(ClusterOp::UserOnline {
                user: user.clone(),
                name: u.name.clone(),
            });
        }
    }

    /// `user` just detached a connection: after its last one it is offline on the bus.
    pub(super) fn announce_offline(&mut self, user: &UserId) {
        if self.config.cluster && self.users.get(user).is_none() {
            self.out
                .cluster(ClusterOp::UserOffline { user: user.clone() });
        }
    }

    /// An authenticated connection whose user has no name here yet: `connection` now,
    /// `username_set` once the bus granted a name; its commands wait meanwhile.
    pub(super) fn connect_claiming(&mut self, conn: ConnId, user: UserId, wanted: Username) {
        self.insert_conn(conn, &user);
        self.users.attach(&user, conn, None);
        self.announce_online(&user);
        self.out.send(
            conn,
            ServerEvent::Connection {
                client_id: user.clone(),
            },
        );
        let mut candidates = self.users.name_candidates(&wanted, &user);
        if candidates.is_empty() {
            candidates.push(wanted.clone());
        }
        let ticket = self.out.ticket();
        self.out.cluster(ClusterOp::ClaimName {
            ticket,
            user: user.clone(),
            candidates,
        });
        self.wait_cluster(ticket, Wait::Connect { conn, user, wanted });
    }

    /// `set_username` on a cluster node, after the local checks passed.
    pub(super) fn claim_rename(&mut self, conn: ConnId, user: UserId, name: Username) {
        let ticket = self.out.ticket();
        self.out.cluster(ClusterOp::ClaimName {
            ticket,
            user: user.clone(),
            candidates: vec![name],
        });
        self.wait_cluster(ticket, Wait::Rename { conn, user });
    }

    /// A DM to a user not online here: asks the bus whether it is online elsewhere.
    pub(super) fn lookup_dm_target(
        &mut self,
        now: Instant,
        conn: ConnId,
        to: UserId,
        content: Content,
        client_msg_id: Option<&str>,
    ) {
        let client_msg_id = match client_msg_id.map(ClientMsgId::parse).transpose() {
            Ok(id) => id,
            Err(e) => return self.refuse(now, conn, WireError::from(&e)),
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Err(wait) = c.limits.message.take(now) {
            return self.rate_limited(now, conn, "Sending messages too fast", wait);
        }
        let from = c.user.clone();
        let from_username = super::display(self.users.get(&from).and_then(|u| u.display_name()));
        let ticket = self.out.ticket();
        self.out.cluster(ClusterOp::LookupUser {
            ticket,
            user: to.clone(),
        });
        let draft = NewDm {
            from,
            from_username,
            to,
            to_username: Arc::from(""),
            content,
            client_msg_id,
        };
        self.wait_cluster(ticket, Wait::DmTarget { conn, draft });
    }

    fn wait_cluster(&mut self, ticket: Ticket, wait: Wait) {
        if let Some(c) = self.conns.get_mut(&wait.conn()) {
            c.busy = Some(ticket);
        }
        self.cluster.waits.insert(ticket, wait);
    }

    /// Clears `conn`'s busy mark if it is `ticket`'s.
    fn release_busy(&mut self, conn: ConnId, ticket: Ticket) {
        if let Some(c) = self.conns.get_mut(&conn)
            && c.busy == Some(ticket)
        {
            c.busy = None;
        }
    }

    fn on_cluster_reply(&mut self, now: Instant, ticket: Ticket, reply: ClusterReply) {
        let Some(wait) = self.cluster.waits.remove(&ticket) else {
            return; // unknown ticket: a bus bug, or a duplicate reply
        };
        let conn = wait.conn();
        let alive = self.conns.contains_key(&conn);
        match (wait, reply) {
            (Wait::Connect { user, wanted, .. }, ClusterReply::Name(granted)) => {
                self.on_connect_claimed(conn, &user, wanted, granted)
            }
            (Wait::Connect { .. }, _) => {
                // No name can be promised unique: the client retries later.
                self.close_conn(conn, CloseCode::TRY_AGAIN_LATER, "cluster unavailable");
            }
            (Wait::Rename { user, .. }, ClusterReply::Name(Some(granted))) => {
                self.on_renamed(conn, &user, granted)
            }
            (Wait::Rename { .. }, ClusterReply::Name(None)) if alive => {
                let e = WireError::new(ErrorCode::UsernameTaken, "Username taken");
                self.refuse(now, conn, e);
            }
            (Wait::DmTarget { mut draft, .. }, ClusterReply::User(Some(name))) if alive => {
                draft.to_username = name;
                let ticket = self.out.store(StoreOp::AppendDm(draft));
                self.wait_for(conn, ticket, Pending::DmAppend { conn });
            }
            (Wait::DmTarget { .. }, ClusterReply::User(None)) if alive => {
                let e = WireError::new(ErrorCode::UserNotFound, "User not found");
                self.refuse(now, conn, e);
            }
            (_, _) if alive => {
                // Not the client's fault: no refusal budget is spent.
                self.out.error(conn, WireError::cluster_unavailable());
            }
            (_, _) => {}
        }
        self.release_busy(conn, ticket);
        self.run_inbox(now, conn);
    }

    fn on_connect_claimed(
        &mut self,
        conn: ConnId,
        user: &UserId,
        wanted: Username,
        granted: Option<Username>,
    ) {
        let Some(u) = self.users.get(user) else {
            // Gone meanwhile; its `UserOffline` went out before the claim was answered.
            if let Some(name) = granted {
                self.out.cluster(ClusterOp::ReleaseName {
                    user: user.clone(),
                    name,
                });
            }
            return;
        };
        match (&u.name, granted) {
            (None, Some(name)) => {
                self.users.name_locked(user, name.clone());
                self.out.cluster(ClusterOp::UserOnline {
                    user: user.clone(),
                    name: Some(name),
                });
            }
            (None, None) => {
                // Every candidate is held elsewhere: a shared name beats a refusal, as
                // on a single node (see `Users::free_name`).
                let name = self.users.free_name(wanted, user);
                self.users.name_locked(user, name);
            }
            (Some(held), Some(name)) if *held != name => {
                // Another connection's claim named the user first.
                self.out.cluster(ClusterOp::ReleaseName {
                    user: user.clone(),
                    name,
                });
            }
            (Some(_), _) => {}
        }
        if self.conns.contains_key(&conn)
            && let Some(name) = self.users.get(user).and_then(|u| u.display_name())
        {
            self.out
                .send(conn, ServerEvent::UsernameSet { username: name });
        }
    }

    fn on_renamed(&mut self, conn: ConnId, user: &UserId, granted: Username) {
        let Some(old) = self.users.get(user).map(|u| u.name.clone()) else {
            // Offline meanwhile: nobody holds the name any more.
            self.out.cluster(ClusterOp::ReleaseName {
                user: user.clone(),
                name: granted,
            });
            return;
        };
        let display = granted.shared();
        self.users.rename(user, granted.clone());
        if let Some(old) = old.filter(|o| o.key() != granted.key()) {
            self.out.cluster(ClusterOp::ReleaseName {
                user: user.clone(),
                name: old,
            });
        }
        self.out.cluster(ClusterOp::UserOnline {
            user: user.clone(),
            name: Some(granted),
        });
        if self.conns.contains_key(&conn) {
            self.out
                .send(conn, ServerEvent::UsernameSet { username: display });
        }
    }
}
