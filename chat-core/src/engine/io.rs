//! What goes into the engine ([`Input`]) and what comes out ([`Output`]).
//!
//! Store work is a round trip carried by the caller, in the manner of quinn-proto's
//! endpoint/connection events: the engine emits [`Output::Store`] with a [`Ticket`], the
//! caller performs the [`StoreOp`] (see [`StoreOp::perform`]) and hands the
//! [`StoreReply`] back with the same ticket as [`Input::StoreReply`]. Replies may come
//! back in any order.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::cluster::{ClusterEvent, ClusterOp};
use crate::ids::{ConnId, RoomName, UserId, Username};
use crate::message::{NewDm, NewRoomMessage, StoredDm, StoredMessage};
use crate::protocol::{ClientCommand, DecodeError, ServerEvent};
use crate::store::{Appended, Page, PageRange, Store, StoreError};
use crate::transport::CloseCode;

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
#[non_exhaustive]
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
    },
    /// A frame from a connection that could not be decoded.
    Malformed {
        /// From whom.
        conn: ConnId,
        /// Why.
        error: DecodeError,
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
    /// Something from the other nodes of a cluster (only with
    /// [`Config::cluster`](super::Config::cluster)).
    Cluster(ClusterEvent),
}

/// Something the engine wants done.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Hand this to the cluster bus, in order (only with
    /// [`Config::cluster`](super::Config::cluster)); ops with a ticket are answered with
    /// [`Input::Cluster`] carrying [`ClusterEvent::Reply`].
    Cluster(ClusterOp),
}

/// Identifies one store or cluster round trip (one counter for both).
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
    /// [`Store::append_room`].
    AppendRoom(NewRoomMessage),
    /// [`Store::room_page`].
    RoomPage {
        /// Which room.
        room: RoomName,
        /// Which part.
        range: PageRange,
    },
    /// [`Store::append_dm`].
    AppendDm(NewDm),
    /// [`Store::dm_page`].
    DmPage {
        /// One user of the conversation.
        a: UserId,
        /// The other.
        b: UserId,
        /// Which part.
        range: PageRange,
    },
}

impl StoreOp {
    /// Performs this operation with `store`. This is all a driver needs to do with a
    /// [`Output::Store`] besides handing the result back.
    ///
    /// A failure is logged here (with the `tracing` of the `runtime` feature), with its
    /// detail and source chain: the engine answers clients with a fixed text only.
    pub async fn perform(self, store: &dyn Store) -> StoreReply {
        let reply = self.perform_quietly(store).await;
        #[cfg(feature = "runtime")]
        if let Some((op, e)) = reply.failure() {
            tracing::warn!(op, error = %e.chain(), "store operation failed");
        }
        reply
    }

    async fn perform_quietly(self, store: &dyn Store) -> StoreReply {
        match self {
            StoreOp::AppendRoom(m) => StoreReply::RoomAppended(store.append_room(m).await),
            StoreOp::RoomPage { room, range } => {
                StoreReply::RoomPage(store.room_page(&room, range).await)
            }
            StoreOp::AppendDm(m) => StoreReply::DmAppended(store.append_dm(m).await),
            StoreOp::DmPage { a, b, range } => {
                StoreReply::DmPage(store.dm_page(&a, &b, range).await)
            }
        }
    }
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

    /// Whether `conn` receives the event.
    pub fn contains(&self, conn: ConnId) -> bool {
        match self {
            Recipients::One(c) => *c == conn,
            Recipients::List(l) => l.contains(&conn),
            Recipients::Room { members, except } => {
                !except.contains(&conn) && members.contains(&conn)
            }
        }
    }
}
