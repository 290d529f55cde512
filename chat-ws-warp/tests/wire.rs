//! The socket layer's own writer (`chat-ws-warp/src/wire.rs`), driven directly through
//! `WarpTransport` on a real server at 127.0.0.1:0: our frames and tungstenite's control
//! replies share one byte stream without ever cutting into each other, the close
//! handshake sends exactly one close frame whoever starts it, and frames a client sent
//! along with its upgrade request are not lost.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chat_core::{Channel, CloseCode, Incoming, Transport, TransportError};
use chat_ws_warp::{HttpServer, WarpConfig, WarpTransport};
use futures_util::{SinkExt, StreamExt};
use support::frames::{self, CLOSE, TEXT};
use support::{PROMPT, RawFrame, RawWs};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

async fn start() -> (WarpTransport, HttpServer) {
    WarpTransport::bind("127.0.0.1:0", WarpConfig::default())
        .await
        .expect("bind 127.0.0.1:0")
}

/// Accepts the next handshake, as the runtime would.
async fn accept(transport: &mut WarpTransport) -> Channel {
    let handshake = timeout(PROMPT, transport.accept())
        .await
        .expect("a handshake in time")
        .expect("transport still accepting")
        .expect("warp's accept never fails");
    handshake.accept().await.expect("upgrade")
}

/// A raw client (it answers nothing by itself) connected and accepted.
async fn raw_client(transport: &mut WarpTransport, addr: SocketAddr) -> (RawWs, Channel) {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let client = tokio::spawn(RawWs::handshake(tcp, addr));
    let channel = accept(transport).await;
    let client = timeout(PROMPT, client)
        .await
        .expect("101 in time")
        .expect("client task");
    (client, channel)
}

async fn recv(channel: &mut Channel) -> Option<Result<Incoming, TransportError>> {
    timeout(PROMPT, channel.inbound.recv())
        .await
        .expect("recv in time")
}

/// While a batch far larger than the socket buffers is being written (the client reads
/// one frame, then stops to send a ping), the pong goes out at the next frame boundary
/// instead of behind the rest of the batch, and every frame arrives whole: the client's
/// parser would fail on a pong cut into a frame.
#[tokio::test]
async fn a_ping_is_answered_between_the_frames_of_a_large_batch() {
    const FRAMES: usize = 512;
    let (mut transport, server) = start().await;
    let addr = server.local_addr();
    let client = tokio::spawn(async move {
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .map(|(client, _)| client)
    });
    let Channel {
        mut inbound,
        mut outbound,
    } = accept(&mut transport).await;
    let mut client = client.await.expect("client task").expect("handshake");

    // 512 frames of 64 KiB (32 MiB, one shared allocation): the kernel buffers take a
    // few MiB, so the server is in the middle of the batch when the ping arrives.
    let payload = Bytes::from("y".repeat(64 * 1024));
    let batch = vec![payload.clone(); FRAMES];
    // The runtime's shape: the connection's writer and reader in one task.
    let server_side = async {
        tokio::join!(async { outbound.send(&batch).await }, async {
            inbound.recv().await
        })
    };
    let client_side = async {
        match client.next().await {
            Some(Ok(Message::Text(text))) => assert_eq!(text.len(), payload.len()),
            other => panic!("expected the first frame, got {other:?}"),
        }
        client
            .send(Message::Ping(Bytes::from_static(b"mid-batch")))
            .await
            .expect("ping");
        let mut texts = 1;
        let texts_before_pong = loop {
            match client.next().await {
                Some(Ok(Message::Text(text))) => {
                    assert_eq!(text.as_bytes(), &payload[..]);
                    texts += 1;
                }
                Some(Ok(Message::Pong(echo))) => {
                    assert_eq!(&echo[..], b"mid-batch");
                    break texts;
                }
                other => panic!("expected frames of the batch or the pong, got {other:?}"),
            }
        };
        while texts < FRAMES {
            match client.next().await {
                Some(Ok(Message::Text(text))) => assert_eq!(text.as_bytes(), &payload[..]),
                other => panic!("expected the rest of the batch, got {other:?}"),
            }
            texts += 1;
        }
        // The ping never reached the runtime: the next thing it reads is this.
        client.send(Message::text("after")).await.expect("send");
        texts_before_pong
    };
    let ((sent, first), texts_before_pong) = timeout(
        Duration::from_secs(60),
        futures_util::future::join(server_side, client_side),
    )
    .await
    .expect("the batch and the pong in time");
    assert_eq!(sent, Ok(()));
    assert_eq!(first, Some(Ok(Incoming::Text(Bytes::from("after")))));
    assert!(
        texts_before_pong < FRAMES,
        "the pong waited for the whole batch ({texts_before_pong} frames before it)"
    );
}

