//! The operations a case is made of, and the small pools they draw from.
//!
//! Pools are tiny on purpose: three rooms, three authenticated users, a dozen names that
//! collide by case or look-alike characters, four `clientMsgId`s. Collisions are where
//! the rules live (a taken name, a retried message, a second tab of one user).

use proptest::prelude::*;

/// Canonical room names; a join may spell them differently (case, spaces).
pub(crate) const ROOMS: [&str; 3] = ["lobby", "dev", "ops"];

/// Authenticated users `(id, name)`: several connections may share one, and their names
/// collide with the anonymous pool below.
pub(crate) const AUTH: [(&str, &str); 3] =
    [("u-alice", "Alice"), ("u-bob", "bob"), ("u-carol", "Carol")];

/// Names anonymous clients ask for: case variants and look-alikes of each other, one
/// too short, one with a bidi override, one too long (cut to 20), a few plain ones.
pub(crate) const NAMES: [&str; 17] = [
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
pub(crate) const CMIDS: [&str; 4] = ["c1", "c2", "c3", ""];

/// Frames that do not decode to a command.
pub(crate) const MALFORMED: [&[u8]; 6] = [
    b"{not json",
    b"[1,2]",
    b"\"hello\"",
    b"{}",
    br#"{"type":"dance"}"#,
    br#"{"type":"chat_message","content":5}"#,
];

/// How a join asks for history.
#[derive(Debug, Clone)]
pub(crate) enum Resume {
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

/// One operation. `conn` designates an open connection (see `World::pick`); `index` a
/// held or performed store request, cyclically. Room indices past [`ROOMS`] mean an
/// invalid room name.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Authenticated as `AUTH[auth]`, or anonymous and then asking for `NAMES[name]`;
    /// then, as most clients do, joining a room.
    Connect {
        auth: Option<usize>,
        name: Option<usize>,
        join: Option<usize>,
    },
    SetUsername {
        conn: usize,
        name: usize,
    },
    Join {
        conn: usize,
        room: usize,
        keep: bool,
        resume: Resume,
    },
    Leave {
        conn: usize,
        room: Option<usize>,
    },
    Chat {
        conn: usize,
        room: Option<usize>,
        cmid: Option<usize>,
        empty: bool,
    },
    /// Several chat messages back to back (the queued-command cap).
    Flood {
        conn: usize,
    },
    /// To the n-th online user (cyclically), or to nobody.
    Dm {
        conn: usize,
        target: Option<usize>,
        cmid: Option<usize>,
    },
    Typing {
        conn: usize,
        room: Option<usize>,
        start: bool,
    },
    History {
        conn: usize,
        room: usize,
        before: Option<u64>,
        limit: Option<u64>,
    },
    /// With the n-th user ever seen, with nobody, or (`None`) with an invalid id.
    DmHistory {
        conn: usize,
        other: Option<usize>,
    },
    Disconnect {
        conn: usize,
    },
    Advance {
        ms: u64,
    },
    /// The store performs a held request and its reply comes back at once.
    Complete {
        index: usize,
    },
    /// The store performs a held request; its reply stays on the way (`Deliver`).
    Perform {
        index: usize,
    },
    /// The store performs every held request, oldest first; the replies stay on the way
    /// (the widest window for replies to overtake each other).
    PerformAll,
    Deliver {
        index: usize,
    },
    FailNext,
    Malformed {
        conn: usize,
        kind: usize,
    },
}

/// A room of the pool, busy ones more often; 3 is an invalid name.
fn room() -> impl Strategy<Value = usize> {
    prop_oneof![6 => Just(0usize), 3 => Just(1), 2 => Just(2), 1 => Just(3)]
}

fn resume() -> impl Strategy<Value = Resume> {
    prop_oneof![
        4 => Just(Resume::No),
        3 => (0..8usize).prop_map(Resume::Seen),
        1 => Just(Resume::Future),
        1 => Just(Resume::WrongEpoch),
    ]
}

fn connect() -> impl Strategy<Value = Op> {
    (
        prop::option::weighted(0.4, 0..AUTH.len()),
        prop::option::weighted(0.9, 0..NAMES.len()),
        prop::option::weighted(0.7, room()),
    )
        .prop_map(|(auth, name, join)| Op::Connect { auth, name, join })
}

fn op() -> impl Strategy<Value = Op> {
    let conn = || 0..16usize;
    // Room-scoped commands mostly mean "the current room".
    let scope = || prop::option::weighted(0.25, room());
    let cmid = |p| prop::option::weighted(p, 0..CMIDS.len());
    prop_oneof![
        5 => connect(),
        2 => (conn(), 0..NAMES.len()).prop_map(|(conn, name)| Op::SetUsername { conn, name }),
        10 => (conn(), room(), any::<bool>(), resume())
            .prop_map(|(conn, room, keep, resume)| Op::Join { conn, room, keep, resume }),
        2 => (conn(), scope()).prop_map(|(conn, room)| Op::Leave { conn, room }),
        14 => (conn(), scope(), cmid(0.6), prop::bool::weighted(0.05))
            .prop_map(|(conn, room, cmid, empty)| Op::Chat { conn, room, cmid, empty }),
        1 => conn().prop_map(|conn| Op::Flood { conn }),
        3 => (conn(), prop::option::weighted(0.85, 0..8usize), cmid(0.5))
            .prop_map(|(conn, target, cmid)| Op::Dm { conn, target, cmid }),
        5 => (conn(), scope(), any::<bool>())
            .prop_map(|(conn, room, start)| Op::Typing { conn, room, start }),
        2 => (
            conn(),
            room(),
            prop::option::of(0..8u64),
            prop::option::of(prop::sample::select(vec![0u64, 2, 50])),
        )
            .prop_map(|(conn, room, before, limit)| Op::History { conn, room, before, limit }),
        1 => (conn(), prop::option::weighted(0.8, 0..8usize))
            .prop_map(|(conn, other)| Op::DmHistory { conn, other }),
        2 => conn().prop_map(|conn| Op::Disconnect { conn }),
        3 => (0..7000u64).prop_map(|ms| Op::Advance { ms }),
        16 => (0..16usize).prop_map(|index| Op::Complete { index }),
        4 => (0..16usize).prop_map(|index| Op::Perform { index }),
        2 => Just(Op::PerformAll),
        5 => (0..16usize).prop_map(|index| Op::Deliver { index }),
        1 => Just(Op::FailNext),
        1 => (conn(), 0..MALFORMED.len()).prop_map(|(conn, kind)| Op::Malformed { conn, kind }),
    ]
}

/// A case: one to three clients connect, then up to 59 operations of any kind.
pub(crate) fn scenario() -> impl Strategy<Value = Vec<Op>> {
    (
        prop::collection::vec(connect(), 1..=3),
        prop::collection::vec(op(), 1..60),
    )
        .prop_map(|(mut ops, more)| {
            ops.extend(more);
            ops
        })
}
