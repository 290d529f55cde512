//! A room's members on *other* nodes of a cluster, and whether this node's view of them
//! is synced (ARCHITECTURE.md decision 18).
//!
//! A user is present in a room when it has a local connection there
//! ([`Room::presence`](super::room::Room)) or any other node reports it here. Presence
//! events (`user_joined`, `user_left`) go to the local members when a user becomes
//! present anywhere or is gone everywhere, so a user with connections on two nodes is one
//! member on every node.
//!
//! The remote state is valid only once synced: the first local joiner makes the node
//! subscribe to the room, and joins activate only after the bus answered with the room's
//! member snapshot. Presence announcements that arrive before the snapshot are kept and
//! replayed on top of it, in order (each is idempotent), so one that raced the snapshot
//! read is not lost.

use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

use super::io::Ticket;
use super::join::JoinTask;
use super::outbox::Outbox;
use super::room::Room;
use crate::cluster::{ClusterEvent, NodeId, RemoteMember};
use crate::ids::{ConnId, RoomName, UserId};
use crate::message::StoredMessage;
use crate::protocol::{ServerEvent, UserEntry};
use crate::store::Page;

/// Whether the node's view of a room's remote members can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Sync {
    /// Not subscribed (no local member or joiner, or the bus could not subscribe).
    #[default]
    Off,
    /// `Subscribe` sent; waiting for the member snapshot.
    Waiting,
    /// The snapshot arrived; announcements keep the view current.
    Synced,
}

/// A user present in the room through other nodes.
#[derive(Debug, Clone)]
pub(crate) struct RemoteUser {
    pub(crate) name: Arc<str>,
    /// The nodes that report it (one entry per node).
    pub(crate) nodes: SmallVec<[NodeId; 2]>,
    /// Its typing indicator's automatic stop, when on: a remote indicator stops by
    /// itself like a local one, so a crashed origin cannot leave it on.
    pub(crate) typing: Option<Instant>,
}

/// A join whose store page is in but whose room is not synced yet.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) task: JoinTask,
    pub(crate) page: Page<StoredMessage>,
    /// What the connection is marked busy with meanwhile.
    pub(crate) ticket: Ticket,
}

/// A room's cluster state.
#[derive(Debug, Default)]
pub(crate) struct RoomRemote {
    pub(crate) sync: Sync,
    pub(crate) users: IndexMap<UserId, RemoteUser, FxBuildHasher>,
    /// Presence announcements received while [`Sync::Waiting`].
    pub(crate) backlog: Vec<ClusterEvent>,
    /// Joins waiting for the snapshot, in arrival order.
    pub(crate) parked: Vec<Parked>,
}

/// What a presence change did to a remote user's typing indicator: the deadline whose
/// timer must go.
pub(crate) type StoppedTyping = Option<Instant>;

impl Room {
    /// The local connections of `user` (to leave out of its own typing indicator).
    pub(crate) fn local_conns(&self, user: &UserId) -> SmallVec<[ConnId; 2]> {
        self.presence
            .get(user)
            .map(|p| p.conns.clone())
            .unwrap_or_default()
    }

    /// Whether `user` is present through a local connection or another node.
    pub(crate) fn is_present(&self, user: &UserId) -> bool {
        self.presence.contains_key(user) || self.remote.users.contains_key(user)
    }

    fn locally_typing(&self, user: &UserId) -> bool {
        self.presence.get(user).is_some_and(|p| p.typing.is_some())
    }

    /// `node` reports `user` in the room. Tells the local members `user_joined` when the
    /// user was present nowhere before.
    pub(crate) fn remote_joined(
        &mut self,
        out: &mut Outbox,
        room: &RoomName,
        node: NodeId,
        user: UserId,
        name: Arc<str>,
    ) {
        let was_present = self.is_present(&user);
        let entry = self
            .remote
            .users
            .entry(user.clone())
            .or_insert_with(|| RemoteUser {
                name: name.clone(),
                nodes: SmallVec::new(),
                typing: None,
            });
        if !entry.nodes.contains(&node) {
            entry.nodes.push(node);
        }
        if !was_present {
            let event = ServerEvent::UserJoined {
                room: room.clone(),
                user: UserEntry {
                    id: user,
                    username: name,
                },
            };
            self.broadcast(out, event, SmallVec::new());
        }
    }

    /// `node` no longer reports `user`. When no node does and the user has no local
    /// connection, its indicator stops and the local members see `user_left`.
    pub(crate) fn remote_left(
        &mut self,
        out: &mut Outbox,
        room: &RoomName,
        node: &NodeId,
        user: &UserId,
    ) -> StoppedTyping {
        let entry = self.remote.users.get_mut(user)?;
        entry.nodes.retain(|n| n != node);
        if !entry.nodes.is_empty() {
            return None;
        }
        let gone = self.remote.users.shift_remove(user)?;
        self.remote_user_gone(out, room, user, gone)
    }

