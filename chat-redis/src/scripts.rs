//! The Lua scripts: every registry change is one of them, so it is atomic in Redis (no
//! home-made consensus, no read-modify-write race between nodes).
//!
//! Conventions: `KEYS` are the keys a script touches when they are known up front;
//! reaping builds room and user keys from the prefix (so the cluster needs a single
//! Redis or one shard, not Redis Cluster). Time is Redis `TIME` in milliseconds: one
//! clock for every node. A script that writes an entry a node owns first checks that
//! node's lease; a node whose lease ran out gets the error `LEASE` and writes nothing,
//! so a paused node that wakes up cannot recreate entries that were already reaped
//! (it re-registers and re-asserts everything instead).

/// Shared helpers, prepended to every script.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function alive(nodes, node, now)
  local score = redis.call('ZSCORE', nodes, node)
  return score ~= false and score ~= nil and tonumber(score) > now
end
local function require_lease(nodes, node)
  if not alive(nodes, node, now_ms()) then
    return redis.error_reply('LEASE the lease of node ' .. node .. ' has expired')
  end
  return nil
end
-- Drops every name `user` holds: `names` name-key -> user, `held` the user's set of keys.
local function release_names(names, held, user)
  for _, key in ipairs(redis.call('SMEMBERS', held)) do
    if redis.call('HGET', names, key) == user then
      redis.call('HDEL', names, key)
    end
  end
  redis.call('DEL', held)
end
"#;

/// A user's connection on `node` became a member of a room.
/// KEYS: nodes, room members, node members. ARGV: node, user, name, room, channel,
/// envelope. Returns 1.
const JOIN: &str = r#"
local err = require_lease(KEYS[1], ARGV[1])
if err then return err end
redis.call('HSET', KEYS[2], ARGV[1] .. '\0' .. ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4] .. '\0' .. ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"#;

/// The user's last connection on `node` left the room. Announced only when the entry
/// was there (a reaped entry was announced by `NodeDown` already).
/// KEYS: room members, node members. ARGV: node, user, room, channel, envelope.
/// Returns 1 if an entry was removed, else 0.
const LEAVE: &str = r#"
local removed = redis.call('HDEL', KEYS[1], ARGV[1] .. '\0' .. ARGV[2])
redis.call('SREM', KEYS[2], ARGV[3] .. '\0' .. ARGV[2])
if removed == 1 then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return removed
"#;

/// The user's first connection on `node`. KEYS: nodes, user, node users.
/// ARGV: node, user, display name ('' for none). Returns 1.
const ONLINE: &str = r#"
local err = require_lease(KEYS[1], ARGV[1])
if err then return err end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"#;

/// The user's last connection on `node`; when no node has the user any more, its
/// names are released. KEYS: user, node users, names, held names. ARGV: node, user.
/// Returns 1 if the names were released, else 0.
const OFFLINE: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  release_names(KEYS[3], KEYS[4], ARGV[2])
  return 1
end
return 0
"#;

/// Claims the first free candidate for `user` (free: unclaimed, or already the user's)
/// and updates the user's display name on every node that has it. A user may hold
/// several names for a moment (a rename claims the new one, then releases the old);
/// all go when no node has the user any more. The user joins the node's index, so a
/// claim whose node dies before the user comes online is released by the reaper.
/// With ARGV[3] == '1' (re-asserting after a loss) nothing is done if the user already
/// holds a name.
/// KEYS: nodes, names, held names, user, node users.
/// ARGV: node, user, keep, then (key, display) pairs.
/// Returns the 1-based index of the candidate won, 0 if every one is taken.
const CLAIM: &str = r#"
local err = require_lease(KEYS[1], ARGV[1])
if err then return err end
local user = ARGV[2]
if ARGV[3] == '1' and redis.call('SCARD', KEYS[3]) > 0 then
  return 0
end
for i = 4, #ARGV - 1, 2 do
  local key, display = ARGV[i], ARGV[i + 1]
  local holder = redis.call('HGET', KEYS[2], key)
  if (not holder) or holder == user then
    redis.call('HSET', KEYS[2], key, user)
    redis.call('SADD', KEYS[3], key)
    for _, node in ipairs(redis.call('HKEYS', KEYS[4])) do
      redis.call('HSET', KEYS[4], node, display)
    end
    redis.call('SADD', KEYS[5], user)
    return (i - 2) / 2
  end
end
return 0
"#;

/// Releases `name` if `user` holds it. KEYS: names, held names. ARGV: user, key.
/// Returns 1 if released.
const RELEASE: &str = r#"
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// The user's display name if a live node has it online with a name (an unnamed user
/// cannot be written to, as on one node). KEYS: nodes, user.
/// Returns the name, or nil.
const LOOKUP: &str = r#"
local now = now_ms()
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  if fields[i + 1] ~= '' and alive(KEYS[1], fields[i], now) then
    return fields[i + 1]
  end
end
return false
"#;

