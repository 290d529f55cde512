//! The scripts against a real Redis (`CHAT_TEST_REDIS_URL`), each test under a key
//! prefix of its own.
#![allow(clippy::unwrap_used)]

use futures_util::StreamExt;
use redis::AsyncCommands;

use super::*;
use crate::dm_stream::StreamId;
use crate::envelope::{Body, Envelope};
use crate::testing::{TestPrefix, redis_url};

const LEASE_MS: u64 = 10_000;

async fn registry(prefix: &TestPrefix, node: &str) -> Registry {
    let client = redis::Client::open(prefix.url.as_str()).unwrap();
    let conn = ConnectionManager::new(client).await.unwrap();
    Registry::new(conn, Keys::new(&prefix.prefix), node.to_owned())
}

fn room(s: &str) -> RoomName {
    RoomName::parse(s).unwrap()
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn name(s: &str) -> Username {
    Username::parse(s).unwrap()
}

/// Makes `node`'s lease look expired.
async fn expire(r: &Registry, node: &str) {
    let _: () = r
        .connection()
        .zadd(r.keys().nodes(), node, 1)
        .await
        .unwrap();
}

/// A subscriber to `channels`, ready when returned.
async fn listen(prefix: &TestPrefix, channels: &[String]) -> redis::aio::PubSubStream {
    let client = redis::Client::open(prefix.url.as_str()).unwrap();
    let (mut sink, stream) = client.get_async_pubsub().await.unwrap().split();
    sink.subscribe(channels).await.unwrap();
    // Keep the sink alive with the stream: dropping it does not close the connection.
    std::mem::forget(sink);
    stream
}

async fn next_raw(stream: &mut redis::aio::PubSubStream) -> redis::Msg {
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("a message in time")
        .expect("the subscriber stays connected")
}

async fn next(stream: &mut redis::aio::PubSubStream) -> (String, Envelope) {
    let m = next_raw(stream).await;
    (
        m.get_channel_name().to_owned(),
        Envelope::decode(m.get_payload_bytes()).unwrap(),
    )
}

#[tokio::test]
async fn writes_need_a_live_lease_and_renewal_reports_whether_it_was() {
    let Some(url) = redis_url("writes_need_a_live_lease") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let a = registry(&prefix, "a").await;
    let lobby = room("lobby");
    assert!(matches!(
        a.join(&lobby, &user("u1"), "Ann", "{}").await,
        Err(BusError::LeaseLost)
    ));
    assert!(matches!(
        a.online(&user("u1"), "Ann").await,
        Err(BusError::LeaseLost)
    ));
    assert!(matches!(
        a.claim(&user("u1"), &[name("Ann")], false).await,
        Err(BusError::LeaseLost)
    ));
    assert!(!a.renew(LEASE_MS).await.unwrap().was_alive);
    assert!(a.renew(LEASE_MS).await.unwrap().was_alive);
    a.join(&lobby, &user("u1"), "Ann", "{}").await.unwrap();
    let members: Vec<(String, String)> = a
        .connection()
        .hgetall(a.keys().room_members(&lobby))
        .await
        .unwrap();
    assert_eq!(members, [(a.member_field(&user("u1")), "Ann".to_owned())]);
    assert_eq!(
        a.own_members().await.unwrap(),
        [("lobby".into(), "u1".into())]
    );
    expire(&a, "a").await;
    assert!(matches!(
        a.join(&lobby, &user("u2"), "Bob", "{}").await,
        Err(BusError::LeaseLost)
    ));
    assert!(!a.renew(LEASE_MS).await.unwrap().was_alive);
}

#[tokio::test]
async fn join_and_leave_announce_and_a_second_leave_is_silent() {
    let Some(url) = redis_url("join_and_leave_announce") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let a = registry(&prefix, "a").await;
    let lobby = room("lobby");
    let mut stream = listen(&prefix, &[a.keys().room_channel(&lobby)]).await;
    a.renew(LEASE_MS).await.unwrap();
    let joined = Envelope::new(
        "a",
        Body::Joined {
            room: "lobby".into(),
            user: "u1".into(),
            name: "Ann".into(),
        },
    );
    a.join(&lobby, &user("u1"), "Ann", &joined.encode())
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await.1, joined);
    let left = Envelope::new(
        "a",
        Body::Left {
            room: "lobby".into(),
            user: "u1".into(),
        },
    );
    assert!(a.leave(&lobby, &user("u1"), &left.encode()).await.unwrap());
    assert!(!a.leave(&lobby, &user("u1"), "second").await.unwrap());
    assert_eq!(next(&mut stream).await.1, left);
    // The next message is not the silent second leave.
    a.join(&lobby, &user("u1"), "Ann", &joined.encode())
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await.1, joined);
    assert!(a.own_members().await.unwrap().len() == 1);
}

