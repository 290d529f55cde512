//! `WarpTransport` driven directly, against a real server on 127.0.0.1:0, with
//! tokio-tungstenite clients: the test plays the runtime (accept, reject, read, write).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chat_core::{
    Channel, CloseCode, ConnectionInfo, Handshake, Incoming, Rejection, Transport, TransportError,
};
use chat_ws_warp::{
    CONTENT_SECURITY_POLICY, HttpServer, MetricsSource, WarpConfig, WarpTransport, echo_routes,
    serve,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode as WsCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound for anything that should happen "at once".
const PROMPT: Duration = Duration::from_secs(5);

async fn start(config: WarpConfig) -> (WarpTransport, HttpServer) {
    WarpTransport::bind("127.0.0.1:0", config)
        .await
        .expect("bind 127.0.0.1:0")
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

/// Starts a client handshake in the background (it completes only once the test, as
/// the runtime, accepts or rejects it).
fn dial(
    request: impl IntoClientRequest + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<Result<Client, tungstenite::Error>> {
    tokio::spawn(async move {
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(client, _response)| client)
    })
}

async fn next_handshake(transport: &mut WarpTransport) -> Box<dyn Handshake> {
    timeout(PROMPT, transport.accept())
        .await
        .expect("a handshake in time")
        .expect("transport still accepting")
        .expect("warp's accept never fails")
}

/// Connects a client at `path` and accepts it: the client and the server's channel.
async fn connect(
    transport: &mut WarpTransport,
    addr: SocketAddr,
    path: &str,
) -> (Client, Channel, ConnectionInfo) {
    let client = dial(url(addr, path));
    let handshake = next_handshake(transport).await;
    let info = handshake.info().clone();
    let channel = handshake.accept().await.expect("upgrade");
    let client = client
        .await
        .expect("client task")
        .expect("client handshake");
    (client, channel, info)
}

async fn recv(channel: &mut Channel) -> Option<Result<Incoming, TransportError>> {
    timeout(PROMPT, channel.inbound.recv())
        .await
        .expect("recv in time")
}

async fn client_next(client: &mut Client) -> Option<Result<Message, tungstenite::Error>> {
    timeout(PROMPT, client.next())
        .await
        .expect("client read in time")
}

// ---------------------------------------------------------------- handshakes

#[tokio::test]
async fn connects_at_root_and_at_ws() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    for path in ["/", "/ws"] {
        let (mut client, mut channel, info) =
            connect(&mut transport, server.local_addr(), path).await;
        assert_eq!(info.path, path);
        client.send(Message::text("hi")).await.unwrap();
        assert_eq!(
            recv(&mut channel).await,
            Some(Ok(Incoming::Text(Bytes::from("hi"))))
        );
    }
}

#[tokio::test]
async fn socket_paths_are_configurable() {
    let config = WarpConfig::default().with_socket_paths(vec!["/chat".to_owned()]);
    let (mut transport, server) = start(config).await;
    let (_client, _channel, info) = connect(&mut transport, server.local_addr(), "/chat?x=1").await;
    assert_eq!(info.path, "/chat");
    assert_eq!(info.query.as_deref(), Some("x=1"));
    match tokio_tungstenite::connect_async(url(server.local_addr(), "/ws")).await {
        Err(tungstenite::Error::Http(response)) => assert_ne!(response.status(), 101),
        other => panic!("/ws is no socket path here, got {other:?}"),
    }
}

#[tokio::test]
async fn other_paths_are_not_upgraded() {
    let (_transport, server) = start(WarpConfig::default()).await;
    let result = tokio_tungstenite::connect_async(url(server.local_addr(), "/elsewhere")).await;
    match result {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_info_has_peer_path_query_and_headers() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let addr = server.local_addr();

    // Connect from a socket we made, so we know the peer address the server must see.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let mut request = url(addr, "/ws?token=abc%2B1&room=general")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("Origin", "http://chat.example".parse().unwrap());
    headers.insert("X-Custom-Thing", "Value With Case".parse().unwrap());
    headers.insert("Authorization", "Bearer t0k3n".parse().unwrap());
    let client = tokio::spawn(tokio_tungstenite::client_async(request, tcp));

    let handshake = next_handshake(&mut transport).await;
    let info = handshake.info().clone();
    assert_eq!(info.peer, Some(local.into()));
    assert_eq!(info.path, "/ws");
    assert_eq!(info.query.as_deref(), Some("token=abc%2B1&room=general"));
    assert_eq!(info.query_param("token").as_deref(), Some("abc+1"));
    assert_eq!(info.origin(), Some("http://chat.example"));
    assert_eq!(info.header("x-custom-thing"), Some("Value With Case"));
    assert_eq!(info.header("authorization"), Some("Bearer t0k3n"));
    assert_eq!(info.header("host"), Some(addr.to_string().as_str()));
    assert_eq!(info.header("upgrade"), Some("websocket"));
    assert!(
        info.headers
            .iter()
            .all(|(name, _)| *name == name.to_ascii_lowercase()),
        "names are lower-cased: {:?}",
        info.headers
    );

    handshake.accept().await.unwrap();
    client.await.unwrap().unwrap();
}

#[tokio::test]
async fn no_query_is_none() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (_client, _channel, info) = connect(&mut transport, server.local_addr(), "/ws").await;
    assert_eq!(info.query, None);
    assert!(info.peer.is_some());
}

#[tokio::test]
async fn rejections_are_http_statuses_without_upgrade() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let cases = [
        (Rejection::Unauthorized("token required".into()), 401),
        (Rejection::Forbidden("origin not allowed".into()), 403),
        (Rejection::TooManyRequests("slow down".into()), 429),
        (Rejection::Unavailable("full".into()), 503),
    ];
    for (rejection, status) in cases {
        let reason = rejection.reason().to_owned();
        let client = dial(url(server.local_addr(), "/ws"));
        next_handshake(&mut transport).await.reject(rejection).await;
        match client.await.unwrap() {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), status);
                assert_eq!(
                    response.headers()["content-type"],
                    "text/plain; charset=utf-8"
                );
                let body = response.body().as_deref().unwrap_or_default();
                assert_eq!(String::from_utf8_lossy(body), reason);
            }
            other => panic!("expected HTTP {status}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_undecided_handshake_gets_503_and_a_late_accept_fails() {
    let config = WarpConfig::default().with_handshake_timeout(Duration::from_millis(200));
    let (mut transport, server) = start(config).await;
    let client = dial(url(server.local_addr(), "/ws"));
    let handshake = next_handshake(&mut transport).await;
    match timeout(PROMPT, client).await.unwrap().unwrap() {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    assert!(matches!(
        handshake.accept().await,
        Err(TransportError::Handshake(_))
    ));
}

#[tokio::test]
async fn a_full_backlog_answers_503_at_once() {
    let config = WarpConfig::default().with_accept_backlog(1);
    let (mut transport, server) = start(config).await;
    // Two handshakes while the transport is not read: whichever reaches the queue first
    // takes its one place and waits (for up to the 10 s handshake timeout); the other
    // is answered 503 at once. No need to know (or wait for) which is first.
    let mut first = dial(url(server.local_addr(), "/ws"));
    let mut second = dial(url(server.local_addr(), "/ws"));
    let (refused, mut queued) = timeout(PROMPT, async {
        tokio::select! {
            answer = &mut first => (answer, second),
            answer = &mut second => (answer, first),
        }
    })
    .await
    .expect("one of the handshakes is answered at once");
    match refused.expect("client task") {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    assert!(
        !queued.is_finished(),
        "the queued handshake waits for the runtime"
    );
    next_handshake(&mut transport).await.accept().await.unwrap();
    timeout(PROMPT, &mut queued)
        .await
        .expect("the queued handshake completes once accepted")
        .expect("client task")
        .expect("upgraded");
}

#[tokio::test]
async fn a_dropped_handshake_gets_503() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let client = dial(url(server.local_addr(), "/ws"));
    drop(next_handshake(&mut transport).await);
    match timeout(PROMPT, client).await.unwrap().unwrap() {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
}

// ---------------------------------------------------------------- frames

#[tokio::test]
async fn text_frames_flow_both_ways_in_order() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;

    for text in ["one", "two", "three"] {
        client.send(Message::text(text)).await.unwrap();
    }
    for text in ["one", "two", "three"] {
        assert_eq!(
            recv(&mut channel).await,
            Some(Ok(Incoming::Text(Bytes::from(text))))
        );
    }

    let replies = [Bytes::from("a"), Bytes::from("b"), Bytes::from("c")];
    channel.outbound.send(&replies).await.unwrap();
    channel.outbound.send(&[Bytes::from("d")]).await.unwrap();
    for text in ["a", "b", "c", "d"] {
        let message = client_next(&mut client).await.unwrap().unwrap();
        assert_eq!(message, Message::text(text));
    }
}

#[tokio::test]
async fn a_batch_of_500_frames_arrives_in_order() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;

    let frames: Vec<Bytes> = (0..500)
        .map(|i| Bytes::from(format!(r#"{{"type":"message_received","n":{i}}}"#)))
        .collect();
    channel.outbound.send(&frames).await.unwrap();
    for expected in &frames {
        let message = client_next(&mut client).await.unwrap().unwrap();
        assert_eq!(message.into_data(), *expected);
    }
}

#[tokio::test]
async fn a_binary_frame_surfaces_as_its_length() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    client.send(Message::binary(vec![7u8; 42])).await.unwrap();
    assert_eq!(recv(&mut channel).await, Some(Ok(Incoming::Binary(42))));
}

#[tokio::test]
async fn text_up_to_the_limit_is_accepted() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    let text = "x".repeat(64 * 1024);
    client.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Text(Bytes::from(text))))
    );
}

