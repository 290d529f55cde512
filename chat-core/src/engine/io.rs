//! What goes into the engine ([`Input`]) and what comes out ([`Output`]).
//!
//! Store work is a round trip carried by the caller, in the manner of quinn-proto's
//! endpoint/connection events: the engine emits [`Output::Store`] with a [`Ticket`], the
//! caller performs the [`StoreOp`] (see [`StoreOp::perform`], in [`crate::store`]) and hands the
//! [`StoreReply`] back with the same ticket as [`Input::StoreReply`]. Replies may come
//! back in any order.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::ids::{ConnId, RoomName, UserId, Username};
use crate::message::{NewDm, NewRoomMessage, StoredDm, StoredMessage};
use crate::protocol::{ClientCommand, CloseCode, DecodeError, RequestRef, ServerEvent};
use crate::store::{Appended, Page, PageRange, StoreError};

/// An authenticated identity, established by the runtime (for example from a JWT)
/// before the connection reaches the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's stable id (e.g. the token's `sub`); shared by all of its connections.
    pub user_id: UserId,
    /// The user's display name (e.g. the token's `name`); `set_username` is refused.
    pub username: Username,
}

/// Something that happened outside the engine.
#[derive(Debug, Clone)]
pub enum Input {
    /// A connection was accepted. `identity` is set when it authenticated.
    Connected {
        /// Its id (chosen by the caller, unique among open connections).
        conn: ConnId,
        /// Who it is, when authenticated; anonymous connections get a fresh user id.
        identity: Option<Identity>,
    },
    /// A decoded command from a connection.
    Command {
        /// From whom.
        conn: ConnId,
        /// What.
        command: ClientCommand,
        /// *ext*: the frame's `ref`, echoed on the `error` that answers it.
        reference: Option<RequestRef>,
    },
    /// A frame from a connection that could not be decoded.
    Malformed {
        /// From whom.
        conn: ConnId,
        /// Why.
        error: DecodeError,
        /// *ext*: the frame's `ref`, when it could be read; echoed on the `error`.
        reference: Option<RequestRef>,
    },
    /// A connection is gone (closed by either side, or failed).
    Disconnected {
        /// Which.
        conn: ConnId,
    },
    /// The reply to an earlier [`Output::Store`].
    StoreReply {
        /// The ticket of the request.
        ticket: Ticket,
        /// The outcome.
        reply: StoreReply,
    },
}

/// Something the engine wants done.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send `event` to every connection in `to`. The event is encoded once by the caller.
    Deliver {
        /// Who receives it.
        to: Recipients,
        /// What they receive.
        event: Arc<ServerEvent>,
    },
    /// Close a connection. The engine already considers it gone: the caller must not
    /// feed it further commands, but must still report [`Input::Disconnected`].
    Close {
        /// Which.
        conn: ConnId,
        /// Close code.
        code: CloseCode,
        /// Short reason for the peer and the logs.
        reason: &'static str,
    },
    /// Perform store work and report back with [`Input::StoreReply`].
    Store(StoreRequest),
}

/// Identifies one store round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A store operation with its ticket.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    /// Hand this back with the reply.
    pub ticket: Ticket,
    /// What to do.
    pub op: StoreOp,
}

/// The store work the engine can ask for.
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// [`Store::append_room`](crate::Store::append_room).
    AppendRoom(NewRoomMessage),
    /// [`Store::room_page`](crate::Store::room_page).
    RoomPage {
        /// Which room.
        room: RoomName,
        /// Which part.
        range: PageRange,
    },
    /// [`Store::append_dm`](crate::Store::append_dm).
    AppendDm(NewDm),
    /// [`Store::dm_page`](crate::Store::dm_page).
    DmPage {
        /// One user of the conversation.
        a: UserId,
        /// The other.
        b: UserId,
        /// Which part.
        range: PageRange,
    },
}

/// The outcome of a [`StoreOp`], variant for variant.
#[derive(Debug, Clone)]
pub enum StoreReply {
    /// Outcome of [`StoreOp::AppendRoom`].
    RoomAppended(Result<Appended<StoredMessage>, StoreError>),
    /// Outcome of [`StoreOp::RoomPage`].
    RoomPage(Result<Page<StoredMessage>, StoreError>),
    /// Outcome of [`StoreOp::AppendDm`].
    DmAppended(Result<Appended<StoredDm>, StoreError>),
    /// Outcome of [`StoreOp::DmPage`].
    DmPage(Result<Page<StoredDm>, StoreError>),
}

impl StoreReply {
    /// The operation's name and its error, when it failed.
    pub fn failure(&self) -> Option<(&'static str, &StoreError)> {
        match self {
            StoreReply::RoomAppended(Err(e)) => Some(("append_room", e)),
            StoreReply::RoomPage(Err(e)) => Some(("room_page", e)),
            StoreReply::DmAppended(Err(e)) => Some(("append_dm", e)),
            StoreReply::DmPage(Err(e)) => Some(("dm_page", e)),
            _ => None,
        }
    }
}

/// Who receives a delivered event.
///
/// Room broadcasts share the room's member list (`Arc<[ConnId]>`, rebuilt only when the
/// membership changed), so a message to a room of 10,000 costs the engine O(1): the
/// caller walks the list once while writing the encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// One connection.
    One(ConnId),
    /// A few connections (DMs, a user's tabs).
    List(SmallVec<[ConnId; 4]>),
    /// A room's members, minus a few.
    Room {
        /// Snapshot of the room's active members.
        members: Arc<[ConnId]>,
        /// Members that must not receive this event (the typing user's own connections,
        /// a joiner whose history already contains this message).
        except: SmallVec<[ConnId; 2]>,
    },
}

impl Recipients {
    /// Every recipient, in order.
    pub fn iter(&self) -> impl Iterator<Item = ConnId> + '_ {
        let (slice, except): (&[ConnId], &[ConnId]) = match self {
            Recipients::One(c) => (std::slice::from_ref(c), &[]),
            Recipients::List(l) => (l, &[]),
            Recipients::Room { members, except } => (members, except),
        };
        slice.iter().copied().filter(move |c| !except.contains(c))
    }
}