/// Renews `node`'s lease. KEYS: nodes. ARGV: node, lease ms, most expired to list.
/// Returns { 1 if the lease was still current else 0, { expired nodes } }.
const RENEW: &str = r#"
local now = now_ms()
local was_alive = alive(KEYS[1], ARGV[1], now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
return { was_alive and 1 or 0, expired }
"#;

/// Removes everything `node` holds: its room entries (announcing `left` on each room's
/// channel), its users (releasing names no node has any more), its indexes and its
/// lease, then announces `node_down`. Unless forced (a node leaving by itself), it does
/// nothing when the node is not expired any more (it renewed meanwhile) or is gone
/// (reaped by someone else): reaping is idempotent.
/// KEYS: nodes. ARGV: node, prefix, force ('1'/'0'), reaper node.
/// Returns the number of room entries removed, -1 if alive, -2 if already gone.
const REAP: &str = r#"
local node, prefix = ARGV[1], ARGV[2]
if ARGV[3] ~= '1' then
  local score = redis.call('ZSCORE', KEYS[1], node)
  if not score then return -2 end
  if tonumber(score) > now_ms() then return -1 end
end
local members_key = prefix .. 'node:' .. node .. ':members'
local users_key = prefix .. 'node:' .. node .. ':users'
local removed = 0
for _, entry in ipairs(redis.call('SMEMBERS', members_key)) do
  local sep = string.find(entry, '\0', 1, true)
  if sep then
    local room = string.sub(entry, 1, sep - 1)
    local user = string.sub(entry, sep + 1)
    if redis.call('HDEL', prefix .. 'room:' .. room .. ':members', node .. '\0' .. user) == 1 then
      removed = removed + 1
      redis.call('PUBLISH', prefix .. 'r:' .. room,
        cjson.encode({ from = node, kind = 'left', room = room, user = user }))
    end
  end
end
for _, user in ipairs(redis.call('SMEMBERS', users_key)) do
  local hash = prefix .. 'user:' .. user
  redis.call('HDEL', hash, node)
  if redis.call('EXISTS', hash) == 0 then
    release_names(prefix .. 'names', prefix .. 'unames:' .. user, user)
  end
end
redis.call('DEL', members_key, users_key)
redis.call('ZREM', KEYS[1], node)
redis.call('PUBLISH', prefix .. 'cluster',
  cjson.encode({ from = ARGV[4], kind = 'node_down', node = node }))
return removed
"#;

/// A room's members on other live nodes, published on the asking node's own channel
/// right after reading them. Redis delivers a subscriber's messages in publish order,
/// so the snapshot arrives after every announcement it reflects and before every one
/// it does not: the node applies it at exactly the right point of the room's stream.
/// KEYS: room members, nodes. ARGV: node, room, node channel.
/// Returns the number of subscribers that got it (0: the node's subscriber is down).
const SYNC: &str = r#"
local now = now_ms()
local fields = redis.call('HGETALL', KEYS[1])
local members = {}
for i = 1, #fields, 2 do
  local entry = fields[i]
  local sep = string.find(entry, '\0', 1, true)
  if sep then
    local node = string.sub(entry, 1, sep - 1)
    if node ~= ARGV[1] and alive(KEYS[2], node, now) then
      table.insert(members, { node, string.sub(entry, sep + 1), fields[i + 1] })
    end
  end
end
return redis.call('PUBLISH', ARGV[3],
  cjson.encode({ from = ARGV[1], kind = 'members', room = ARGV[2], members = members }))
"#;

/// Announces a stored DM to one of its users: appends the envelope to the user's
/// capped DM stream (refreshing its expiry), then publishes it on the user's channel
/// with the entry's id as `sid`, so subscribers know how far they have read. One
/// script, so a subscriber never sees an announcement that is not in the stream, and
/// the stream's order is the channel's order. The envelope is JSON from the node
/// (`{"from":…}`): the id is spliced in as the first field.
/// KEYS: the user's DM stream. ARGV: channel, envelope, entries kept (`MAXLEN ~`),
/// expiry ms. Returns the entry id.
const DM: &str = r#"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[1], '{"sid":"' .. id .. '",' .. string.sub(ARGV[2], 2))
return id
"#;

/// The compiled scripts (each knows its SHA1; `invoke_async` loads it again after a
/// Redis restart emptied the script cache).
pub(crate) struct Scripts {
    pub(crate) join: redis::Script,
    pub(crate) leave: redis::Script,
    pub(crate) online: redis::Script,
    pub(crate) offline: redis::Script,
    pub(crate) claim: redis::Script,
    pub(crate) release: redis::Script,
    pub(crate) lookup: redis::Script,
    pub(crate) renew: redis::Script,
    pub(crate) reap: redis::Script,
    pub(crate) sync: redis::Script,
    pub(crate) dm: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Self {
            join: script(JOIN),
            leave: script(LEAVE),
            online: script(ONLINE),
            offline: script(OFFLINE),
            claim: script(CLAIM),
            release: script(RELEASE),
            lookup: script(LOOKUP),
            renew: script(RENEW),
            reap: script(REAP),
            sync: script(SYNC),
            dm: script(DM),
        }
    }
}
