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
    /// * After [`NUMBERED_TRIES`] numbered tries, `wanted #a1b2`: 4 hex digits of a stable
    ///   hash of the user id (then of the id with a variant number, for at most
    ///   [`HASHED_TRIES`] variants), so many users holding `X`, `X (2)`… cost a bounded
    ///   number of tries per connect, not one per user online.
    ///
    /// Deterministic: it depends only on the names online and the user id; at most
    /// `NUMBERED_TRIES + HASHED_TRIES` tries, each one normalisation of a 20-character
    /// name. If all are taken (vanishingly unlikely), the name is shared rather than
    /// refused.
    pub(crate) fn free_name(&self, wanted: Username, id: &UserId) -> Username {
        let mut last = None;
        for candidate in candidates(&wanted, id) {
            if self.is_free(&candidate, id) {
                return candidate;
            }
            last = Some(candidate);
        }
        // Every candidate taken: a shared name beats a refusal.
        last.unwrap_or(wanted)
    }

    /// Whether nobody but `id` holds `name` here.
    fn is_free(&self, name: &Username, id: &UserId) -> bool {
        self.names.get(name.key()).is_none_or(|h| h == id)
    }

    /// The names [`free_name`](Self::free_name) would try, in order, minus those another
    /// user holds here: what a cluster node claims cluster-wide in one round trip.
    pub(crate) fn name_candidates(&self, wanted: &Username, id: &UserId) -> Vec<Username> {
        candidates(wanted, id)
            .filter(|c| self.is_free(c, id))
            .collect()
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

    /// Gives an online user without a name the name it claimed for its identity
    /// (locked, like [`attach`](Self::attach) with a name).
    pub(crate) fn name_locked(&mut self, id: &UserId, name: Username) {
        let Some(user) = self.by_id.get_mut(id) else {
            return;
        };
        if user.name.is_none() {
            self.names.insert(name.key().into(), id.clone());
            user.name = Some(name);
            user.locked = true;
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

/// `wanted`, then `wanted (2)`… and `wanted #a1b2`… (see [`Users::free_name`]).
fn candidates<'a>(wanted: &'a Username, id: &'a UserId) -> impl Iterator<Item = Username> + 'a {
    let numbered = (2..).take(NUMBERED_TRIES).map(|n| format!(" ({n})"));
    let hashed = (0..HASHED_TRIES).map(move |variant| format!(" #{:04x}", id_hash(id, variant)));
    let suffixed = numbered.chain(hashed).filter_map(move |suffix| {
        let room = USERNAME_MAX_CHARS.saturating_sub(suffix.chars().count());
        let base: String = wanted.as_str().chars().take(room).collect();
        Username::parse(&format!("{}{suffix}", base.trim_end())).ok()
    });
    std::iter::once(wanted.clone()).chain(suffixed)
}

/// Numbered candidates (`X (2)` … `X (17)`) [`Users::free_name`] tries: 16.
const NUMBERED_TRIES: usize = 16;

/// Hashed candidates (`X #a1b2`) [`Users::free_name`] tries after the numbered ones: 8.
const HASHED_TRIES: u16 = 8;

/// 16 bits of a stable hash (FNV-1a) of the user id and a variant number: the same on
/// every node and every run, unlike `std`'s randomly seeded hasher.
fn id_hash(id: &UserId, variant: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.as_str().bytes().chain(variant.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Fold the high half in so all 32 bits count.
    let [a, b, c, d] = h.to_le_bytes();
    u16::from_le_bytes([a ^ c, b ^ d])
}
