//! Engine configuration. Every limit has a documented default and can be changed or,
//! for rate limits, switched off (`None`).

use std::time::Duration;

/// A token-bucket rate: `burst` requests at once, then one every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed back to back.
    pub burst: u32,
    /// Time to earn one more request.
    pub interval: Duration,
}

impl Rate {
    /// `burst` at once, then `per_second` per second.
    pub const fn per_second(burst: u32, per_second: u32) -> Rate {
        Rate {
            burst,
            interval: Duration::from_nanos(1_000_000_000 / per_second as u64),
        }
    }
}

/// Limits and behaviour of the [`Engine`](super::Engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Messages in the `message_history` that answers a plain join. Default 50
    /// (PROTOCOL.md).
    pub join_history: usize,
    /// Most messages in one `history`/`dm_history` page; larger `limit`s are clamped.
    /// Default 100 (PROTOCOL.md).
    pub history_page_max: usize,
    /// Most messages a resume (`join_room {since}`) replays; a client that missed more
    /// gets `recovered: false` and the latest [`join_history`](Self::join_history).
    /// Default 500.
    pub resume_max: usize,
    /// Bytes of messages (JSON-encoded) one resume or `history` frame carries at most.
    /// A resume replay larger than this is sent as several consecutive
    /// `message_history` frames, all but the last marked `continued: true`; a `history`
    /// page is cut (its oldest messages left out, `hasMore: true`). At least one message
    /// goes in every frame. The answer to a plain join (the latest
    /// [`join_history`](Self::join_history)) is always one frame, as the base protocol
    /// has it. Default 64 KiB: a full resume of 500 messages of 1,000 escaped control
    /// characters (~3.2 MB) then leaves in ~50 frames, so no single frame — and no
    /// transport copy of one — holds megabytes.
    pub history_frame_bytes: usize,
    /// Rooms one connection may be in at once. Default 100 (PROTOCOL.md).
    pub max_rooms_per_connection: usize,
    /// Connections one authenticated user may hold at once. Default 32.
    pub max_connections_per_user: usize,
    /// Commands a connection may queue behind one that waits for the store. Commands of
    /// one connection are handled strictly in order; past this bound they are refused
    /// with `too_many_requests`. Default 32.
    pub max_queued_commands: usize,
    /// A typing indicator stops by itself after this long without news. Default 5 s.
    pub typing_timeout: Duration,
    /// Chat messages and DMs per connection. Default burst 10, then 1 per second.
    pub message_rate: Option<Rate>,
    /// `typing_start`/`typing_stop` per connection. Default burst 10, then 2 per second.
    pub typing_rate: Option<Rate>,
    /// Joins per connection (each costs a store read and a broadcast). Default burst 10,
    /// then 1 per second.
    pub join_rate: Option<Rate>,
    /// `history`/`dm_history` pages per connection. Default burst 10, then 2 per second.
    pub history_rate: Option<Rate>,
    /// Refused requests (errors) a connection may provoke before it is closed with 1008.
    /// Default burst 30, then 1 per second: a person never gets there, a flood does.
    pub refusal_budget: Option<Rate>,
    /// This engine is one node of a cluster: it exchanges [`ClusterOp`]s and
    /// [`ClusterEvent`]s with the other nodes (ARCHITECTURE.md decision 18). Set by the
    /// runtime when a [`Cluster`](crate::runtime::Cluster) is given (set without one,
    /// every cluster request is answered as by an unavailable bus). Default `false`: a
    /// single node, no cluster output at all.
    ///
    /// [`ClusterOp`]: crate::cluster::ClusterOp
    /// [`ClusterEvent`]: crate::cluster::ClusterEvent
    pub cluster: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            join_history: 50,
            history_page_max: 100,
            resume_max: 500,
            history_frame_bytes: 64 * 1024,
            max_rooms_per_connection: 100,
            max_connections_per_user: 32,
            max_queued_commands: 32,
            typing_timeout: Duration::from_secs(5),
            message_rate: Some(Rate::per_second(10, 1)),
            typing_rate: Some(Rate::per_second(10, 2)),
            join_rate: Some(Rate::per_second(10, 1)),
            history_rate: Some(Rate::per_second(10, 2)),
            refusal_budget: Some(Rate::per_second(30, 1)),
            cluster: false,
        }
    }
}

impl Config {
    /// The defaults with every rate limit switched off (for load tests and simulations).
    pub fn unlimited() -> Self {
        Config {
            message_rate: None,
            typing_rate: None,
            join_rate: None,
            history_rate: None,
            refusal_budget: None,
            ..Config::default()
        }
    }
}
