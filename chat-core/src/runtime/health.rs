//! [`Health`]: whether the server is fit to serve, for a `/healthz` route or a
//! container's liveness and readiness probes.
//!
//! A [`check`](Health::check) costs a few atomic loads and one uncontended lock — no
//! store call, no message to the hub — so it can be probed as often as wanted. It
//! judges two things:
//!
//! * **The hub** (the task that owns the engine): it must have started, not have
//!   finished, and keep turning. The hub counts its turns; a check that finds inputs
//!   waiting in the hub's queue remembers the turn count, and when a later check
//!   [`HUB_STALL`] or more after it still finds inputs waiting and the count unchanged,
//!   the hub is *stalled*. An idle hub does not turn and is healthy; a busy one turns
//!   many times a second. Two probes are needed to see a stall, so a probe racing a
//!   message that has just been queued never reports one.
//! * **The store**: it is *failing* after [`STORE_FAILURES`] operations in a row failed
//!   (errors and timeouts alike, `RuntimeConfig::store_timeout` bounding a hanging
//!   store), and healthy again at its first success — or once [`STORE_FAILING_HOLD`]
//!   passes without a new failure. A single transient failure does not flip the state; a
//!   store that is down fails every operation and is reported after the third. The hold
//!   expires because a 503 takes the node out of the load balancer, so no operation might
//!   ever come to heal it (and a liveness probe would restart the node): after the hold,
//!   traffic is let back, and either heals the state or fails again (one more failure
//!   reports it again at once).
//! * **The cluster bus**, when the server is a cluster node: whatever
//!   [`Cluster::health`](super::Cluster::health) reports (connected, lease alive). A
//!   node cut off from the bus serves its clients a partial view of their rooms (no
//!   remote messages live, no remote presence), so it reports itself unhealthy and a
//!   load balancer moves new clients to a node that can reach the bus.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::cluster::{Cluster, ClusterHealth};
use super::hub::HubMsg;
use super::now;

/// How long inputs may wait in the hub's queue without the hub turning before the hub
/// counts as stalled: 5 s.
pub const HUB_STALL: Duration = Duration::from_secs(5);

/// How many store operations in a row must fail before the store counts as failing: 3.
pub const STORE_FAILURES: u32 = 3;

/// How long a failing store is reported without a new failure before the report is
/// cleared (traffic is let back to heal it or fail again): 30 s.
pub const STORE_FAILING_HOLD: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    /// The hub's input queue, attached when the server runs. Weak, so a probe never
    /// keeps the hub alive.
    queue: OnceLock<mpsc::WeakSender<HubMsg>>,
    hub_started: AtomicBool,
    hub_finished: AtomicBool,
    /// Woken when the hub starts or finishes, for [`Health::started`].
    hub_changed: Notify,
    /// Turns of the hub loop so far.
    turns: AtomicU64,
    /// What a check saw while inputs were waiting: the turn count and when it first saw
    /// that count with inputs waiting.
    waiting: Mutex<Option<(u64, Instant)>>,
    /// Store operations failed in a row (0 after a success).
    store_failures: AtomicU32,
    /// When the current run of store failures began, and when its latest failure came.
    failing_since: Mutex<Option<(Instant, Instant)>>,
    /// The cluster bus, when the server is a cluster node.
    cluster: OnceLock<Arc<dyn Cluster>>,
}

/// A handle to one server's health. Cheap to clone; all clones see the same state. Get
/// it from [`Server::health`](super::Server::health).
#[derive(Debug, Clone, Default)]
pub struct Health {
    state: Arc<State>,
}

/// The hub's state in a [`HealthReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubStatus {
    /// Running and keeping up with its inputs.
    Running,
    /// The server has not started running yet.
    NotStarted,
    /// Inputs have been waiting for at least `for_at_least` without the hub taking any.
    Stalled {
        /// Inputs waiting in the hub's queue.
        queued: usize,
        /// How long (at least) the hub has not turned while inputs waited.
        for_at_least: Duration,
    },
    /// The hub has finished: the server stopped, or the hub task failed.
    Stopped,
}

/// The store's state in a [`HealthReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreStatus {
    /// Its last operation succeeded, or fewer than [`STORE_FAILURES`] in a row failed.
    Ok,
    /// Its last `consecutive_failures` operations failed (errors or timeouts).
    Failing {
        /// Operations failed in a row.
        consecutive_failures: u32,
        /// Time since the first of them.
        since: Duration,
    },
}

/// What [`Health::check`] found. Its `Display` is `ok` when healthy (`ok (node n1: bus
/// ok)` on a cluster node), otherwise one line naming each problem, e.g. `store failing:
/// 3 operations in a row failed (for 2.1s)` or `node n1: bus disconnected (…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The hub's state.
    pub hub: HubStatus,
    /// The store's state.
    pub store: StoreStatus,
    /// The cluster bus's state, when the server is a cluster node.
    pub cluster: Option<ClusterHealth>,
}

