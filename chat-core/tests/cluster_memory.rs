//! The cluster conformance checks against the in-process bus (`MemoryCluster`), which
//! the runtime and engine cluster tests rely on.
#![cfg(feature = "testkit")]

use std::sync::Arc;

use chat_core::runtime::Cluster;
use chat_core::testkit::cluster::{MemoryBus, run_all};

#[tokio::test(start_paused = true)]
async fn memory_cluster_passes_the_conformance_checks() {
    let bus = MemoryBus::new();
    run_all(|node| bus.node(node) as Arc<dyn Cluster>).await;
}
