//! Messages as the store keeps them and as every client receives them.
//!
//! A stored message is created once by the [`Store`](crate::Store), shared behind an
//! `Arc` by every event that carries it (live broadcast, join history, history pages),
//! and serialised straight into its wire form, so history items and live events are
//! the same JSON object.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::ids::{ClientMsgId, Content, MessageId, RoomName, Seq, UserId};

/// Milliseconds since the Unix epoch, UTC. Serialised as ISO-8601 with milliseconds and
/// a `Z` (`2026-11-23T14:38:00.123Z`), the format of JavaScript's `toISOString()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Converts a wall-clock time (for stores that read the clock).
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The ISO-8601 form used on the wire.
    pub fn to_iso8601(self) -> String {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(self.0);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(
            SystemTime::UNIX_EPOCH + Duration::from_millis(self.0),
        ))
    }
}

/// A room message the engine asks the store to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRoomMessage {
    /// Target room.
    pub room: RoomName,
    /// Author.
    pub user_id: UserId,
    /// Author's display name at sending time.
    pub username: Arc<str>,
    /// Validated text.
    pub content: Content,
    /// The sender's idempotency key, if any.
    pub client_msg_id: Option<ClientMsgId>,
}

/// A room message as stored: the payload of `message_received` and of history items.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Unique id, chosen by the store.
    pub id: MessageId,
    /// Room.
    pub room: RoomName,
    /// Position in the room's stream, chosen by the store (no gaps).
    pub seq: Seq,
    /// Author.
    pub user_id: UserId,
    /// Author's display name at sending time.
    pub username: Arc<str>,
    /// Text.
    pub content: Content,
    /// When the store accepted it.
    pub timestamp: Timestamp,
    /// The sender's idempotency key, echoed back.
    pub client_msg_id: Option<ClientMsgId>,
}

impl Serialize for StoredMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", "message_received")?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("room", &self.room)?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("userId", &self.user_id)?;
        m.serialize_entry("username", &*self.username)?;
        m.serialize_entry("content", &self.content)?;
        m.serialize_entry("timestamp", &self.timestamp)?;
        if let Some(id) = &self.client_msg_id {
            m.serialize_entry("clientMsgId", id)?;
        }
        m.end()
    }
}

/// A direct message the engine asks the store to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDm {
    /// Sender.
    pub from: UserId,
    /// Sender's display name.
    pub from_username: Arc<str>,
    /// Recipient.
    pub to: UserId,
    /// Recipient's display name.
    pub to_username: Arc<str>,
    /// Validated text.
    pub content: Content,
    /// The sender's idempotency key, if any.
    pub client_msg_id: Option<ClientMsgId>,
}

/// A direct message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDm {
    /// Unique id, chosen by the store.
    pub id: MessageId,
    /// Position in the conversation between the two users (no gaps).
    pub seq: Seq,
    /// Sender.
    pub from: UserId,
    /// Sender's display name.
    pub from_username: Arc<str>,
    /// Recipient.
    pub to: UserId,
    /// Recipient's display name.
    pub to_username: Arc<str>,
    /// Text.
    pub content: Content,
    /// When the store accepted it.
    pub timestamp: Timestamp,
    /// The sender's idempotency key.
    pub client_msg_id: Option<ClientMsgId>,
}

impl StoredDm {
    /// Serialises as `private_message` (`sent == false`) or `private_message_sent`; only
    /// the sender's copy carries `clientMsgId`.
    pub(crate) fn serialize_as<S: Serializer>(&self, s: S, sent: bool) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let kind = if sent {
            "private_message_sent"
        } else {
            "private_message"
        };
        m.serialize_entry("type", kind)?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("fromId", &self.from)?;
        m.serialize_entry("fromUsername", &*self.from_username)?;
        m.serialize_entry("toId", &self.to)?;
        m.serialize_entry("toUsername", &*self.to_username)?;
        m.serialize_entry("content", &self.content)?;
        m.serialize_entry("timestamp", &self.timestamp)?;
        if sent && let Some(id) = &self.client_msg_id {
            m.serialize_entry("clientMsgId", id)?;
        }
        m.end()
    }
}

/// History items are serialised as `private_message` objects.
impl Serialize for StoredDm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_as(s, false)
    }
}

/// What a stored room message and a stored DM have in common, for code written once
/// over both kinds of stream: a store's log (numbering, idempotency, retention) and the
/// store conformance checks of `testkit`.
pub trait Stored {
    /// Its id.
    fn id(&self) -> MessageId;
    /// Its number in its room or conversation.
    fn seq(&self) -> Seq;
    /// When it was stored.
    fn timestamp(&self) -> Timestamp;
    /// Its author (the sender of a DM): the user whose `client_msg_id` this is.
    fn sender(&self) -> &UserId;
    /// Its text.
    fn content(&self) -> &Content;
    /// The client's idempotency key, if it sent one.
    fn client_msg_id(&self) -> Option<&ClientMsgId>;
}

impl Stored for StoredMessage {
    fn id(&self) -> MessageId {
        self.id
    }
    fn seq(&self) -> Seq {
        self.seq
    }
    fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
    fn sender(&self) -> &UserId {
        &self.user_id
    }
    fn content(&self) -> &Content {
        &self.content
    }
    fn client_msg_id(&self) -> Option<&ClientMsgId> {
        self.client_msg_id.as_ref()
    }
}

impl Stored for StoredDm {
    fn id(&self) -> MessageId {
        self.id
    }
    fn seq(&self) -> Seq {
        self.seq
    }
    fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
    fn sender(&self) -> &UserId {
        &self.from
    }
    fn content(&self) -> &Content {
        &self.content
    }
    fn client_msg_id(&self) -> Option<&ClientMsgId> {
        self.client_msg_id.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_matches_javascript_to_iso_string() {
        assert_eq!(Timestamp(0).to_iso8601(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_444_680_123).to_iso8601(),
            "2026-11-23T14:38:00.123Z"
        );
        assert_eq!(
            serde_json::to_string(&Timestamp(1)).unwrap(),
            "\"1970-01-01T00:00:00.001Z\""
        );
    }
}
