//! Numbering, ids and the stored form: rooms count 1, 2, 3… each on their own, and a
//! DM conversation is one numbered stream for both directions.

use std::collections::HashSet;

use crate::ids::{MessageId, Seq};
use crate::message::Timestamp;
use crate::store::Store;

use super::stream::{
    DmStream, RoomStream, Sender, Stream, append_dm, append_room, assert_well_formed, dm, dm_page,
    latest, room, room_message, room_page, seqs, user,
};
use crate::message::Stored;

/// `append_room` numbers a room's messages 1, 2, 3… with no gap, whoever writes.
pub async fn room_seq_starts_at_one_and_is_gapless<S: Store>(store: S) {
    let general = RoomStream::new(&store, "general");
    for n in 1..=20 {
        let appended = general.append(Sender::nth(n), &format!("m{n}"), None).await;
        assert_eq!(appended.message.seq, Seq(n), "the {n}th append");
        assert!(!appended.duplicate, "a new message is not a duplicate");
    }
}

/// Each room has its own numbering; interleaved appends do not affect each other.
pub async fn rooms_are_numbered_independently<S: Store>(store: S) {
    let rooms = [
        RoomStream::new(&store, "one"),
        RoomStream::new(&store, "two"),
        RoomStream::new(&store, "three"),
    ];
    let mut heads = [0u64; 3];
    for (n, i) in [0, 1, 0, 2, 1, 0, 2, 0, 1, 0].into_iter().enumerate() {
        heads[i] += 1;
        let appended = rooms[i].append(Sender::nth(n as u64), "hi", None).await;
        assert_eq!(
            appended.message.seq,
            Seq(heads[i]),
            "{}: append {n} of the interleaving",
            rooms[i].name()
        );
    }
    for (r, head) in rooms.iter().zip(heads) {
        let page = r.read(latest(100)).await;
        assert_eq!(page.last_seq, Seq(head), "{}: head", r.name());
        assert_eq!(seqs(&page), (1..=head).collect::<Vec<_>>(), "{}", r.name());
        assert!(
            page.messages.iter().all(|m| m.room == r.room),
            "{}: a page holds only its room's messages",
            r.name()
        );
    }
    let empty = room_page(&store, &room("never-written"), latest(10)).await;
    assert_eq!(empty.last_seq, Seq(0), "a room never written to has head 0");
    assert!(empty.messages.is_empty() && !empty.has_more);
}

/// The stored form echoes what was appended, with `id`, `seq` and a timestamp set, and a
/// page returns exactly that stored form.
pub async fn room_append_returns_the_stored_form<S: Store>(store: S) {
    let general = room("general");
    let alice = user("alice");
    let new = room_message(&general, &alice, "hello world", Some("c-1"));
    let appended = append_room(&store, new.clone()).await;
    let m = &*appended.message;
    assert!(!appended.duplicate);
    assert_eq!(m.room, new.room);
    assert_eq!(m.user_id, new.user_id);
    assert_eq!(m.username, new.username);
    assert_eq!(m.content, new.content);
    assert_eq!(m.client_msg_id, new.client_msg_id);
    assert_eq!(m.seq, Seq(1));
    assert_ne!(m.timestamp, Timestamp(0), "the store sets the timestamp");

    let plain = append_room(&store, room_message(&general, &alice, "no id", None)).await;
    assert_eq!(
        plain.message.client_msg_id, None,
        "no clientMsgId stays none"
    );
    assert_ne!(plain.message.timestamp, Timestamp(0));

    let page = room_page(&store, &general, latest(10)).await;
    assert_eq!(page.messages.len(), 2);
    assert_eq!(
        *page.messages[0], *appended.message,
        "a page returns the stored form"
    );
    assert_eq!(*page.messages[1], *plain.message);
}

/// Message ids are unique across rooms and conversations of one store.
pub async fn message_ids_are_unique<S: Store>(store: S) {
    let mut ids: HashSet<MessageId> = HashSet::new();
    let mut count = 0;
    for name in ["a", "b", "c"] {
        let r = RoomStream::new(&store, name);
        for n in 1..=10 {
            let appended = r.append(Sender::nth(n), "same text", None).await;
            ids.insert(appended.message.id());
            count += 1;
        }
    }
    for (a, b) in [("alice", "bob"), ("alice", "carol")] {
        let c = DmStream::new(&store, a, b);
        for n in 1..=10 {
            let appended = c.append(Sender::nth(n), "same text", None).await;
            ids.insert(appended.message.id());
            count += 1;
        }
    }
    assert_eq!(ids.len(), count, "every stored message has its own id");
}

