//! `RedisCluster` passes the cluster conformance checks of `chat-core`'s testkit (the
//! same ones the in-process `MemoryCluster` passes), against the Redis of
//! `CHAT_TEST_REDIS_URL` under a key prefix of this run's own.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use chat_core::Cluster;
use chat_redis::{RedisCluster, RedisClusterConfig};
use support::{TestPrefix, redis_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_conformance_checks() {
    let Some(url) = redis_url("redis_cluster_passes_the_conformance_checks") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let config = RedisClusterConfig::new(url.as_str()).prefix(prefix.prefix.as_str());
    chat_core::testkit::cluster::run_all(|node| {
        let config = config.clone().node_id(node);
        // The factory is synchronous; connecting is not.
        let cluster = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(RedisCluster::connect(config))
        })
        .unwrap();
        Arc::new(cluster) as Arc<dyn Cluster>
    })
    .await;
}