#[tokio::test]
async fn a_frame_over_64_kib_is_message_too_big_and_ends_the_connection() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;

    client
        .send(Message::text("x".repeat(64 * 1024 + 1)))
        .await
        .unwrap();
    assert_eq!(
        recv(&mut channel).await,
        Some(Err(TransportError::MessageTooBig))
    );
    // The stream is finished after an error.
    assert_eq!(recv(&mut channel).await, None);

    // What the runtime does next: close with the error's code, then drop.
    let code = TransportError::MessageTooBig.close_code();
    channel
        .outbound
        .close(code, "message too big")
        .await
        .unwrap();
    drop(channel);
    match client_next(&mut client).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    // …and then the end of the connection.
    loop {
        match client_next(&mut client).await {
            None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_fragmented_message_over_64_kib_is_message_too_big() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;

    // Two 40 KiB fragments: each frame is under the frame limit, the message is not.
    let part = Bytes::from(vec![b'y'; 40 * 1024]);
    let first = Frame::message(part.clone(), OpCode::Data(Data::Text), false);
    let last = Frame::message(part, OpCode::Data(Data::Continue), true);
    client.send(Message::Frame(first)).await.unwrap();
    client.send(Message::Frame(last)).await.unwrap();
    assert_eq!(
        recv(&mut channel).await,
        Some(Err(TransportError::MessageTooBig))
    );
}

#[tokio::test]
async fn a_huge_frame_header_fails_at_once_without_waiting_for_the_payload() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let addr = server.local_addr();

    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = tokio::spawn(tokio_tungstenite::client_async(url(addr, "/ws"), tcp));
    let mut channel = next_handshake(&mut transport).await.accept().await.unwrap();
    let (mut client, _) = client.await.unwrap().unwrap();

    // FIN + text, masked, 64-bit length of 1 GiB, a mask key — and then nothing: a
    // server that reserved the payload up front, or waited for it, would hang here.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    client.get_mut().write_all(&header).await.unwrap();
    client.get_mut().flush().await.unwrap();

    // A server that waited for the payload would never answer: PROMPT is a bound, not
    // a window to pass by default.
    let result = timeout(PROMPT, channel.inbound.recv())
        .await
        .expect("recv fails promptly after the header");
    assert_eq!(result, Some(Err(TransportError::MessageTooBig)));
}

