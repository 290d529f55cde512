//! `join_room` and `leave_room`, and the gapless join.
//!
//! A join is a store read followed by activation:
//!
//! 1. **Read.** A plain join reads the latest [`Config::join_history`](super::Config)
//!    messages. A resume (`since` + `epoch`) reads what came after `since`; when that
//!    cannot be a complete replay (other epoch, `since` in the future, too much missed, or
//!    the store no longer has it all) the join falls back to the latest page with
//!    `recovered: false` — never a partial replay.
//! 2. **Reconcile** the page's end `L` with the room stream's cursor `D` (see
//!    [`room`](super::room)): `L ≥ D` activates at once (the member is *ahead* until the
//!    stream reaches `L`); `L < D` means the read missed messages the members already
//!    have, so the join reads the rest (`seq > L`) before activating. The store's
//!    read-your-writes guarantee makes one extra read enough; a bounded number of
//!    attempts guards against a store that breaks it.
//! 3. **Activate**: `room_joined`, `message_history`, `room_users` to the joiner, in that
//!    order; `user_joined` to the others when this is the user's first connection there.
//!
//! The joining connection handles no other command until its join is complete, so its
//! own messages cannot overtake its membership.

use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use super::room::Member;
use super::typing::broadcast_stopped;
use super::{Engine, Pending, Timer, display};
use crate::cluster::ClusterOp;
use crate::ids::{ConnId, Epoch, RoomName, Seq};
use crate::message::StoredMessage;
use crate::protocol::{ErrorCode, History, JoinCursor, ServerEvent, UserEntry, WireError};
use crate::store::{Page, PageRange, StoreError};

/// Reads a join may take to catch up with the stream before it gives up.
const MAX_CATCH_UP_READS: u8 = 3;

/// A join waiting for the store.
#[derive(Debug)]
pub(crate) struct JoinTask {
    pub(crate) conn: ConnId,
    pub(crate) room: RoomName,
    resume: Option<Resume>,
    phase: Phase,
    catch_up_reads: u8,
}

#[derive(Debug)]
struct Resume {
    since: Seq,
    epoch: Option<String>,
}

#[derive(Debug)]
enum Phase {
    /// The first read: latest page, or the replay after `since`.
    First,
    /// A resume that could not be complete; reading the latest page instead.
    Latest,
    /// History so far, ending at `last`; reading what follows it.
    CatchUp(Partial),
}

/// A history being assembled.
#[derive(Debug)]
struct Partial {
    messages: Vec<Arc<StoredMessage>>,
    last: Seq,
    epoch: Epoch,
    has_more: bool,
    recovered: bool,
}

/// Whether `messages` are consecutive, start right after `after` (when given) and do
/// not pass `last`.
fn is_run(messages: &[Arc<StoredMessage>], after: Option<Seq>, last: Seq) -> bool {
    let mut expected = after.map(Seq::next);
    for m in messages {
        if expected.is_some_and(|e| e != m.seq) {
            return false;
        }
        expected = Some(m.seq.next());
    }
    messages.last().is_none_or(|m| m.seq <= last)
}

impl Engine {
    pub(super) fn cmd_join(
        &mut self,
        now: Instant,
        conn: ConnId,
        raw_room: &str,
        since: Option<Seq>,
        epoch: Option<String>,
        keep_rooms: bool,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if self.users.get(&c.user).is_none_or(|u| u.name.is_none()) {
            let e = WireError::new(ErrorCode::UsernameRequired, "Set username first");
            return self.refuse(now, conn, e);
        }
        let room = match RoomName::parse(raw_room) {
            Ok(room) => room,
            Err(e) => return self.refuse(now, conn, WireError::from(&e)),
        };
        if let Err(wait) = c.limits.join.take(now) {
            return self.rate_limited(now, conn, "Joining rooms too fast", wait);
        }
        // Base behaviour: a join moves the connection out of its current room. Joining a
        // room already joined is a leave and a join, as in the base server.
        if !keep_rooms && let Some(current) = c.rooms.last().cloned() {
            self.depart(conn, &current, true);
        }
        if self.rooms_of(conn).contains(&room) {
            self.depart(conn, &room, true);
        }
        if self.rooms_of(conn).len() >= self.config.max_rooms_per_connection {
            let e = WireError::new(ErrorCode::TooManyRooms, "You are in too many rooms");
            return self.refuse(now, conn, e);
        }
        self.rooms.entry(room.clone()).or_default().pending_joins += 1;
        self.subscribe_if_needed(&room);
        let task = JoinTask {
            conn,
            room,
            resume: since.map(|since| Resume { since, epoch }),
            phase: Phase::First,
            catch_up_reads: 0,
        };
        self.request_join_page(task);
    }

