//! One room: its members, the users they belong to, and its ordered message stream.
//!
//! # The stream
//!
//! Store replies arrive in any order, yet every member must see the room's messages
//! exactly once and in `seq` order (ARCHITECTURE.md property 1). The stream keeps a
//! `cursor` — the last `seq` delivered to the members — and a reorder buffer of messages
//! that arrived ahead of it. A message is delivered when it is the cursor's successor.
//!
//! The cursor is unknown until the room's first join completes; that join's store read
//! establishes it, and it lives as long as the room. A joiner's history may end *after* the cursor (the store already has
//! messages whose append replies are still on their way): that member is *ahead* until
//! the cursor catches up, and those messages skip it. A history that ends *before* the
//! cursor is completed by the join logic before the joiner becomes a member.
//!
//! If a gap remains when no append of ours is in flight (a message appended by somebody
//! else, e.g. another server sharing the store), the engine reads the gap from the store.
//!
//! Every store reply carries the stream's epoch. One that differs from the epoch the
//! cursor belongs to means the store forgot the stream and started it again (seq from 1
//! under a new epoch): [`Room::observe_epoch`] restarts the cursor and tells the members,
//! so they keep receiving instead of waiting for a `seq` that will never come.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

use super::io::Recipients;
use super::outbox::Outbox;
use super::remote::RoomRemote;
use crate::ids::{ConnId, Epoch, RoomName, Seq, UserId};
use crate::message::StoredMessage;
use crate::protocol::{ServerEvent, UserEntry};

/// Retired epochs a room remembers: enough for append replies that race one reset.
const RETIRED_EPOCHS: usize = 2;

/// What a store reply's epoch means for the room's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochSeen {
    /// The stream's epoch (or the first one seen): nothing changes.
    Current,
    /// A new epoch: the stream restarted and the members were told `stream_reset`.
    Reset,
    /// An epoch the stream already left: the reply predates the reset and is ignored.
    Stale,
}

/// A connection's membership.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) user: UserId,
    /// The first `seq` of that history (`join_cursor + 1` when it was empty).
    pub(crate) page_first: Seq,
}

/// A typing indicator that is on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Typing {
    /// The connection that started it (its leaving stops it).
    pub(crate) by: ConnId,
    pub(crate) deadline: Instant,
    /// When the other nodes of a cluster were last told it is on (they stop it by
    /// themselves a typing timeout later unless told again).
    pub(crate) announced: Instant,
}

/// A user present in the room through one or more connections.
#[derive(Debug, Clone)]
pub(crate) struct Presence {
    pub(crate) username: Arc<str>,
    pub(crate) conns: SmallVec<[ConnId; 2]>,
    pub(crate) typing: Option<Typing>,
}

/// The room's ordered message stream (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) cursor: Option<Seq>,
    pub(crate) epoch: Option<Epoch>,
    /// Messages that arrived ahead of the cursor (bounded by the appends in flight plus
    /// one gap-fill page).
    pub(crate) reorder: BTreeMap<Seq, Arc<StoredMessage>>,
    /// Appends issued for this room whose reply has not come back.
    pub(crate) inflight: u32,
    /// A gap-fill read is in flight (or waiting to be retried).
    pub(crate) gap_fill: bool,
    /// Epochs this stream moved away from (the last few): a late append reply under one
    /// of them was stored in a stream the store has since forgotten.
    pub(crate) retired: SmallVec<[Epoch; 2]>,
    /// Members whose join history reaches past the cursor, with its last `seq`.
    pub(crate) ahead: SmallVec<[(ConnId, Seq); 2]>,
    /// Read on from the cursor until a page comes back short, even without a known gap:
    /// set when a cluster node (re)synced the room, so messages announced while it was
    /// not listening are recovered from the store.
    pub(crate) catch_up: bool,
    /// On a cluster node, with a gap in sight and appends of ours in flight: how many of
    /// those appends (the only ones that can fill it — later ones are stored after what
    /// we already see) are still to answer. At 0 the gap is read from the store even
    /// with newer appends in flight, so steady local traffic cannot hold back a lost
    /// remote message.
    pub(crate) patience: Option<u32>,
}

