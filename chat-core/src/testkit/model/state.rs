//! The reference model: what each client can conclude from its own frames, and what
//! the test knows about users and store requests.
//!
//! Nothing here mirrors the engine's data structures. A connection's rooms, streams and
//! presence lists are rebuilt from the frames it received (`room_joined`, `room_left`,
//! `message_history`, …), exactly as a careful client would; the store's contents are
//! the truth about what was persisted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::testkit::sim::SimStore;
use crate::{ConnId, RoomName, Ticket};

/// What one connection knows about one room it is in.
#[derive(Debug, Default)]
pub(crate) struct RoomView {
    /// First seq of its join history (`lastSeq + 1` when that was empty): an older
    /// message may only reach it as a retry acknowledgement.
    pub(crate) first: u64,
    /// Last seq of its stream so far: the next live message must be `last + 1`.
    pub(crate) last: u64,
    /// Users present, id → name, from `room_users`, `user_joined` and `user_left`.
    pub(crate) users: BTreeMap<String, String>,
    /// Users shown as typing.
    pub(crate) typing: BTreeSet<String>,
}

/// The join replies come as one block: `room_joined`, `message_history`, `room_users`.
#[derive(Debug, Default)]
pub(crate) enum Expect {
    #[default]
    Anything,
    /// After `room_joined`: the join's history, answering one of these requests.
    History(String, Vec<JoinRequest>),
    Users(String),
}

/// A `join_room` a connection sent, kept until its answer can be told apart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JoinRequest {
    pub(crate) room: String,
    pub(crate) since: Option<u64>,
    pub(crate) epoch: Option<String>,
    /// `since` was not past the room's end in the store when sent. The store only
    /// grows, so the join's read cannot have found it in the future.
    pub(crate) since_in_range: bool,
}

/// A connection waiting for the store, and the frames queued behind it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Episode {
    /// Frames sent since the one that started the wait, minus refused ones: an upper
    /// bound of the queue, and its exact length while `exact`.
    pub(crate) queued: usize,
    /// No reply for this connection arrived since the wait began, so it certainly still
    /// waits and every frame since is queued.
    pub(crate) exact: bool,
}

/// One connection, as its client sees it.
#[derive(Debug)]
pub(crate) struct ConnModel {
    pub(crate) id: ConnId,
    pub(crate) auth: Option<usize>,
    /// The user id from its `connection` frame.
    pub(crate) user: Option<String>,
    pub(crate) open: bool,
    /// Joined rooms, most recently joined last.
    pub(crate) rooms: Vec<String>,
    pub(crate) views: HashMap<String, RoomView>,
    pub(crate) expect: Expect,
    /// Joins sent and not yet answered by `room_joined`. Refused ones stay until the
    /// connection is idle, when every frame it sent has certainly been handled.
    pub(crate) joins: Vec<JoinRequest>,
    /// Every seq it saw per room, and the epoch it was told, to resume with.
    pub(crate) seen: HashMap<String, BTreeSet<u64>>,
    pub(crate) epochs: HashMap<String, String>,
    /// Set while the connection (possibly) waits for the store.
    pub(crate) episode: Option<Episode>,
}

impl ConnModel {
    pub(crate) fn new(id: ConnId, auth: Option<usize>) -> Self {
        Self {
            id,
            auth,
            user: None,
            open: true,
            rooms: Vec::new(),
            views: HashMap::new(),
            expect: Expect::Anything,
            joins: Vec::new(),
            seen: HashMap::new(),
            epochs: HashMap::new(),
            episode: None,
        }
    }

    /// The connection is gone, and with it its memberships.
    pub(crate) fn forget(&mut self) {
        self.open = false;
        self.rooms.clear();
        self.views.clear();
        self.expect = Expect::Anything;
        self.joins.clear();
        self.episode = None;
    }
}

/// A user: every connection that was told the same `clientId`.
#[derive(Debug, Default)]
pub(crate) struct UserModel {
    /// From the last `username_set` one of its connections received.
    pub(crate) name: Option<String>,
    /// `clientMsgId`s it sent room messages with: retrying one may be acknowledged again.
    pub(crate) cmids: HashSet<String>,
}

/// A store request not answered yet, and whom it may belong to.
#[derive(Debug)]
pub(crate) struct TicketInfo {
    /// The connection whose frame (or whose reply) started it. An over-approximation:
    /// a gap-fill read started while handling a reply is counted too, so "owns nothing"
    /// reliably means idle.
    pub(crate) owner: Option<usize>,
    /// The user an append or a DM read is for (room reads have none).
    pub(crate) user: Option<String>,
}

/// What caused a step, for attributing the store requests it starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cause {
    /// A frame from this connection: at most one new request, which is its own.
    Send(usize),
    /// The reply to this ticket reached the engine.
    Reply(Ticket),
    /// Time passed: only room-wide requests may start.
    Timer,
    /// Nothing may start a request (connect, disconnect, the store working alone).
    Quiet,
}

pub(crate) fn room_name(room: &str) -> RoomName {
    RoomName::parse(room).expect("pool rooms are valid")
}

/// The room's last seq in the store, 0 when empty.
pub(crate) fn last_seq(store: &SimStore, room: &str) -> u64 {
    store
        .room_messages(&room_name(room))
        .last()
        .map_or(0, |m| m.seq.0)
}