    pub(super) fn cmd_leave(&mut self, now: Instant, conn: ConnId, room: Option<&str>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match c.resolve_room(room) {
            Ok(room) => self.depart(conn, &room, true),
            Err(e) => self.refuse(now, conn, e),
        }
    }

    /// Issues the store read for the join's current phase.
    fn request_join_page(&mut self, task: JoinTask) {
        let range = match (&task.phase, &task.resume) {
            // Limits are at least 1 (Store contract); `activate` trims to the config.
            (Phase::First, Some(resume)) => PageRange::After {
                seq: resume.since,
                limit: self.config.resume_max.max(1),
            },
            (Phase::First | Phase::Latest, _) => PageRange::Latest {
                limit: self.config.join_history.max(1),
            },
            (Phase::CatchUp(partial), _) => PageRange::After {
                seq: partial.last,
                limit: self.config.resume_max + self.config.join_history,
            },
        };
        let ticket = self.out.store(crate::engine::StoreOp::RoomPage {
            room: task.room.clone(),
            range,
        });
        let conn = task.conn;
        self.wait_for(conn, ticket, Pending::Join(task));
    }

    /// The join failed: release the room and tell the connection why.
    pub(super) fn abort_join(&mut self, task: &JoinTask, error: Option<WireError>) {
        if let Some(room) = self.rooms.get_mut(&task.room) {
            room.pending_joins = room.pending_joins.saturating_sub(1);
            if room.members.is_empty() && room.pending_joins == 0 {
                room.stream.reorder.clear();
            }
        }
        if let Some(error) = error
            && self.conns.contains_key(&task.conn)
        {
            self.out.error(task.conn, error);
        }
        self.forget_if_idle(&task.room);
    }

