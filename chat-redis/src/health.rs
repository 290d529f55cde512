//! [`BusState`]: what the bus's tasks know about Redis, shared with
//! [`Cluster::health`](chat_core::Cluster::health) (read without I/O) and the counters
//! of [`BusStats`].

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_core::{BusCounter, ClusterHealth, NodeId};

/// Counters of one node's bus since it connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Announcements published (room messages, typing, DMs, joins and leaves).
    pub published: u64,
    /// Announcements received from other nodes and handed to the engine.
    pub received: u64,
    /// Room member snapshots sent to the engine (first subscriptions and resyncs).
    pub resyncs: u64,
    /// Times this node re-asserted its registry entries (lease lost, Redis restarted,
    /// or a write failed).
    pub reasserts: u64,
    /// Announcements published again after Redis could not take them at first.
    pub republished: u64,
    /// Announcements dropped because the re-publish buffer was full.
    pub dropped: u64,
    /// Subscriber (re)connections.
    pub subscriber_connects: u64,
    /// Received messages that were not valid bus messages (ignored).
    pub invalid: u64,
    /// Expired nodes this node reaped.
    pub reaped: u64,
    /// Times the server took no event within `hub_patience` (the subscriber then
    /// reconnected and resynced).
    pub hub_timeouts: u64,
    /// DMs read back from users' DM streams after a resubscription and handed to the
    /// engine: announced while this node's subscriber was away.
    pub dm_recovered: u64,
}

impl BusStats {
    /// Every counter, for `/metrics` (`chat_cluster_bus_<name>_total`).
    pub(crate) fn counters(&self) -> Vec<BusCounter> {
        vec![
            BusCounter::new(
                "published",
                "Announcements published (room messages, typing, DMs, joins and leaves)",
                self.published,
            ),
            BusCounter::new(
                "received",
                "Announcements from other nodes handed to the engine",
                self.received,
            ),
            BusCounter::new(
                "resyncs",
                "Room member snapshots sent to the engine (first subscriptions and resyncs)",
                self.resyncs,
            ),
            BusCounter::new(
                "reasserts",
                "Times this node re-asserted its registry entries",
                self.reasserts,
            ),
            BusCounter::new(
                "republished",
                "Announcements published again after Redis could not take them",
                self.republished,
            ),
            BusCounter::new(
                "dropped",
                "Announcements dropped because the re-publish buffer was full",
                self.dropped,
            ),
            BusCounter::new(
                "subscriber_connects",
                "Subscriber (re)connections",
                self.subscriber_connects,
            ),
            BusCounter::new(
                "invalid",
                "Received bus messages that were not valid (ignored)",
                self.invalid,
            ),
            BusCounter::new("reaped", "Expired nodes this node reaped", self.reaped),
            BusCounter::new(
                "hub_timeouts",
                "Times the server took no event within hub_patience (subscriber resynced)",
                self.hub_timeouts,
            ),
            BusCounter::new(
                "dm_recovered",
                "DMs read back from DM streams after a resubscription (missed live)",
                self.dm_recovered,
            ),
        ]
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) reasserts: AtomicU64,
    pub(crate) republished: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) subscriber_connects: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) reaped: AtomicU64,
    pub(crate) hub_timeouts: AtomicU64,
    pub(crate) dm_recovered: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The shared state of one node's bus.
#[derive(Debug)]
pub(crate) struct BusState {
    node: NodeId,
    lease: Duration,
    commands_ok: AtomicBool,
    subscriber_up: AtomicBool,
    last_renewal: Mutex<Option<Instant>>,
    last_error: Mutex<Option<Arc<str>>>,
    pub(crate) counters: Counters,
}

impl BusState {
    pub(crate) fn new(node: NodeId, lease: Duration) -> Self {
        Self {
            node,
            lease,
            commands_ok: AtomicBool::new(true),
            subscriber_up: AtomicBool::new(false),
            last_renewal: Mutex::new(None),
            last_error: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    /// A command succeeded.
    pub(crate) fn command_ok(&self) {
        self.commands_ok.store(true, Ordering::Relaxed);
    }

    /// A command failed with `error`.
    pub(crate) fn command_failed(&self, error: &dyn std::fmt::Display) {
        self.commands_ok.store(false, Ordering::Relaxed);
        self.set_error(error);
    }

    pub(crate) fn subscriber(&self, up: bool) {
        self.subscriber_up.store(up, Ordering::Relaxed);
    }

    pub(crate) fn set_error(&self, error: &dyn std::fmt::Display) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string().into());
        }
    }

    /// The lease was renewed now.
    pub(crate) fn renewed(&self) {
        if let Ok(mut last) = self.last_renewal.lock() {
            *last = Some(Instant::now());
        }
    }

    /// The lease counts as lost (this node left, or learnt it was reaped).
    pub(crate) fn lease_lost(&self) {
        if let Ok(mut last) = self.last_renewal.lock() {
            *last = None;
        }
    }

    fn lease_alive(&self) -> bool {
        self.last_renewal
            .lock()
            .ok()
            .and_then(|last| *last)
            .is_some_and(|at| at.elapsed() < self.lease)
    }

    pub(crate) fn health(&self) -> ClusterHealth {
        let mut health = ClusterHealth::new(self.node.clone());
        health.connected =
            self.commands_ok.load(Ordering::Relaxed) && self.subscriber_up.load(Ordering::Relaxed);
        health.lease_alive = self.lease_alive();
        health.last_error = self.last_error.lock().ok().and_then(|e| e.clone());
        health
    }

    pub(crate) fn stats(&self) -> BusStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BusStats {
            published: get(&c.published),
            received: get(&c.received),
            resyncs: get(&c.resyncs),
            reasserts: get(&c.reasserts),
            republished: get(&c.republished),
            dropped: get(&c.dropped),
            subscriber_connects: get(&c.subscriber_connects),
            invalid: get(&c.invalid),
            reaped: get(&c.reaped),
            hub_timeouts: get(&c.hub_timeouts),
            dm_recovered: get(&c.dm_recovered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stat_is_a_metrics_counter_with_a_valid_unique_name() {
        let stats = BusStats {
            published: 1,
            received: 2,
            resyncs: 3,
            reasserts: 4,
            republished: 5,
            dropped: 6,
            subscriber_connects: 7,
            invalid: 8,
            reaped: 9,
            hub_timeouts: 10,
            dm_recovered: 11,
        };
        let counters = stats.counters();
        let mut values: Vec<u64> = counters.iter().map(|c| c.value).collect();
        values.sort_unstable();
        assert_eq!(values, (1..=11).collect::<Vec<u64>>(), "each field once");
        let names: std::collections::BTreeSet<_> = counters.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), counters.len());
        assert!(counters.iter().all(BusCounter::has_valid_name));
        assert!(
            counters
                .iter()
                .any(|c| c.name == "dm_recovered" && c.value == 11)
        );
    }
}
