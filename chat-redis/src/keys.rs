//! The Redis key and channel names of one cluster, all under one prefix (default
//! `chat:`). The layout is documented in the crate docs; the Lua scripts that build
//! keys themselves (reaping a node) use the same spelling, checked by the tests.

use chat_core::{RoomName, UserId};

/// Separates the two parts of a composite hash field or set member. User ids, room
/// names and node ids never contain it (control characters are refused by their
/// parsers), so the split is unambiguous.
pub(crate) const SEP: char = '\0';

/// Key and channel names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// ZSET node → lease deadline (ms, Redis `TIME`).
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// SET of `room\0user` a node has announced (for reaping it).
    pub(crate) fn node_members(&self, node: &str) -> String {
        format!("{}node:{node}:members", self.prefix)
    }

    /// SET of users a node has online or has claimed a name for (for reaping it).
    pub(crate) fn node_users(&self, node: &str) -> String {
        format!("{}node:{node}:users", self.prefix)
    }

    /// HASH `node\0user` → display name: who is in a room, on which node.
    pub(crate) fn room_members(&self, room: &RoomName) -> String {
        format!("{}room:{}:members", self.prefix, room.as_str())
    }

    /// HASH node → display name: where a user is online.
    pub(crate) fn user(&self, user: &UserId) -> String {
        format!("{}user:{}", self.prefix, user.as_str())
    }

    /// HASH name key (`Username::key`) → user id: the cluster-wide name claims.
    pub(crate) fn names(&self) -> String {
        format!("{}names", self.prefix)
    }

    /// SET of the name keys `user` holds (the reverse of [`names`](Self::names)), so
    /// its names can be released without any node's state. (`unames:`, not `user:…`:
    /// user ids may contain `:`, and no user hash key may equal another user's set.)
    pub(crate) fn held_names(&self, user: &UserId) -> String {
        format!("{}unames:{}", self.prefix, user.as_str())
    }

    /// STREAM of the DM announcements to or from `user` (capped, expiring): what a
    /// node whose subscriber was away reads back after it resubscribes.
    pub(crate) fn dm_stream(&self, user: &UserId) -> String {
        format!("{}dms:{}", self.prefix, user.as_str())
    }

    /// Channel of a room's announcements (joined, left, message, typing).
    pub(crate) fn room_channel(&self, room: &RoomName) -> String {
        format!("{}r:{}", self.prefix, room.as_str())
    }

    /// Channel of a user's direct messages.
    pub(crate) fn user_channel(&self, user: &UserId) -> String {
        format!("{}u:{}", self.prefix, user.as_str())
    }

    /// Channel of cluster-wide events (a node went down).
    pub(crate) fn cluster_channel(&self) -> String {
        format!("{}cluster", self.prefix)
    }

    /// A node's private channel: room member snapshots published by its own sync
    /// script, so they arrive in order with the room's announcements.
    pub(crate) fn node_channel(&self, node: &str) -> String {
        format!("{}n:{node}", self.prefix)
    }
}

/// `a\0b`.
#[cfg(test)]
pub(crate) fn pair(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len() + 1);
    s.push_str(a);
    s.push(SEP);
    s.push_str(b);
    s
}
