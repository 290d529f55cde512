//! [`PerIpLimits`]: how many connections one address may hold, and how fast it may open
//! them.
//!
//! Two limits per client address, both answered with HTTP 429 before any upgrade:
//!
//! * **concurrent connections** ([`PerIpConfig::max_connections`], default 64): counted
//!   at admission and given back by [`Admission::release`] when the connection ends
//!   (the runtime calls it exactly once per admitted handshake);
//! * **connection rate** ([`PerIpConfig::rate`], default burst 20 then 5 per second): a
//!   token bucket (GCRA, as the engine's message limits) charged for each connection
//!   admitted here. In a [`Chain`](crate::Chain) that runs JWT validation after this, a
//!   handshake refused for its token has still spent its token: guessing tokens is rate
//!   limited too.
//!
//! The global connection cap (503) is the runtime's
//! [`RuntimeConfig::max_connections`](chat_core::RuntimeConfig::max_connections).
//!
//! **Which address.** [`ConnectionInfo::client_ip`]: the peer address of the connection,
//! or — when the peer is a reverse proxy the operator trusts — the client address that
//! proxy names in `X-Forwarded-For`/`Forwarded` (resolved by the transport with
//! [`TrustedProxies`](chat_core::TrustedProxies); from any other peer those headers
//! change nothing, anyone can send them). IPv4-mapped IPv6 addresses count as the IPv4
//! address; other IPv6 addresses are grouped by their first
//! [`PerIpConfig::ipv6_prefix_len`] bits (default 64: one subnet is usually one
//! customer, who can pick any of its 2⁶⁴ addresses). A transport without IP peers (an
//! in-process channel, a Unix-domain socket) is not limited.
//!
//! **Loopback.** By default ([`PerIpConfig::exempt_loopback`]) a loopback peer
//! (`127.0.0.0/8`, `::1`) that is not a trusted proxy is not limited here: it is the
//! machine itself — a developer's test suite, a health checker, a sidecar — and a
//! suite opening a hundred connections in a few seconds would otherwise meet 429s.
//! Every other limit (the runtime's connection cap, the engine's rates) still applies.
//! A loopback peer that *is* a trusted proxy is limited by the client it names (or by
//! its own address when it names none).
//!
//! **Memory.** One small entry per address that has a connection open or a bucket not
//! yet refilled; an entry is dropped as soon as it is neither (on release, or by a
//! sweep). The table holds at most [`PerIpConfig::max_addresses`] entries: when it is
//! full, idle entries are swept (at most once a second, so a flood of new addresses
//! cannot make every handshake pay for a full scan), and if it is still full a new
//! address is refused with 429 until entries age out — a flood from more distinct
//! addresses than that within a few seconds is refused rather than allowed to grow
//! memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chat_core::{Admission, Admitted, ConnectionInfo, Rate, Rejection, async_trait};
use thiserror::Error;

/// Limits per client address. Start from [`PerIpConfig::default`] and change fields or
/// chain the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerIpConfig {
    /// Connections one address may hold open at once; `None`: no limit. Default 64.
    pub max_connections: Option<u32>,
    /// New connections per address: a burst, then a steady rate; `None`: no limit.
    /// Default 20 at once, then 5 per second.
    pub rate: Option<Rate>,
    /// IPv6 addresses sharing this many leading bits count as one address. Default 64.
    pub ipv6_prefix_len: u8,
    /// Addresses tracked at most (see the module docs). Default 100,000 (a few MiB).
    pub max_addresses: usize,
    /// Loopback peers that are not trusted proxies are not limited (see the module
    /// docs). Default `true`.
    pub exempt_loopback: bool,
}

impl Default for PerIpConfig {
    fn default() -> Self {
        PerIpConfig {
            max_connections: Some(64),
            rate: Some(Rate::per_second(20, 5)),
            ipv6_prefix_len: 64,
            max_addresses: 100_000,
            exempt_loopback: true,
        }
    }
}

chat_core::config_setters! {
    PerIpConfig {
        with_max_connections => max_connections: Option<u32>,
        with_rate => rate: Option<Rate>,
        with_ipv6_prefix_len => ipv6_prefix_len: u8,
        with_max_addresses => max_addresses: usize,
        with_exempt_loopback => exempt_loopback: bool,
    }
}

/// Why [`PerIpLimits`] refused a handshake. The text is the 429 response's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PerIpRefusal {
    /// The address already holds [`PerIpConfig::max_connections`] connections.
    #[error("too many connections from your address")]
    TooManyConnections,
    /// The address opens connections faster than [`PerIpConfig::rate`]; one more is
    /// allowed after `retry_after`.
    #[error("connecting too fast from your address: try again later")]
    TooFast {
        /// How long until the bucket allows another connection.
        retry_after: Duration,
    },
    /// The table of addresses is full (see the module docs).
    #[error("too many clients: try again later")]
    TooManyAddresses,
}

