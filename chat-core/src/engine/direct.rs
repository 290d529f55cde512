//! Direct messages: `private_message`, their store round trip and `dm_history`.
//!
//! A DM is stored before it is delivered. The target's connections receive
//! `private_message`; the sending connection and the sender's other connections receive
//! `private_message_sent`. Nobody else sees it.

use std::time::Instant;

use smallvec::SmallVec;

use super::{Engine, Pending};
use crate::cluster::ClusterOp;
use crate::engine::StoreOp;
use crate::ids::{ClientMsgId, ConnId, Content, Seq, UserId};
use crate::message::{NewDm, StoredDm};
use crate::protocol::{ErrorCode, ServerEvent, WireError};
use crate::store::{Appended, Page, PageRange, StoreError};

impl Engine {
    pub(super) fn cmd_private(
        &mut self,
        now: Instant,
        conn: ConnId,
        target: &str,
        raw_content: &str,
        client_msg_id: Option<&str>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(from_username) = self.users.get(&c.user).and_then(|u| u.display_name()) else {
            let e = WireError::new(ErrorCode::UsernameRequired, "Set username first");
            return self.refuse(now, conn, e);
        };
        let Some(content) = Content::parse(raw_content) else {
            // Ignored without an error, as in the base protocol, but not for free.
            return self.charge_noop(now, conn);
        };
        let target_id = UserId::parse(target).ok();
        let target = target_id.clone().and_then(|id| {
            let name = self.users.get(&id)?.display_name()?;
            Some((id, name))
        });
        let Some((to, to_username)) = target else {
            if self.config.cluster
                && let Some(to) = target_id
            {
                // Perhaps online on another node: the bus knows.
                return self.lookup_dm_target(now, conn, to, content, client_msg_id);
            }
            return self.refuse(
                now,
                conn,
                WireError::new(ErrorCode::UserNotFound, "User not found"),
            );
        };
        let client_msg_id = match client_msg_id.map(ClientMsgId::parse).transpose() {
            Ok(id) => id,
            Err(e) => return self.refuse(now, conn, WireError::from(&e)),
        };
        if let Err(wait) = c.limits.message.take(now) {
            return self.rate_limited(now, conn, "Sending messages too fast", wait);
        }
        let ticket = self.out.store(StoreOp::AppendDm(NewDm {
            from: c.user.clone(),
            from_username,
            to,
            to_username,
            content,
            client_msg_id,
        }));
        self.wait_for(conn, ticket, Pending::DmAppend { conn });
    }

    pub(super) fn on_dm_appended(
        &mut self,
        _now: Instant,
        conn: ConnId,
        result: Result<Appended<StoredDm>, StoreError>,
    ) {
        let alive = self.conns.contains_key(&conn);
        let Appended {
            message, duplicate, ..
        } = match result {
            Ok(appended) => appended,
            Err(e) => {
                if alive {
                    let error = WireError::append_failed(&e);
                    self.out.error(conn, error);
                }
                return;
            }
        };
        if duplicate {
            // A retry: delivered when first stored; only the retrying connection hears back.
            if alive {
                self.out
                    .send(conn, ServerEvent::PrivateMessageSent(message));
            }
            return;
        }
        let targets: SmallVec<[ConnId; 4]> = self
            .users
            .get(&message.to)
            .map(|u| u.conns.iter().copied().collect())
            .unwrap_or_default();
        let mut senders: SmallVec<[ConnId; 4]> = SmallVec::new();
        if alive {
            senders.push(conn);
        }
        if let Some(user) = self.users.get(&message.from) {
            senders.extend(
                user.conns
                    .iter()
                    .copied()
                    .filter(|c| *c != conn && !targets.contains(c)),
            );
        }
        if self.config.cluster {
            self.out.cluster(ClusterOp::Dm {
                message: message.clone(),
            });
        }
        self.out
            .send_list(&targets, ServerEvent::PrivateMessage(message.clone()));
        self.out
            .send_list(&senders, ServerEvent::PrivateMessageSent(message));
    }

    pub(super) fn cmd_dm_history(
        &mut self,
        now: Instant,
        conn: ConnId,
        other: &str,
        before: Option<Seq>,
        limit: Option<u64>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if self.users.get(&c.user).is_none_or(|u| u.name.is_none()) {
            let e = WireError::new(ErrorCode::UsernameRequired, "Set username first");
            return self.refuse(now, conn, e);
        }
        let other = match UserId::parse(other) {
            Ok(id) => id,
            Err(e) => return self.refuse(now, conn, WireError::from(&e)),
        };
        if let Err(wait) = c.limits.history.take(now) {
            return self.rate_limited(now, conn, "Reading history too fast", wait);
        }
        let me = c.user.clone();
        let limit = self.page_limit(limit);
        let range = match before {
            Some(seq) => PageRange::Before { seq, limit },
            None => PageRange::Latest { limit },
        };
        let ticket = self.out.store(StoreOp::DmPage {
            a: me,
            b: other.clone(),
            range,
        });
        self.wait_for(conn, ticket, Pending::DmHistory { conn, other });
    }

    pub(super) fn on_dm_page(
        &mut self,
        _now: Instant,
        conn: ConnId,
        other: UserId,
        page: Result<Page<StoredDm>, StoreError>,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        match page {
            Ok(page) => {
                // Cut at the frame budget like a room `history` page, keeping the newest
                // (the client pages on from the oldest it got).
                let mut messages = page.messages;
                let keep =
                    super::messages::newest_within(&messages, self.config.history_frame_bytes);
                let cut = messages.len() - keep;
                messages.drain(..cut);
                self.out.send(
                    conn,
                    ServerEvent::DmHistory {
                        user_id: other,
                        messages,
                        has_more: page.has_more || cut > 0,
                    },
                )
            }
            Err(_) => {
                let error = WireError::store_unavailable();
                self.out.error(conn, error);
            }
        }
    }
}
