//! [`RuntimeConfig`]: the runtime's queue sizes, timeouts and limits.
//!
//! The engine's own limits (rates, rooms per connection…) live in
//! [`engine::Config`](crate::engine::Config); these are the limits of the machinery around
//! it. Every field has a default chosen so that one server with thousands of connections
//! stays within a predictable amount of memory.

use std::time::Duration;

/// Limits and timings of the runtime. Start from [`RuntimeConfig::default`] and change
/// what you need: fields, or the chainable `with_*` setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Inputs (decoded commands, connects, disconnects) that may wait for the hub. When it
    /// is full, connection readers stop reading, so a fast client meets TCP backpressure
    /// instead of growing server memory. Default 1024.
    pub hub_queue: usize,
    /// Frames one connection's outbound queue may hold. Default 1024.
    pub outbound_frames: usize,
    /// Bytes one connection's outbound queue may hold before it counts as a slow reader.
    /// Default 4 MiB. A connection therefore costs at most this much queued memory plus
    /// one frame, however slowly it reads. It must exceed the largest frame the engine
    /// sends together with the frames around it: a full resume (`resume_max` = 500
    /// messages of up to 1,000 characters, up to 6 bytes each once JSON-escaped) is about
    /// 3.2 MB, followed at once by `room_users`.
    pub outbound_bytes: usize,
    /// Outbound bytes all connections together may hold: their queues plus what their
    /// writers have taken and not finished writing (at most 256 KiB or one frame per
    /// writer). Past it, the hub closes the connections holding the most — largest
    /// first, only those holding at least 64 KiB — with 1013 "server busy", their
    /// queues freed and their sends given up at once, while the total is over it and
    /// such a holder exists. So the total may stay over it while every connection holds
    /// less than 64 KiB (then no scan runs again until it grew by 64 KiB). Frames are
    /// never refused for it: a small frame to a connection with an empty queue always
    /// passes. Default 64 MiB: resume replays arrive in 64 KiB frames, so a full resume
    /// is not one 3 MB block, and 25 connections each holding a full queue (4 MiB plus
    /// one frame) already cross it.
    /// Bytes already handed to the transport after a send returned (the warp transport
    /// keeps up to its 128 KiB write-buffer threshold per socket) are not counted.
    pub outbound_global_bytes: usize,
    /// Most frames written in one [`Outbound::send`](crate::Outbound::send) call (one
    /// flush per batch). Default 64.
    pub write_batch: usize,
    /// Longest one batch write may take. A peer that does not take a batch within this
    /// time is a slow reader: the connection is closed with 1013. Default 15 s.
    pub write_timeout: Duration,
    /// Heartbeat period: a ping is sent every interval, and a connection from which
    /// nothing (no pong, no frame) arrived between two pings is terminated, so a dead
    /// peer is noticed after one to two intervals. `None` (or zero) turns heartbeats off.
    /// Default 30 s (PROTOCOL.md).
    pub heartbeat_interval: Option<Duration>,
    /// Longest a handshake (admission, upgrade) may take. Default 10 s.
    pub handshake_timeout: Duration,
    /// Longest the runtime waits for a close frame to be written before dropping the
    /// connection. Default 2 s.
    pub close_timeout: Duration,
    /// After its close frame, how long the runtime keeps reading (and discarding) what
    /// the peer still sends, until the peer's close frame or the end of its stream
    /// (RFC 6455 §7.1). Dropping a socket the peer is still writing to makes the kernel
    /// answer with a reset, and a reset discards whatever the peer had not read yet — the
    /// frames queued before the close and the close frame itself. A peer that neither
    /// answers nor stops sending costs at most this long. The connection keeps its
    /// `max_connections` slot (and its admission) until then; the hub forgets it at the
    /// close. Zero turns lingering off. Default 2 s.
    pub close_linger: Duration,
    /// Most bytes of frames the runtime reads and discards while lingering after its
    /// close frame ([`close_linger`](Self::close_linger)); past it, the socket is dropped
    /// at once. Default 1 MiB.
    pub close_linger_bytes: usize,
    /// On shutdown, how long connections get to receive what is queued for them and the
    /// 1001 close (lingering included: see [`close_linger`](Self::close_linger)), and the
    /// store to finish requests in flight. Default 5 s.
    pub shutdown_grace: Duration,
    /// Most open connections (including those in their handshake). Further handshakes
    /// are refused with 503. Default 10,000.
    pub max_connections: usize,
    /// Longest one store operation may take, counted from the engine's request (time
    /// waiting for one of the [`store_concurrency`](Self::store_concurrency) slots
    /// included); past it the engine is told the store is unavailable (the client gets
    /// `store_unavailable`), and a request still waiting never reaches the store.
    /// Default 10 s. With `store_concurrency`, this is what bounds store work when a
    /// store hangs: without it, connections that send and leave would pile up
    /// operations forever. An append that commits after
    /// its timeout is still delivered (the engine's gap filling finds it), and a retry
    /// with the same `clientMsgId` returns it rather than storing it twice.
    pub store_timeout: Duration,
    /// Most store operations running at once. Further requests wait in order, in the
    /// hub, for one to finish; [`store_timeout`](Self::store_timeout) counts from the
    /// request, so time spent waiting is part of it. `chat_store_in_flight` and
    /// `chat_store_queued` show both. Default 64: several times a database pool's size
    /// (so a store that batches commits sees a full batch waiting), while a store that
    /// slows down is called at most 64 times at once rather than once per message.
    /// A store that answers at once (the in-memory one) never has more than one
    /// running. Zero counts as one.
    pub store_concurrency: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            hub_queue: 1024,
            outbound_frames: 1024,
            outbound_bytes: 4 << 20,
            outbound_global_bytes: 64 << 20,
            write_batch: 64,
            write_timeout: Duration::from_secs(15),
            heartbeat_interval: Some(Duration::from_secs(30)),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            close_linger: Duration::from_secs(2),
            close_linger_bytes: 1 << 20,
            shutdown_grace: Duration::from_secs(5),
            max_connections: 10_000,
            store_timeout: Duration::from_secs(10),
            store_concurrency: 64,
        }
    }
}

crate::config_setters! {
    RuntimeConfig {
        with_hub_queue => hub_queue: usize,
        with_outbound_frames => outbound_frames: usize,
        with_outbound_bytes => outbound_bytes: usize,
        with_outbound_global_bytes => outbound_global_bytes: usize,
        with_write_batch => write_batch: usize,
        with_write_timeout => write_timeout: Duration,
        with_heartbeat_interval => heartbeat_interval: Option<Duration>,
        with_handshake_timeout => handshake_timeout: Duration,
        with_close_timeout => close_timeout: Duration,
        with_close_linger => close_linger: Duration,
        with_close_linger_bytes => close_linger_bytes: usize,
        with_shutdown_grace => shutdown_grace: Duration,
        with_max_connections => max_connections: usize,
        with_store_timeout => store_timeout: Duration,
        with_store_concurrency => store_concurrency: usize,
    }
}