/// What removing a member changed.
#[derive(Debug)]
pub(crate) struct Departure {
    pub(crate) user: UserEntry,
    /// The user has no connection left in the room.
    pub(crate) user_gone: bool,
    /// The departing connection had started the user's typing indicator, which had
    /// this deadline; it is now off.
    pub(crate) stopped_typing: Option<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct Room {
    pub(crate) members: IndexMap<ConnId, Member, FxBuildHasher>,
    pub(crate) presence: IndexMap<UserId, Presence, FxBuildHasher>,
    /// Shared list of member connections for broadcasts; `None` after a change, rebuilt
    /// on the next broadcast: membership changes without a broadcast in between (leaves
    /// in a burst, a join's own `user_joined`) cost one rebuild, not one each.
    snapshot: Option<Arc<[ConnId]>>,
    /// Joins waiting for their store read.
    pub(crate) pending_joins: u32,
    pub(crate) stream: Stream,
    /// Members on other nodes of a cluster (empty on a single node).
    pub(crate) remote: RoomRemote,
}

impl Room {
    /// A room can be forgotten when nobody is in it or on the way in and no store work
    /// for it is outstanding.
    pub(crate) fn is_idle(&self) -> bool {
        self.members.is_empty()
            && self.pending_joins == 0
            && self.stream.inflight == 0
            && !self.stream.gap_fill
    }

    fn snapshot(&mut self) -> Arc<[ConnId]> {
        self.snapshot
            .get_or_insert_with(|| self.members.keys().copied().collect())
            .clone()
    }

    /// Sends `event` to every member except `except`.
    pub(crate) fn broadcast(
        &mut self,
        out: &mut Outbox,
        event: ServerEvent,
        except: SmallVec<[ConnId; 2]>,
    ) {
        if self.members.len() <= except.len() {
            // Everyone is excluded (or nobody is here): nothing to send.
            if self.members.keys().all(|c| except.contains(c)) {
                return;
            }
        }
        let members = self.snapshot();
        out.deliver(Recipients::Room { members, except }, event);
    }

    /// `room_users`: each present user once, in arrival order (local users first, then
    /// those present only on other nodes of a cluster).
    pub(crate) fn user_entries(&self) -> Vec<UserEntry> {
        self.presence
            .iter()
            .map(|(id, p)| UserEntry {
                id: id.clone(),
                username: p.username.clone(),
            })
            .chain(self.remote_entries())
            .collect()
    }

    /// Makes `conn` a member. Returns true when its user was not present before.
    pub(crate) fn add_member(&mut self, conn: ConnId, member: Member, username: Arc<str>) -> bool {
        let user = member.user.clone();
        self.members.insert(conn, member);
        self.snapshot = None;
        let mut new_user = false;
        let presence = self.presence.entry(user).or_insert_with(|| {
            new_user = true;
            Presence {
                username,
                conns: SmallVec::new(),
                typing: None,
            }
        });
        presence.conns.push(conn);
        new_user
    }

    /// Removes `conn`'s membership, if any.
    pub(crate) fn remove_member(&mut self, conn: ConnId) -> Option<Departure> {
        let member = self.members.swap_remove(&conn)?;
        self.snapshot = None;
        self.stream.ahead.retain(|(c, _)| *c != conn);
        let presence = self
            .presence
            .get_mut(&member.user)
            .expect("every member's user is present");
        presence.conns.retain(|c| *c != conn);
        let stopped_typing = match presence.typing {
            Some(t) if t.by == conn => presence.typing.take().map(|t| t.deadline),
            _ => None,
        };
        let user = UserEntry {
            id: member.user.clone(),
            username: presence.username.clone(),
        };
        let user_gone = presence.conns.is_empty();
        if user_gone {
            self.presence.swap_remove(&member.user);
        }
        // The stream's cursor survives an empty room: a join still on its way may hold a
        // read older than what the departed members received, and the cursor is what
        // tells it to catch up. The room (and its stream) is forgotten once idle.
        Some(Departure {
            user,
            user_gone,
            stopped_typing,
        })
    }

