//! One stream (a room, or the conversation of two users) seen through a store.
//!
//! Rooms and DM conversations follow the same rules for numbering, pages, idempotency and
//! retention. The [`Stream`] trait hides which of the two a check talks to, so those
//! rules are written once here and run against both; the reference model of what a page
//! must contain ([`expected`]) lives here as well.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::ids::{ClientMsgId, Content, Epoch, RoomName, Seq, UserId};
use crate::message::{NewDm, NewRoomMessage, Stored, StoredDm, StoredMessage, Timestamp};
use crate::store::{Appended, Page, PageRange, Store};

/// What the checks need of a stored room message or DM: the shared [`Stored`]
/// accessors, plus what an assertion needs.
pub(super) trait Msg: Stored + Debug + PartialEq + Send + Sync + 'static {}

impl<M: Stored + Debug + PartialEq + Send + Sync + 'static> Msg for M {}

/// Which of a stream's two participants writes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sender {
    /// Alice (in a DM stream: Alice → Bob).
    A,
    /// Bob (in a DM stream: Bob → Alice).
    B,
}

impl Sender {
    /// Alternates writers so that every check also covers "both users write to the
    /// stream" (and, for DMs, both directions of the conversation).
    pub(super) fn nth(n: u64) -> Self {
        if n % 2 == 1 { Sender::A } else { Sender::B }
    }
}

/// A room or a DM conversation of a store, with two participants.
#[async_trait]
pub(super) trait Stream: Send + Sync {
    type Msg: Msg;

    /// Names the stream in failure messages.
    fn name(&self) -> String;

    /// Appends `content` from `sender`; panics when the store fails.
    async fn append(
        &self,
        sender: Sender,
        content: &str,
        client_msg_id: Option<&str>,
    ) -> Appended<Self::Msg>;

    /// Reads a page; panics when the store fails. DM streams read both argument orders
    /// and check that they agree.
    async fn read(&self, range: PageRange) -> Page<Self::Msg>;
}

/// The room `name` of `store`, written by Alice and Bob.
pub(super) struct RoomStream<'a, S> {
    pub(super) store: &'a S,
    pub(super) room: RoomName,
    pub(super) users: [UserId; 2],
}

impl<'a, S: Store> RoomStream<'a, S> {
    pub(super) fn new(store: &'a S, name: &str) -> Self {
        Self {
            store,
            room: room(name),
            users: [user("alice"), user("bob")],
        }
    }
}

#[async_trait]
impl<S: Store> Stream for RoomStream<'_, S> {
    type Msg = StoredMessage;

    fn name(&self) -> String {
        format!("room `{}`", self.room)
    }

    async fn append(
        &self,
        sender: Sender,
        content: &str,
        client_msg_id: Option<&str>,
    ) -> Appended<StoredMessage> {
        let author = &self.users[sender as usize];
        append_room(
            self.store,
            room_message(&self.room, author, content, client_msg_id),
        )
        .await
    }

    async fn read(&self, range: PageRange) -> Page<StoredMessage> {
        let page = room_page(self.store, &self.room, range).await;
        assert_well_formed(&self.name(), range, &page);
        page
    }
}

/// The conversation of two users of `store`.
pub(super) struct DmStream<'a, S> {
    pub(super) store: &'a S,
    pub(super) users: [UserId; 2],
    /// Set when other tasks write to the conversation while this one reads: two reads
    /// may then legitimately differ, so reads alternate the argument order instead of
    /// comparing both.
    racing: bool,
    /// Which argument order the next racing read uses.
    flip: AtomicBool,
}

impl<'a, S: Store> DmStream<'a, S> {
    pub(super) fn new(store: &'a S, a: &str, b: &str) -> Self {
        Self {
            store,
            users: [user(a), user(b)],
            racing: false,
            flip: AtomicBool::new(false),
        }
    }

