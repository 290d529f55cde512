//! What crosses nodes when several servers form a cluster (ARCHITECTURE.md decision 18).
//!
//! The engine stays sans-IO: what it needs from the other nodes enters as
//! [`Input::Cluster`](crate::Input::Cluster) carrying a [`ClusterEvent`], and what it
//! tells them leaves as [`Output::Cluster`](crate::Output::Cluster) carrying a
//! [`ClusterOp`]. A bus (the runtime's [`Cluster`](crate::runtime::Cluster) trait, e.g.
//! Redis pub/sub plus a registry) carries them between nodes. Without a cluster
//! ([`Config::cluster`](crate::Config::cluster) false, the default) the engine emits no
//! cluster output at all.
//!
//! The durable store stays the source of truth for messages and their `seq`; the bus
//! only *announces* stored messages (a lost announcement is recovered from the store)
//! and keeps a registry of who is where (room members, online users, claimed names),
//! each change one atomic operation of the bus.
//!
//! Everything here is plain data: no I/O, no clock.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::engine::Ticket;
use crate::ids::{RoomName, UserId, Username};
use crate::message::{StoredDm, StoredMessage};

/// Most characters a [`NodeId`] may have.
pub const NODE_ID_MAX_CHARS: usize = 64;

/// One server process in a cluster. 1 to [`NODE_ID_MAX_CHARS`] of `[A-Za-z0-9_-]`, so
/// it can be embedded in bus keys and channel names without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

/// A node id that is empty, too long or has characters outside `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("node id must be 1 to {NODE_ID_MAX_CHARS} characters of A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidNodeId;

impl NodeId {
    /// Validates a node id.
    pub fn parse(raw: &str) -> Result<Self, InvalidNodeId> {
        let ok = !raw.is_empty()
            && raw.len() <= NODE_ID_MAX_CHARS
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.into()))
        } else {
            Err(InvalidNodeId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the engine asks of the bus (engine → bus).
///
/// The bus performs ops **in the order they were emitted**: a `Joined` after the
/// `Subscribe` of its room, a `Left` after its `Joined`, a `ReleaseName` after the
/// `ClaimName` it follows. Ops with a [`Ticket`] are answered with
/// [`ClusterEvent::Reply`] carrying the same ticket (tickets share the store's counter,
/// so they never collide with store tickets).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClusterOp {
    /// This node now needs `room` (its first local joiner is on the way). The bus
    /// subscribes to the room's announcements, then reads the room's member registry and
    /// answers [`ClusterEvent::RoomMembers`] (or [`ClusterEvent::RoomUnavailable`] if it
    /// cannot). It sends `RoomMembers` again after every reconnect/resubscribe.
    Subscribe {
        /// The room.
        room: RoomName,
    },
    /// This node no longer needs `room` (no local member or joiner left).
    Unsubscribe {
        /// The room.
        room: RoomName,
    },
    /// `user`'s first local connection became a member of `room`: record it in the
    /// room's registry and announce it, atomically.
    Joined {
        /// The room.
        room: RoomName,
        /// The user.
        user: UserId,
        /// Its display name.
        name: Arc<str>,
    },
    /// `user`'s last local connection left `room`: remove it from the registry and
    /// announce it.
    Left {
        /// The room.
        room: RoomName,
        /// The user.
        user: UserId,
    },
    /// Announce a room message the store has acknowledged (the origin delivers it
    /// locally by itself).
    Message {
        /// The room (`message.room`).
        room: RoomName,
        /// The stored message.
        message: Arc<StoredMessage>,
    },
    /// A typing indicator went on or off (never stored).
    Typing {
        /// The room.
        room: RoomName,
        /// Who types.
        user: UserId,
        /// Its display name.
        name: Arc<str>,
        /// Started (`true`) or stopped.
        on: bool,
    },
    /// `user`'s first local connection: subscribe to its DM announcements and record
    /// it in the online registry (user → nodes → name). Sent again for a user already
    /// online here when its name changed (a granted claim): it updates this node's
    /// entry.
    UserOnline {
        /// The user.
        user: UserId,
        /// Its name, if it has one.
        name: Option<Username>,
    },
    /// `user`'s last local connection is gone: unsubscribe its DMs and remove this node
    /// from its online entry. When no node has the user any more, the names it claimed
    /// are released too.
    UserOffline {
        /// The user.
        user: UserId,
    },
    /// Announce a stored DM to the nodes of both of its users (once per node is the
    /// aim; the engine drops a second copy of a DM it already delivered).
    Dm {
        /// The stored DM.
        message: Arc<StoredDm>,
    },
    /// Claim the first free name among `candidates` cluster-wide (free: unclaimed, or
    /// claimed by `user` already), atomically. Answered with [`ClusterReply::Name`].
    ClaimName {
        /// Hand this back with the reply.
        ticket: Ticket,
        /// The claimant.
        user: UserId,
        /// Names to try, in order (at least one).
        candidates: Vec<Username>,
    },
    /// Release `name`, held by `user`, after a rename (only if `user` still holds it).
    ReleaseName {
        /// The holder.
        user: UserId,
        /// The old name.
        name: Username,
    },
    /// Whether `user` is online on any live node, and with which display name.
    /// Answered with [`ClusterReply::User`].
    LookupUser {
        /// Hand this back with the reply.
        ticket: Ticket,
        /// The user looked up.
        user: UserId,
    },
}

impl ClusterOp {
    /// A short snake_case name of the op's kind (for metrics and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterOp::Subscribe { .. } => "subscribe",
            ClusterOp::Unsubscribe { .. } => "unsubscribe",
            ClusterOp::Joined { .. } => "joined",
            ClusterOp::Left { .. } => "left",
            ClusterOp::Message { .. } => "message",
            ClusterOp::Typing { .. } => "typing",
            ClusterOp::UserOnline { .. } => "user_online",
            ClusterOp::UserOffline { .. } => "user_offline",
            ClusterOp::Dm { .. } => "dm",
            ClusterOp::ClaimName { .. } => "claim_name",
            ClusterOp::ReleaseName { .. } => "release_name",
            ClusterOp::LookupUser { .. } => "lookup_user",
        }
    }

    /// The ticket to answer with [`ClusterEvent::Reply`], for the ops that expect one.
    pub fn ticket(&self) -> Option<Ticket> {
        match self {
            ClusterOp::ClaimName { ticket, .. } | ClusterOp::LookupUser { ticket, .. } => {
                Some(*ticket)
            }
            _ => None,
        }
    }
}