    /// Takes a stored message into the stream (from an append reply or a gap-fill read).
    pub(crate) fn accept(&mut self, message: Arc<StoredMessage>) {
        match self.stream.cursor {
            Some(cursor) if message.seq <= cursor => {}
            // Before the first join completes, keep arrivals only for a join on its way.
            None if self.pending_joins == 0 => {}
            _ => {
                self.stream.reorder.insert(message.seq, message);
            }
        }
    }

    /// Whether `epoch` is one this room's stream already left behind.
    pub(crate) fn is_retired(&self, epoch: &Epoch) -> bool {
        self.stream.retired.contains(epoch)
    }

    /// Notes the epoch of a store reply for this room. When the room's stream has a cursor
    /// under another epoch, the store forgot the stream and started it again (an idle
    /// stream evicted to stay within a memory budget): the messages of the old stream
    /// still buffered are delivered in order (gaps skipped — the old stream is gone), the
    /// members are told `stream_reset {room, epoch}`, and the cursor restarts at 0
    /// under the new epoch, so the new stream's `seq` 1, 2… flow to the members as
    /// before. A retired epoch (a reply read before the reset, answered after it) is
    /// [`EpochSeen::Stale`] and changes nothing: going back to it would deliver the new
    /// stream's messages twice.
    pub(crate) fn observe_epoch(
        &mut self,
        name: &RoomName,
        epoch: &Epoch,
        out: &mut Outbox,
    ) -> EpochSeen {
        if self.is_retired(epoch) {
            return EpochSeen::Stale;
        }
        let changed = self.stream.cursor.is_some()
            && self
                .stream
                .epoch
                .as_ref()
                .is_some_and(|known| known != epoch);
        if !changed {
            return EpochSeen::Current;
        }
        let nothing_delivered = self.stream.cursor == Some(Seq(0))
            && self.stream.reorder.is_empty()
            && self.stream.ahead.is_empty();
        if nothing_delivered {
            // No member has anything of the old stream (an empty page's epoch, which a
            // store may give for a stream it does not hold): nothing to reset. The old
            // epoch is still retired, so a late reply under it cannot come back.
            self.retire_and_adopt(epoch);
            return EpochSeen::Current;
        }
        while let Some(seq) = self.stream.reorder.first_key_value().map(|(s, _)| *s) {
            if let Some(cursor) = self.stream.cursor
                && seq > cursor.next()
            {
                self.stream.cursor = Some(Seq(seq.0 - 1));
            }
            self.deliver_ready(out);
        }
        self.retire_and_adopt(epoch);
        self.stream.cursor = Some(Seq(0));
        self.stream.ahead.clear();
        for member in self.members.values_mut() {
            // Nothing of the new stream predates what a member has: its history starts
            // at the new stream's first message.
            member.page_first = Seq(1);
        }
        let event = ServerEvent::StreamReset {
            room: name.clone(),
            epoch: epoch.clone(),
        };
        self.broadcast(out, event, SmallVec::new());
        EpochSeen::Reset
    }

    /// Makes `epoch` the stream's, remembering the one it replaces as retired.
    fn retire_and_adopt(&mut self, epoch: &Epoch) {
        if let Some(old) = self.stream.epoch.replace(epoch.clone()) {
            if self.stream.retired.len() == RETIRED_EPOCHS {
                self.stream.retired.remove(0);
            }
            self.stream.retired.push(old);
        }
    }

    /// Delivers every buffered message that continues the stream, in order.
    pub(crate) fn deliver_ready(&mut self, out: &mut Outbox) {
        let Some(mut cursor) = self.stream.cursor else {
            return;
        };
        while let Some(entry) = self.stream.reorder.first_entry() {
            let seq = *entry.key();
            if seq <= cursor {
                entry.remove();
                continue;
            }
            if seq != cursor.next() {
                break;
            }
            let message = entry.remove();
            cursor = seq;
            let except: SmallVec<[ConnId; 2]> = self
                .stream
                .ahead
                .iter()
                .filter(|(_, last)| *last >= seq)
                .map(|(c, _)| *c)
                .collect();
            self.stream.ahead.retain(|(_, last)| *last > seq);
            self.broadcast(out, ServerEvent::MessageReceived(message), except);
        }
        self.stream.cursor = Some(cursor);
    }
}
