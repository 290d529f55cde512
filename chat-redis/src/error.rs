//! The crate's errors: [`ConnectError`] (the node cannot join the cluster at start) and
//! [`ConfigError`] (a configuration that would break the lease protocol). Failures while
//! running are not returned to anyone: the bus reports them in its health, logs them,
//! answers requests with `ClusterReply::Failed` and repairs what they left behind.

use std::time::Duration;

use thiserror::Error;

/// A configuration the bus refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The lease is too short to be renewed reliably.
    #[error("the lease ({0:?}) must be at least 100 ms")]
    LeaseTooShort(Duration),
    /// Renewing no more often than the lease lasts lets it expire.
    #[error("renew_every ({renew_every:?}) must be more than zero and below the lease ({lease:?})")]
    RenewNotBelowLease {
        /// The renewal period.
        renew_every: Duration,
        /// The lease.
        lease: Duration,
    },
    /// A command allowed to outlast the lease would let it expire while waiting.
    #[error(
        "command_timeout ({command_timeout:?}) must be more than zero and below the lease ({lease:?})"
    )]
    CommandTimeoutNotBelowLease {
        /// The command timeout.
        command_timeout: Duration,
        /// The lease.
        lease: Duration,
    },
    /// A DM backlog that keeps nothing, or expires within a second.
    #[error("dm_backlog ({dms}) must be at least 1 and dm_backlog_ttl ({ttl:?}) at least 1 s")]
    DmBacklog {
        /// DMs kept per user.
        dms: usize,
        /// How long a user's stream outlives its last DM.
        ttl: Duration,
    },
    /// The node id is not 1 to 64 characters of `[A-Za-z0-9_-]`.
    #[error("invalid node id {0:?}: expected 1 to 64 characters of A-Z, a-z, 0-9, _ and -")]
    NodeId(String),
}

/// Why [`RedisCluster::connect`](crate::RedisCluster::connect) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// Redis could not be reached or refused a command.
    #[error("cannot reach Redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// Another live node holds this node id.
    #[error("node id {0} is held by a live node (two nodes must never share an id)")]
    NodeIdTaken(String),
}

/// A failed bus operation (internal: it decides retries and repairs).
#[derive(Debug, Error)]
pub(crate) enum BusError {
    /// Redis failed, timed out or could not be reached.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// This node's lease had expired: nothing was written.
    #[error("this node's lease has expired")]
    LeaseLost,
}

impl BusError {
    /// Maps a script's `LEASE` error reply to [`BusError::LeaseLost`].
    pub(crate) fn from_script(e: redis::RedisError) -> Self {
        if e.code() == Some("LEASE") {
            BusError::LeaseLost
        } else {
            BusError::Redis(e)
        }
    }
}