#[tokio::test]
async fn a_protocol_violation_is_a_protocol_error() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let addr = server.local_addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = tokio::spawn(tokio_tungstenite::client_async(url(addr, "/ws"), tcp));
    let mut channel = next_handshake(&mut transport).await.accept().await.unwrap();
    let (mut client, _) = client.await.unwrap().unwrap();

    // An unmasked text frame from a client (RFC 6455 §5.1: the server must fail).
    client
        .get_mut()
        .write_all(&[0x81, 0x02, b'h', b'i'])
        .await
        .unwrap();
    match recv(&mut channel).await {
        Some(Err(error @ TransportError::Protocol(_))) => {
            assert_eq!(error.close_code(), CloseCode(1002))
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_utf8_text_is_an_invalid_payload_closed_with_1007() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let addr = server.local_addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = tokio::spawn(tokio_tungstenite::client_async(url(addr, "/ws"), tcp));
    let mut channel = next_handshake(&mut transport).await.accept().await.unwrap();
    let (mut client, _) = client.await.unwrap().unwrap();

    // A masked text frame (all-zero mask key) whose payload is not UTF-8.
    let frame = [0x81, 0x80 | 2, 0, 0, 0, 0, 0xff, 0xfe];
    client.get_mut().write_all(&frame).await.unwrap();
    match recv(&mut channel).await {
        Some(Err(e @ TransportError::InvalidPayload)) => assert_eq!(e.close_code().0, 1007),
        other => panic!("expected an invalid payload, got {other:?}"),
    }
}

#[tokio::test]
async fn a_peer_that_does_not_read_blocks_send_instead_of_growing_buffers() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (_client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    // 64 MiB towards a client that never reads: far more than the kernel's socket
    // buffers and tungstenite's bounded write buffer hold, so `send` must wait.
    let batch: Vec<Bytes> = (0..16)
        .map(|_| Bytes::from("z".repeat(64 * 1024)))
        .collect();
    let mut sent_mib = 0;
    let flood = async {
        for _ in 0..64 {
            channel.outbound.send(&batch).await?;
            sent_mib += 1;
        }
        Ok::<_, TransportError>(())
    };
    assert!(
        timeout(Duration::from_secs(2), flood).await.is_err(),
        "send should block on a peer that does not read"
    );
    // What was taken before `send` blocked: the kernel's socket buffers (which loopback
    // autotunes to a few MiB) and tungstenite's bounded write buffer. Counting it, not
    // only timing out, is what a slow machine cannot pass by default: a transport that
    // buffered without bound would take all 64 MiB, each `send` a memory copy.
    eprintln!("a peer that does not read: send blocked after {sent_mib} MiB");
    assert!(
        sent_mib <= 16,
        "{sent_mib} MiB taken for a peer that reads nothing"
    );
}

// ---------------------------------------------------------------- control frames

#[tokio::test]
async fn close_with_code_and_reason_reaches_the_client() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    channel
        .outbound
        .close(CloseCode::TRY_AGAIN_LATER, "outbound queue full")
        .await
        .unwrap();
    match client_next(&mut client).await {
        Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
            assert_eq!(u16::from(code), 1013);
            assert_eq!(reason.as_str(), "outbound queue full");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The client replies (tungstenite sends the reply as the client reads on), and the
    // reply surfaces on the server as the peer's close.
    let client_end = tokio::spawn(async move { client.next().await.map(|r| r.is_ok()) });
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Close(Some(CloseCode(1013)))))
    );
    assert_eq!(recv(&mut channel).await, None);
    // The runtime drops the connection now, which closes TCP and ends the client too.
    drop(channel);
    assert_eq!(timeout(PROMPT, client_end).await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn a_long_close_reason_is_cut_to_fit_the_frame() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    let reason = "ü".repeat(200);
    channel
        .outbound
        .close(CloseCode::POLICY, &reason)
        .await
        .unwrap();
    match client_next(&mut client).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert!(frame.reason.len() <= 123 && reason.starts_with(frame.reason.as_str()));
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_peers_close_surfaces_with_its_code_and_is_answered() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    client
        .close(Some(CloseFrame {
            code: WsCode::from(4000),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Close(Some(CloseCode(4000)))))
    );
    // Closing after the peer did is not an error.
    channel.outbound.close(CloseCode::NORMAL, "").await.unwrap();
    // The runtime stops reading at a close and drops the connection: the reply must
    // already be on its way, so the client sees a clean close, not a dropped connection.
    drop(channel);
    match client_next(&mut client).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("expected the close reply, got {other:?}"),
    }
    assert!(client_next(&mut client).await.is_none());
}