    pub(super) fn on_join_page(
        &mut self,
        now: Instant,
        task: JoinTask,
        page: Result<Page<StoredMessage>, StoreError>,
    ) {
        if !self.conns.contains_key(&task.conn) {
            return self.abort_join(&task, None);
        }
        let page = match page {
            Ok(page) => page,
            Err(_) => {
                let error = WireError::store_unavailable();
                return self.abort_join(&task, Some(error));
            }
        };
        // A cluster node activates a join only once the room's members are known.
        let Some((mut task, page)) = self.park_unless_synced(task, page) else {
            return;
        };
        let partial = match std::mem::replace(&mut task.phase, Phase::First) {
            Phase::First => match &task.resume {
                Some(resume) => {
                    let complete = resume.epoch.as_deref() == Some(page.epoch.as_str())
                        && resume.since <= page.last_seq
                        && !page.has_more
                        && is_run(&page.messages, Some(resume.since), page.last_seq)
                        && page.messages.last().map_or(resume.since, |m| m.seq) == page.last_seq;
                    if !complete {
                        task.phase = Phase::Latest;
                        return self.request_join_page(task);
                    }
                    Partial {
                        messages: page.messages,
                        last: page.last_seq,
                        epoch: page.epoch,
                        has_more: false,
                        recovered: true,
                    }
                }
                None => self.latest_partial(page),
            },
            Phase::Latest => self.latest_partial(page),
            Phase::CatchUp(partial) if partial.epoch != page.epoch => {
                // The stream restarted between the two reads: the pages belong to
                // different streams and cannot be joined. Start again from the latest.
                return self.restart_join(task);
            }
            Phase::CatchUp(mut partial) => {
                if !is_run(&page.messages, Some(partial.last), page.last_seq) {
                    let error = WireError::store_unavailable();
                    return self.abort_join(&task, Some(error));
                }
                if let Some(last) = page.messages.last() {
                    partial.last = last.seq;
                }
                partial.messages.extend(page.messages);
                partial
            }
        };
        if !is_run(&partial.messages, None, partial.last) {
            let error = WireError::store_unavailable();
            return self.abort_join(&task, Some(error));
        }
        if self
            .rooms
            .get(&task.room)
            .is_some_and(|r| r.is_retired(&partial.epoch))
        {
            // Read before the stream restarted, answered after: activating it would take
            // the room back to the old stream.
            return self.restart_join(task);
        }
        // A cursor under another epoch says nothing about this read: the stream was
        // forgotten and started again, which `activate` handles.
        let cursor = self
            .rooms
            .get(&task.room)
            .filter(|r| r.stream.epoch.as_ref().is_none_or(|e| *e == partial.epoch))
            .and_then(|r| r.stream.cursor);
        match cursor {
            Some(delivered) if partial.last < delivered => {
                // The read missed messages the members already have: read on from it.
                task.catch_up_reads += 1;
                if task.catch_up_reads > MAX_CATCH_UP_READS {
                    let error = WireError::store_unavailable();
                    return self.abort_join(&task, Some(error));
                }
                task.phase = Phase::CatchUp(partial);
                self.request_join_page(task);
            }
            _ => self.activate(now, &task, partial),
        }
    }

    /// Reads the latest page again (bounded like the catch-up reads): the history read
    /// so far belongs to a stream the room already left.
    fn restart_join(&mut self, mut task: JoinTask) {
        task.catch_up_reads += 1;
        if task.catch_up_reads > MAX_CATCH_UP_READS {
            let error = WireError::store_unavailable();
            return self.abort_join(&task, Some(error));
        }
        task.phase = Phase::Latest;
        self.request_join_page(task);
    }

    fn latest_partial(&self, page: Page<StoredMessage>) -> Partial {
        Partial {
            last: page.last_seq,
            epoch: page.epoch,
            has_more: page.has_more,
            recovered: false,
            messages: page.messages,
        }
    }

