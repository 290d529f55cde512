//! Identifiers and validated names.
//!
//! Every id and every name that crosses the wire is a newtype, so an unvalidated string
//! cannot reach the engine and arguments cannot be swapped (`RoomName` for `Username`).
//! Shared strings are `Arc<str>`: an event that names a user or a room clones a pointer,
//! not the text.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

use crate::protocol::Refusal;

/// Most characters a username may have; longer names are cut (PROTOCOL.md).
pub const USERNAME_MAX_CHARS: usize = 20;
/// Fewest characters a username may have after trimming.
pub const USERNAME_MIN_CHARS: usize = 2;
/// Most characters a room name may have; longer names are cut.
pub const ROOM_MAX_CHARS: usize = 30;
/// Most characters a chat or direct message may have; longer content is cut.
pub const CONTENT_MAX_CHARS: usize = 1000;
/// Most characters of a client-chosen message id (`clientMsgId`).
pub const CLIENT_MSG_ID_MAX_CHARS: usize = 64;
/// Most characters of a user id coming from an authenticator (e.g. a JWT `sub`).
pub const USER_ID_MAX_CHARS: usize = 128;

/// Why a name or id was refused. Each variant is one row of the [`Refusal`] table,
/// which holds its wire code and its text (the `Display` here).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// Fewer than [`USERNAME_MIN_CHARS`] characters after trimming.
    #[error("{}", Refusal::from(self).text())]
    UsernameTooShort,
    /// Control, format (bidi, zero-width) or separator characters.
    #[error("{}", Refusal::from(self).text())]
    UsernameCharacters,
    /// Empty after trimming.
    #[error("{}", Refusal::from(self).text())]
    RoomEmpty,
    /// Control, format or separator characters in a room name.
    #[error("{}", Refusal::from(self).text())]
    RoomCharacters,
    /// A `clientMsgId` that is empty, too long or has control characters.
    #[error("{}", Refusal::from(self).text())]
    ClientMsgId,
    /// A user id that is empty, too long or has control characters.
    #[error("{}", Refusal::from(self).text())]
    UserId,
}

/// True for characters that render as nothing or reorder text: C0/C1 controls, the
/// Unicode "format" characters that matter for spoofing (bidi embeddings, overrides and
/// isolates, zero-width characters, BOM, tags) and line/paragraph separators.
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}')
}

/// Cuts `s` to at most `max` Unicode scalar values without allocating when it fits.
fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((byte, _)) => &s[..byte],
        None => s,
    }
}