#[tokio::test]
async fn a_ping_is_answered_and_the_pong_surfaces() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    // The client answers pings while it reads.
    let (mut client_tx, mut client_rx) = client.split();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(Ok(message)) = client_rx.next().await {
            seen.push(message);
        }
        seen
    });

    assert_eq!(channel.outbound.ping().await, Ok(true));
    assert_eq!(recv(&mut channel).await, Some(Ok(Incoming::Pong)));

    // End cleanly: the server reads the client's close (answering it as it reads on).
    client_tx.close().await.unwrap();
    assert!(matches!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Close(_)))
    ));
    assert_eq!(recv(&mut channel).await, None);
    drop(channel); // closes the TCP connection, which ends the client's stream
    let seen = timeout(PROMPT, reader).await.unwrap().unwrap();
    assert!(seen.iter().any(Message::is_ping), "client saw {seen:?}");
}

#[tokio::test]
async fn a_clients_ping_gets_a_pong_while_the_server_reads() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    let server_reader = tokio::spawn(async move {
        let first = channel.inbound.recv().await;
        (first, channel)
    });

    client
        .send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match client_next(&mut client).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // The ping itself never reaches the runtime: the next thing it sees is the text.
    client.send(Message::text("after")).await.unwrap();
    let (first, _channel) = timeout(PROMPT, server_reader).await.unwrap().unwrap();
    assert_eq!(first, Some(Ok(Incoming::Text(Bytes::from("after")))));
}

