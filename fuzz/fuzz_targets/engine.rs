//! The engine driven by operations decoded from the fuzzer's bytes, checked by the one
//! reference model (`chat_core::testkit::model`, the same the property tests in
//! `chat-core/tests/engine_props.rs` use): store replies held, performed and delivered
//! in any order, time jumps, malformed frames; the five properties of ARCHITECTURE.md
//! (gapless streams, persist before acknowledge, membership, privacy, bounds) checked
//! after every step and once everything has settled.
//!
//! This file only maps bytes to operations: the first byte picks the configuration
//! (small caps with or without rate limits), each following group of bytes one `Op`.
//! Any index is valid: the model takes them cyclically.
#![no_main]

use arbitrary::{Result, Unstructured};
use chat_core::testkit::model::{self, Op, Resume};
use libfuzzer_sys::fuzz_target;

/// Longer cases mostly repeat what shorter ones reach, and every step re-checks the
/// whole state: cap them so the fuzzer tries many.
const MAX_OPS: usize = 120;

/// A small index: connections, held requests, seen seqs and users are few.
fn small(u: &mut Unstructured<'_>) -> Result<usize> {
    u.int_in_range(0..=15)
}

fn maybe_small(u: &mut Unstructured<'_>) -> Result<Option<usize>> {
    Ok(if u.arbitrary()? { Some(small(u)?) } else { None })
}

fn resume(u: &mut Unstructured<'_>) -> Result<Resume> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Resume::No,
        1 => Resume::Seen(small(u)?),
        2 => Resume::Future,
        _ => Resume::WrongEpoch,
    })
}

/// One operation, its kind weighted roughly as the property tests weight it: store
/// completions and chat most, failures and malformed frames least.
fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    let kind: u8 = u.int_in_range(0..=31)?;
    Ok(match kind {
        0..=2 => Op::Connect {
            auth: maybe_small(u)?,
            name: maybe_small(u)?,
            join: maybe_small(u)?,
        },
        3 => Op::SetUsername {
            conn: small(u)?,
            name: small(u)?,
        },
        4..=7 => Op::Join {
            conn: small(u)?,
            room: small(u)?,
            keep: u.arbitrary()?,
            resume: resume(u)?,
        },
        8 => Op::Leave {
            conn: small(u)?,
            room: maybe_small(u)?,
        },
        9..=13 => Op::Chat {
            conn: small(u)?,
            room: maybe_small(u)?,
            cmid: maybe_small(u)?,
            empty: u.ratio(1, 20)?,
        },
        14 => Op::Flood { conn: small(u)? },
        15 => Op::Dm {
            conn: small(u)?,
            target: maybe_small(u)?,
            cmid: maybe_small(u)?,
        },
        16..=17 => Op::Typing {
            conn: small(u)?,
            room: maybe_small(u)?,
            start: u.arbitrary()?,
        },
        18 => Op::History {
            conn: small(u)?,
            room: small(u)?,
            before: u.arbitrary::<Option<u8>>()?.map(u64::from),
            limit: u.arbitrary::<Option<u8>>()?.map(u64::from),
        },
        19 => Op::DmHistory {
            conn: small(u)?,
            other: maybe_small(u)?,
        },
        20 => Op::Disconnect { conn: small(u)? },
        21 => Op::Advance {
            ms: u64::from(u.arbitrary::<u16>()?),
        },
        22..=26 => Op::Complete { index: small(u)? },
        27 => Op::Perform { index: small(u)? },
        28 => Op::PerformAll,
        29 => Op::Deliver { index: small(u)? },
        30 => Op::FailNext,
        _ => Op::Malformed {
            conn: small(u)?,
            kind: small(u)?,
        },
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(rate_limited) = u.arbitrary::<bool>() else {
        return;
    };
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match op(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    let config = if rate_limited {
        model::tight_config()
    } else {
        model::unlimited_config()
    };
    if let Err(violation) = model::run(config, &ops) {
        panic!("{violation}\nops: {ops:#?}");
    }
});