    /// A view for a task that reads while other tasks write (see `racing`).
    pub(super) fn racing(store: &'a S, a: &str, b: &str) -> Self {
        Self {
            racing: true,
            ..Self::new(store, a, b)
        }
    }
}

#[async_trait]
impl<S: Store> Stream for DmStream<'_, S> {
    type Msg = StoredDm;

    fn name(&self) -> String {
        format!("conversation {} <-> {}", self.users[0], self.users[1])
    }

    async fn append(
        &self,
        sender: Sender,
        content: &str,
        client_msg_id: Option<&str>,
    ) -> Appended<StoredDm> {
        let [a, b] = &self.users;
        let (from, to) = match sender {
            Sender::A => (a, b),
            Sender::B => (b, a),
        };
        append_dm(self.store, dm(from, to, content, client_msg_id)).await
    }

    async fn read(&self, range: PageRange) -> Page<StoredDm> {
        let [a, b] = &self.users;
        if self.racing {
            let page = if self.flip.fetch_xor(true, Ordering::Relaxed) {
                dm_page(self.store, b, a, range).await
            } else {
                dm_page(self.store, a, b, range).await
            };
            assert_well_formed(&self.name(), range, &page);
            return page;
        }
        let page = dm_page(self.store, a, b, range).await;
        let reversed = dm_page(self.store, b, a, range).await;
        assert_eq!(
            page,
            reversed,
            "{}: dm_page(a, b) and dm_page(b, a) differ for {range:?}",
            self.name()
        );
        assert_well_formed(&self.name(), range, &page);
        page
    }
}

// --- ranges, for tables that read like the contract --------------------------------

pub(super) const fn latest(limit: usize) -> PageRange {
    PageRange::Latest { limit }
}
pub(super) const fn before(seq: u64, limit: usize) -> PageRange {
    PageRange::Before {
        seq: Seq(seq),
        limit,
    }
}
pub(super) const fn after(seq: u64, limit: usize) -> PageRange {
    PageRange::After {
        seq: Seq(seq),
        limit,
    }
}

// --- fixtures ---------------------------------------------------------------------------

pub(super) fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("testkit room names are valid")
}

pub(super) fn user(id: &str) -> UserId {
    UserId::parse(id).expect("testkit user ids are valid")
}

pub(super) fn client_msg_id(id: &str) -> ClientMsgId {
    ClientMsgId::parse(id).expect("testkit client message ids are valid")
}

fn content(text: &str) -> Content {
    Content::parse(text).expect("testkit contents are not empty")
}

/// A room message by `author`, whose display name is derived from the id so that a test
/// can check it is echoed back.
pub(super) fn room_message(
    room: &RoomName,
    author: &UserId,
    text: &str,
    client_msg_id_text: Option<&str>,
) -> NewRoomMessage {
    NewRoomMessage {
        room: room.clone(),
        user_id: author.clone(),
        username: display_name(author),
        content: content(text),
        client_msg_id: client_msg_id_text.map(client_msg_id),
    }
}

/// A DM from `from` to `to`.
pub(super) fn dm(
    from: &UserId,
    to: &UserId,
    text: &str,
    client_msg_id_text: Option<&str>,
) -> NewDm {
    NewDm {
        from: from.clone(),
        from_username: display_name(from),
        to: to.clone(),
        to_username: display_name(to),
        content: content(text),
        client_msg_id: client_msg_id_text.map(client_msg_id),
    }
}

pub(super) fn display_name(user: &UserId) -> Arc<str> {
    format!("{user} (name)").into()
}

// --- store calls that fail the case on a store error -------------------------------------

pub(super) async fn append_room<S: Store>(
    store: &S,
    message: NewRoomMessage,
) -> Appended<StoredMessage> {
    let room = message.room.clone();
    store
        .append_room(message)
        .await
        .unwrap_or_else(|e| panic!("append_room to room `{room}` failed: {e}"))
}