/// A connection, as numbered by the runtime (or a test harness). Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A user: the protocol's `clientId` / `userId` / `fromId` / `targetId`.
///
/// Anonymous connections get a fresh id from the engine's [`IdGenerator`]; an
/// authenticated connection carries the id its token names, so several connections
/// (tabs, devices) can share one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Validates an id supplied by an authenticator or a peer: 1 to
    /// [`USER_ID_MAX_CHARS`] characters, none of them invisible.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let n = s.chars().count();
        if n == 0 || n > USER_ID_MAX_CHARS || s.chars().any(is_invisible) {
            return Err(NameError::UserId);
        }
        Ok(Self(s.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<uuid::Uuid> for UserId {
    fn from(id: uuid::Uuid) -> Self {
        Self(id.hyphenated().to_string().into())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated display name with its uniqueness key.
///
/// Two names collide when their keys are equal: the key is the NFKC form, lower-cased,
/// reduced to its Unicode TR39 confusable *skeleton*, so `Alice`, `ALICE` and `Аlice`
/// (Cyrillic А) are one name and cannot shadow each other.
#[derive(Debug, Clone)]
pub struct Username {
    display: Arc<str>,
    key: Arc<str>,
}

impl Username {
    /// Applies PROTOCOL.md's rules: trim; fewer than 2 characters is an error; longer
    /// than 20 is cut to 20 (and trailing space left by the cut is trimmed); invisible
    /// and control characters are refused.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let trimmed = raw.trim();
        if trimmed.chars().count() < USERNAME_MIN_CHARS {
            return Err(NameError::UsernameTooShort);
        }
        if trimmed.chars().any(is_invisible) {
            return Err(NameError::UsernameCharacters);
        }
        let display = cut_chars(trimmed, USERNAME_MAX_CHARS).trim_end();
        let folded: String = display.nfkc().flat_map(char::to_lowercase).collect();
        let key: String = skeleton(&folded).collect();
        Ok(Self {
            display: display.into(),
            key: key.into(),
        })
    }

    /// The name as shown to users.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The name as a shared string: events carry it without copying the text.
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.display)
    }

    /// The key under which the name is unique (see the type's docs).
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl PartialEq for Username {
    fn eq(&self, other: &Self) -> bool {
        self.display == other.display
    }
}
impl Eq for Username {}

impl Serialize for Username {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// A validated room name: trimmed, lower-cased, at most 30 characters, not empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Applies PROTOCOL.md's rules (trim, lower-case, cut to 30, empty is an error) and
    /// refuses invisible and control characters.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let lower = raw.trim().to_lowercase();
        let cut = cut_chars(&lower, ROOM_MAX_CHARS).trim_end();
        if cut.is_empty() {
            return Err(NameError::RoomEmpty);
        }
        if cut.chars().any(is_invisible) {
            return Err(NameError::RoomCharacters);
        }
        Ok(Self(cut.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Message text after PROTOCOL.md's rules: trimmed, at most 1000 characters, not empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Content(Arc<str>);

impl Content {
    /// Trims and cuts `raw`; `None` when nothing is left (the protocol ignores empty
    /// messages rather than answering with an error).
    pub fn parse(raw: &str) -> Option<Self> {
        let cut = cut_chars(raw.trim(), CONTENT_MAX_CHARS).trim_end();
        (!cut.is_empty()).then(|| Self(cut.into()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-chosen id for idempotent retries (`clientMsgId`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientMsgId(Arc<str>);

impl ClientMsgId {
    /// 1 to [`CLIENT_MSG_ID_MAX_CHARS`] characters, none invisible.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let n = raw.chars().count();
        if n == 0 || n > CLIENT_MSG_ID_MAX_CHARS || raw.chars().any(is_invisible) {
            return Err(NameError::ClientMsgId);
        }
        Ok(Self(raw.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A per-room (or per-conversation) sequence number: strictly increasing, no gaps,
/// starting at 1. `Seq(0)` means "before the first message".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one lifetime of a room's stream: it changes whenever the stream's history
/// is lost (for example an in-memory store restarted), so a client's `since` from an
/// older epoch is known to be meaningless.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Wraps a store-chosen epoch string.
    pub fn new(s: &str) -> Self {
        Self(s.into())
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Unique id of a stored message (room message or DM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub uuid::Uuid);

/// Source of ids the engine needs. Injected so the engine stays deterministic: the
/// runtime uses random v4 UUIDs, tests use a counter.
pub trait IdGenerator: Send {
    /// A fresh id for an anonymous (unauthenticated) user.
    fn user_id(&mut self) -> UserId;
}

/// Deterministic [`IdGenerator`] for tests and simulations: ids are UUIDs built from a
/// counter.
#[derive(Debug, Default, Clone)]
pub struct SequentialIds {
    next: u128,
}

impl IdGenerator for SequentialIds {
    fn user_id(&mut self) -> UserId {
        self.next += 1;
        UserId::from(uuid::Uuid::from_u128(self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_is_trimmed_and_cut_to_20_chars() {
        let u = Username::parse("   abcdefghijklmnopqrstuvwxyz  ").unwrap();
        assert_eq!(u.as_str(), "abcdefghijklmnopqrst");
        assert_eq!(Username::parse("  é€ ").unwrap().as_str(), "é€");
    }

    #[test]
    fn username_cut_counts_unicode_chars_not_bytes() {
        let name = "ü".repeat(25);
        assert_eq!(Username::parse(&name).unwrap().as_str(), "ü".repeat(20));
    }

    #[test]
    fn username_shorter_than_two_chars_is_refused() {
        assert_eq!(Username::parse(" a "), Err(NameError::UsernameTooShort));
        assert_eq!(Username::parse(""), Err(NameError::UsernameTooShort));
    }

    #[test]
    fn username_with_bidi_or_zero_width_or_control_is_refused() {
        for bad in [
            "ab\u{202E}cd",
            "ab\u{200B}",
            "a\u{0007}b",
            "a\u{2066}b",
            "a\nb",
        ] {
            assert_eq!(
                Username::parse(bad),
                Err(NameError::UsernameCharacters),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn usernames_collide_case_insensitively_and_on_look_alikes() {
        let key = |s| Username::parse(s).unwrap().key().to_owned();
        assert_eq!(key("Alice"), key("alice"));
        assert_eq!(key("ALICE"), key("alice"));
        assert_eq!(key("\u{0410}lice"), key("alice"), "Cyrillic A");
        assert_eq!(key("ａｌｉｃｅ"), key("alice"), "full-width");
        assert_ne!(key("alice"), key("bob"));
    }

    #[test]
    fn room_names_are_trimmed_lowercased_and_cut() {
        assert_eq!(RoomName::parse("  General ").unwrap().as_str(), "general");
        let long = "x".repeat(40);
        assert_eq!(RoomName::parse(&long).unwrap().as_str().len(), 30);
        assert_eq!(RoomName::parse("   "), Err(NameError::RoomEmpty));
        assert_eq!(RoomName::parse("a\u{202E}"), Err(NameError::RoomCharacters));
    }

    #[test]
    fn content_is_trimmed_cut_and_empty_is_none() {
        assert_eq!(Content::parse("  hi  ").unwrap().as_str(), "hi");
        assert!(Content::parse(" \n\t ").is_none());
        let long = "é".repeat(1500);
        assert_eq!(
            Content::parse(&long).unwrap().as_str().chars().count(),
            1000
        );
    }

    #[test]
    fn client_msg_id_bounds() {
        assert!(ClientMsgId::parse("abc-123").is_ok());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn sequential_ids_are_deterministic() {
        let mut a = SequentialIds::default();
        let mut b = SequentialIds::default();
        assert_eq!(a.user_id(), b.user_id());
        assert_ne!(a.user_id(), SequentialIds::default().user_id());
    }
}

/// The name and id rules as tables: every case the bad-input suite sent over a socket,
/// checked where the rule lives. (The engine's answers on the wire are in
/// `engine/tests/usernames.rs` and `rooms.rs`.)
#[cfg(test)]
mod rule_tables {
    use super::*;

    #[test]
    fn control_characters_in_usernames_are_refused() {
        for name in [
            "ab\u{7}cd",
            "tab\tname",
            "new\nline",
            "\u{0}nul",
            "del\u{7f}x",
            "c1\u{85}x",
            "esc\u{1b}[31m",
        ] {
            assert_eq!(
                Username::parse(name),
                Err(NameError::UsernameCharacters),
                "{name:?}"
            );
        }
    }

    #[test]
    fn white_space_of_any_script_is_trimmed_so_only_white_space_is_too_short() {
        for name in ["", " a ", "\u{3000}\u{3000}", " \t\n ", "\u{a0}x\u{a0}"] {
            assert_eq!(
                Username::parse(name),
                Err(NameError::UsernameTooShort),
                "{name:?}"
            );
        }
        assert_eq!(Username::parse("  alice \t").unwrap().as_str(), "alice");
        assert_eq!(Username::parse("ab").unwrap().as_str(), "ab");
    }

    #[test]
    fn bidi_controls_in_usernames_are_refused() {
        for name in [
            "\u{202e}evil",         // right-to-left override
            "ab\u{202a}cd",         // left-to-right embedding
            "ab\u{200f}cd",         // right-to-left mark
            "ab\u{2066}cd\u{2069}", // isolates
            "\u{61c}ab",            // Arabic letter mark
        ] {
            assert_eq!(
                Username::parse(name),
                Err(NameError::UsernameCharacters),
                "{name:?}"
            );
        }
    }

    #[test]
    fn zero_width_and_other_invisible_characters_in_usernames_are_refused() {
        for name in [
            "a\u{200b}b",   // zero-width space
            "a\u{200d}b",   // zero-width joiner
            "\u{feff}ab",   // BOM
            "a\u{ad}b",     // soft hyphen
            "a\u{2060}b",   // word joiner
            "ab\u{e0041}",  // tag character
            "ab\u{2028}cd", // line separator
        ] {
            assert_eq!(
                Username::parse(name),
                Err(NameError::UsernameCharacters),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_cut_that_leaves_a_trailing_space_drops_it() {
        let name = Username::parse("abcdefghijklmnopqrs uvwxyz").unwrap();
        assert_eq!(name.as_str(), "abcdefghijklmnopqrs");
    }

    /// Every look-alike of `Alice` has Alice's key, so it is `username_taken` while
    /// she is online.
    #[test]
    fn look_alike_usernames_share_one_key() {
        let alice = Username::parse("Alice").unwrap();
        for name in [
            "alice",
            "ALICE",
            " Alice ",
            "\u{410}lice", // Cyrillic capital A
            "\u{430}lice", // Cyrillic small a
            "\u{391}LICE", // Greek capital alpha
            "ａｌｉｃｅ",  // full-width
            "al\u{456}ce", // Cyrillic і
            "Alic\u{435}", // Cyrillic е
        ] {
            assert_eq!(
                Username::parse(name).unwrap().key(),
                alice.key(),
                "{name:?}"
            );
        }
        assert_ne!(Username::parse("Alicia").unwrap().key(), alice.key());
    }

    #[test]
    fn invisible_characters_in_room_names_are_refused_and_blank_names_are_empty() {
        for room in ["ro\u{7}om", "\u{202e}moor", "a\u{200b}b", "x\u{0}y"] {
            assert_eq!(
                RoomName::parse(room),
                Err(NameError::RoomCharacters),
                "{room:?}"
            );
        }
        for room in ["", "   ", "  \t ", "\u{3000}"] {
            assert_eq!(RoomName::parse(room), Err(NameError::RoomEmpty), "{room:?}");
        }
    }

    #[test]
    fn room_names_are_trimmed_lower_cased_and_cut_to_30() {
        for (raw, name) in [
            ("  Lobby ", "lobby"),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                "abcdefghijklmnopqrstuvwxyz0123",
            ),
            ("<script>x</script>", "<script>x</script>"),
        ] {
            assert_eq!(RoomName::parse(raw).unwrap().as_str(), name, "{raw:?}");
        }
    }

    #[test]
    fn content_is_cut_to_1000_characters_not_bytes_and_blank_content_is_none() {
        let cut = Content::parse(&"é".repeat(5_000)).unwrap();
        assert_eq!(cut.as_str(), "é".repeat(1_000));
        for blank in ["", "   ", "\n\t\r", "\u{3000}\u{2028}"] {
            assert_eq!(Content::parse(blank), None, "{blank:?}");
        }
    }

    #[test]
    fn invalid_client_msg_ids_are_refused() {
        let long = "x".repeat(65);
        for id in ["", long.as_str(), "a\u{0}b", "\u{202e}id", "a\u{200b}"] {
            assert_eq!(
                ClientMsgId::parse(id),
                Err(NameError::ClientMsgId),
                "{id:?}"
            );
        }
        let longest = "x".repeat(64);
        assert_eq!(ClientMsgId::parse(&longest).unwrap().as_str(), longest);
    }

    #[test]
    fn user_ids_are_1_to_128_visible_characters() {
        for id in ["", "a\u{0}b", "\u{202e}x", "a\u{200b}"] {
            assert_eq!(UserId::parse(id), Err(NameError::UserId), "{id:?}");
        }
        assert_eq!(UserId::parse(&"é".repeat(129)), Err(NameError::UserId));
        for id in ["nobody", "<script>", "idp|1", &"é".repeat(128)] {
            assert_eq!(UserId::parse(id).unwrap().as_str(), id);
        }
    }
}
