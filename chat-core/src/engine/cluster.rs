//! The engine's side of a cluster (ARCHITECTURE.md decision 17): what it does with the
//! [`ClusterEvent`]s other nodes send.

use std::time::Instant;

use super::Engine;
use crate::cluster::ClusterEvent;

impl Engine {
    /// An event from the cluster bus. Ignored by an engine that is not a cluster node.
    pub(super) fn on_cluster(&mut self, _now: Instant, event: ClusterEvent) {
        if !self.config.cluster {
            return;
        }
        drop(event);
    }
}