pub(super) async fn append_dm<S: Store>(store: &S, message: NewDm) -> Appended<StoredDm> {
    let (from, to) = (message.from.clone(), message.to.clone());
    store
        .append_dm(message)
        .await
        .unwrap_or_else(|e| panic!("append_dm from {from} to {to} failed: {e}"))
}

pub(super) async fn room_page<S: Store>(
    store: &S,
    room: &RoomName,
    range: PageRange,
) -> Page<StoredMessage> {
    store
        .room_page(room, range)
        .await
        .unwrap_or_else(|e| panic!("room_page of room `{room}` with {range:?} failed: {e}"))
}

pub(super) async fn dm_page<S: Store>(
    store: &S,
    a: &UserId,
    b: &UserId,
    range: PageRange,
) -> Page<StoredDm> {
    store
        .dm_page(a, b, range)
        .await
        .unwrap_or_else(|e| panic!("dm_page({a}, {b}) with {range:?} failed: {e}"))
}

// --- the shape every page must have ------------------------------------------------------

/// The `seq`s of a page, for readable assertions.
pub(super) fn seqs<M: Msg>(page: &Page<M>) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq().0).collect()
}

/// Rules that hold for every page, whatever the history: contiguous, oldest first, within
/// the limit, nothing past the head, and for `Latest` (and an `After` page that says
/// nothing newer exists) ending exactly at the head that was read with it.
pub(super) fn assert_well_formed<M: Msg>(stream: &str, range: PageRange, page: &Page<M>) {
    let got = seqs(page);
    let limit = match range {
        PageRange::Latest { limit }
        | PageRange::Before { limit, .. }
        | PageRange::After { limit, .. } => limit,
    };
    assert!(
        got.len() <= limit,
        "{stream}: {range:?} returned {} messages, more than the limit: {got:?}",
        got.len()
    );
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "{stream}: {range:?} returned a page that is not a contiguous run oldest first: {got:?}"
    );
    if let Some(unstamped) = page.messages.iter().find(|m| m.timestamp() == Timestamp(0)) {
        panic!("{stream}: {range:?} returned a message without a timestamp: {unstamped:?}");
    }
    if let Some(&newest) = got.last() {
        assert!(
            newest <= page.last_seq.0,
            "{stream}: {range:?} returned seq {newest} beyond last_seq {}",
            page.last_seq
        );
    }
    let must_end_at_head = match range {
        PageRange::Latest { .. } => true,
        PageRange::After { seq, .. } => !page.has_more && seq < page.last_seq,
        PageRange::Before { .. } => false,
    };
    if must_end_at_head && page.last_seq.0 > 0 {
        assert_eq!(
            got.last().copied(),
            Some(page.last_seq.0),
            "{stream}: {range:?} must end at last_seq {} (messages and head are read \
             atomically), got {got:?} has_more={}",
            page.last_seq,
            page.has_more
        );
    }
    match range {
        PageRange::Before { seq, .. } => assert!(
            got.iter().all(|&s| s < seq.0),
            "{stream}: {range:?} returned a seq not below {seq}: {got:?}"
        ),
        PageRange::After { seq, .. } => assert!(
            got.iter().all(|&s| s > seq.0),
            "{stream}: {range:?} returned a seq not above {seq}: {got:?}"
        ),
        PageRange::Latest { .. } => {}
    }
}

// --- the reference model of pages --------------------------------------------------------

/// What a page must hold when the stream retains exactly the messages `first..=head`
/// (none when `first > head`): its `seq`s and `has_more`. Dropped messages count as not
/// existing, so a page that reaches the oldest retained message has `has_more == false`.
///
/// Deliberately naive (build the retained list, filter, cut), so that it is obviously
/// right rather than fast.
pub(super) fn expected(range: PageRange, first: u64, head: u64) -> (Vec<u64>, bool) {
    let retained: Vec<u64> = (first..=head).collect();
    match range {
        PageRange::Latest { limit } => newest(retained, limit),
        PageRange::Before { seq, limit } => {
            newest(retained.into_iter().filter(|&s| s < seq.0).collect(), limit)
        }
        PageRange::After { seq, limit } => {
            let candidates: Vec<u64> = retained.into_iter().filter(|&s| s > seq.0).collect();
            let has_more = candidates.len() > limit;
            (candidates.into_iter().take(limit).collect(), has_more)
        }
    }
}

