//! [`Registry`]: one node's typed access to the cluster registry in Redis — every
//! method is one Lua script (or one plain command), so every change is atomic.

use chat_core::{RoomName, UserId, Username};
use redis::aio::ConnectionManager;

use crate::dm_stream::StreamId;
use crate::error::BusError;
use crate::keys::Keys;
use crate::scripts::Scripts;

/// How many expired nodes one renewal lists for reaping (more are reaped next time).
const REAP_BATCH: usize = 16;

/// A renewal's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Renewal {
    /// The lease was current before this renewal; `false` means this node's entries
    /// may have been reaped (or lost with Redis) and must be asserted again.
    pub(crate) was_alive: bool,
    /// Other nodes whose lease has run out.
    pub(crate) expired: Vec<String>,
}

/// What reaping a node did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaped {
    /// Its entries were removed (this many room entries) and `node_down` announced.
    Removed(u64),
    /// It renewed its lease meanwhile: left alone.
    Alive,
    /// Nothing left to reap (another node did it).
    Gone,
}

/// One announcement to publish on `channel`; a DM is also appended to its user's
/// DM stream (the DM script).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcement {
    pub(crate) channel: String,
    pub(crate) payload: String,
    /// The DM stream of the channel's user, for a DM.
    pub(crate) dm_stream: Option<String>,
}

/// One node's handle on the registry.
#[derive(Clone)]
pub(crate) struct Registry {
    conn: ConnectionManager,
    keys: Keys,
    node: String,
    scripts: std::sync::Arc<Scripts>,
    /// DM stream cap (`MAXLEN ~`) and expiry in ms.
    dm_backlog: (usize, u64),
}

