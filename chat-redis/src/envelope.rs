//! The bus's wire format: one JSON object per published message,
//! `{"from": NODE, "kind": KIND, …}`. `from` is the announcing node (a node drops its
//! own announcements); the reaper's `left` and `node_down` are built by Lua
//! (`cjson`) in the same shape. Everything read back is validated with the same
//! parsers as client input: a peer's bytes never reach the engine unchecked.

use std::sync::Arc;

use chat_core::{
    ClientMsgId, Content, MessageId, RoomName, Seq, StoredDm, StoredMessage, Timestamp, UserId,
};
use serde::{Deserialize, Deserializer, Serialize};

/// One published message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The node that announced it.
    pub(crate) from: String,
    /// A DM's entry id in the DM stream of the user whose channel carried it (added by
    /// the DM script): how far the receiving node has read that stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sid: Option<String>,
    /// What it announces.
    #[serde(flatten)]
    pub(crate) body: Body,
}

/// What an envelope announces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Body {
    /// A user became a member of a room on `from`.
    Joined {
        room: String,
        user: String,
        name: String,
    },
    /// A user's last connection on `from` left a room.
    Left { room: String, user: String },
    /// A stored room message.
    Message(WireMessage),
    /// A typing indicator started or stopped.
    Typing {
        room: String,
        user: String,
        name: String,
        on: bool,
    },
    /// A stored direct message.
    Dm(WireDm),
    /// A node was reaped (or left).
    NodeDown { node: String },
    /// A room's members on other live nodes: `[node, user, name]` (sync script).
    Members {
        room: String,
        #[serde(deserialize_with = "list_or_empty_object")]
        members: Vec<(String, String, String)>,
    },
}

/// A [`StoredMessage`] on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireMessage {
    id: uuid::Uuid,
    room: String,
    seq: u64,
    user: String,
    username: String,
    content: String,
    ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmid: Option<String>,
}