#[tokio::test]
async fn a_name_goes_to_one_user_and_follows_renames_and_departures() {
    let Some(url) = redis_url("a_name_goes_to_one_user") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let a = registry(&prefix, "a").await;
    let b = registry(&prefix, "b").await;
    a.renew(LEASE_MS).await.unwrap();
    b.renew(LEASE_MS).await.unwrap();
    let (ann, bob) = (user("ann"), user("bob"));
    let wanted = [name("Alice"), name("Alice (2)")];
    assert_eq!(a.claim(&ann, &wanted, false).await.unwrap(), Some(0));
    // Taken, also in another spelling (same key): the next candidate.
    assert_eq!(
        b.claim(&bob, &[name("ALICE"), name("Alice (2)")], false)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(b.claim(&bob, &[name("alice")], false).await.unwrap(), None);
    // The holder claiming it again (another node, a second tab) keeps it.
    assert_eq!(b.claim(&ann, &wanted, false).await.unwrap(), Some(0));
    // A rename claims the new name, then releases the old one.
    a.online(&ann, "Alice").await.unwrap();
    b.online(&ann, "Alice").await.unwrap();
    assert_eq!(
        a.claim(&ann, &[name("Anna")], false).await.unwrap(),
        Some(0)
    );
    assert_eq!(a.lookup(&ann).await.unwrap().as_deref(), Some("Anna"));
    assert_eq!(b.claim(&bob, &[name("Alice")], false).await.unwrap(), None);
    assert!(a.release(&ann, &name("Alice")).await.unwrap());
    // `keep` (a re-assert) takes nothing back while the user holds a name.
    assert_eq!(b.claim(&ann, &[name("Alice")], true).await.unwrap(), None);
    assert_eq!(
        b.claim(&bob, &[name("Alice")], false).await.unwrap(),
        Some(0)
    );
    // Release only by the holder.
    assert!(!a.release(&ann, &name("Alice")).await.unwrap());
    // The last node letting the user go releases its name.
    assert!(!a.offline(&ann).await.unwrap());
    assert_eq!(b.claim(&bob, &[name("Anna")], false).await.unwrap(), None);
    assert!(b.offline(&ann).await.unwrap());
    assert_eq!(a.lookup(&ann).await.unwrap(), None);
    assert_eq!(
        b.claim(&user("carl"), &[name("Anna")], false)
            .await
            .unwrap(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_one_name_at_once_one_wins() {
    let Some(url) = redis_url("two_nodes_claiming_one_name_at_once") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    for round in 0..20 {
        let wanted = [name(&format!("racer{round}"))];
        let mut contenders = Vec::new();
        for n in 0..4 {
            let r = registry(&prefix, &format!("n{n}")).await;
            r.renew(LEASE_MS).await.unwrap();
            contenders.push(r);
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(contenders.len()));
        let tasks: Vec<_> = contenders
            .into_iter()
            .enumerate()
            .map(|(n, r)| {
                let (barrier, wanted) = (barrier.clone(), wanted.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    r.claim(&user(&format!("user{n}")), &wanted, false)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap().is_some());
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

#[tokio::test]
async fn lookup_counts_only_live_nodes() {
    let Some(url) = redis_url("lookup_counts_only_live_nodes") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let a = registry(&prefix, "a").await;
    a.renew(LEASE_MS).await.unwrap();
    a.online(&user("ann"), "Ann").await.unwrap();
    assert_eq!(
        a.lookup(&user("ann")).await.unwrap().as_deref(),
        Some("Ann")
    );
    assert_eq!(a.lookup(&user("nobody")).await.unwrap(), None);
    a.online(&user("anon"), "").await.unwrap();
    assert_eq!(a.lookup(&user("anon")).await.unwrap(), None, "unnamed");
    expire(&a, "a").await;
    assert_eq!(a.lookup(&user("ann")).await.unwrap(), None);
}

#[tokio::test]
async fn reaping_removes_everything_of_an_expired_node_once() {
    let Some(url) = redis_url("reaping_removes_everything") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let a = registry(&prefix, "a").await;
    let b = registry(&prefix, "b").await;
    let (lobby, games) = (room("lobby"), room("games:1"));
    let mut stream = listen(
        &prefix,
        &[
            a.keys().room_channel(&lobby),
            a.keys().room_channel(&games),
            a.keys().cluster_channel(),
        ],
    )
    .await;
    a.renew(LEASE_MS).await.unwrap();
    b.renew(LEASE_MS).await.unwrap();
    // bob only on b; carl on both; dave claimed a name on b but never came online.
    let (bob, carl, dave) = (user("bob"), user("carl"), user("dave"));
    for (r, u, n) in [(&b, &bob, "Bob"), (&b, &carl, "Carl"), (&a, &carl, "Carl")] {
        r.online(u, n).await.unwrap();
        r.claim(u, &[name(n)], false).await.unwrap();
    }
    b.claim(&dave, &[name("Dave")], false).await.unwrap();
    b.join(&lobby, &bob, "Bob", "{}").await.unwrap();
    b.join(&games, &carl, "Carl", "{}").await.unwrap();
    a.join(&games, &carl, "Carl", "{}").await.unwrap();
    for _ in 0..3 {
        next_raw(&mut stream).await; // the joins' "{}" payloads
    }

    assert_eq!(a.reap("b", false).await.unwrap(), Reaped::Alive);
    expire(&b, "b").await;
    let renewal = a.renew(LEASE_MS).await.unwrap();
    assert_eq!(renewal.expired, ["b"]);
    assert_eq!(a.reap("b", false).await.unwrap(), Reaped::Removed(2));
    assert_eq!(a.reap("b", false).await.unwrap(), Reaped::Gone);

    let mut announced = Vec::new();
    for _ in 0..3 {
        let (_, envelope) = next(&mut stream).await;
        announced.push(envelope);
    }
    assert!(announced.contains(&Envelope::new(
        "b",
        Body::Left {
            room: "lobby".into(),
            user: "bob".into()
        }
    )));
    assert!(announced.contains(&Envelope::new(
        "b",
        Body::Left {
            room: "games:1".into(),
            user: "carl".into()
        }
    )));
    assert_eq!(
        announced.last(),
        Some(&Envelope::new("a", Body::NodeDown { node: "b".into() }))
    );
    let games_members: Vec<String> = a
        .connection()
        .hkeys(a.keys().room_members(&games))
        .await
        .unwrap();
    assert_eq!(games_members, [a.member_field(&carl)]);
    let nodes: Vec<String> = a
        .connection()
        .zrange(a.keys().nodes(), 0, -1)
        .await
        .unwrap();
    assert_eq!(nodes, ["a"]);
    // bob's and dave's names are free again; carl (still on a) keeps his.
    let eve = user("eve");
    for free in ["Bob", "Dave"] {
        assert_eq!(a.claim(&eve, &[name(free)], false).await.unwrap(), Some(0));
    }
    assert_eq!(a.claim(&eve, &[name("Carl")], false).await.unwrap(), None);
}

#[tokio::test]
async fn a_room_snapshot_lists_other_live_nodes_on_the_asking_nodes_channel() {
    let Some(url) = redis_url("a_room_snapshot_lists_other_live_nodes") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let (a, b, c) = (
        registry(&prefix, "a").await,
        registry(&prefix, "b").await,
        registry(&prefix, "c").await,
    );
    let lobby = room("lobby");
    for r in [&a, &b, &c] {
        r.renew(LEASE_MS).await.unwrap();
    }
    a.join(&lobby, &user("ann"), "Ann", "{}").await.unwrap();
    b.join(&lobby, &user("bob"), "Bob", "{}").await.unwrap();
    c.join(&lobby, &user("cy"), "Cy", "{}").await.unwrap();
    expire(&c, "c").await;
    // Nobody listens on a's channel yet.
    assert_eq!(a.sync(&lobby).await.unwrap(), 0);
    let mut stream = listen(&prefix, &[a.keys().node_channel("a")]).await;
    assert_eq!(a.sync(&lobby).await.unwrap(), 1);
    let (channel, envelope) = next(&mut stream).await;
    assert_eq!(channel, a.keys().node_channel("a"));
    assert_eq!(
        envelope,
        Envelope::new(
            "a",
            Body::Members {
                room: "lobby".into(),
                members: vec![("b".into(), "bob".into(), "Bob".into())],
            }
        )
    );
    let empty = room("empty");
    a.sync(&empty).await.unwrap();
    assert!(matches!(
        next(&mut stream).await.1.body,
        Body::Members { members, .. } if members.is_empty()
    ));
}

#[tokio::test]
async fn a_dm_is_kept_in_its_users_capped_stream_and_published_with_its_id() {
    let Some(url) = redis_url("a_dm_is_kept_in_its_users_capped_stream") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let a = registry(&prefix, "a")
        .await
        .with_dm_backlog(5, std::time::Duration::from_secs(60));
    let bob = user("bob");
    let (stream, channel) = (a.keys().dm_stream(&bob), a.keys().user_channel(&bob));
    let mut sub = listen(&prefix, std::slice::from_ref(&channel)).await;
    assert_eq!(
        a.dm_tails(std::slice::from_ref(&stream)).await.unwrap(),
        [None]
    );
    // Any envelope will do: the script does not look inside.
    let envelope = |n: u32| {
        Envelope::new(
            "a",
            Body::NodeDown {
                node: format!("n{n}"),
            },
        )
    };
    let batch: Vec<Announcement> = (0..300)
        .map(|n| Announcement {
            channel: channel.clone(),
            payload: envelope(n).encode(),
            dm_stream: Some(stream.clone()),
        })
        .collect();
    a.publish(&batch).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..300 {
        let (_, mut published) = next(&mut sub).await;
        let sid = published.sid.take().expect("published with its entry id");
        assert_eq!(published, envelope(n));
        ids.push(StreamId::parse(&sid).unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Capped (`MAXLEN ~` trims whole nodes of 100 entries) and expiring.
    let mut conn = a.connection();
    let len: usize = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((5..=105).contains(&len), "{len}");
    let ttl: i64 = conn.pttl(&stream).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "{ttl}");
    assert_eq!(
        a.dm_tails(std::slice::from_ref(&stream)).await.unwrap(),
        [ids.last().copied()]
    );
    let after = a
        .dm_after(&[(stream.clone(), ids[297])], 100)
        .await
        .unwrap();
    assert_eq!(
        after,
        [vec![
            (ids[298], Some(envelope(298).encode())),
            (ids[299], Some(envelope(299).encode()))
        ]]
    );
    let none = a.dm_after(&[(stream, ids[299])], 100).await.unwrap();
    assert_eq!(none, [Vec::new()]);
}