impl Registry {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys, node: String) -> Self {
        Self {
            conn,
            keys,
            node,
            scripts: std::sync::Arc::new(Scripts::new()),
            dm_backlog: (1000, 3_600_000),
        }
    }

    /// Caps each user's DM stream at about `dms` entries, expiring `ttl` after its
    /// last DM.
    pub(crate) fn with_dm_backlog(mut self, dms: usize, ttl: std::time::Duration) -> Self {
        self.dm_backlog = (dms, u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection handle (cheap clone of the multiplexed manager).
    #[cfg(test)]
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Records `user` (named `name`) in `room` for this node and publishes `envelope`
    /// on the room's channel, atomically.
    pub(crate) async fn join(
        &self,
        room: &RoomName,
        user: &UserId,
        name: &str,
        envelope: &str,
    ) -> Result<(), BusError> {
        let mut call = self.scripts.join.prepare_invoke();
        call.key(self.keys.nodes())
            .key(self.keys.room_members(room))
            .key(self.keys.node_members(&self.node))
            .arg(&self.node)
            .arg(user.as_str())
            .arg(name)
            .arg(room.as_str())
            .arg(self.keys.room_channel(room))
            .arg(envelope);
        call.invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)?;
        Ok(())
    }

    /// Removes this node's entry of `user` in `room`; publishes `envelope` if there
    /// was one. Returns whether there was.
    pub(crate) async fn leave(
        &self,
        room: &RoomName,
        user: &UserId,
        envelope: &str,
    ) -> Result<bool, BusError> {
        let mut call = self.scripts.leave.prepare_invoke();
        call.key(self.keys.room_members(room))
            .key(self.keys.node_members(&self.node))
            .arg(&self.node)
            .arg(user.as_str())
            .arg(room.as_str())
            .arg(self.keys.room_channel(room))
            .arg(envelope);
        let removed: i64 = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)?;
        Ok(removed == 1)
    }

    /// Records `user` as online on this node, displayed as `name` (empty: none yet).
    pub(crate) async fn online(&self, user: &UserId, name: &str) -> Result<(), BusError> {
        let mut call = self.scripts.online.prepare_invoke();
        call.key(self.keys.nodes())
            .key(self.keys.user(user))
            .key(self.keys.node_users(&self.node))
            .arg(&self.node)
            .arg(user.as_str())
            .arg(name);
        call.invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)?;
        Ok(())
    }

    /// `user` is no longer online on this node. Returns whether its name was released
    /// (no node has it any more).
    pub(crate) async fn offline(&self, user: &UserId) -> Result<bool, BusError> {
        let mut call = self.scripts.offline.prepare_invoke();
        call.key(self.keys.user(user))
            .key(self.keys.node_users(&self.node))
            .key(self.keys.names())
            .key(self.keys.held_names(user))
            .arg(&self.node)
            .arg(user.as_str());
        let released: i64 = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)?;
        Ok(released == 1)
    }

    /// Claims the first free name of `candidates` for `user`; its index, or `None`
    /// when all are taken. With `keep`, nothing happens (and `None` is returned) if
    /// the user already holds a name: how a node re-asserts a claim Redis lost without
    /// taking back a name the user gave up elsewhere meanwhile.
    pub(crate) async fn claim(
        &self,
        user: &UserId,
        candidates: &[Username],
        keep: bool,
    ) -> Result<Option<usize>, BusError> {
        let mut call = self.scripts.claim.prepare_invoke();
        call.key(self.keys.nodes())
            .key(self.keys.names())
            .key(self.keys.held_names(user))
            .key(self.keys.user(user))
            .key(self.keys.node_users(&self.node))
            .arg(&self.node)
            .arg(user.as_str())
            .arg(if keep { "1" } else { "0" });
        for name in candidates {
            call.arg(name.key()).arg(name.as_str());
        }
        let won: i64 = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)?;
        Ok(usize::try_from(won)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&i| i < candidates.len()))
    }

    /// Releases `name` if `user` holds it.
    pub(crate) async fn release(&self, user: &UserId, name: &Username) -> Result<bool, BusError> {
        let mut call = self.scripts.release.prepare_invoke();
        call.key(self.keys.names())
            .key(self.keys.held_names(user))
            .arg(user.as_str())
            .arg(name.key());
        let released: i64 = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)?;
        Ok(released == 1)
    }

    /// The display name of `user` if a live node has it online.
    pub(crate) async fn lookup(&self, user: &UserId) -> Result<Option<String>, BusError> {
        let mut call = self.scripts.lookup.prepare_invoke();
        call.key(self.keys.nodes()).key(self.keys.user(user));
        call.invoke_async(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)
    }

    /// Renews this node's lease for `lease_ms`.
    pub(crate) async fn renew(&self, lease_ms: u64) -> Result<Renewal, BusError> {
        let mut call = self.scripts.renew.prepare_invoke();
        call.key(self.keys.nodes())
            .arg(&self.node)
            .arg(lease_ms)
            .arg(REAP_BATCH);
        let (alive, expired): (i64, Vec<String>) = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)?;
        Ok(Renewal {
            was_alive: alive == 1,
            expired: expired.into_iter().filter(|n| *n != self.node).collect(),
        })
    }

    /// Reaps `node` (this node itself, forced, when leaving cleanly).
    pub(crate) async fn reap(&self, node: &str, force: bool) -> Result<Reaped, BusError> {
        let mut call = self.scripts.reap.prepare_invoke();
        call.key(self.keys.nodes())
            .arg(node)
            .arg(self.keys.prefix())
            .arg(if force { "1" } else { "0" })
            .arg(&self.node);
        let n: i64 = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)?;
        Ok(match n {
            -1 => Reaped::Alive,
            -2 => Reaped::Gone,
            n => Reaped::Removed(u64::try_from(n).unwrap_or(0)),
        })
    }

    /// Publishes the members of `room` on other live nodes to this node's channel.
    /// Returns how many subscribers got it (0: this node's subscriber is not there).
    pub(crate) async fn sync(&self, room: &RoomName) -> Result<u64, BusError> {
        let mut call = self.scripts.sync.prepare_invoke();
        call.key(self.keys.room_members(room))
            .key(self.keys.nodes())
            .arg(&self.node)
            .arg(room.as_str())
            .arg(self.keys.node_channel(&self.node));
        call.invoke_async(&mut self.conn.clone())
            .await
            .map_err(BusError::from_script)
    }

    /// Publishes `announcements` in order, in one round trip; DMs through the DM
    /// script (loaded first in the same pipeline: a pipeline does not retry a script
    /// Redis forgot, e.g. after a restart).
    pub(crate) async fn publish(&self, announcements: &[Announcement]) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        if announcements.iter().any(|a| a.dm_stream.is_some()) {
            pipe.load_script(&self.scripts.dm).ignore();
        }
        let (max, ttl_ms) = self.dm_backlog;
        for a in announcements {
            match &a.dm_stream {
                None => {
                    pipe.publish(&a.channel, &a.payload).ignore();
                }
                Some(stream) => {
                    let mut call = self.scripts.dm.prepare_invoke();
                    call.key(stream)
                        .arg(&a.channel)
                        .arg(&a.payload)
                        .arg(max)
                        .arg(ttl_ms);
                    pipe.invoke_script(&call).ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// The last entry id of each of `streams` (`None`: empty or absent), in one round
    /// trip.
    pub(crate) async fn dm_tails(
        &self,
        streams: &[String],
    ) -> Result<Vec<Option<StreamId>>, BusError> {
        let mut pipe = redis::pipe();
        for stream in streams {
            pipe.cmd("XREVRANGE")
                .arg(stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let tails: Vec<Vec<(String, redis::Value)>> =
            pipe.query_async(&mut self.conn.clone()).await?;
        Ok(tails
            .into_iter()
            .map(|entries| entries.first().and_then(|(id, _)| StreamId::parse(id)))
            .collect())
    }

    /// For each `(stream, after)`, at most `count` entries after `after`, oldest first,
    /// as `(id, envelope)`, in one round trip (`None`: an entry without an envelope,
    /// not written by the DM script).
    pub(crate) async fn dm_after(
        &self,
        reads: &[(String, StreamId)],
        count: usize,
    ) -> Result<Vec<Vec<(StreamId, Option<String>)>>, BusError> {
        let mut pipe = redis::pipe();
        for (stream, after) in reads {
            pipe.cmd("XRANGE")
                .arg(stream)
                .arg(after.next().to_string())
                .arg("+")
                .arg("COUNT")
                .arg(count);
        }
        let pages: Vec<Vec<(String, Vec<String>)>> =
            pipe.query_async(&mut self.conn.clone()).await?;
        Ok(pages
            .into_iter()
            .map(|entries| {
                entries
                    .into_iter()
                    .filter_map(|(id, fields)| {
                        let id = StreamId::parse(&id)?;
                        let mut fields = fields.into_iter();
                        while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
                            if field == "e" {
                                return Some((id, Some(value)));
                            }
                        }
                        Some((id, None))
                    })
                    .collect()
            })
            .collect())
    }

    /// The `(room, user)` entries Redis holds for this node.
    pub(crate) async fn own_members(&self) -> Result<Vec<(String, String)>, BusError> {
        let entries: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.node_members(&self.node))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                e.split_once(crate::keys::SEP)
                    .map(|(r, u)| (r.to_owned(), u.to_owned()))
            })
            .collect())
    }

    /// The users Redis holds for this node.
    pub(crate) async fn own_users(&self) -> Result<Vec<String>, BusError> {
        Ok(redis::cmd("SMEMBERS")
            .arg(self.keys.node_users(&self.node))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// The `room\0user` member field of this node (for tests and checks).
    #[cfg(test)]
    pub(crate) fn member_field(&self, user: &UserId) -> String {
        crate::keys::pair(&self.node, user.as_str())
    }
}

#[cfg(test)]
mod tests {
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
}