    /// Makes the joiner a member and sends the three join replies.
    fn activate(&mut self, _now: Instant, task: &JoinTask, mut partial: Partial) {
        let conn = task.conn;
        let Some(c) = self.conns.get_mut(&conn) else {
            return self.abort_join(task, None);
        };
        c.rooms.push(task.room.clone());
        let user = c.user.clone();
        let username = display(self.users.get(&user).and_then(|u| u.display_name()));
        if !partial.recovered && partial.messages.len() > self.config.join_history {
            let excess = partial.messages.len() - self.config.join_history;
            partial.messages.drain(..excess);
            partial.has_more = true;
        }
        let page_first = partial
            .messages
            .first()
            .map_or(partial.last.next(), |m| m.seq);
        let room = self.rooms.entry(task.room.clone()).or_default();
        room.pending_joins = room.pending_joins.saturating_sub(1);
        room.observe_epoch(&task.room, &partial.epoch, &mut self.out);
        let stream = &mut room.stream;
        if stream.cursor.is_none() {
            stream.cursor = Some(partial.last);
            stream.epoch = Some(partial.epoch.clone());
        }
        if stream.cursor.is_some_and(|d| partial.last > d) {
            stream.ahead.push((conn, partial.last));
        }
        let first_here = !room.presence.contains_key(&user);
        if first_here && self.config.cluster {
            self.out.cluster(ClusterOp::Joined {
                room: task.room.clone(),
                user: user.clone(),
                name: username.clone(),
            });
        }
        // Present through another node already: the members know the user.
        if first_here && !room.remote.users.contains_key(&user) {
            let event = ServerEvent::UserJoined {
                room: task.room.clone(),
                user: UserEntry {
                    id: user.clone(),
                    username: username.clone(),
                },
            };
            room.broadcast(&mut self.out, event, SmallVec::new());
        }
        let member = Member { user, page_first };
        room.add_member(conn, member, username);
        self.out.send(
            conn,
            ServerEvent::RoomJoined {
                room: task.room.clone(),
            },
        );
        let cursor = JoinCursor {
            epoch: partial.epoch,
            last_seq: partial.last,
            recovered: partial.recovered,
        };
        // A resume replay goes out in frames of at most `history_frame_bytes`; a plain
        // join's page stays one frame (base compatibility).
        let mut chunks = if partial.recovered {
            super::messages::split_by_bytes(partial.messages, self.config.history_frame_bytes)
        } else {
            vec![partial.messages]
        };
        let last = chunks.pop().unwrap_or_default();
        for messages in chunks {
            // Each frame's `lastSeq` is its own last message: a client that keeps the
            // cursor of the last frame it got resumes from there, not past the rest.
            let last_seq = messages.last().map_or(cursor.last_seq, |m| m.seq);
            self.out.send(
                conn,
                ServerEvent::MessageHistory(History {
                    room: task.room.clone(),
                    messages,
                    join: Some(JoinCursor {
                        last_seq,
                        ..cursor.clone()
                    }),
                    has_more: false,
                    continued: true,
                }),
            );
        }
        self.out.send(
            conn,
            ServerEvent::MessageHistory(History {
                room: task.room.clone(),
                messages: last,
                join: Some(cursor),
                has_more: partial.has_more,
                continued: false,
            }),
        );
        self.out.send(
            conn,
            ServerEvent::RoomUsers {
                room: task.room.clone(),
                users: room.user_entries(),
            },
        );
        room.deliver_ready(&mut self.out);
        self.check_gap(&task.room);
    }

    /// Removes `conn` from a room: the typing indicator it started stops, the others see
    /// `user_left` if its user has no other connection there, and an explicit leave is
    /// answered with `room_left`.
    pub(super) fn depart(&mut self, conn: ConnId, name: &RoomName, explicit: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rooms.retain(|r| r != name);
        }
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(departure) = room.remove_member(conn) else {
            return;
        };
        let user = departure.user;
        if let Some(deadline) = departure.stopped_typing {
            self.timers
                .remove(&(deadline, Timer::TypingStop(name.clone(), user.id.clone())));
            if self.config.cluster {
                self.out.cluster(ClusterOp::Typing {
                    room: name.clone(),
                    user: user.id.clone(),
                    name: user.username.clone(),
                    on: false,
                });
            }
            let except = room
                .presence
                .get(&user.id)
                .map(|p| p.conns.clone())
                .unwrap_or_default();
            // Still typing on another node: the indicator stays on for the members here.
            let typing_elsewhere = room
                .remote
                .users
                .get(&user.id)
                .is_some_and(|u| u.typing.is_some());
            if !typing_elsewhere {
                broadcast_stopped(
                    room,
                    &mut self.out,
                    name,
                    &user.id,
                    user.username.clone(),
                    except,
                );
            }
        }
        if departure.user_gone && self.config.cluster {
            self.out.cluster(ClusterOp::Left {
                room: name.clone(),
                user: user.id.clone(),
            });
        }
        // Still present through another node: the members keep seeing the user.
        if departure.user_gone && !room.remote.users.contains_key(&user.id) {
            let event = ServerEvent::UserLeft {
                room: name.clone(),
                user,
            };
            room.broadcast(&mut self.out, event, SmallVec::new());
        }
        if explicit {
            self.out
                .send(conn, ServerEvent::RoomLeft { room: name.clone() });
        }
        self.forget_if_idle(name);
    }
}
