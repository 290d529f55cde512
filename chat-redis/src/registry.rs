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
mod tests;
