//! `set_username`: choosing (or changing) a display name.

use std::sync::Arc;
use std::time::Instant;

use super::Engine;
use crate::ids::{ConnId, Username};
use crate::protocol::{ErrorCode, ServerEvent, WireError};

impl Engine {
    pub(super) fn cmd_set_username(&mut self, now: Instant, conn: ConnId, raw: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let user_id = c.user.clone();
        let in_rooms = !c.rooms.is_empty();
        let Some(user) = self.users.get(&user_id) else {
            return;
        };
        if user.locked {
            let e = WireError::new(
                ErrorCode::UsernameLocked,
                "Your username comes from your sign-in token",
            );
            return self.refuse(now, conn, e);
        }
        let name = match Username::parse(raw) {
            Ok(name) => name,
            Err(e) => return self.refuse(now, conn, WireError::from(&e)),
        };
        if self
            .users
            .holder(&name)
            .is_some_and(|holder| *holder != user_id)
        {
            return self.refuse(
                now,
                conn,
                WireError::new(ErrorCode::UsernameTaken, "Username taken"),
            );
        }
        let unchanged = user.name.as_ref() == Some(&name);
        if !unchanged && user.name.is_some() && in_rooms {
            // Members' lists would go stale: the protocol has no rename event.
            let e = WireError::new(
                ErrorCode::UsernameLocked,
                "Leave your rooms before changing your username",
            );
            return self.refuse(now, conn, e);
        }
        if !unchanged && self.config.cluster {
            // Unique cluster-wide: claimed on the bus, answered when it replies.
            return self.claim_rename(conn, user_id, name);
        }
        let display: Arc<str> = name.shared();
        if !unchanged {
            self.users.rename(&user_id, name);
        }
        self.out
            .send(conn, ServerEvent::UsernameSet { username: display });
        if unchanged {
            // Answered as the base server does, but a repeat changes nothing: charged
            // like any other request without effect (after the answer, so a close
            // follows the frame that caused it).
            self.charge_noop(now, conn);
        }
    }
}
