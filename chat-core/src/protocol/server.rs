//! Server → client events and their encoding.
//!
//! The engine produces [`ServerEvent`]s; the runtime encodes each one exactly once with
//! [`encode`] and shares the bytes among all its recipients. Every object starts with
//! `"type"` and uses PROTOCOL.md's camelCase field names.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::error::WireError;
use crate::ids::{Epoch, RoomName, Seq, UserId};
use crate::message::{StoredDm, StoredMessage};

/// One entry of `room_users`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserEntry {
    /// The user's id.
    pub id: UserId,
    /// The user's display name.
    pub username: Arc<str>,
}

/// Extra fields of the `message_history` that answers a join (*ext*).
#[derive(Debug, Clone, PartialEq)]
pub struct JoinCursor {
    /// The room stream's epoch.
    pub epoch: Epoch,
    /// The last `seq` included; live messages continue after it.
    pub last_seq: Seq,
    /// True only when the join resumed with `since` and every missed message is here.
    pub recovered: bool,
}

/// `message_history`: the join reply (with a [`JoinCursor`]) or a `history` page.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Room.
    pub room: RoomName,
    /// Messages, oldest first.
    pub messages: Vec<Arc<StoredMessage>>,
    /// Set on the join reply.
    pub join: Option<JoinCursor>,
    /// Whether older messages exist before the first one here.
    pub has_more: bool,
    /// *ext*: more `message_history` frames of the same resume follow this one (a
    /// replay larger than the frame byte budget is sent in several frames, in order;
    /// only the last has `continued` absent). Serialised only when true.
    pub continued: bool,
}

/// Every event the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// `connection {clientId}`: first frame of every connection.
    Connection {
        /// This user's id.
        client_id: UserId,
    },
    /// `username_set {username}`.
    UsernameSet {
        /// The name as stored (trimmed, cut).
        username: Arc<str>,
    },
    /// `room_joined {room}`.
    RoomJoined {
        /// Room.
        room: RoomName,
    },
    /// `message_history`.
    MessageHistory(History),
    /// *ext* `stream_reset {room, epoch}`: the store forgot the room's stream (an idle
    /// stream evicted to stay within its memory budget) and it started again under
    /// `epoch`; messages that follow count `seq` from 1 again. Clients drop their
    /// `(epoch, lastSeq)` for the room and take this epoch with `lastSeq` 0.
    StreamReset {
        /// Room.
        room: RoomName,
        /// The stream's new epoch.
        epoch: Epoch,
    },
    /// `room_users {room, users}`.
    RoomUsers {
        /// Room.
        room: RoomName,
        /// Members, each user once.
        users: Vec<UserEntry>,
    },
    /// `user_joined {room, username, userId}`.
    UserJoined {
        /// Room.
        room: RoomName,
        /// The user.
        user: UserEntry,
    },
    /// `user_left {room, username, userId}`.
    UserLeft {
        /// Room.
        room: RoomName,
        /// The user.
        user: UserEntry,
    },
    /// `room_left {room}`.
    RoomLeft {
        /// Room.
        room: RoomName,
    },
    /// `message_received`.
    MessageReceived(Arc<StoredMessage>),
    /// `private_message` (to the recipient's connections).
    PrivateMessage(Arc<StoredDm>),
    /// `private_message_sent` (to the sender's connections).
    PrivateMessageSent(Arc<StoredDm>),
    /// *ext* `dm_history {userId, messages, hasMore}`.
    DmHistory {
        /// The other user of the conversation.
        user_id: UserId,
        /// `private_message` objects, oldest first.
        messages: Vec<Arc<StoredDm>>,
        /// Whether older messages exist.
        has_more: bool,
    },
    /// `typing_indicator {room, userId, username, isTyping}`.
    TypingIndicator {
        /// Room.
        room: RoomName,
        /// Who.
        user: UserEntry,
        /// Started or stopped.
        is_typing: bool,
    },
    /// `error {message, code, retryAfterMs?}`.
    Error(WireError),
}