#[tokio::test]
async fn recv_is_cancel_safe() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (mut client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    // Cancel a pending recv many times, as a runtime's select! loop would.
    for _ in 0..20 {
        assert!(
            timeout(Duration::from_millis(5), channel.inbound.recv())
                .await
                .is_err()
        );
    }
    client.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Text(Bytes::from("still here"))))
    );
}

#[tokio::test]
async fn sending_to_a_vanished_client_fails() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let (client, mut channel, _) = connect(&mut transport, server.local_addr(), "/ws").await;
    drop(client);
    // The peer is gone without a close: reads end, writes fail (possibly after a few
    // writes the kernel still accepts).
    match recv(&mut channel).await {
        None | Some(Err(TransportError::Closed | TransportError::Io(_))) => {}
        other => panic!("expected the end of the connection, got {other:?}"),
    }
    let frame = [Bytes::from("x".repeat(1024))];
    // The peer's kernel answers the first write after its close with a reset, which no
    // signal announces: retry until a write fails, bounded by PROMPT.
    let deadline = tokio::time::Instant::now() + PROMPT;
    let mut failed = false;
    while tokio::time::Instant::now() < deadline {
        if channel.outbound.send(&frame).await.is_err() {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failed, "writes to a closed connection must fail");
}

// ---------------------------------------------------------------- HTTP routes

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client: one request, `Connection: close`, read to the end.
async fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    timeout(PROMPT, tcp.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn assert_security_headers(response: &HttpResponse) {
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test]
async fn get_root_serves_the_web_client_with_its_headers() {
    let (_transport, server) = start(WarpConfig::default()).await;
    let response = http(server.local_addr(), "GET", "/").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    assert_eq!(
        response.header("content-security-policy"),
        Some(CONTENT_SECURITY_POLICY)
    );
    assert_security_headers(&response);
    assert!(response.body.starts_with("<!doctype html>"));
    assert!(
        response
            .body
            .contains(r#"<script type="module" src="app.js"></script>"#)
    );
}

#[tokio::test]
async fn the_csp_allows_what_the_client_needs_and_nothing_inline() {
    let csp = CONTENT_SECURITY_POLICY;
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self' ws: wss:",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
}

#[tokio::test]
async fn the_client_assets_have_their_content_types() {
    let (_transport, server) = start(WarpConfig::default()).await;
    let cases = [
        ("/app.js", "text/javascript; charset=utf-8", "import {"),
        (
            "/protocol.js",
            "text/javascript; charset=utf-8",
            "export function wsUrl",
        ),
        ("/style.css", "text/css; charset=utf-8", "font"),
        (
            "/state.js",
            "text/javascript; charset=utf-8",
            "export function createState",
        ),
        (
            "/handlers.js",
            "text/javascript; charset=utf-8",
            "export const HANDLERS",
        ),
        (
            "/commands.js",
            "text/javascript; charset=utf-8",
            "export function sendJoin",
        ),
        (
            "/render.js",
            "text/javascript; charset=utf-8",
            "export function render",
        ),
        (
            "/connection.js",
            "text/javascript; charset=utf-8",
            "export class Connection",
        ),
    ];
    for (path, content_type, snippet) in cases {
        let response = http(server.local_addr(), "GET", path).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path}"
        );
        assert_eq!(response.header("cache-control"), Some("no-cache"), "{path}");
        assert!(
            response.header("content-security-policy").is_some(),
            "{path}"
        );
        assert_security_headers(&response);
        assert!(response.body.contains(snippet), "{path}");
    }
    for not_served in ["/nope.js", "/package.json", "/tests/protocol.test.mjs"] {
        assert_eq!(
            http(server.local_addr(), "GET", not_served).await.status,
            404,
            "{not_served}"
        );
    }
}

#[tokio::test]
async fn head_is_answered_without_a_body() {
    let (_transport, server) = start(WarpConfig::default()).await;
    let response = http(server.local_addr(), "HEAD", "/app.js").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(response.body.is_empty());
}

#[tokio::test]
async fn healthz_says_ok() {
    let (_transport, server) = start(WarpConfig::default()).await;
    let response = http(server.local_addr(), "GET", "/healthz").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "ok");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_security_headers(&response);
}