/// The server closes; the peer's close reply ends the server's stream and gets no close
/// frame back: exactly one close frame, then the end of the connection.
#[tokio::test]
async fn a_reply_to_our_close_gets_no_second_close_frame() {
    let (mut transport, server) = start().await;
    let (mut client, mut channel) = raw_client(&mut transport, server.local_addr()).await;
    channel
        .outbound
        .send(&[Bytes::from_static(b"{\"last\":true}")])
        .await
        .expect("send");
    channel
        .outbound
        .close(CloseCode::TRY_AGAIN_LATER, "bye")
        .await
        .expect("close");
    // Data the peer still sends is read during the linger; then its close reply.
    client
        .write(&frames::client(TEXT, b"late"))
        .await
        .expect("write");
    client
        .write(&frames::client(CLOSE, &1013u16.to_be_bytes()))
        .await
        .expect("write");
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Text(Bytes::from("late"))))
    );
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Close(Some(CloseCode::TRY_AGAIN_LATER))))
    );
    assert_eq!(recv(&mut channel).await, None);
    drop(channel);
    let frames = client.frames_until_end(PROMPT).await;
    assert_eq!(
        frames,
        [
            RawFrame::Text("{\"last\":true}".to_owned()),
            RawFrame::Close(Some(1013))
        ]
    );
}

/// The peer closes first: its close is answered once, and the runtime's own close that
/// may follow sends nothing more.
#[tokio::test]
async fn a_peers_close_is_answered_once() {
    let (mut transport, server) = start().await;
    let (mut client, mut channel) = raw_client(&mut transport, server.local_addr()).await;
    client
        .write(&frames::client(CLOSE, &4000u16.to_be_bytes()))
        .await
        .expect("write");
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Close(Some(CloseCode(4000)))))
    );
    // After the reply nothing more may be sent; closing again is not an error.
    assert_eq!(
        channel.outbound.send(&[Bytes::from_static(b"{}")]).await,
        Err(TransportError::Closed)
    );
    channel
        .outbound
        .close(CloseCode::GOING_AWAY, "shutting down")
        .await
        .expect("close");
    drop(channel);
    assert_eq!(
        client.frames_until_end(PROMPT).await,
        [RawFrame::Close(Some(4000))]
    );
}

/// A client that sends its first frames right behind the upgrade request, before our
/// `101`: hyper has read them with the request, and they reach the runtime first, in
/// order.
#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_not_lost() {
    let (mut transport, server) = start().await;
    let addr = server.local_addr();
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    bytes.extend(frames::client(TEXT, b"first"));
    bytes.extend(frames::client(TEXT, b"second"));
    tcp.write_all(&bytes).await.expect("write");
    let mut channel = accept(&mut transport).await;
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Text(Bytes::from("first"))))
    );
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Text(Bytes::from("second"))))
    );
}

/// What the runtime does at the peer's close: report it and drop the connection at
/// once, without a `close` of its own. The reply must be on the wire by then.
#[tokio::test]
async fn a_peers_close_is_answered_before_recv_reports_it() {
    let (mut transport, server) = start().await;
    let (mut client, mut channel) = raw_client(&mut transport, server.local_addr()).await;
    client
        .write(&frames::client(CLOSE, &1001u16.to_be_bytes()))
        .await
        .expect("write");
    assert_eq!(
        recv(&mut channel).await,
        Some(Ok(Incoming::Close(Some(CloseCode::GOING_AWAY))))
    );
    drop(channel);
    assert_eq!(
        client.frames_until_end(PROMPT).await,
        [RawFrame::Close(Some(1001))]
    );
}