    /// Announces that a remote user left the room's remote state entirely.
    fn remote_user_gone(
        &mut self,
        out: &mut Outbox,
        room: &RoomName,
        user: &UserId,
        gone: RemoteUser,
    ) -> StoppedTyping {
        let entry = UserEntry {
            id: user.clone(),
            username: gone.name,
        };
        if gone.typing.is_some() && !self.locally_typing(user) {
            let event = ServerEvent::TypingIndicator {
                room: room.clone(),
                user: entry.clone(),
                is_typing: false,
            };
            let except = self.local_conns(user);
            self.broadcast(out, event, except);
        }
        if !self.presence.contains_key(user) {
            let event = ServerEvent::UserLeft {
                room: room.clone(),
                user: entry,
            };
            self.broadcast(out, event, SmallVec::new());
        }
        gone.typing
    }

    /// Every report of `node` is gone (it left the cluster). Returns the typing
    /// deadlines whose timers must go, with their users.
    pub(crate) fn remote_node_down(
        &mut self,
        out: &mut Outbox,
        room: &RoomName,
        node: &NodeId,
    ) -> Vec<(UserId, Instant)> {
        let users: Vec<UserId> = self
            .remote
            .users
            .iter()
            .filter(|(_, u)| u.nodes.contains(node))
            .map(|(id, _)| id.clone())
            .collect();
        let mut stopped = Vec::new();
        for user in users {
            if let Some(deadline) = self.remote_left(out, room, node, &user) {
                stopped.push((user, deadline));
            }
        }
        stopped
    }

    /// Replaces the remote state with a member snapshot: users no longer listed leave
    /// (`user_left` where they are present nowhere now), users newly listed join
    /// (`user_joined` where they were present nowhere). Typing indicators of users
    /// still listed stay on. Returns the typing deadlines whose timers must go.
    pub(crate) fn remote_snapshot(
        &mut self,
        out: &mut Outbox,
        room: &RoomName,
        members: Vec<RemoteMember>,
    ) -> Vec<(UserId, Instant)> {
        let mut fresh: IndexMap<UserId, RemoteUser, FxBuildHasher> = IndexMap::default();
        for m in members {
            let entry = fresh.entry(m.user).or_insert_with(|| RemoteUser {
                name: m.name,
                nodes: SmallVec::new(),
                typing: None,
            });
            if !entry.nodes.contains(&m.node) {
                entry.nodes.push(m.node);
            }
        }
        let old = std::mem::take(&mut self.remote.users);
        let mut stopped = Vec::new();
        let mut joined = Vec::new();
        for (user, before) in &old {
            if let Some(now) = fresh.get_mut(user) {
                now.typing = before.typing;
            }
        }
        for (user, new) in &fresh {
            if !old.contains_key(user) && !self.presence.contains_key(user) {
                joined.push(UserEntry {
                    id: user.clone(),
                    username: new.name.clone(),
                });
            }
        }
        // Departures are judged against the new state: a user another node still
        // reports has not left.
        self.remote.users = fresh;
        for (user, before) in old {
            if !self.remote.users.contains_key(&user)
                && let Some(deadline) = self.remote_user_gone(out, room, &user, before)
            {
                stopped.push((user, deadline));
            }
        }
        for user in joined {
            let event = ServerEvent::UserJoined {
                room: room.clone(),
                user,
            };
            self.broadcast(out, event, SmallVec::new());
        }
        stopped
    }

    /// A remote typing indicator went on (`deadline` is its automatic stop) or off.
    /// Returns the deadline the indicator had (its timer must go) and whether it is on
    /// now.
    pub(crate) fn remote_typing(
        &mut self,
        out: &mut Outbox,
        room: &RoomName,
        user: &UserId,
        on: Option<Instant>,
    ) -> StoppedTyping {
        let locally_typing = self.locally_typing(user);
        let except = self.local_conns(user);
        let entry = self.remote.users.get_mut(user)?;
        let before = entry.typing;
        entry.typing = on;
        let name = entry.name.clone();
        let changed = before.is_some() != on.is_some();
        if changed && !locally_typing {
            let event = ServerEvent::TypingIndicator {
                room: room.clone(),
                user: UserEntry {
                    id: user.clone(),
                    username: name,
                },
                is_typing: on.is_some(),
            };
            self.broadcast(out, event, except);
        }
        before
    }

    /// `room_users` entries of the users present only through other nodes, after the
    /// local ones.
    pub(crate) fn remote_entries(&self) -> impl Iterator<Item = UserEntry> + '_ {
        self.remote
            .users
            .iter()
            .filter(|(id, _)| !self.presence.contains_key(*id))
            .map(|(id, u)| UserEntry {
                id: id.clone(),
                username: u.name.clone(),
            })
    }
}