impl ServerEvent {
    /// The wire `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerEvent::Connection { .. } => "connection",
            ServerEvent::UsernameSet { .. } => "username_set",
            ServerEvent::RoomJoined { .. } => "room_joined",
            ServerEvent::MessageHistory(_) => "message_history",
            ServerEvent::StreamReset { .. } => "stream_reset",
            ServerEvent::RoomUsers { .. } => "room_users",
            ServerEvent::UserJoined { .. } => "user_joined",
            ServerEvent::UserLeft { .. } => "user_left",
            ServerEvent::RoomLeft { .. } => "room_left",
            ServerEvent::MessageReceived(_) => "message_received",
            ServerEvent::PrivateMessage(_) => "private_message",
            ServerEvent::PrivateMessageSent(_) => "private_message_sent",
            ServerEvent::DmHistory { .. } => "dm_history",
            ServerEvent::TypingIndicator { .. } => "typing_indicator",
            ServerEvent::Error(_) => "error",
        }
    }

    /// Whether a slow reader's queue may drop this event instead of closing the
    /// connection: typing indicators are ephemeral and the next one supersedes them.
    /// Presence events (`user_joined`, `user_left`) are deliberately *not* droppable:
    /// a member list that silently went stale is worse than a 1013 close, after which
    /// the client resumes and gets a fresh `room_users`.
    pub fn is_droppable(&self) -> bool {
        matches!(self, ServerEvent::TypingIndicator { .. })
    }
}

fn user_fields<M: SerializeMap>(
    m: &mut M,
    room: &RoomName,
    user: &UserEntry,
) -> Result<(), M::Error> {
    m.serialize_entry("room", room)?;
    m.serialize_entry("username", &*user.username)?;
    m.serialize_entry("userId", &user.id)
}

impl Serialize for ServerEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = match self {
            ServerEvent::MessageReceived(msg) => return msg.serialize(s),
            ServerEvent::PrivateMessage(dm) => return dm.serialize_as(s, false),
            ServerEvent::PrivateMessageSent(dm) => return dm.serialize_as(s, true),
            _ => s.serialize_map(None)?,
        };
        m.serialize_entry("type", self.type_name())?;
        match self {
            ServerEvent::Connection { client_id } => m.serialize_entry("clientId", client_id)?,
            ServerEvent::UsernameSet { username } => m.serialize_entry("username", &**username)?,
            ServerEvent::RoomJoined { room } | ServerEvent::RoomLeft { room } => {
                m.serialize_entry("room", room)?
            }
            ServerEvent::MessageHistory(h) => {
                m.serialize_entry("room", &h.room)?;
                m.serialize_entry("messages", &h.messages)?;
                if let Some(j) = &h.join {
                    m.serialize_entry("epoch", &j.epoch)?;
                    m.serialize_entry("lastSeq", &j.last_seq)?;
                    m.serialize_entry("recovered", &j.recovered)?;
                }
                m.serialize_entry("hasMore", &h.has_more)?;
                if h.continued {
                    m.serialize_entry("continued", &true)?;
                }
            }
            ServerEvent::StreamReset { room, epoch } => {
                m.serialize_entry("room", room)?;
                m.serialize_entry("epoch", epoch)?;
            }
            ServerEvent::RoomUsers { room, users } => {
                m.serialize_entry("room", room)?;
                m.serialize_entry("users", users)?;
            }
            ServerEvent::UserJoined { room, user } | ServerEvent::UserLeft { room, user } => {
                user_fields(&mut m, room, user)?
            }
            ServerEvent::DmHistory {
                user_id,
                messages,
                has_more,
            } => {
                m.serialize_entry("userId", user_id)?;
                m.serialize_entry("messages", messages)?;
                m.serialize_entry("hasMore", has_more)?;
            }
            ServerEvent::TypingIndicator {
                room,
                user,
                is_typing,
            } => {
                user_fields(&mut m, room, user)?;
                m.serialize_entry("isTyping", is_typing)?;
            }
            ServerEvent::Error(e) => {
                m.serialize_entry("message", &e.message)?;
                m.serialize_entry("code", &e.code)?;
                if let Some(ms) = e.retry_after_ms {
                    m.serialize_entry("retryAfterMs", &ms)?;
                }
                if let Some(reference) = &e.reference {
                    m.serialize_entry("ref", reference)?;
                }
                if let Some(id) = &e.client_msg_id {
                    m.serialize_entry("clientMsgId", id)?;
                }
            }
            ServerEvent::MessageReceived(_)
            | ServerEvent::PrivateMessage(_)
            | ServerEvent::PrivateMessageSent(_) => {}
        }
        m.end()
    }
}

