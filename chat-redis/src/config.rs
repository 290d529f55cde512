//! [`RedisClusterConfig`]: where Redis is, how keys are named, and the lease timings that
//! bound how long a crashed node's users stay listed.

use std::time::Duration;

/// How a node reaches Redis and keeps its lease. Start from [`Default`] (or
/// [`RedisClusterConfig::new`] with a URL) and change what you need with the setters.
///
/// The defaults give the crash bound of the crate docs: a node that dies without
/// leaving is removed from every member list within `lease + renew_every`
/// (10 s + 2.5 s ≤ 15 s).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisClusterConfig {
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]` (anything `redis::Client::open` takes).
    /// Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key and channel, so several clusters (or tests) share one Redis.
    /// Default `chat:`.
    pub prefix: String,
    /// This node's id; `None` (the default) draws a random one at connect. Ids are 1 to
    /// 64 characters of `[A-Za-z0-9_-]`; two live nodes must never share one.
    pub node_id: Option<String>,
    /// How long a node counts as alive after its last renewal. Default 10 s.
    pub lease: Duration,
    /// How often the node renews its lease and looks for expired nodes to reap.
    /// Default 2.5 s (a quarter of the default lease: three renewals may fail in a row
    /// before the lease runs out).
    pub renew_every: Duration,
    /// Longest one Redis command may take before it counts as failed. Default 2 s.
    pub command_timeout: Duration,
    /// Longest a connection attempt may take. Default 2 s.
    pub connect_timeout: Duration,
    /// The first pause before reconnecting the subscriber; it doubles up to
    /// [`reconnect_max`](Self::reconnect_max). Default 50 ms.
    pub reconnect_min: Duration,
    /// The longest pause between reconnection attempts. Default 2 s.
    pub reconnect_max: Duration,
    /// How often the subscriber connection is pinged; a ping unanswered within
    /// [`command_timeout`](Self::command_timeout) reconnects it (a half-open connection
    /// would otherwise go unnoticed). Default 5 s.
    pub ping_every: Duration,
    /// Longest the subscriber waits for the server to take one event. Past it, the
    /// server has fallen behind the bus: the subscriber drops its connection (and what
    /// it buffered), reconnects and resyncs, as if Redis had dropped it — so a slow
    /// server costs a catch-up read, not unbounded memory. Default 10 s.
    pub hub_patience: Duration,
    /// Room announcements kept for re-publishing when Redis could not take them, so
    /// nodes that stayed subscribed still see them once Redis is back. Default 1024;
    /// past it the oldest are dropped (the next message's `seq` still reveals the gap).
    pub republish_buffer: usize,
    /// DM announcements kept per user in Redis (a capped stream, trimmed with
    /// `MAXLEN ~`, so at least this many and at most about 100 more), so a node whose
    /// subscriber was away reads the DMs it missed after it resubscribes. A user who
    /// gets more than this many DMs during one outage of a node loses the oldest of
    /// them there (they stay stored: `dm_history` has them). Default 1000.
    pub dm_backlog: usize,
    /// How long a user's DM stream outlives its last DM (reset by every DM), so idle
    /// users' streams vanish. A node away for longer than this after a missed DM does
    /// not recover it. Default 1 hour.
    pub dm_backlog_ttl: Duration,
}

impl Default for RedisClusterConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "chat:".into(),
            node_id: None,
            lease: Duration::from_secs(10),
            renew_every: Duration::from_millis(2500),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            ping_every: Duration::from_secs(5),
            hub_patience: Duration::from_secs(10),
            republish_buffer: 1024,
            dm_backlog: 1000,
            dm_backlog_ttl: Duration::from_secs(3600),
        }
    }
}

impl RedisClusterConfig {
    /// The defaults for the Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Sets [`url`](Self::url).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets [`prefix`](Self::prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`node_id`](Self::node_id).
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Sets [`lease`](Self::lease) and, to keep the default ratio, [`renew_every`]
    /// (`lease / 4`); it also caps [`command_timeout`] at `lease / 4` (a renewal must
    /// be able to fail and be retried before the lease runs out). Call the other
    /// setters after it to choose otherwise.
    ///
    /// [`renew_every`]: Self::renew_every
    /// [`command_timeout`]: Self::command_timeout
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self.renew_every = lease / 4;
        self.command_timeout = self.command_timeout.min(lease / 4);
        self
    }

    /// Sets [`renew_every`](Self::renew_every).
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = every;
        self
    }

    /// Sets [`command_timeout`](Self::command_timeout).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`reconnect_min`](Self::reconnect_min) and [`reconnect_max`](Self::reconnect_max).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// Sets [`ping_every`](Self::ping_every).
    pub fn ping_every(mut self, every: Duration) -> Self {
        self.ping_every = every;
        self
    }

    /// Sets [`hub_patience`](Self::hub_patience).
    pub fn hub_patience(mut self, patience: Duration) -> Self {
        self.hub_patience = patience;
        self
    }

    /// Sets [`republish_buffer`](Self::republish_buffer).
    pub fn republish_buffer(mut self, messages: usize) -> Self {
        self.republish_buffer = messages;
        self
    }

    /// Sets [`dm_backlog`](Self::dm_backlog) and [`dm_backlog_ttl`](Self::dm_backlog_ttl).
    pub fn dm_backlog(mut self, dms: usize, ttl: Duration) -> Self {
        self.dm_backlog = dms;
        self.dm_backlog_ttl = ttl;
        self
    }

    /// The longest a crashed node's users stay listed anywhere: its lease, plus the
    /// renewal period of the node that reaps it.
    pub fn crash_bound(&self) -> Duration {
        self.lease + self.renew_every
    }

    /// Checks the values that would break the lease protocol.
    pub(crate) fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        if self.lease < Duration::from_millis(100) {
            return Err(ConfigError::LeaseTooShort(self.lease));
        }
        if self.renew_every.is_zero() || self.renew_every >= self.lease {
            return Err(ConfigError::RenewNotBelowLease {
                renew_every: self.renew_every,
                lease: self.lease,
            });
        }
        if self.command_timeout.is_zero() || self.command_timeout >= self.lease {
            return Err(ConfigError::CommandTimeoutNotBelowLease {
                command_timeout: self.command_timeout,
                lease: self.lease,
            });
        }
        if self.dm_backlog == 0 || self.dm_backlog_ttl < Duration::from_secs(1) {
            return Err(ConfigError::DmBacklog {
                dms: self.dm_backlog,
                ttl: self.dm_backlog_ttl,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_documented_crash_bound() {
        let config = RedisClusterConfig::default();
        assert_eq!(config.crash_bound(), Duration::from_millis(12_500));
        assert!(config.crash_bound() <= Duration::from_secs(15));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn setters_change_one_knob_and_lease_keeps_the_ratio() {
        let config = RedisClusterConfig::new("redis://10.0.0.1:6380")
            .prefix("test:")
            .lease(Duration::from_secs(4));
        assert_eq!(config.url, "redis://10.0.0.1:6380");
        assert_eq!(config.prefix, "test:");
        assert_eq!(config.renew_every, Duration::from_secs(1));
        assert_eq!(config.command_timeout, Duration::from_secs(1));
        assert!(config.validate().is_ok());
        let config = config.renew_every(Duration::from_secs(4));
        assert!(
            config.validate().is_err(),
            "renewing once per lease is refused"
        );
    }
}