impl HealthReport {
    /// Whether everything is fine (a `/healthz` route answers 200 then, 503 otherwise).
    pub fn is_healthy(&self) -> bool {
        self.hub == HubStatus::Running
            && self.store == StoreStatus::Ok
            && self.cluster.as_ref().is_none_or(ClusterHealth::is_healthy)
    }
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_healthy() {
            // A cluster node names its bus even when all is well (`ok (node n1: bus ok)`).
            return match &self.cluster {
                Some(cluster) => write!(f, "ok ({cluster})"),
                None => f.write_str("ok"),
            };
        }
        let mut problems = Vec::with_capacity(2);
        match self.hub {
            HubStatus::Running => {}
            HubStatus::NotStarted => problems.push("hub not started".to_owned()),
            HubStatus::Stopped => problems.push("hub stopped".to_owned()),
            HubStatus::Stalled {
                queued,
                for_at_least,
            } => problems.push(format!(
                "hub stalled: {queued} inputs waiting, no turn for {:.1}s",
                for_at_least.as_secs_f64()
            )),
        }
        if let StoreStatus::Failing {
            consecutive_failures,
            since,
        } = self.store
        {
            problems.push(format!(
                "store failing: {consecutive_failures} operations in a row failed (for {:.1}s)",
                since.as_secs_f64()
            ));
        }
        if let Some(cluster) = self.cluster.as_ref().filter(|c| !c.is_healthy()) {
            problems.push(cluster.to_string());
        }
        f.write_str(&problems.join("; "))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data are plain values; a panic elsewhere cannot leave them torn.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Health {
    /// Judges the hub and the store now (see the module docs).
    pub fn check(&self) -> HealthReport {
        HealthReport {
            hub: self.hub_status(),
            store: self.store_status(),
            cluster: self.state.cluster.get().map(|c| c.health()),
        }
    }

    fn hub_status(&self) -> HubStatus {
        let s = &self.state;
        if s.hub_finished.load(Ordering::Acquire) {
            return HubStatus::Stopped;
        }
        if !s.hub_started.load(Ordering::Acquire) {
            return HubStatus::NotStarted;
        }
        let queued = self.queue_depth().unwrap_or(0);
        let mut waiting = lock(&s.waiting);
        if queued == 0 {
            *waiting = None;
            return HubStatus::Running;
        }
        let turns = s.turns.load(Ordering::Acquire);
        let at = now();
        match *waiting {
            Some((seen, since)) if seen == turns => {
                let waited = at.saturating_duration_since(since);
                if waited >= HUB_STALL {
                    return HubStatus::Stalled {
                        queued,
                        for_at_least: waited,
                    };
                }
            }
            _ => *waiting = Some((turns, at)),
        }
        HubStatus::Running
    }

    fn store_status(&self) -> StoreStatus {
        let failures = self.state.store_failures.load(Ordering::Acquire);
        if failures < STORE_FAILURES {
            return StoreStatus::Ok;
        }
        let Some((first, last)) = *lock(&self.state.failing_since) else {
            return StoreStatus::Ok; // a success is resetting the run
        };
        let at = now();
        if at.saturating_duration_since(last) >= STORE_FAILING_HOLD {
            return StoreStatus::Ok;
        }
        let since = at.saturating_duration_since(first);
        StoreStatus::Failing {
            consecutive_failures: failures,
            since,
        }
    }

    /// Waits until the hub has started (or already finished: a server that failed to run
    /// never starts). A readiness signal, e.g. to announce an address only once
    /// `/healthz` can answer 200.
    pub async fn started(&self) {
        let s = &self.state;
        loop {
            let changed = s.hub_changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the check, so a start in between is not missed.
            changed.as_mut().enable();
            if s.hub_started.load(Ordering::Acquire) || s.hub_finished.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }

    /// Inputs waiting in the hub's queue, once the server runs and while the hub lives.
    pub(crate) fn queue_depth(&self) -> Option<usize> {
        let tx = self.state.queue.get()?.upgrade()?;
        Some(tx.max_capacity().saturating_sub(tx.capacity()))
    }

    /// The server is a node of `cluster`: its health joins every check.
    pub(crate) fn watch_cluster(&self, cluster: Arc<dyn Cluster>) {
        let _ = self.state.cluster.set(cluster);
    }

    /// The server started running with this hub queue.
    pub(crate) fn hub_started(&self, queue: mpsc::WeakSender<HubMsg>) {
        let _ = self.state.queue.set(queue);
        self.state.hub_started.store(true, Ordering::Release);
        self.state.hub_changed.notify_waiters();
    }

    /// Held by the hub while it runs; dropping it (the hub returned or panicked) marks
    /// the hub stopped.
    pub(crate) fn hub_guard(&self) -> HubGuard {
        HubGuard(self.clone())
    }

    /// The hub finished one turn.
    pub(crate) fn hub_turned(&self) {
        self.state.turns.fetch_add(1, Ordering::Release);
    }

    /// A store operation finished.
    pub(crate) fn store_result(&self, ok: bool) {
        let s = &self.state;
        if ok {
            if s.store_failures.swap(0, Ordering::AcqRel) != 0 {
                *lock(&s.failing_since) = None;
            }
        } else {
            let mut since = lock(&s.failing_since);
            let at = now();
            if s.store_failures.fetch_add(1, Ordering::AcqRel) == 0 {
                *since = Some((at, at));
            } else if let Some((_, last)) = since.as_mut() {
                *last = at;
            }
        }
    }
}

/// See [`Health::hub_guard`].
pub(crate) struct HubGuard(Health);

impl Drop for HubGuard {
    fn drop(&mut self) {
        self.0.state.hub_finished.store(true, Ordering::Release);
        self.0.state.hub_changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_failure_does_not_flap_three_do_and_a_success_heals() {
        let h = Health::default();
        let (tx, _rx) = mpsc::channel::<HubMsg>(4);
        h.hub_started(tx.downgrade());
        assert!(h.check().is_healthy());
        h.store_result(false);
        h.store_result(true);
        h.store_result(false);
        h.store_result(false);
        assert!(
            h.check().is_healthy(),
            "two failures in a row are tolerated"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        h.store_result(false);
        tokio::time::advance(Duration::from_secs(1)).await;
        let report = h.check();
        assert_eq!(
            report.store,
            StoreStatus::Failing {
                consecutive_failures: 3,
                since: Duration::from_secs(3)
            }
        );
        assert_eq!(
            report.to_string(),
            "store failing: 3 operations in a row failed (for 3.0s)"
        );
        h.store_result(true);
        assert!(h.check().is_healthy());
    }

    #[tokio::test]
    async fn started_waits_for_the_hub_to_start() {
        let h = Health::default();
        let mut waiting = std::pin::pin!(h.started());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiting.as_mut())
                .await
                .is_err(),
            "not started yet"
        );
        let (tx, _rx) = mpsc::channel::<HubMsg>(4);
        h.hub_started(tx.downgrade());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the start");
        h.started().await; // and at once once started
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_is_let_back_after_the_hold_without_new_failures() {
        let h = Health::default();
        let (tx, _rx) = mpsc::channel::<HubMsg>(4);
        h.hub_started(tx.downgrade());
        for _ in 0..STORE_FAILURES {
            h.store_result(false);
        }
        tokio::time::advance(STORE_FAILING_HOLD - Duration::from_secs(1)).await;
        assert!(!h.check().is_healthy(), "still within the hold");
        // A new failure restarts the hold but not the run.
        h.store_result(false);
        tokio::time::advance(STORE_FAILING_HOLD - Duration::from_secs(1)).await;
        assert_eq!(
            h.check().store,
            StoreStatus::Failing {
                consecutive_failures: 4,
                since: 2 * STORE_FAILING_HOLD - Duration::from_secs(2)
            }
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            h.check().is_healthy(),
            "no failure for the hold: traffic is let back"
        );
        // The store is still down: the next operation fails and reports it again.
        h.store_result(false);
        assert!(matches!(
            h.check().store,
            StoreStatus::Failing {
                consecutive_failures: 5,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hub_stalls_only_when_inputs_wait_across_probes_without_a_turn() {
        let h = Health::default();
        assert_eq!(h.check().hub, HubStatus::NotStarted);
        let (tx, _rx) = mpsc::channel::<HubMsg>(4);
        h.hub_started(tx.downgrade());
        let guard = h.hub_guard();
        tx.try_send(HubMsg::Closed {
            conn: crate::ids::ConnId(1),
        })
        .expect("room in the queue");
        // The first probe that sees inputs waiting only takes note.
        assert_eq!(h.check().hub, HubStatus::Running);
        tokio::time::advance(HUB_STALL).await;
        // The hub turned meanwhile: not stalled, and the clock restarts.
        h.hub_turned();
        assert_eq!(h.check().hub, HubStatus::Running);
        tokio::time::advance(HUB_STALL).await;
        let report = h.check();
        assert_eq!(
            report.hub,
            HubStatus::Stalled {
                queued: 1,
                for_at_least: HUB_STALL
            }
        );
        assert_eq!(
            report.to_string(),
            "hub stalled: 1 inputs waiting, no turn for 5.0s"
        );
        drop(guard);
        assert_eq!(h.check().hub, HubStatus::Stopped);
        assert_eq!(h.check().to_string(), "hub stopped");
    }
}