fn newest(candidates: Vec<u64>, limit: usize) -> (Vec<u64>, bool) {
    let skip = candidates.len().saturating_sub(limit);
    (candidates[skip..].to_vec(), skip > 0)
}

/// Reads `range` and checks it against the model, the head and the epoch.
pub(super) async fn assert_page<T: Stream>(
    stream: &T,
    range: PageRange,
    first: u64,
    head: u64,
    epoch: &Epoch,
) {
    let page = stream.read(range).await;
    let (want, want_more) = expected(range, first, head);
    let name = stream.name();
    assert_eq!(
        seqs(&page),
        want,
        "{name} (retaining {first}..={head}): wrong messages for {range:?}"
    );
    assert_eq!(
        page.has_more, want_more,
        "{name} (retaining {first}..={head}): wrong has_more for {range:?}"
    );
    assert_eq!(
        page.last_seq,
        Seq(head),
        "{name}: last_seq must be the head for {range:?}"
    );
    assert_eq!(
        &page.epoch, epoch,
        "{name}: the epoch changed within one store for {range:?}"
    );
}

/// Checks every range built from `points` × `limits` against the model.
pub(super) async fn sweep<T: Stream>(
    stream: &T,
    first: u64,
    head: u64,
    epoch: &Epoch,
    points: &[u64],
    limits: &[usize],
) {
    for &limit in limits {
        assert_page(stream, PageRange::Latest { limit }, first, head, epoch).await;
        for &p in points {
            let seq = Seq(p);
            assert_page(stream, PageRange::Before { seq, limit }, first, head, epoch).await;
            assert_page(stream, PageRange::After { seq, limit }, first, head, epoch).await;
        }
    }
}

/// The seqs and limits worth probing for a stream retaining `first..=head`: the edges of
/// the retained window and of the limit, each ±1.
pub(super) fn interesting(first: u64, head: u64, retained: usize) -> (Vec<u64>, Vec<usize>) {
    let mut points = vec![
        0,
        1,
        2,
        first.saturating_sub(1),
        first,
        first + 1,
        first + (head.saturating_sub(first)) / 2,
        head.saturating_sub(1),
        head,
        head + 1,
        head + 2,
    ];
    points.sort_unstable();
    points.dedup();
    let mut limits = vec![
        1,
        2,
        retained.saturating_sub(1),
        retained,
        retained + 1,
        retained + 7,
    ];
    limits.retain(|&l| l >= 1);
    limits.sort_unstable();
    limits.dedup();
    (points, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_agrees_with_the_written_page_table() {
        for (range, want, more) in super::super::pages::PAGE_TABLE {
            assert_eq!(expected(*range, 1, 10), (want.to_vec(), *more), "{range:?}");
        }
    }

    #[test]
    fn model_of_an_empty_stream_is_always_empty() {
        for range in [
            latest(5),
            before(1, 5),
            before(9, 5),
            after(0, 5),
            after(3, 5),
        ] {
            assert_eq!(expected(range, 1, 0), (vec![], false), "{range:?}");
        }
    }

    #[test]
    fn model_of_a_trimmed_stream_starts_at_the_oldest_retained() {
        assert_eq!(expected(after(0, 2), 6, 10), (vec![6, 7], true));
        assert_eq!(expected(after(3, 9), 6, 10), (vec![6, 7, 8, 9, 10], false));
        assert_eq!(expected(latest(9), 6, 10), (vec![6, 7, 8, 9, 10], false));
        assert_eq!(expected(before(8, 9), 6, 10), (vec![6, 7], false));
        assert_eq!(expected(before(6, 9), 6, 10), (vec![], false));
    }
}
