//! The shared transport conformance suite (`chat_core::testkit::transport`) run against
//! `WarpTransport` on a real server, with tokio-tungstenite as the client.

use std::net::SocketAddr;

use chat_core::channel::ClientEvent;
use chat_core::testkit::transport::{Harness, TestClient, run_all};
use chat_core::{CloseCode, TransportError, async_trait};
use chat_ws_warp::{HttpServer, WarpConfig, WarpTransport};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Starts a fresh server per case; the previous one is shut down.
#[derive(Default)]
struct WarpHarness {
    server: Option<HttpServer>,
}

impl WarpHarness {
    fn addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .map(HttpServer::local_addr)
            .expect("start() runs before connect()")
    }
}

#[async_trait]
impl Harness for WarpHarness {
    type Transport = WarpTransport;

    async fn start(&mut self) -> WarpTransport {
        if let Some(old) = self.server.take() {
            old.shutdown();
        }
        // The suite connects at `/` and at `/chat`.
        let config =
            WarpConfig::default().with_socket_paths(vec!["/".to_owned(), "/chat".to_owned()]);
        let (transport, server) = WarpTransport::bind("127.0.0.1:0", config)
            .await
            .expect("bind 127.0.0.1:0");
        self.server = Some(server);
        transport
    }

    async fn connect(
        &mut self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Box<dyn TestClient>, u16> {
        let mut request = format!("ws://{}{path_and_query}", self.addr())
            .into_client_request()
            .expect("a valid request");
        for (name, value) in headers {
            let name: http::HeaderName = name.parse().expect("a valid header name");
            let value = value.parse().expect("a valid header value");
            request.headers_mut().insert(name, value);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _response)) => Ok(Box::new(WsClient { ws, ended: false })),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(err) => panic!("client handshake failed: {err}"),
        }
    }
}

struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    ended: bool,
}

#[async_trait]
impl TestClient for WsClient {
    async fn send_text(&mut self, text: &str) -> Result<(), TransportError> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|err| TransportError::Io(err.to_string()))
    }

    async fn recv(&mut self) -> Option<ClientEvent> {
        if self.ended {
            return None;
        }
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Some(ClientEvent::Text(text.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    self.ended = true;
                    let (code, reason) = match frame {
                        Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
                        None => (1005, String::new()), // RFC 6455: no status code present
                    };
                    return Some(ClientEvent::Closed {
                        code: CloseCode(code),
                        reason,
                    });
                }
                // tungstenite answers pings while we read.
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    self.ended = true;
                    return Some(ClientEvent::Closed {
                        code: CloseCode(1006),
                        reason: String::new(),
                    });
                }
            }
        }
    }

    /// tungstenite's `Message::Text` only holds UTF-8; a raw frame carries anything.
    async fn send_raw_text(&mut self, bytes: &[u8]) -> Option<Result<(), TransportError>> {
        let frame = Frame::message(bytes.to_vec(), OpCode::Data(Data::Text), true);
        Some(
            self.ws
                .send(Message::Frame(frame))
                .await
                .map_err(|err| TransportError::Io(err.to_string())),
        )
    }

    async fn close(&mut self) {
        let frame = CloseFrame {
            code: WsCode::Normal,
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warp_transport_passes_the_conformance_suite() {
    run_all(&mut WarpHarness::default()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn warp_transport_passes_the_conformance_suite_on_one_thread() {
    run_all(&mut WarpHarness::default()).await;
}
