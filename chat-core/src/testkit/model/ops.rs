//! The operations a case is made of, and the small pools they draw from.
//!
//! Every index is taken cyclically (modulo the pool or the list it designates), so any
//! value is a valid operation: a property test draws them in range, a fuzz target maps
//! arbitrary bytes to them.
//!
//! Pools are tiny on purpose: three rooms, three authenticated users, a dozen names that
//! collide by case or look-alike characters, four `clientMsgId`s. Collisions are where
//! the rules live (a taken name, a retried message, a second tab of one user).

/// Canonical room names; a join may spell them differently (case, spaces).
pub const ROOMS: [&str; 3] = ["lobby", "dev", "ops"];

/// Authenticated users `(id, name)`: several connections may share one, and their names
/// collide with the anonymous pool below.
pub const AUTH: [(&str, &str); 3] = [("u-alice", "Alice"), ("u-bob", "bob"), ("u-carol", "Carol")];

/// Names anonymous clients ask for: case variants and look-alikes of each other, one
/// too short, one with a bidi override, one too long (cut to 20), a few plain ones.
pub const NAMES: [&str; 17] = [
    "alice",
    "ALICE",
    "\u{0410}lice", // Cyrillic А
    "  bob  ",
    "BOB",
    "carol",
    "dave",
    "Dave",
    "x",
    "adm\u{202E}n",
    "abcdefghijklmnopqrstuvwxyz",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
];

/// The person a display name denotes. Two online users must never hold names of one
/// person (PROTOCOL: unique by a case- and look-alike-insensitive key). Written out by
/// hand so the model does not borrow the engine's key function. A signed-in user whose
/// name was taken is shown as `name (n)` (PROTOCOL: "Identity"): another person, one
/// per suffix, so two users showing `Alice (2)` and `ALICE (2)` still collide.
pub(crate) fn person_of(display: &str) -> Option<u16> {
    let (base, n) = match display.rsplit_once(" (") {
        Some((base, n)) => {
            let n: u16 = n.strip_suffix(')')?.parse().ok()?;
            if n < 2 {
                return None;
            }
            (base, n)
        }
        None => (display, 1),
    };
    let base = match base {
        "alice" | "ALICE" | "Alice" | "\u{0410}lice" => 0,
        "bob" | "BOB" => 1,
        "carol" | "Carol" => 2,
        "dave" | "Dave" => 3,
        "abcdefghijklmnopqrst" => 4,
        "erin" => 5,
        "frank" => 6,
        "grace" => 7,
        "heidi" => 8,
        "ivan" => 9,
        "judy" => 10,
        _ => return None,
    };
    Some(base * 100 + n)
}

/// `clientMsgId`s, few so that retries (and reuse from another tab) happen; `""` is
/// invalid.
pub const CMIDS: [&str; 4] = ["c1", "c2", "c3", ""];

/// Frames that do not decode to a command.
pub const MALFORMED: [&[u8]; 6] = [
    b"{not json",
    b"[1,2]",
    b"\"hello\"",
    b"{}",
    br#"{"type":"dance"}"#,
    br#"{"type":"chat_message","content":5}"#,
];

/// How a join asks for history.
#[derive(Debug, Clone)]
pub enum Resume {
    /// A plain join: the latest page.
    No,
    /// `since` the n-th seq (cyclically) this connection saw in that room, 0 if none,
    /// with the epoch it was told.
    Seen(usize),
    /// `since` beyond the room's end.
    Future,
    /// An epoch the store never had.
    WrongEpoch,
}

