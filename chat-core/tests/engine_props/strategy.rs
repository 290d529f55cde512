//! How proptest draws a case: the operations of
//! [`testkit::model`](chat_core::testkit::model), weighted towards what makes rules
//! collide (busy rooms, retries, store replies out of order), with every index within
//! its pool.
//!
//! Pools are tiny on purpose: three rooms, three authenticated users, a dozen names that
//! collide by case or look-alike characters, four `clientMsgId`s. Collisions are where
//! the rules live (a taken name, a retried message, a second tab of one user).

use chat_core::testkit::model::ops::{AUTH, CMIDS, MALFORMED, NAMES};
use chat_core::testkit::model::{Op, Resume};
use proptest::prelude::*;

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
