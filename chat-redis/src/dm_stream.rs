//! DM backlog: where a node stands in each local user's DM stream.
//!
//! Pub/sub is at-most-once, and a DM has no room `seq` whose gap a store read could
//! fill. So the DM script appends every DM announcement to its user's capped stream
//! (`dms:{user}`) and publishes it with the entry id (`sid`). The subscriber keeps,
//! per subscribed user channel, the id of the last entry it handed to the engine (or
//! skipped on purpose), and after every (re)subscription reads each stream after that
//! id: what arrives there was announced while it was away, and is handed to the
//! engine as ordinary DMs, in stream order, before the subscription's live messages.

use std::fmt;

/// Streams read in one round trip (a pipeline of `XRANGE`s) during a catch-up.
pub(crate) const USERS_PER_READ: usize = 64;

/// Entries one `XRANGE` returns at most; a user with more is read again.
pub(crate) const ENTRIES_PER_READ: usize = 100;

/// A Redis stream entry id, `ms-seq`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    /// Before every entry (`0-0`): an empty stream's position.
    pub(crate) const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `ms-seq`; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one, the start of an `XRANGE` that excludes it
    /// (works on Redis before 6.2 too, which lacks the `(` prefix).
    pub(crate) fn next(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A subscribed user channel's stream and how far this node has read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DmCursor {
    /// The user's DM stream key.
    pub(crate) stream: String,
    /// The last entry handed to the engine or skipped; `None` until the stream's end
    /// was read once (right after subscribing, or at the next resubscription if Redis
    /// failed then).
    pub(crate) last: Option<StreamId>,
}

impl DmCursor {
    pub(crate) fn new(stream: String) -> Self {
        Self { stream, last: None }
    }

    /// Moves past `id` (never back: a channel's entries come in stream order, and a
    /// catch-up entry may repeat one that arrived live).
    pub(crate) fn advance(&mut self, id: StreamId) {
        if self.last.is_none_or(|last| id > last) {
            self.last = Some(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_order_and_step_like_redis() {
        let a = StreamId::parse("1700000000000-3").unwrap();
        let b = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b);
        assert!(
            StreamId::parse("1700000000000-10").unwrap() > a,
            "numeric, not text"
        );
        assert_eq!(a.next().to_string(), "1700000000000-4");
        assert_eq!(
            StreamId::parse(&format!("5-{}", u64::MAX)).unwrap().next(),
            StreamId::parse("6-0").unwrap()
        );
        for bad in ["", "12", "a-1", "1-", "-1", "1-2-3"] {
            assert_eq!(StreamId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_cursor_only_moves_forward() {
        let mut cursor = DmCursor::new("k".into());
        let (a, b) = (
            StreamId::parse("5-1").unwrap(),
            StreamId::parse("5-2").unwrap(),
        );
        cursor.advance(b);
        cursor.advance(a);
        assert_eq!(cursor.last, Some(b));
    }
}