/// One address's state.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Admitted connections not yet released.
    open: u32,
    /// GCRA theoretical arrival time: when the bucket is full again. `None`: full.
    tat: Option<Instant>,
}

impl Entry {
    /// Forgetting an idle entry loses nothing: no connection to release, full bucket.
    fn idle(&self, now: Instant) -> bool {
        self.open == 0 && self.tat.is_none_or(|tat| tat <= now)
    }
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    last_sweep: Option<Instant>,
}

/// Shortest time between two sweeps of a full table.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// An [`Admission`] limiting connections per client address (HTTP 429). See the module
/// docs.
///
/// ```
/// use chat_auth::{PerIpConfig, PerIpLimits};
/// use chat_core::Rate;
///
/// let limits = PerIpLimits::new(
///     PerIpConfig::default()
///         .with_max_connections(Some(16))
///         .with_rate(Some(Rate::per_second(10, 2))),
/// );
/// # drop(limits);
/// ```
#[derive(Debug)]
pub struct PerIpLimits {
    config: PerIpConfig,
    // A std mutex: the critical sections are a hash lookup and a few integer operations,
    // never held across an await. The map uses std's randomly keyed hasher on purpose:
    // its keys are chosen by the peers.
    table: Mutex<Table>,
}

impl PerIpLimits {
    /// Limits with this configuration.
    pub fn new(config: PerIpConfig) -> Self {
        PerIpLimits {
            config,
            table: Mutex::new(Table::default()),
        }
    }

    /// Admits one connection from `ip` at `now`, counting it.
    pub fn try_acquire(&self, ip: IpAddr, now: Instant) -> Result<(), PerIpRefusal> {
        let key = self.key(ip);
        let mut table = self.lock();
        if !table.entries.contains_key(&key) && table.entries.len() >= self.config.max_addresses {
            make_room(&mut table, now, self.config.max_addresses)?;
        }
        let entry = table.entries.entry(key).or_default();
        if self
            .config
            .max_connections
            .is_some_and(|max| entry.open >= max)
        {
            return Err(PerIpRefusal::TooManyConnections);
        }
        if let Some(rate) = self.config.rate {
            let tat = entry.tat.map_or(now, |tat| tat.max(now));
            // `Rate`'s fields are public: absurd values saturate instead of panicking.
            let new_tat = tat.checked_add(rate.interval).unwrap_or(tat);
            let allowance = rate
                .interval
                .checked_mul(rate.burst)
                .unwrap_or(Duration::MAX);
            let ahead = new_tat.saturating_duration_since(now);
            if ahead > allowance {
                return Err(PerIpRefusal::TooFast {
                    retry_after: ahead - allowance,
                });
            }
            entry.tat = Some(new_tat);
        }
        entry.open += 1;
        Ok(())
    }

    /// Gives back one connection of `ip` (from an earlier successful
    /// [`try_acquire`](Self::try_acquire)).
    pub fn release_at(&self, ip: IpAddr, now: Instant) {
        let key = self.key(ip);
        let mut table = self.lock();
        if let Some(entry) = table.entries.get_mut(&key) {
            entry.open = entry.open.saturating_sub(1);
            if entry.idle(now) {
                table.entries.remove(&key);
            }
        }
    }

    /// Connections `ip` (or its IPv6 prefix) holds.
    pub fn open_connections(&self, ip: IpAddr) -> u32 {
        let key = self.key(ip);
        self.lock().entries.get(&key).map_or(0, |entry| entry.open)
    }

    /// Addresses currently tracked (bounded by [`PerIpConfig::max_addresses`]).
    pub fn tracked_addresses(&self) -> usize {
        self.lock().entries.len()
    }

    /// The address an IP counts as.
    fn key(&self, ip: IpAddr) -> IpAddr {
        chat_core::proxies::address_group(ip, self.config.ipv6_prefix_len)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every update leaves the table consistent, so a panic elsewhere while it was
        // held does not make it unusable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sweeps idle entries out of a full table, at most once per [`SWEEP_INTERVAL`].
fn make_room(table: &mut Table, now: Instant, max: usize) -> Result<(), PerIpRefusal> {
    let due = table
        .last_sweep
        .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_INTERVAL);
    if due {
        table.entries.retain(|_, entry| !entry.idle(now));
        table.last_sweep = Some(now);
    }
    if table.entries.len() >= max {
        return Err(PerIpRefusal::TooManyAddresses);
    }
    Ok(())
}

impl PerIpLimits {
    /// The address `info` counts under, or `None` when it is not limited (no IP peer, or
    /// an exempt loopback peer).
    fn counted(&self, info: &ConnectionInfo) -> Option<IpAddr> {
        let ip = info.client_ip()?;
        let exempt = self.config.exempt_loopback && !info.via_proxy() && ip.is_loopback();
        (!exempt).then_some(ip)
    }
}

#[async_trait]
impl Admission for PerIpLimits {
    async fn admit(&self, info: &ConnectionInfo) -> Result<Admitted, Rejection> {
        let Some(ip) = self.counted(info) else {
            return Ok(Admitted::anonymous());
        };
        self.try_acquire(ip, Instant::now())
            .map(|()| Admitted::anonymous())
            .map_err(|why| {
                tracing::debug!(client = %ip, peer = ?info.peer, reason = %why, "per-address limit");
                Rejection::TooManyRequests(why.to_string())
            })
    }

