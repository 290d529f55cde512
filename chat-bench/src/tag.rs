//! The tag the tool writes into each chat message's content: `sender:counter:timestamp_ns`.
//!
//! The Node reference server sends no `seq` and echoes no `clientMsgId`, so the tool must
//! carry its own bookkeeping in the only field every server relays unchanged: the content.
//! `sender` is the sending client's index among the senders, `counter` counts that sender's
//! messages from 0 without gaps, and `timestamp_ns` is the send time on the tool's
//! monotonic clock ([`now_ns`]); senders and receivers live in the same process, so the
//! difference at receipt is the end-to-end latency.

use std::sync::OnceLock;
use std::time::Instant;

/// The process-wide origin of [`now_ns`].
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process (monotonic).
pub fn now_ns() -> u64 {
    let origin = ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One parsed tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Index of the sender among the run's senders.
    pub sender: u32,
    /// The sender's message counter, from 0, without gaps.
    pub counter: u64,
    /// Send time, nanoseconds on [`now_ns`]'s clock.
    pub sent_ns: u64,
}

impl Tag {
    /// The content string carrying this tag. Only digits and `:`: no JSON escaping needed,
    /// and no server trims or rewrites it.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.sender, self.counter, self.sent_ns)
    }

    /// Parses a content string; `None` when it is not one of ours (another tool's message,
    /// or a server that rewrote the content).
    pub fn parse(content: &str) -> Option<Self> {
        let mut parts = content.split(':');
        let sender = parts.next()?.parse().ok()?;
        let counter = parts.next()?.parse().ok()?;
        let sent_ns = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            sender,
            counter,
            sent_ns,
        })
    }
}

/// The whole `chat_message` frame for a tag (base protocol: no `room`, no `clientMsgId`).
pub fn chat_message_frame(tag: &Tag) -> String {
    format!(r#"{{"type":"chat_message","content":"{}"}}"#, tag.encode())
}

/// The `chat_message` frame with a `clientMsgId` (*ext*) unique within the sender's
/// connection (`c` and the counter).
pub fn chat_message_frame_with_id(tag: &Tag) -> String {
    format!(
        r#"{{"type":"chat_message","content":"{}","clientMsgId":"c{}"}}"#,
        tag.encode(),
        tag.counter
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_round_trips_through_its_content() {
        let tag = Tag {
            sender: 7,
            counter: 12_345,
            sent_ns: 987_654_321,
        };
        assert_eq!(tag.encode(), "7:12345:987654321");
        assert_eq!(Tag::parse(&tag.encode()), Some(tag));
    }

    #[test]
    fn foreign_contents_are_not_tags() {
        for content in ["hello", "1:2", "1:2:3:4", "a:2:3", "1:-2:3", "", "1:2:"] {
            assert_eq!(Tag::parse(content), None, "{content:?}");
        }
    }

    #[test]
    fn the_frame_is_valid_json_with_the_tag_as_content() {
        let tag = Tag {
            sender: 1,
            counter: 2,
            sent_ns: 3,
        };
        let v: serde_json::Value =
            serde_json::from_str(&chat_message_frame(&tag)).expect("valid JSON");
        assert_eq!(v["type"], "chat_message");
        assert_eq!(v["content"], "1:2:3");
        assert!(v.get("room").is_none());
    }

    #[test]
    fn the_clock_does_not_go_backwards() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
