//! Room messages: `chat_message`, the store's append replies, gap filling and
//! `history` pages.
//!
//! **Persist before acknowledge**: a chat message becomes an append request; nobody —
//! the sender included — sees it before the store's reply comes back with its `seq`.
//! The reply then enters the room stream, which delivers in `seq` order (see
//! [`room`](super::room)).

use std::sync::Arc;
use std::time::Instant;

use super::room::EpochSeen;
use super::{Engine, GAP_RETRY, Pending, Timer};
use crate::engine::StoreOp;
use crate::ids::{ClientMsgId, ConnId, Content, RoomName, Seq};
use crate::message::{NewRoomMessage, StoredMessage};
use crate::protocol::{ErrorCode, History, ServerEvent, WireError};
use crate::store::{Appended, Page, PageRange, StoreError};

/// Messages read per gap-fill request.
const GAP_FILL_PAGE: usize = 100;

impl Engine {
    pub(super) fn cmd_chat(
        &mut self,
        now: Instant,
        conn: ConnId,
        raw_content: &str,
        room: Option<&str>,
        client_msg_id: Option<&str>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(username) = self.users.get(&c.user).and_then(|u| u.display_name()) else {
            let e = WireError::new(ErrorCode::UsernameRequired, "Set username first");
            return self.refuse(now, conn, e);
        };
        let room = match c.resolve_room(room) {
            Ok(room) => room,
            Err(e) => return self.refuse(now, conn, e),
        };
        let Some(content) = Content::parse(raw_content) else {
            // Ignored without an error, as in the base protocol, but not for free.
            return self.charge_noop(now, conn);
        };
        let client_msg_id = match client_msg_id.map(ClientMsgId::parse).transpose() {
            Ok(id) => id,
            Err(e) => return self.refuse(now, conn, WireError::from(&e)),
        };
        if let Err(wait) = c.limits.message.take(now) {
            return self.rate_limited(now, conn, "Sending messages too fast", wait);
        }
        let user_id = c.user.clone();
        self.typing_off(&room, &user_id);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.stream.inflight += 1;
        }
        let ticket = self.out.store(StoreOp::AppendRoom(NewRoomMessage {
            room: room.clone(),
            user_id,
            username,
            content,
            client_msg_id,
        }));
        self.wait_for(conn, ticket, Pending::Append { conn, room });
    }

    pub(super) fn on_appended(
        &mut self,
        _now: Instant,
        conn: ConnId,
        name: &RoomName,
        result: Result<Appended<StoredMessage>, StoreError>,
    ) {
        if let Some(room) = self.rooms.get_mut(name) {
            room.stream.inflight = room.stream.inflight.saturating_sub(1);
            if let Some(left) = room.stream.patience.as_mut() {
                *left = left.saturating_sub(1);
            }
        }
        match result {
            Err(e) => {
                if self.conns.contains_key(&conn) {
                    // Not the client's fault: no refusal budget is spent.
                    let error = WireError::append_failed(&e);
                    self.out.error(conn, error);
                }
            }
            Ok(Appended {
                message,
                duplicate,
                epoch,
            }) => {
                self.announce_message(name, &message, &epoch);
                if let Some(room) = self.rooms.get_mut(name) {
                    if room.is_retired(&epoch) {
                        // Stored in a stream the store forgot since (its reply lost the
                        // race with a message of the new stream): it is in no history
                        // anybody can read, so it counts as not stored.
                        let error = WireError::store_unavailable();
                        self.out.error(conn, error);
                        self.check_gap(name);
                        self.forget_if_idle(name);
                        return;
                    }
                    room.observe_epoch(name, &epoch, &mut self.out);
                    if duplicate {
                        // A retry. Its connection already has the message, or will get it
                        // live, unless it predates the history this connection was given.
                        let predates = room
                            .members
                            .get(&conn)
                            .is_some_and(|m| message.seq < m.page_first);
                        if predates {
                            self.out
                                .send(conn, ServerEvent::MessageReceived(message.clone()));
                        }
                    }
                    room.accept(message);
                    room.deliver_ready(&mut self.out);
                }
            }
        }
        self.check_gap(name);
        self.forget_if_idle(name);
    }

    /// Starts a gap-fill read when messages wait beyond a gap that no append of ours can
    /// fill.
    pub(super) fn check_gap(&mut self, name: &RoomName) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let beyond = room.stream.reorder.last_key_value().map(|(s, _)| *s);
        let ahead = room.stream.ahead.iter().map(|(_, s)| *s).max();
        let Some(cursor) = room.stream.cursor else {
            return;
        };
        let target = beyond.max(ahead);
        let nobody_needs_it = room.members.is_empty() && room.pending_joins == 0;
        let wanted = target.is_some_and(|t| t > cursor) || room.stream.catch_up;
        if !wanted {
            room.stream.patience = None;
        }
        // An append of ours in flight may fill the gap. A cluster node waits only for
        // the appends in flight when the gap was seen (see `Stream::patience`).
        let own_may_fill = room.stream.inflight > 0
            && wanted
            && (!self.config.cluster
                || *room.stream.patience.get_or_insert(room.stream.inflight) > 0);
        if nobody_needs_it || own_may_fill || room.stream.gap_fill || !wanted {
            return;
        }
        room.stream.patience = None;
        room.stream.gap_fill = true;
        let ticket = self.out.store(StoreOp::RoomPage {
            room: name.clone(),
            range: PageRange::After {
                seq: cursor,
                limit: GAP_FILL_PAGE,
            },
        });
        self.pending
            .insert(ticket, Pending::GapFill { room: name.clone() });
    }

    pub(super) fn on_gap_fill(
        &mut self,
        now: Instant,
        name: &RoomName,
        page: Result<Page<StoredMessage>, StoreError>,
    ) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let page = match page {
            Ok(page) => page,
            Err(_) => {
                // Keep `gap_fill` set so nothing else asks meanwhile; retry later.
                self.add_timer(now + GAP_RETRY, Timer::GapRetry(name.clone()));
                return;
            }
        };
        room.stream.gap_fill = false;
        if room.observe_epoch(name, &page.epoch, &mut self.out) == EpochSeen::Stale {
            // Read before the stream restarted: nothing in it belongs to the new stream.
            self.check_gap(name);
            self.forget_if_idle(name);
            return;
        }
        if !page.has_more {
            // The read reached the end of the stream: a catch-up is complete.
            room.stream.catch_up = false;
        }
        let before = room.stream.cursor;
        for message in page.messages {
            room.accept(message);
        }
        room.deliver_ready(&mut self.out);
        let stuck = room.stream.cursor == before && room.stream.inflight == 0;
        if stuck {
            // The store no longer has the missing messages (it dropped them, or another
            // writer's history was lost). Skip the hole rather than stall the room.
            let next = room
                .stream
                .reorder
                .first_key_value()
                .map(|(s, _)| Seq(s.0 - 1));
            let ahead = room.stream.ahead.iter().map(|(_, s)| *s).max();
            if let Some(skip_to) = next.or(ahead)
                && room.stream.cursor.is_some_and(|c| skip_to > c)
            {
                room.stream.cursor = Some(skip_to);
                room.stream.ahead.retain(|(_, last)| *last > skip_to);
                room.deliver_ready(&mut self.out);
            }
        }
        self.check_gap(name);
        self.forget_if_idle(name);
    }

    pub(super) fn retry_gap_fill(&mut self, name: &RoomName) {
        if let Some(room) = self.rooms.get_mut(name) {
            room.stream.gap_fill = false;
        }
        self.check_gap(name);
        self.forget_if_idle(name);
    }

    pub(super) fn cmd_history(
        &mut self,
        now: Instant,
        conn: ConnId,
        raw_room: &str,
        before: Option<Seq>,
        limit: Option<u64>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let room = match c.resolve_room(Some(raw_room)) {
            Ok(room) => room,
            Err(e) => return self.refuse(now, conn, e),
        };
        if let Err(wait) = c.limits.history.take(now) {
            return self.rate_limited(now, conn, "Reading history too fast", wait);
        }
        let limit = self.page_limit(limit);
        let range = match before {
            Some(seq) => PageRange::Before { seq, limit },
            None => PageRange::Latest { limit },
        };
        let ticket = self.out.store(StoreOp::RoomPage {
            room: room.clone(),
            range,
        });
        self.wait_for(conn, ticket, Pending::History { conn, room });
    }

    /// A client's `limit`, defaulting to the join page size and clamped to the page cap.
    pub(super) fn page_limit(&self, limit: Option<u64>) -> usize {
        let max = self.config.history_page_max.max(1);
        let wanted = limit.map_or(self.config.join_history as u64, |l| l.max(1));
        usize::try_from(wanted).unwrap_or(max).min(max)
    }

    pub(super) fn on_history_page(
        &mut self,
        _now: Instant,
        conn: ConnId,
        room: RoomName,
        page: Result<Page<StoredMessage>, StoreError>,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        match page {
            Ok(page) => {
                // Cut at the frame budget, keeping the newest (the client pages on
                // from the oldest it got).
                let mut messages = page.messages;
                let keep = newest_within(&messages, self.config.history_frame_bytes);
                let cut = messages.len() - keep;
                let has_more = page.has_more || cut > 0;
                messages.drain(..cut);
                self.out.send(
                    conn,
                    ServerEvent::MessageHistory(History {
                        room,
                        messages,
                        join: None,
                        has_more,
                        continued: false,
                    }),
                )
            }
            Err(_) => {
                let error = WireError::store_unavailable();
                self.out.error(conn, error);
            }
        }
    }
}

