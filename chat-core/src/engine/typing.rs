//! Typing indicators: `typing_start`/`typing_stop`, coalesced per user and room, with an
//! automatic stop after [`Config::typing_timeout`](super::Config::typing_timeout).
//!
//! Indicators go to the room's *other* users only; a repeated start refreshes the
//! deadline without a new broadcast, so holding a key down costs the room nothing.

use std::time::Instant;

use smallvec::SmallVec;

use super::room::Typing;
use super::{Engine, Timer};
use crate::cluster::ClusterOp;
use crate::ids::{ConnId, RoomName, UserId};
use crate::protocol::{ServerEvent, UserEntry};

impl Engine {
    pub(super) fn cmd_typing(
        &mut self,
        now: Instant,
        conn: ConnId,
        room: Option<&str>,
        start: bool,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let room = match c.resolve_room(room) {
            Ok(room) => room,
            Err(e) => return self.refuse(now, conn, e),
        };
        if let Err(wait) = c.limits.typing.take(now) {
            return self.rate_limited(now, conn, "Typing updates too fast", wait);
        }
        let user = c.user.clone();
        if start {
            self.typing_on(now, conn, &room, &user);
        } else {
            self.typing_off(&room, &user);
        }
    }

    fn typing_on(&mut self, now: Instant, conn: ConnId, name: &RoomName, user: &UserId) {
        let deadline = now + self.config.typing_timeout;
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(presence) = room.presence.get_mut(user) else {
            return;
        };
        // Other nodes stop a remote indicator by themselves a timeout after they were
        // last told; a held key tells them again once half of it has passed.
        let previous = presence.typing;
        let announce = self.config.cluster
            && previous.is_none_or(|old| now >= old.announced + self.config.typing_timeout / 2);
        let announced = match previous {
            Some(old) if !announce => old.announced,
            _ => now,
        };
        presence.typing = Some(Typing {
            by: conn,
            deadline,
            announced,
        });
        if announce {
            self.out.cluster(ClusterOp::Typing {
                room: name.clone(),
                user: user.clone(),
                name: presence.username.clone(),
                on: true,
            });
        }
        let timer = Timer::TypingStop(name.clone(), user.clone());
        match previous {
            Some(old) => {
                self.timers.remove(&(old.deadline, timer.clone()));
            }
            // Already shown: the user is typing on another node too.
            None if room
                .remote
                .users
                .get(user)
                .is_some_and(|u| u.typing.is_some()) => {}
            None => {
                let except = presence.conns.clone();
                let event = ServerEvent::TypingIndicator {
                    room: name.clone(),
                    user: UserEntry {
                        id: user.clone(),
                        username: presence.username.clone(),
                    },
                    is_typing: true,
                };
                room.broadcast(&mut self.out, event, except);
            }
        }
        self.timers.insert((deadline, timer));
    }

    /// Stops `user`'s indicator in `name` if it is on, telling the others.
    pub(super) fn typing_off(&mut self, name: &RoomName, user: &UserId) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(presence) = room.presence.get_mut(user) else {
            return;
        };
        let Some(typing) = presence.typing.take() else {
            return;
        };
        self.timers.remove(&(
            typing.deadline,
            Timer::TypingStop(name.clone(), user.clone()),
        ));
        let except = presence.conns.clone();
        let username = presence.username.clone();
        if self.config.cluster {
            self.out.cluster(ClusterOp::Typing {
                room: name.clone(),
                user: user.clone(),
                name: username.clone(),
                on: false,
            });
        }
        // Still typing on another node: the indicator stays on for the members here.
        if room
            .remote
            .users
            .get(user)
            .is_some_and(|u| u.typing.is_some())
        {
            return;
        }
        broadcast_stopped(room, &mut self.out, name, user, username, except);
    }

    /// The automatic stop: only if the indicator still has this deadline.
    pub(super) fn typing_expired(&mut self, name: &RoomName, user: &UserId, at: Instant) {
        let current = self
            .rooms
            .get(name)
            .and_then(|r| r.presence.get(user))
            .and_then(|p| p.typing);
        if current.is_some_and(|t| t.deadline == at) {
            self.typing_off(name, user);
        }
    }
}

/// `typing_indicator {isTyping: false}` to everyone in the room but `except`.
pub(super) fn broadcast_stopped(
    room: &mut super::room::Room,
    out: &mut super::outbox::Outbox,
    name: &RoomName,
    user: &UserId,
    username: std::sync::Arc<str>,
    except: SmallVec<[ConnId; 2]>,
) {
    let event = ServerEvent::TypingIndicator {
        room: name.clone(),
        user: UserEntry {
            id: user.clone(),
            username,
        },
        is_typing: false,
    };
    room.broadcast(out, event, except);
}