    fn release(&self, info: &ConnectionInfo) {
        if let Some(ip) = self.counted(info) {
            self.release_at(ip, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    fn limits(max: Option<u32>, rate: Option<Rate>) -> PerIpLimits {
        PerIpLimits::new(
            PerIpConfig::default()
                .with_max_connections(max)
                .with_rate(rate),
        )
    }

    #[test]
    fn the_connection_cap_counts_open_connections_and_release_gives_them_back() {
        let l = limits(Some(2), None);
        let t = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(l.try_acquire(a, t), Ok(()));
        assert_eq!(l.try_acquire(a, t), Ok(()));
        assert_eq!(l.try_acquire(a, t), Err(PerIpRefusal::TooManyConnections));
        // Another address has its own count.
        assert_eq!(l.try_acquire(ip("192.0.2.2"), t), Ok(()));
        l.release_at(a, t);
        assert_eq!(l.open_connections(a), 1);
        assert_eq!(l.try_acquire(a, t), Ok(()));
        l.release_at(a, t);
        l.release_at(a, t);
        l.release_at(a, t); // one too many: ignored
        assert_eq!(l.open_connections(a), 0);
        // Nothing held and no bucket: the entry is gone.
        assert_eq!(l.tracked_addresses(), 1);
    }

    #[test]
    fn the_rate_allows_a_burst_then_the_steady_rate() {
        let l = limits(None, Some(Rate::per_second(3, 2)));
        let t = Instant::now();
        let a = ip("198.51.100.7");
        for _ in 0..3 {
            assert_eq!(l.try_acquire(a, t), Ok(()));
        }
        assert_eq!(
            l.try_acquire(a, t),
            Err(PerIpRefusal::TooFast {
                retry_after: Duration::from_millis(500)
            })
        );
        // Releasing does not refund the rate.
        for _ in 0..3 {
            l.release_at(a, t);
        }
        assert!(l.try_acquire(a, t).is_err());
        assert_eq!(l.try_acquire(a, t + Duration::from_millis(500)), Ok(()));
        assert!(l.try_acquire(a, t + Duration::from_millis(500)).is_err());
        // A long pause refills the burst, not more.
        let later = t + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.try_acquire(a, later), Ok(()));
        }
        assert!(l.try_acquire(a, later).is_err());
    }

    #[test]
    fn a_refused_connection_is_not_counted() {
        let l = limits(Some(1), Some(Rate::per_second(10, 1)));
        let t = Instant::now();
        let a = ip("203.0.113.9");
        assert_eq!(l.try_acquire(a, t), Ok(()));
        for _ in 0..20 {
            assert_eq!(l.try_acquire(a, t), Err(PerIpRefusal::TooManyConnections));
        }
        assert_eq!(l.open_connections(a), 1);
        l.release_at(a, t);
        // The refusals spent no rate tokens: 9 more of the burst are left.
        for _ in 0..9 {
            assert_eq!(l.try_acquire(a, t), Ok(()));
            l.release_at(a, t);
        }
        assert!(matches!(
            l.try_acquire(a, t),
            Err(PerIpRefusal::TooFast { .. })
        ));
    }

    #[test]
    fn ipv6_addresses_count_per_prefix_and_mapped_ipv4_as_ipv4() {
        let l = limits(Some(1), None);
        let t = Instant::now();
        assert_eq!(l.try_acquire(ip("2001:db8:1:2::1"), t), Ok(()));
        assert_eq!(
            l.try_acquire(ip("2001:db8:1:2:ffff::9"), t),
            Err(PerIpRefusal::TooManyConnections)
        );
        assert_eq!(l.try_acquire(ip("2001:db8:1:3::1"), t), Ok(()));
        assert_eq!(l.try_acquire(ip("192.0.2.1"), t), Ok(()));
        assert_eq!(
            l.try_acquire(ip("::ffff:192.0.2.1"), t),
            Err(PerIpRefusal::TooManyConnections)
        );
    }

    #[test]
    fn the_table_is_bounded_and_idle_entries_are_swept() {
        let l = PerIpLimits::new(
            PerIpConfig::default()
                .with_max_connections(Some(8))
                .with_rate(Some(Rate::per_second(1, 1)))
                .with_max_addresses(4),
        );
        let t = Instant::now();
        let addr = |i: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
        for i in 0..4 {
            assert_eq!(l.try_acquire(addr(i), t), Ok(()));
            l.release_at(addr(i), t); // open 0, but the bucket is not yet full
        }
        assert_eq!(l.tracked_addresses(), 4);
        // Full of recent entries: a new address is refused.
        assert_eq!(
            l.try_acquire(addr(9), t),
            Err(PerIpRefusal::TooManyAddresses)
        );
        // Known addresses are still served (here: refused by their own rate).
        assert!(matches!(
            l.try_acquire(addr(0), t),
            Err(PerIpRefusal::TooFast { .. })
        ));
        // Within the sweep interval nothing is swept again, even once entries are idle.
        let soon = t + Duration::from_millis(999);
        assert!(l.try_acquire(addr(9), soon).is_err());
        // Once the buckets have refilled, a sweep makes room.
        let later = t + Duration::from_secs(2);
        assert_eq!(l.try_acquire(addr(9), later), Ok(()));
        assert_eq!(l.tracked_addresses(), 1);
    }

    fn from(peer: [u8; 4], client: Option<[u8; 4]>) -> ConnectionInfo {
        ConnectionInfo {
            peer: Some(SocketAddr::from((peer, 5000)).into()),
            client_addr: client.map(IpAddr::from),
            ..ConnectionInfo::default()
        }
    }

    #[tokio::test]
    async fn as_an_admission_it_answers_429_and_releases() {
        let l = limits(Some(1), None);
        let info = from([192, 0, 2, 1], None);
        assert!(l.admit(&info).await.is_ok());
        assert_eq!(
            l.admit(&info).await.expect_err("over the cap").status(),
            429
        );
        l.release(&info);
        assert!(l.admit(&info).await.is_ok());
        // No address (an in-process transport): not limited.
        let anonymous = ConnectionInfo::default();
        assert!(l.admit(&anonymous).await.is_ok());
        assert!(l.admit(&anonymous).await.is_ok());
        // A Unix-domain peer has no IP: not limited either.
        let unix = ConnectionInfo {
            peer: Some(chat_core::Peer::Unix(None)),
            ..ConnectionInfo::default()
        };
        assert!(l.admit(&unix).await.is_ok());
        assert!(l.admit(&unix).await.is_ok());
    }

    #[tokio::test]
    async fn a_trusted_proxys_client_is_counted_not_the_proxy() {
        let l = limits(Some(1), None);
        let a = from([10, 0, 0, 1], Some([198, 51, 100, 1]));
        let b = from([10, 0, 0, 1], Some([198, 51, 100, 2]));
        assert!(l.admit(&a).await.is_ok());
        assert!(
            l.admit(&b).await.is_ok(),
            "another client of the same proxy"
        );
        assert_eq!(l.admit(&a).await.expect_err("over").status(), 429);
        assert_eq!(l.open_connections(ip("10.0.0.1")), 0);
        l.release(&a);
        assert_eq!(l.open_connections(ip("198.51.100.1")), 0);
        assert_eq!(l.open_connections(ip("198.51.100.2")), 1);
    }

    #[tokio::test]
    async fn loopback_is_exempt_unless_it_is_a_trusted_proxy_or_the_switch_is_off() {
        let l = limits(Some(1), Some(Rate::per_second(1, 1)));
        let local = from([127, 0, 0, 1], None);
        for _ in 0..100 {
            assert!(l.admit(&local).await.is_ok());
        }
        assert_eq!(l.tracked_addresses(), 0);
        let v6 = ConnectionInfo {
            peer: Some(SocketAddr::from((Ipv6Addr::LOCALHOST, 5000)).into()),
            ..ConnectionInfo::default()
        };
        assert!(l.admit(&v6).await.is_ok());
        assert!(l.admit(&v6).await.is_ok());
        // A loopback proxy that names no client counts as itself.
        let proxy = from([127, 0, 0, 1], Some([127, 0, 0, 1]));
        assert!(l.admit(&proxy).await.is_ok());
        assert_eq!(l.admit(&proxy).await.expect_err("limited").status(), 429);

        let strict = PerIpLimits::new(
            PerIpConfig::default()
                .with_max_connections(Some(1))
                .with_exempt_loopback(false),
        );
        assert!(strict.admit(&local).await.is_ok());
        assert_eq!(
            strict.admit(&local).await.expect_err("limited").status(),
            429
        );
    }
}