/// Alice → Bob and Bob → Alice are one conversation with one numbering, and
/// `dm_page(a, b)` equals `dm_page(b, a)`.
pub async fn dm_seq_is_shared_by_both_directions<S: Store>(store: S) {
    let (alice, bob) = (user("alice"), user("bob"));
    for n in 1..=6 {
        let (from, to) = if n % 2 == 1 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        let appended = append_dm(&store, dm(from, to, &format!("m{n}"), None)).await;
        assert_eq!(
            appended.message.seq,
            Seq(n),
            "the {n}th DM between alice and bob"
        );
    }
    let range = latest(10);
    let ab = dm_page(&store, &alice, &bob, range).await;
    let ba = dm_page(&store, &bob, &alice, range).await;
    assert_eq!(ab, ba, "dm_page is symmetric");
    assert_well_formed("conversation alice <-> bob", range, &ab);
    assert_eq!(seqs(&ab), vec![1, 2, 3, 4, 5, 6]);
    for m in &ab.messages {
        let (from, to) = if m.seq.0 % 2 == 1 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        assert_eq!(
            (&m.from, &m.to),
            (from, to),
            "sender and target of seq {}",
            m.seq
        );
    }
}

/// Each pair of users has its own numbering, pages show only that pair's messages, and
/// DMs do not share numbering with rooms.
pub async fn dm_conversations_are_numbered_independently<S: Store>(store: S) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let sends = [
        (&alice, &bob, 1),
        (&alice, &carol, 1),
        (&carol, &bob, 1),
        (&bob, &alice, 2),
        (&carol, &alice, 2),
        (&bob, &carol, 2),
        (&alice, &bob, 3),
    ];
    for (from, to, seq) in sends {
        let appended = append_dm(&store, dm(from, to, &format!("{from}->{to}"), None)).await;
        assert_eq!(appended.message.seq, Seq(seq), "DM {from} -> {to}");
    }
    for (a, b, head) in [(&alice, &bob, 3), (&alice, &carol, 2), (&bob, &carol, 2)] {
        let page = dm_page(&store, a, b, latest(10)).await;
        assert_eq!(page.last_seq, Seq(head), "head of {a} <-> {b}");
        assert_eq!(seqs(&page), (1..=head).collect::<Vec<_>>());
        for m in &page.messages {
            let pair = [&m.from, &m.to];
            assert!(
                pair.contains(&a) && pair.contains(&b),
                "conversation {a} <-> {b} holds a DM {} -> {}",
                m.from,
                m.to
            );
        }
    }
    let room_msg = append_room(&store, room_message(&room("general"), &alice, "hi", None)).await;
    assert_eq!(
        room_msg.message.seq,
        Seq(1),
        "rooms are numbered apart from DMs"
    );
    let strangers = dm_page(&store, &alice, &user("dave"), latest(10)).await;
    assert!(strangers.messages.is_empty() && !strangers.has_more);
    assert_eq!(
        strangers.last_seq,
        Seq(0),
        "a pair that never wrote has head 0"
    );
}

/// The stored DM echoes what was appended, with `id`, `seq` and a timestamp set, and a
/// page returns exactly that stored form.
pub async fn dm_append_returns_the_stored_form<S: Store>(store: S) {
    let (alice, bob) = (user("alice"), user("bob"));
    let new = dm(&alice, &bob, "psst", Some("c-1"));
    let appended = append_dm(&store, new.clone()).await;
    let m = &*appended.message;
    assert!(!appended.duplicate);
    assert_eq!(m.from, new.from);
    assert_eq!(m.from_username, new.from_username);
    assert_eq!(m.to, new.to);
    assert_eq!(m.to_username, new.to_username);
    assert_eq!(m.content, new.content);
    assert_eq!(m.client_msg_id, new.client_msg_id);
    assert_eq!(m.seq, Seq(1));
    assert_ne!(m.timestamp, Timestamp(0), "the store sets the timestamp");
    let page = dm_page(&store, &bob, &alice, latest(10)).await;
    assert_eq!(page.messages.len(), 1);
    assert_eq!(
        *page.messages[0], *appended.message,
        "a page returns the stored form"
    );
}
