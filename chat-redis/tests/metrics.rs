//! A server that is a node of a Redis cluster shows the bus's own counters on
//! `/metrics` (`chat_cluster_bus_<name>_total`, through `Cluster::counters`).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use chat_core::store::{Appended, Page, PageRange, Store, StoreError};
use chat_core::{
    ChannelTransport, Config, NewDm, NewRoomMessage, RoomName, RuntimeConfig, Server, StoredDm,
    StoredMessage, UserId,
};
use chat_redis::{RedisCluster, RedisClusterConfig};
use support::{TestPrefix, redis_url};

/// No client connects in this test: the store is never asked.
struct NoStore;

#[async_trait]
impl Store for NoStore {
    async fn append_room(&self, _: NewRoomMessage) -> Result<Appended<StoredMessage>, StoreError> {
        Err(StoreError::unavailable("not used"))
    }

    async fn room_page(
        &self,
        _: &RoomName,
        _: PageRange,
    ) -> Result<Page<StoredMessage>, StoreError> {
        Err(StoreError::unavailable("not used"))
    }

    async fn append_dm(&self, _: NewDm) -> Result<Appended<StoredDm>, StoreError> {
        Err(StoreError::unavailable("not used"))
    }

    async fn dm_page(
        &self,
        _: &UserId,
        _: &UserId,
        _: PageRange,
    ) -> Result<Page<StoredDm>, StoreError> {
        Err(StoreError::unavailable("not used"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_metrics_show_the_buss_counters() {
    let Some(url) = redis_url("a_nodes_metrics_show_the_buss_counters") else {
        return;
    };
    let prefix = TestPrefix::new(&url);
    let bus = Arc::new(
        RedisCluster::connect(
            RedisClusterConfig::new(url.as_str())
                .prefix(prefix.prefix.as_str())
                .node_id("metrics-node"),
        )
        .await
        .unwrap(),
    );
    let (transport, _connector) = ChannelTransport::new();
    let server = Server::new(
        Config::unlimited(),
        RuntimeConfig::default(),
        Arc::new(NoStore) as Arc<dyn Store>,
    )
    .with_cluster(Arc::clone(&bus) as Arc<dyn chat_core::Cluster>);
    let handle = server.spawn(transport);
    let text = handle.metrics().encode_text();
    for name in [
        "published",
        "received",
        "resyncs",
        "reasserts",
        "republished",
        "dropped",
        "subscriber_connects",
        "invalid",
        "reaped",
        "hub_timeouts",
        "dm_recovered",
    ] {
        let series = format!("# TYPE chat_cluster_bus_{name} counter");
        assert!(text.contains(&series), "missing {series:?} in\n{text}");
        let sample = format!("\nchat_cluster_bus_{name}_total ");
        assert!(text.contains(&sample), "missing {sample:?} in\n{text}");
    }
    // The numbers are the bus's own, read at scrape time.
    let reaped = bus.stats().reaped;
    assert!(
        handle
            .metrics()
            .encode_text()
            .contains(&format!("\nchat_cluster_bus_reaped_total {reaped}\n"))
    );
    handle.shutdown();
    handle.join().await.unwrap();
}
