//! [`Record`]: what this node holds in the registry, kept by the node itself. It is
//! the truth the node re-asserts when Redis lost it (a restart), when another node
//! reaped it (it was paused past its lease), or when a write failed midway.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chat_core::{RoomName, UserId, Username};

/// One user this node has online or holds a name claim for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct UserEntry {
    /// `UserOnline` was performed (and no `UserOffline` since).
    pub(crate) online: bool,
    /// The name this node last claimed or was told about for the user.
    pub(crate) name: Option<Username>,
}

/// This node's registry entries, as it intends them.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// Rooms subscribed to (their channels, and a snapshot after each resync).
    pub(crate) rooms: BTreeSet<RoomName>,
    /// Members this node announced: (room, user) → display name.
    pub(crate) members: BTreeMap<(RoomName, UserId), Arc<str>>,
    /// Users online here or holding a name claimed here.
    pub(crate) users: BTreeMap<UserId, UserEntry>,
}

impl Record {
    /// The display name to record for `user` (empty when it has none yet).
    pub(crate) fn display_name(&self, user: &UserId) -> String {
        self.users
            .get(user)
            .and_then(|u| u.name.as_ref())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default()
    }
}