/// A [`StoredDm`] on the bus. (Its users are `sender`/`recipient`: `from` is the
/// envelope's node.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireDm {
    id: uuid::Uuid,
    seq: u64,
    sender: String,
    sender_name: String,
    recipient: String,
    recipient_name: String,
    content: String,
    ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmid: Option<String>,
}

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {0} in a bus message")]
pub(crate) struct Invalid(pub(crate) &'static str);

impl From<&StoredMessage> for WireMessage {
    fn from(m: &StoredMessage) -> Self {
        Self {
            id: m.id.0,
            room: m.room.as_str().to_owned(),
            seq: m.seq.0,
            user: m.user_id.as_str().to_owned(),
            username: m.username.to_string(),
            content: m.content.as_str().to_owned(),
            ts: m.timestamp.0,
            cmid: m.client_msg_id.as_ref().map(|c| c.as_str().to_owned()),
        }
    }
}

impl WireMessage {
    pub(crate) fn into_stored(self) -> Result<StoredMessage, Invalid> {
        Ok(StoredMessage {
            id: MessageId(self.id),
            room: room(&self.room)?,
            seq: Seq(self.seq),
            user_id: user(&self.user)?,
            username: Arc::from(self.username),
            content: Content::parse(&self.content).ok_or(Invalid("content"))?,
            timestamp: Timestamp(self.ts),
            client_msg_id: self
                .cmid
                .map(|c| ClientMsgId::parse(&c).map_err(|_| Invalid("clientMsgId")))
                .transpose()?,
        })
    }
}

impl From<&StoredDm> for WireDm {
    fn from(m: &StoredDm) -> Self {
        Self {
            id: m.id.0,
            seq: m.seq.0,
            sender: m.from.as_str().to_owned(),
            sender_name: m.from_username.to_string(),
            recipient: m.to.as_str().to_owned(),
            recipient_name: m.to_username.to_string(),
            content: m.content.as_str().to_owned(),
            ts: m.timestamp.0,
            cmid: m.client_msg_id.as_ref().map(|c| c.as_str().to_owned()),
        }
    }
}

impl WireDm {
    pub(crate) fn id(&self) -> uuid::Uuid {
        self.id
    }

    pub(crate) fn into_stored(self) -> Result<StoredDm, Invalid> {
        Ok(StoredDm {
            id: MessageId(self.id),
            seq: Seq(self.seq),
            from: user(&self.sender)?,
            from_username: Arc::from(self.sender_name),
            to: user(&self.recipient)?,
            to_username: Arc::from(self.recipient_name),
            content: Content::parse(&self.content).ok_or(Invalid("content"))?,
            timestamp: Timestamp(self.ts),
            client_msg_id: self
                .cmid
                .map(|c| ClientMsgId::parse(&c).map_err(|_| Invalid("clientMsgId")))
                .transpose()?,
        })
    }
}

/// A room name from the bus.
pub(crate) fn room(s: &str) -> Result<RoomName, Invalid> {
    // A valid name parses to itself; anything else was not written by a node.
    RoomName::parse(s)
        .ok()
        .filter(|r| r.as_str() == s)
        .ok_or(Invalid("room"))
}

/// A user id from the bus.
pub(crate) fn user(s: &str) -> Result<UserId, Invalid> {
    UserId::parse(s).map_err(|_| Invalid("user"))
}

impl Envelope {
    pub(crate) fn new(from: &str, body: Body) -> Self {
        Self {
            from: from.to_owned(),
            sid: None,
            body,
        }
    }

    pub(crate) fn encode(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Lua's `cjson` encodes an empty table as `{}`: accept it as an empty list.
fn list_or_empty_object<'de, D>(d: D) -> Result<Vec<(String, String, String)>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrObject {
        List(Vec<(String, String, String)>),
        Object(serde::de::IgnoredAny),
    }
    Ok(match ListOrObject::deserialize(d)? {
        ListOrObject::List(list) => list,
        ListOrObject::Object(_) => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_message_survives_the_bus_unchanged() {
        let message = StoredMessage {
            id: MessageId(uuid::Uuid::from_u128(7)),
            room: RoomName::parse("lobby").unwrap(),
            seq: Seq(42),
            user_id: UserId::parse("u-1").unwrap(),
            username: Arc::from("Alice"),
            content: Content::parse("hello\u{0} there").unwrap(),
            timestamp: Timestamp(1_795_444_680_123),
            client_msg_id: Some(ClientMsgId::parse("c1").unwrap()),
        };
        let text = Envelope::new("n1", Body::Message(WireMessage::from(&message))).encode();
        let back = Envelope::decode(text.as_bytes()).unwrap();
        assert_eq!(back.from, "n1");
        let Body::Message(wire) = back.body else {
            panic!("{text}")
        };
        assert_eq!(wire.into_stored().unwrap(), message);
    }

    #[test]
    fn a_dm_survives_the_bus_unchanged_and_keeps_the_node_apart() {
        let dm = StoredDm {
            id: MessageId(uuid::Uuid::from_u128(9)),
            seq: Seq(3),
            from: UserId::parse("u-1").unwrap(),
            from_username: Arc::from("Ann"),
            to: UserId::parse("u-2").unwrap(),
            to_username: Arc::from("Bob"),
            content: Content::parse("psst").unwrap(),
            timestamp: Timestamp(5),
            client_msg_id: None,
        };
        let text = Envelope::new("node-a", Body::Dm(WireDm::from(&dm))).encode();
        let back = Envelope::decode(text.as_bytes()).unwrap();
        assert_eq!(back.from, "node-a");
        let Body::Dm(wire) = back.body else {
            panic!("{text}")
        };
        assert_eq!(wire.into_stored().unwrap(), dm);
    }

    #[test]
    fn the_dm_scripts_spliced_stream_id_decodes() {
        let dm = StoredDm {
            id: MessageId(uuid::Uuid::from_u128(9)),
            seq: Seq(3),
            from: UserId::parse("u-1").unwrap(),
            from_username: Arc::from("Ann"),
            to: UserId::parse("u-2").unwrap(),
            to_username: Arc::from("Bob"),
            content: Content::parse("psst").unwrap(),
            timestamp: Timestamp(5),
            client_msg_id: None,
        };
        let text = Envelope::new("node-a", Body::Dm(WireDm::from(&dm))).encode();
        // What the DM script publishes: `{"sid":"ID",` then the envelope without its `{`.
        let published = format!("{{\"sid\":\"1700000000000-3\",{}", &text[1..]);
        let back = Envelope::decode(published.as_bytes()).unwrap();
        assert_eq!(back.sid.as_deref(), Some("1700000000000-3"));
        assert_eq!(back.from, "node-a");
        let Body::Dm(wire) = back.body else {
            panic!("{published}")
        };
        assert_eq!(wire.into_stored().unwrap(), dm);
    }

    #[test]
    fn lua_shaped_envelopes_decode() {
        let left = br#"{"from":"n2","kind":"left","room":"lobby","user":"u\/1"}"#;
        assert_eq!(
            Envelope::decode(left).unwrap(),
            Envelope::new(
                "n2",
                Body::Left {
                    room: "lobby".into(),
                    user: "u/1".into()
                }
            )
        );
        let empty = br#"{"from":"n1","kind":"members","room":"lobby","members":{}}"#;
        assert!(matches!(
            Envelope::decode(empty).unwrap().body,
            Body::Members { members, .. } if members.is_empty()
        ));
        let some = br#"{"from":"n1","kind":"members","room":"lobby","members":[["n2","u","Bob"]]}"#;
        assert!(matches!(
            Envelope::decode(some).unwrap().body,
            Body::Members { members, .. } if members == [("n2".into(), "u".into(), "Bob".into())]
        ));
    }

    #[test]
    fn a_room_name_that_is_not_canonical_is_refused() {
        assert!(room("lobby").is_ok());
        assert!(room("Lobby").is_err());
        assert!(room(" lobby").is_err());
        assert!(user("").is_err());
    }
}
