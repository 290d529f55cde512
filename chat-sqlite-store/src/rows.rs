//! How streams and messages map onto rows.
//!
//! Rooms and DM conversations share two tables: `streams` (one row per room or
//! conversation: its `last_seq` and `epoch`) and `messages` (keyed by stream and `seq`).
//! Values are always bound as parameters, never spliced into SQL, and read back with the
//! same validation a client's input gets, so a row edited by hand cannot smuggle an
//! invalid name into the engine.

use std::sync::Arc;

use chat_core::{
    ClientMsgId, Content, MessageId, RoomName, Seq, StoreError, StoredDm, StoredMessage, Timestamp,
    UserId,
};
use rusqlite::Row;

use crate::errors::corrupt;

/// `streams.kind` of a room.
const ROOM: i64 = 0;
/// `streams.kind` of a DM conversation.
const DM: i64 = 1;

/// Identifies a stream: a room by its name, a conversation by its two users in sorted
/// order (so both directions are one stream).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey {
    pub(crate) kind: i64,
    pub(crate) a: String,
    pub(crate) b: String,
}

impl StreamKey {
    pub(crate) fn room(room: &RoomName) -> Self {
        Self {
            kind: ROOM,
            a: room.as_str().to_owned(),
            b: String::new(),
        }
    }

    pub(crate) fn dm(x: &UserId, y: &UserId) -> Self {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        Self {
            kind: DM,
            a: a.as_str().to_owned(),
            b: b.as_str().to_owned(),
        }
    }
}

/// The message columns every query selects, in this order (see [`Columns`]).
pub(crate) const MESSAGE_COLUMNS: &str =
    "seq, id, author, author_name, recipient, recipient_name, content, ts, client_msg_id";

/// The validated fields rooms and DMs share.
struct Common {
    seq: Seq,
    id: MessageId,
    author: UserId,
    content: Content,
    timestamp: Timestamp,
    client_msg_id: Option<ClientMsgId>,
}

/// One `messages` row, as read.
pub(crate) struct Columns {
    seq: i64,
    id: Vec<u8>,
    author: String,
    author_name: String,
    recipient: Option<String>,
    recipient_name: Option<String>,
    content: String,
    ts: i64,
    client_msg_id: Option<String>,
}

impl Columns {
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: row.get(0)?,
            id: row.get(1)?,
            author: row.get(2)?,
            author_name: row.get(3)?,
            recipient: row.get(4)?,
            recipient_name: row.get(5)?,
            content: row.get(6)?,
            ts: row.get(7)?,
            client_msg_id: row.get(8)?,
        })
    }

    /// The fields rooms and DMs share, validated.
    fn common(&self) -> Result<Common, StoreError> {
        let seq = u64::try_from(self.seq)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| corrupt("seq"))?;
        let id = uuid::Uuid::from_slice(&self.id).map_err(|_| corrupt("message id"))?;
        let author = UserId::parse(&self.author).map_err(|_| corrupt("author"))?;
        // `Content::parse` trims; a stored content is already trimmed, so this only
        // refuses a row whose text was emptied or padded by hand.
        let content = Content::parse(&self.content)
            .filter(|c| c.as_str() == self.content)
            .ok_or_else(|| corrupt("content"))?;
        let ts = u64::try_from(self.ts).map_err(|_| corrupt("timestamp"))?;
        let client_msg_id = self
            .client_msg_id
            .as_deref()
            .map(ClientMsgId::parse)
            .transpose()
            .map_err(|_| corrupt("clientMsgId"))?;
        Ok(Common {
            seq: Seq(seq),
            id: MessageId(id),
            author,
            content,
            timestamp: Timestamp(ts),
            client_msg_id,
        })
    }

    pub(crate) fn into_room_message(self, room: &RoomName) -> Result<StoredMessage, StoreError> {
        let Common {
            seq,
            id,
            author,
            content,
            timestamp,
            client_msg_id,
        } = self.common()?;
        Ok(StoredMessage {
            id,
            room: room.clone(),
            seq,
            user_id: author,
            username: Arc::from(self.author_name),
            content,
            timestamp,
            client_msg_id,
        })
    }

    pub(crate) fn into_dm(self) -> Result<StoredDm, StoreError> {
        let Common {
            seq,
            id,
            author: from,
            content,
            timestamp,
            client_msg_id,
        } = self.common()?;
        let to = self
            .recipient
            .as_deref()
            .map(UserId::parse)
            .and_then(Result::ok)
            .ok_or_else(|| corrupt("recipient"))?;
        let to_username = self
            .recipient_name
            .ok_or_else(|| corrupt("recipient name"))?;
        Ok(StoredDm {
            id,
            seq,
            from,
            from_username: Arc::from(self.author_name),
            to,
            to_username: Arc::from(to_username),
            content,
            timestamp,
            client_msg_id,
        })
    }
}

/// `u64` → SQLite integer, refusing what does not fit.
pub(crate) fn sql_int(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::rejected("a number beyond SQLite's integer range"))
}
