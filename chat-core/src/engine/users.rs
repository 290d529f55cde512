//! Online users: who holds which connections and which name.
//!
//! Presence counts users, not sockets: a user is online while it has at least one
//! connection. Names are unique among online users by [`Username::key`].

use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::ids::{ConnId, UserId, Username};

#[derive(Debug)]
pub(crate) struct User {
    pub(crate) name: Option<Username>,
    /// The name comes from an authenticated identity and cannot change.
    pub(crate) locked: bool,
    pub(crate) conns: SmallVec<[ConnId; 2]>,
}

impl User {
    pub(crate) fn display_name(&self) -> Option<Arc<str>> {
        // A refcount, not a copy: this runs for every message, DM and join.
        self.name.as_ref().map(Username::shared)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Users {
    by_id: FxHashMap<UserId, User>,
    /// Name key → holder.
    names: FxHashMap<Arc<str>, UserId>,
}

impl Users {
    pub(crate) fn get(&self, id: &UserId) -> Option<&User> {
        self.by_id.get(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Who holds the name `key`, if anyone.
    pub(crate) fn holder(&self, name: &Username) -> Option<&UserId> {
        self.names.get(name.key())
    }

    /// Adds a connection to a user, creating the user when new.
    pub(crate) fn attach(&mut self, id: &UserId, conn: ConnId, name: Option<Username>) {
        let user = self.by_id.entry(id.clone()).or_insert_with(|| User {
            name: None,
            locked: false,
            conns: SmallVec::new(),
        });
        user.conns.push(conn);
        if let Some(name) = name
            && user.name.is_none()
        {
            self.names.insert(name.key().into(), id.clone());
            user.name = Some(name);
            user.locked = true;
        }
    }

    /// Removes a connection; the user goes offline (and frees its name) with its last.
    pub(crate) fn detach(&mut self, id: &UserId, conn: ConnId) {
        let Some(user) = self.by_id.get_mut(id) else {
            return;
        };
        user.conns.retain(|c| *c != conn);
        if user.conns.is_empty() {
            if let Some(name) = &user.name {
                self.names.remove(name.key());
            }
            self.by_id.remove(id);
        }
    }

    /// Sets an online user's name. The caller checked that nobody else holds it.
    pub(crate) fn rename(&mut self, id: &UserId, name: Username) {
        let Some(user) = self.by_id.get_mut(id) else {
            return;
        };
        if let Some(old) = user.name.take() {
            self.names.remove(old.key());
        }
        self.names.insert(name.key().into(), id.clone());
        user.name = Some(name);
    }
}