#[tokio::test]
async fn metrics_come_from_the_configured_source() {
    let scrapes = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&scrapes);
    let config = WarpConfig::default().with_metrics(Some(MetricsSource::new(move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        format!("# TYPE chat_scrapes counter\nchat_scrapes {n}\n")
    })));
    let (_transport, server) = start(config).await;
    for n in 1..=2 {
        let response = http(server.local_addr(), "GET", "/metrics").await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(
            response.body,
            format!("# TYPE chat_scrapes counter\nchat_scrapes {n}\n")
        );
    }
}

#[tokio::test]
async fn without_a_metrics_source_there_is_no_metrics_route() {
    let (_transport, server) = start(WarpConfig::default()).await;
    assert_eq!(
        http(server.local_addr(), "GET", "/metrics").await.status,
        404
    );
}

#[tokio::test]
async fn the_web_client_can_be_switched_off() {
    let config = WarpConfig::default().with_serve_web_client(false);
    let (mut transport, server) = start(config).await;
    let addr = server.local_addr();
    assert_ne!(http(addr, "GET", "/").await.status, 200);
    assert_eq!(http(addr, "GET", "/app.js").await.status, 404);
    assert_eq!(http(addr, "GET", "/healthz").await.status, 200);
    // The socket is still there.
    let (_client, _channel, info) = connect(&mut transport, addr, "/").await;
    assert_eq!(info.path, "/");
}

#[tokio::test]
async fn routes_mount_under_another_server() {
    let config = WarpConfig::default();
    let (mut transport, chat) = WarpTransport::routes(config.clone());
    use warp::Filter;
    let app = warp::path("version").map(|| "1.0").or(chat);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve(listener, app, &config).unwrap();
    let addr = server.local_addr();

    assert_eq!(http(addr, "GET", "/version").await.body, "1.0");
    assert_eq!(http(addr, "GET", "/healthz").await.body, "ok");
    let (mut client, mut channel, _) = connect(&mut transport, addr, "/ws").await;
    client.send(Message::text("mounted")).await.unwrap();
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Text(Bytes::from("mounted"))))
    );
}

// ---------------------------------------------------------------- server limits and shutdown

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let config = WarpConfig::default().with_header_read_timeout(Duration::from_millis(300));
    let (_transport, server) = start(config).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    // hyper closes the connection (possibly after a 408); the read then ends.
    timeout(PROMPT, tcp.read_to_end(&mut buf))
        .await
        .expect("the server closes a silent connection")
        .ok();
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let config = WarpConfig::default().with_max_request_headers(8);
    let (_transport, server) = start(config).await;
    let mut request = url(server.local_addr(), "/ws")
        .into_client_request()
        .unwrap();
    for i in 0..16 {
        let name: http::HeaderName = format!("x-h{i}").parse().unwrap();
        request.headers_mut().insert(name, "v".parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 431),
        Err(_) => {} // or the connection is simply closed
        Ok(_) => panic!("a request over the header limit must not be upgraded"),
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_ends_the_transport() {
    let (mut transport, server) = start(WarpConfig::default()).await;
    let addr = server.local_addr();
    // An upgraded socket survives the HTTP server's shutdown: it is the runtime's.
    let (mut client, mut channel, _) = connect(&mut transport, addr, "/ws").await;

    server.shutdown();
    timeout(PROMPT, server.stopped())
        .await
        .expect("server stops");

    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    assert!(
        timeout(PROMPT, transport.accept()).await.unwrap().is_none(),
        "no more handshakes can arrive"
    );
    client.send(Message::text("still open")).await.unwrap();
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Text(Bytes::from("still open"))))
    );
    channel
        .outbound
        .close(CloseCode::GOING_AWAY, "server shutting down")
        .await
        .unwrap();
    match client_next(&mut client).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
}

// ---------------------------------------------------------------- echo

#[tokio::test]
async fn the_echo_route_echoes_text_and_binary_with_the_same_limits() {
    let config = WarpConfig::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve(listener, echo_routes(&config), &config).unwrap();
    let (mut client, _) = tokio_tungstenite::connect_async(url(server.local_addr(), "/"))
        .await
        .unwrap();

    client.send(Message::text("ping?")).await.unwrap();
    assert_eq!(
        client_next(&mut client).await.unwrap().unwrap(),
        Message::text("ping?")
    );
    client.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        client_next(&mut client).await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );

    client
        .send(Message::text("x".repeat(64 * 1024 + 1)))
        .await
        .unwrap();
    match client_next(&mut client).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}