/// Bytes `message` takes in a `messages` array: its JSON and a comma.
pub(super) fn encoded_len<M: serde::Serialize>(message: &M) -> usize {
    /// Counts bytes without storing them.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(1);
    // Serialising our own type cannot fail; an error would only undercount.
    let _ = serde_json::to_writer(&mut count, message);
    count.0
}

/// Splits a replay, in order, into runs of at most `budget` encoded bytes (at least one
/// message each; an empty replay is one empty run).
pub(super) fn split_by_bytes(
    messages: Vec<Arc<StoredMessage>>,
    budget: usize,
) -> Vec<Vec<Arc<StoredMessage>>> {
    let mut chunks = vec![Vec::new()];
    let mut used = 0;
    for message in messages {
        let len = encoded_len(&message);
        let current = chunks.last().map_or(0, Vec::len);
        if current > 0 && used + len > budget {
            chunks.push(Vec::new());
            used = 0;
        }
        used += len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(message);
        }
    }
    chunks
}

/// How many of the newest `messages` fit in `budget` encoded bytes (at least one).
pub(super) fn newest_within<M: serde::Serialize>(messages: &[Arc<M>], budget: usize) -> usize {
    let mut used = 0;
    let mut keep = 0;
    for message in messages.iter().rev() {
        used += encoded_len(message.as_ref());
        if keep > 0 && used > budget {
            break;
        }
        keep += 1;
    }
    keep
}