/// A user present in a room on some node, as the room's registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMember {
    /// The node its connection is on.
    pub node: NodeId,
    /// The user.
    pub user: UserId,
    /// Its display name.
    pub name: Arc<str>,
}

/// The answer to a [`ClusterOp`] that carries a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterReply {
    /// To [`ClusterOp::ClaimName`]: the name won, or `None` when every candidate is
    /// held by another user.
    Name(Option<Username>),
    /// To [`ClusterOp::LookupUser`]: the user's display name when it is online on a live
    /// node, `None` otherwise.
    User(Option<Arc<str>>),
    /// The bus could not answer (unavailable): the client gets `cluster_unavailable`.
    Failed,
}

/// What the bus tells the engine (bus → engine). The bus never hands a node its own
/// announcements back.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// The answer to a [`ClusterOp`] with a ticket.
    Reply {
        /// The op's ticket.
        ticket: Ticket,
        /// The answer.
        reply: ClusterReply,
    },
    /// The room's member registry, read after subscribing (first join, or every
    /// resubscribe after the bus reconnected): it replaces what the engine knew of the
    /// room's remote members. The bus leaves this node's own entries out (the engine
    /// does not know its node id). The registry is read *after* the subscription is in
    /// place, and the snapshot is handed over *before* any announcement of the room
    /// received on that subscription (a sequential subscriber does this naturally:
    /// resubscribe, read, send the snapshots, then forward what arrived): an
    /// announcement that raced the read is then applied on top of the snapshot instead of
    /// being overwritten by it (replaying one the snapshot already reflects is harmless).
    RoomMembers {
        /// The room.
        room: RoomName,
        /// Every other node's members, one entry per (node, user).
        members: Vec<RemoteMember>,
    },
    /// The bus could not subscribe to `room` or read its registry: joins waiting for it
    /// fail with `cluster_unavailable`.
    RoomUnavailable {
        /// The room.
        room: RoomName,
    },
    /// A user's first connection on `node` joined `room`.
    Joined {
        /// Where.
        node: NodeId,
        /// The room.
        room: RoomName,
        /// The user.
        user: UserId,
        /// Its display name.
        name: Arc<str>,
    },
    /// A user's last connection on `node` left `room`.
    Left {
        /// Where.
        node: NodeId,
        /// The room.
        room: RoomName,
        /// The user.
        user: UserId,
    },
    /// Another node announced a stored room message.
    Message {
        /// The room (`message.room`).
        room: RoomName,
        /// The message.
        message: Arc<StoredMessage>,
    },
    /// A typing indicator on another node went on or off.
    Typing {
        /// Where.
        node: NodeId,
        /// The room.
        room: RoomName,
        /// Who types.
        user: UserId,
        /// Its display name.
        name: Arc<str>,
        /// Started or stopped.
        on: bool,
    },
    /// Another node announced a stored DM to or from a user online here.
    Dm {
        /// The DM.
        message: Arc<StoredDm>,
    },
    /// `node` left the cluster (shut down, or its lease expired and it was reaped):
    /// everything it held is gone.
    NodeDown {
        /// The node.
        node: NodeId,
    },
}

impl ClusterEvent {
    /// A short snake_case name of the event's kind (for metrics and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterEvent::Reply { .. } => "reply",
            ClusterEvent::RoomMembers { .. } => "room_members",
            ClusterEvent::RoomUnavailable { .. } => "room_unavailable",
            ClusterEvent::Joined { .. } => "joined",
            ClusterEvent::Left { .. } => "left",
            ClusterEvent::Message { .. } => "message",
            ClusterEvent::Typing { .. } => "typing",
            ClusterEvent::Dm { .. } => "dm",
            ClusterEvent::NodeDown { .. } => "node_down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_validated() {
        assert_eq!(NodeId::parse("node-1_a").unwrap().as_str(), "node-1_a");
        assert!(NodeId::parse("").is_err());
        assert!(NodeId::parse("a b").is_err());
        assert!(NodeId::parse("a:b").is_err());
        assert!(NodeId::parse("é").is_err());
        assert!(NodeId::parse(&"x".repeat(64)).is_ok());
        assert!(NodeId::parse(&"x".repeat(65)).is_err());
    }
}
