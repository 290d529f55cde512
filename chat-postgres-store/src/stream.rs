//! Streams as rows: the key of a room or conversation, and messages read back from
//! `chat_messages` into the engine's types.

use std::sync::Arc;

use chat_core::{
    ClientMsgId, Content, MessageId, RoomName, Seq, StoredDm, StoredMessage, Timestamp, UserId,
};
use tokio_postgres::Row;

use crate::error::Failure;

/// `chat_streams.kind` of a room.
const ROOM: i16 = 0;
/// `chat_streams.kind` of a DM conversation.
const DM: i16 = 1;

/// The unique key of a stream row: `(kind, name, peer)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StreamKey {
    pub(crate) kind: i16,
    pub(crate) name: String,
    pub(crate) peer: String,
}

impl StreamKey {
    pub(crate) fn room(room: &RoomName) -> Self {
        Self {
            kind: ROOM,
            name: room.as_str().to_owned(),
            peer: String::new(),
        }
    }

    /// Both directions of a conversation share one key: the ids in sorted order.
    pub(crate) fn dm(a: &UserId, b: &UserId) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        Self {
            kind: DM,
            name: low.as_str().to_owned(),
            peer: high.as_str().to_owned(),
        }
    }
}

/// A message as stored, before it is given the form of a room message or a DM.
#[derive(Debug, Clone)]
pub(crate) struct MessageRow {
    pub(crate) seq: Seq,
    pub(crate) id: MessageId,
    pub(crate) sender_id: UserId,
    pub(crate) sender_name: Arc<str>,
    pub(crate) recipient: Option<(UserId, Arc<str>)>,
    pub(crate) content: Content,
    pub(crate) timestamp: Timestamp,
    pub(crate) client_msg_id: Option<ClientMsgId>,
}

/// The columns [`MessageRow::read`] expects, in order, after `offset` others.
pub(crate) const MESSAGE_COLUMNS: &str = "m.seq, m.id, m.sender_id, m.sender_name, \
     m.recipient_id, m.recipient_name, m.content, m.ts, m.client_msg_id";

impl MessageRow {
    /// Reads [`MESSAGE_COLUMNS`] starting at column `offset`. A row that does not hold
    /// what this crate writes (edited by hand, say) is `Rejected`, never a panic.
    pub(crate) fn read(row: &Row, offset: usize) -> Result<Self, Failure> {
        let seq: i64 = row.try_get(offset).map_err(corrupt)?;
        let id: uuid::Uuid = row.try_get(offset + 1).map_err(corrupt)?;
        let sender_id: &str = row.try_get(offset + 2).map_err(corrupt)?;
        let sender_name: &str = row.try_get(offset + 3).map_err(corrupt)?;
        let recipient_id: Option<&str> = row.try_get(offset + 4).map_err(corrupt)?;
        let recipient_name: Option<&str> = row.try_get(offset + 5).map_err(corrupt)?;
        let content: &[u8] = row.try_get(offset + 6).map_err(corrupt)?;
        let ts: i64 = row.try_get(offset + 7).map_err(corrupt)?;
        let client_msg_id: Option<&str> = row.try_get(offset + 8).map_err(corrupt)?;
        let content = std::str::from_utf8(content)
            .ok()
            .and_then(Content::parse)
            .ok_or_else(|| invalid("content"))?;
        let recipient = match (recipient_id, recipient_name) {
            (Some(id), Some(name)) => Some((user_id(id)?, Arc::from(name))),
            _ => None,
        };
        Ok(Self {
            seq: Seq(u64::try_from(seq).map_err(|_| invalid("seq"))?),
            id: MessageId(id),
            sender_id: user_id(sender_id)?,
            sender_name: sender_name.into(),
            recipient,
            content,
            timestamp: Timestamp(u64::try_from(ts).unwrap_or(0)),
            client_msg_id: client_msg_id
                .map(ClientMsgId::parse)
                .transpose()
                .map_err(|_| invalid("client_msg_id"))?,
        })
    }

    pub(crate) fn into_room_message(self, room: &RoomName) -> StoredMessage {
        StoredMessage {
            id: self.id,
            room: room.clone(),
            seq: self.seq,
            user_id: self.sender_id,
            username: self.sender_name,
            content: self.content,
            timestamp: self.timestamp,
            client_msg_id: self.client_msg_id,
        }
    }

    /// The DM form; `None` for a row without a recipient (not a DM).
    pub(crate) fn into_dm(self) -> Result<StoredDm, Failure> {
        let (to, to_username) = self.recipient.ok_or_else(|| invalid("recipient_id"))?;
        Ok(StoredDm {
            id: self.id,
            seq: self.seq,
            from: self.sender_id,
            from_username: self.sender_name,
            to,
            to_username,
            content: self.content,
            timestamp: self.timestamp,
            client_msg_id: self.client_msg_id,
        })
    }
}

fn user_id(s: &str) -> Result<UserId, Failure> {
    UserId::parse(s).map_err(|_| invalid("user id"))
}

fn corrupt(e: tokio_postgres::Error) -> Failure {
    Failure::Rejected(std::sync::Arc::new(e))
}

fn invalid(column: &'static str) -> Failure {
    Failure::rejected(format!("chat_messages holds an invalid {column}"))
}