/// One operation.
///
/// `conn` designates an open connection, cyclically (room-scoped commands prefer
/// connections that are in a room); `index` a held or performed store request,
/// cyclically. A `room` designates `ROOMS[room % 4]`, where the fourth is an invalid
/// (blank) room name.
#[derive(Debug, Clone)]
pub enum Op {
    /// A client connects, authenticated as `AUTH[auth]` or anonymous and then asking for
    /// `NAMES[name]`; then, as most clients do, it joins a room.
    Connect {
        /// Which authenticated user, if any.
        auth: Option<usize>,
        /// The name an anonymous client asks for, if any.
        name: Option<usize>,
        /// The room it joins first, if any.
        join: Option<usize>,
    },
    /// `set_username` to `NAMES[name]`.
    SetUsername {
        /// The connection.
        conn: usize,
        /// The name asked for.
        name: usize,
    },
    /// `join_room`, spelled as a client might (case, spaces), possibly resuming.
    Join {
        /// The connection.
        conn: usize,
        /// The room.
        room: usize,
        /// `keepRooms`.
        keep: bool,
        /// How it asks for history.
        resume: Resume,
    },
    /// `leave_room`, of the current room or a named one.
    Leave {
        /// The connection.
        conn: usize,
        /// The room named, if any.
        room: Option<usize>,
    },
    /// `chat_message`.
    Chat {
        /// The connection.
        conn: usize,
        /// The room named, if any.
        room: Option<usize>,
        /// `CMIDS[cmid]` as `clientMsgId`, if any.
        cmid: Option<usize>,
        /// Blank content (refused).
        empty: bool,
    },
    /// Several chat messages back to back (the queued-command cap).
    Flood {
        /// The connection.
        conn: usize,
    },
    /// `private_message` to the n-th online user (cyclically), or to nobody.
    Dm {
        /// The connection.
        conn: usize,
        /// The n-th online user, or nobody.
        target: Option<usize>,
        /// `CMIDS[cmid]` as `clientMsgId`, if any.
        cmid: Option<usize>,
    },
    /// `typing_start` or `typing_stop`.
    Typing {
        /// The connection.
        conn: usize,
        /// The room named, if any.
        room: Option<usize>,
        /// Start (or stop).
        start: bool,
    },
    /// `history` of a room.
    History {
        /// The connection.
        conn: usize,
        /// The room.
        room: usize,
        /// `before`, if any.
        before: Option<u64>,
        /// `limit`, if any.
        limit: Option<u64>,
    },
    /// `dm_history` with the n-th user ever seen, with nobody, or (`None`) with an
    /// invalid id.
    DmHistory {
        /// The connection.
        conn: usize,
        /// The n-th user ever seen, or an invalid id.
        other: Option<usize>,
    },
    /// The client goes away.
    Disconnect {
        /// The connection.
        conn: usize,
    },
    /// Simulated time passes.
    Advance {
        /// Milliseconds.
        ms: u64,
    },
    /// The store performs a held request and its reply comes back at once.
    Complete {
        /// The held request.
        index: usize,
    },
    /// The store performs a held request; its reply stays on the way (`Deliver`).
    Perform {
        /// The held request.
        index: usize,
    },
    /// The store performs every held request, oldest first; the replies stay on the way
    /// (the widest window for replies to overtake each other).
    PerformAll,
    /// A performed request's reply reaches the engine.
    Deliver {
        /// The performed request.
        index: usize,
    },
    /// The store fails its next request (at most two pending failures).
    FailNext,
    /// `MALFORMED[kind]`: a frame that does not decode to a command.
    Malformed {
        /// The connection.
        conn: usize,
        /// Which malformed frame.
        kind: usize,
    },
}

/// The longest time step an [`Op::Advance`] takes: an hour, far beyond every timeout
/// of the engine, and far from overflowing the simulated clock.
const MAX_ADVANCE_MS: u64 = 3_600_000;

impl Op {
    /// The same operation with every pool index reduced to its pool (see [`Op`]), so
    /// the driver may index pools directly.
    pub(crate) fn normalised(&self) -> Op {
        let room = |r: usize| r % (ROOMS.len() + 1);
        let cmid = |k: Option<usize>| k.map(|k| k % CMIDS.len());
        match *self {
            Op::Connect { auth, name, join } => Op::Connect {
                auth: auth.map(|a| a % AUTH.len()),
                name: name.map(|n| n % NAMES.len()),
                join: join.map(room),
            },
            Op::SetUsername { conn, name } => Op::SetUsername {
                conn,
                name: name % NAMES.len(),
            },
            Op::Join {
                conn,
                room: r,
                keep,
                ref resume,
            } => Op::Join {
                conn,
                room: room(r),
                keep,
                resume: resume.clone(),
            },
            Op::Leave { conn, room: r } => Op::Leave {
                conn,
                room: r.map(room),
            },
            Op::Chat {
                conn,
                room: r,
                cmid: k,
                empty,
            } => Op::Chat {
                conn,
                room: r.map(room),
                cmid: cmid(k),
                empty,
            },
            Op::Dm {
                conn,
                target,
                cmid: k,
            } => Op::Dm {
                conn,
                target,
                cmid: cmid(k),
            },
            Op::Typing {
                conn,
                room: r,
                start,
            } => Op::Typing {
                conn,
                room: r.map(room),
                start,
            },
            Op::History {
                conn,
                room: r,
                before,
                limit,
            } => Op::History {
                conn,
                room: room(r),
                before,
                limit,
            },
            Op::Advance { ms } => Op::Advance {
                ms: ms.min(MAX_ADVANCE_MS),
            },
            Op::Malformed { conn, kind } => Op::Malformed {
                conn,
                kind: kind % MALFORMED.len(),
            },
            Op::Flood { .. }
            | Op::DmHistory { .. }
            | Op::Disconnect { .. }
            | Op::Complete { .. }
            | Op::Perform { .. }
            | Op::PerformAll
            | Op::Deliver { .. }
            | Op::FailNext => self.clone(),
        }
    }
}
