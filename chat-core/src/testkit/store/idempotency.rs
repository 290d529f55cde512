//! Idempotency: a retried `client_msg_id` stores nothing and returns the original,
//! within its scope (the sender, in one room or one conversation).

use std::collections::HashSet;

use crate::ids::Seq;
use crate::store::Store;

use super::stream::{
    DmStream, RoomStream, Sender, Stream, append_dm, append_room, dm, latest, room, room_message,
    seqs, user,
};
use crate::message::Stored;

async fn duplicate_returns_the_original<T: Stream>(stream: &T) {
    let name = stream.name();
    let original = stream.append(Sender::A, "original", Some("x")).await;
    assert!(!original.duplicate);
    for n in 2..=4 {
        stream.append(Sender::nth(n), &format!("m{n}"), None).await;
    }
    // A retry of an older message, with different content (a client bug or an edit):
    // the original is returned, nothing is stored, no seq is used.
    let retry = stream
        .append(Sender::A, "retried with other text", Some("x"))
        .await;
    assert!(
        retry.duplicate,
        "{name}: same user and clientMsgId is a duplicate"
    );
    assert_eq!(
        *retry.message, *original.message,
        "{name}: the original is returned"
    );
    assert_eq!(
        retry.message.content().as_str(),
        "original",
        "{name}: with its original content"
    );
    let page = stream.read(latest(100)).await;
    assert_eq!(
        seqs(&page),
        vec![1, 2, 3, 4],
        "{name}: a duplicate stores nothing"
    );
    let next = stream.append(Sender::B, "next", None).await;
    assert_eq!(
        next.message.seq(),
        Seq(5),
        "{name}: a duplicate consumes no seq"
    );
    let again = stream.append(Sender::A, "third try", Some("x")).await;
    assert!(again.duplicate, "{name}: still a duplicate later");
    assert_eq!(*again.message, *original.message);
}

/// Appending with a `client_msg_id` the same user already used in the room stores
/// nothing and returns the original message, original content included, marked
/// `duplicate`; no seq is consumed.
pub async fn duplicate_client_msg_id_returns_the_original<S: Store>(store: S) {
    duplicate_returns_the_original(&RoomStream::new(&store, "general")).await;
}

/// The same for DMs: same sender, same conversation.
pub async fn dm_duplicate_client_msg_id_returns_the_original<S: Store>(store: S) {
    duplicate_returns_the_original(&DmStream::new(&store, "alice", "bob")).await;
}

/// Another user using the same `client_msg_id` in the same room is not a duplicate.
pub async fn client_msg_id_is_scoped_to_the_user<S: Store>(store: S) {
    let general = RoomStream::new(&store, "general");
    let alice = general.append(Sender::A, "from alice", Some("x")).await;
    let bob = general.append(Sender::B, "from bob", Some("x")).await;
    assert!(
        !bob.duplicate,
        "another user's clientMsgId is not a duplicate"
    );
    assert_eq!(bob.message.seq, Seq(2));
    assert_eq!(bob.message.content.as_str(), "from bob");
    let alice_again = general.append(Sender::A, "again", Some("x")).await;
    let bob_again = general.append(Sender::B, "again", Some("x")).await;
    assert!(alice_again.duplicate && bob_again.duplicate);
    assert_eq!(*alice_again.message, *alice.message);
    assert_eq!(*bob_again.message, *bob.message);
}

/// The same user using the same `client_msg_id` in another room is not a duplicate.
pub async fn client_msg_id_is_scoped_to_the_room<S: Store>(store: S) {
    let one = RoomStream::new(&store, "one");
    let two = RoomStream::new(&store, "two");
    let first = one.append(Sender::A, "in one", Some("x")).await;
    let other = two.append(Sender::A, "in two", Some("x")).await;
    assert!(
        !other.duplicate,
        "the same clientMsgId in another room is not a duplicate"
    );
    assert_eq!(other.message.room, room("two"));
    assert_eq!(other.message.seq, Seq(1));
    assert_eq!(other.message.content.as_str(), "in two");
    let retry = one.append(Sender::A, "retry", Some("x")).await;
    assert!(retry.duplicate);
    assert_eq!(*retry.message, *first.message);
}

/// Without a `client_msg_id` every append is stored, even with identical content.
pub async fn no_client_msg_id_is_never_a_duplicate<S: Store>(store: S) {
    async fn check<T: Stream>(stream: &T) {
        let mut ids = HashSet::new();
        for n in 1..=3 {
            let appended = stream.append(Sender::A, "same", None).await;
            assert!(
                !appended.duplicate,
                "{}: no clientMsgId, no duplicate",
                stream.name()
            );
            assert_eq!(appended.message.client_msg_id(), None);
            assert_eq!(appended.message.seq(), Seq(n));
            ids.insert(appended.message.id());
        }
        assert_eq!(ids.len(), 3, "{}: three messages, three ids", stream.name());
    }
    check(&RoomStream::new(&store, "general")).await;
    check(&DmStream::new(&store, "alice", "bob")).await;
}

/// A DM's `client_msg_id` is scoped to its sender and its conversation: the other
/// direction, another conversation and a room do not see it.
pub async fn dm_client_msg_id_is_scoped_to_sender_and_conversation<S: Store>(store: S) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let first = append_dm(&store, dm(&alice, &bob, "hi bob", Some("x"))).await;
    let reply = append_dm(&store, dm(&bob, &alice, "hi alice", Some("x"))).await;
    assert!(
        !reply.duplicate,
        "the other direction's sender is another user"
    );
    assert_eq!(reply.message.seq, Seq(2));
    let to_carol = append_dm(&store, dm(&alice, &carol, "hi carol", Some("x"))).await;
    assert!(!to_carol.duplicate, "another conversation is another scope");
    assert_eq!(to_carol.message.seq, Seq(1));
    let in_room = room_message(&room("general"), &alice, "hi all", Some("x"));
    let in_room = append_room(&store, in_room).await;
    assert!(
        !in_room.duplicate,
        "rooms and conversations are separate scopes"
    );
    let retry = append_dm(&store, dm(&alice, &bob, "hi again", Some("x"))).await;
    assert!(retry.duplicate);
    assert_eq!(*retry.message, *first.message);
    // The retry names the conversation the other way round: still the same scope.
    let retry = append_dm(&store, dm(&bob, &alice, "and again", Some("x"))).await;
    assert!(retry.duplicate);
    assert_eq!(*retry.message, *reply.message);
}