/// Encodes one event as a JSON text frame. Called once per event, whatever the number
/// of recipients; the returned `Bytes` is cloned (a reference count) per recipient.
pub fn encode(event: &ServerEvent) -> Bytes {
    // Serialising our own types into a Vec cannot fail: every map key is a string.
    let json = serde_json::to_vec(event).unwrap_or_else(|_| b"{\"type\":\"error\"}".to_vec());
    Bytes::from(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Content, MessageId};
    use crate::message::Timestamp;
    use crate::protocol::ErrorCode;
    use serde_json::{Value, json};

    fn enc(e: &ServerEvent) -> Value {
        serde_json::from_slice(&encode(e)).unwrap()
    }

    fn room() -> RoomName {
        RoomName::parse("general").unwrap()
    }

    fn user() -> UserEntry {
        UserEntry {
            id: UserId::parse("u1").unwrap(),
            username: "alice".into(),
        }
    }

    fn stored() -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            id: MessageId(uuid::Uuid::from_u128(1)),
            room: room(),
            seq: Seq(4),
            user_id: UserId::parse("u1").unwrap(),
            username: "alice".into(),
            content: Content::parse("hi").unwrap(),
            timestamp: Timestamp(0),
            client_msg_id: None,
        })
    }

    #[test]
    fn type_comes_first() {
        let bytes = encode(&ServerEvent::RoomJoined { room: room() });
        assert_eq!(&bytes[..], br#"{"type":"room_joined","room":"general"}"#);
    }

    #[test]
    fn base_events_have_base_fields() {
        assert_eq!(
            enc(&ServerEvent::Connection {
                client_id: user().id
            }),
            json!({"type":"connection","clientId":"u1"})
        );
        assert_eq!(
            enc(&ServerEvent::UserJoined {
                room: room(),
                user: user()
            }),
            json!({"type":"user_joined","room":"general","username":"alice","userId":"u1"})
        );
        assert_eq!(
            enc(&ServerEvent::TypingIndicator {
                room: room(),
                user: user(),
                is_typing: true
            }),
            json!({"type":"typing_indicator","room":"general","username":"alice","userId":"u1","isTyping":true})
        );
        assert_eq!(
            enc(&ServerEvent::RoomUsers {
                room: room(),
                users: vec![user()]
            }),
            json!({"type":"room_users","room":"general","users":[{"id":"u1","username":"alice"}]})
        );
    }

    #[test]
    fn message_received_and_history_items_are_the_same_object() {
        let live = enc(&ServerEvent::MessageReceived(stored()));
        assert_eq!(
            live,
            json!({"type":"message_received","id":"00000000-0000-0000-0000-000000000001",
                   "room":"general","seq":4,"userId":"u1","username":"alice","content":"hi",
                   "timestamp":"1970-01-01T00:00:00.000Z"})
        );
        let hist = enc(&ServerEvent::MessageHistory(History {
            room: room(),
            messages: vec![stored()],
            join: Some(JoinCursor {
                epoch: Epoch::new("e"),
                last_seq: Seq(4),
                recovered: false,
            }),
            has_more: false,
            continued: false,
        }));
        assert_eq!(hist["messages"][0], live);
        assert_eq!(hist["epoch"], "e");
        assert_eq!(hist["lastSeq"], 4);
        assert_eq!(hist["recovered"], false);
    }

    #[test]
    fn error_with_retry_after() {
        let mut e = WireError::new(ErrorCode::RateLimited, "slow down");
        e.retry_after_ms = Some(250);
        assert_eq!(
            enc(&ServerEvent::Error(e)),
            json!({"type":"error","message":"slow down","code":"rate_limited","retryAfterMs":250})
        );
    }

    /// Line-based transports frame by newline (`chat_core::transport`): no encoded frame
    /// may contain a raw `\n` or `\r`, whatever the text inside it.
    #[test]
    fn encoded_frames_never_contain_a_raw_newline() {
        let mut message = (*stored()).clone();
        message.content = Content::parse("line one\nline two\r\nline three\u{2028}").unwrap();
        let frames = [
            encode(&ServerEvent::MessageReceived(Arc::new(message))),
            encode(&ServerEvent::Error(WireError::new(
                ErrorCode::InvalidJson,
                "expected value\nat line 2\r",
            ))),
        ];
        for frame in &frames {
            assert!(
                !frame.iter().any(|b| *b == b'\n' || *b == b'\r'),
                "raw newline in {}",
                String::from_utf8_lossy(frame)
            );
        }
        // The newlines are still there, escaped.
        assert_eq!(
            enc(&ServerEvent::Error(WireError::new(
                ErrorCode::InvalidJson,
                "a\nb"
            )))["message"],
            "a\nb"
        );
        let decoded = enc(&ServerEvent::MessageReceived({
            let mut m = (*stored()).clone();
            m.content = Content::parse("x\ny").unwrap();
            Arc::new(m)
        }));
        assert_eq!(decoded["content"], "x\ny");
    }
}
