//! Online users: who holds which connections and which name.
//!
//! Presence counts users, not sockets: a user is online while it has at least one
//! connection. Names are unique among online users by [`Username::key`]: an
//! authenticated user whose name is taken gets it disambiguated ([`Users::free_name`]).

use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::ids::{ConnId, USERNAME_MAX_CHARS, UserId, Username};

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

    /// The name an authenticated user `id` coming online with `wanted` gets.
    ///
    /// * `wanted` itself when nobody else online holds its key (or `id` already holds
    ///   it; a user already online keeps the name it has anyway, see
    ///   [`attach`](Self::attach)).
    /// * Otherwise `wanted (2)`, `wanted (3)`…: the first whose key is free, the base cut
    ///   (and trailing spaces trimmed) so the whole fits in [`USERNAME_MAX_CHARS`]. Who
    ///   holds the name — another authenticated user or an anonymous one who chose it —
    ///   makes no difference: the holder keeps it, the newcomer is disambiguated.
    ///
    /// Deterministic: it depends only on the names online. Among `n + 1` candidates with
    /// distinct suffixes one is free when `n` names are held, so the loop ends after at
    /// most `n + 1` tries; each try is one normalisation of a 20-character name.
    pub(crate) fn free_name(&self, wanted: Username, id: &UserId) -> Username {
        let free = |name: &Username| self.names.get(name.key()).is_none_or(|h| h == id);
        if free(&wanted) {
            return wanted;
        }
        let tries = self.names.len().saturating_add(1);
        let mut last = None;
        for n in (2..).take(tries) {
            let suffix = format!(" ({n})");
            let room = USERNAME_MAX_CHARS.saturating_sub(suffix.chars().count());
            let base: String = wanted.as_str().chars().take(room).collect();
            let Ok(candidate) = Username::parse(&format!("{}{suffix}", base.trim_end())) else {
                continue;
            };
            if free(&candidate) {
                return candidate;
            }
            last = Some(candidate);
        }
        // Unreachable by the counting argument above; a shared name beats a refusal.
        last.unwrap_or(wanted)
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
