//! The in-process channel transport passes the transport conformance suite.
#![cfg(feature = "testkit")]

use async_trait::async_trait;
use chat_core::testkit::transport::{Harness, TestClient, request_info, run_all};
use chat_core::{ChannelTransport, Connector};

#[derive(Default)]
struct ChannelHarness {
    connector: Option<Connector>,
}

#[async_trait]
impl Harness for ChannelHarness {
    type Transport = ChannelTransport;

    async fn start(&mut self) -> ChannelTransport {
        let (transport, connector) = ChannelTransport::new();
        self.connector = Some(connector);
        transport
    }

    async fn connect(
        &mut self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Box<dyn TestClient>, u16> {
        let connector = self.connector.as_ref().expect("start() first");
        match connector
            .connect(request_info(path_and_query, headers))
            .await
        {
            Ok(client) => Ok(Box::new(client)),
            Err(rejection) => Err(rejection.status()),
        }
    }
}

#[tokio::test]
async fn channel_transport_conforms() {
    run_all(&mut ChannelHarness::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_transport_conforms_on_a_multi_thread_runtime() {
    run_all(&mut ChannelHarness::default()).await;
}
