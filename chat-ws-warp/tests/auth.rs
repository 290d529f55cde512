//! Authentication, Origin and per-IP limits over real sockets: a `chat_core::Server`
//! with `chat_auth` admission policies behind the warp transport, and tokio-tungstenite
//! clients. Refusals are checked as the HTTP status of the handshake (nothing upgraded).

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_auth::{
    Chain, JwtAlgorithm, JwtAuth, JwtConfig, OriginAllowList, PerIpConfig, PerIpLimits,
};
use chat_core::{Admission, Config, Rate, RuntimeConfig};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::process::POLL;
use support::{PROMPT, Peer, TestServer, Ws, next_text};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &[u8] = b"test-only secret, 32 bytes or more!!";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// These claims as an HS256 token with the server's secret.
fn signed(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("signing works")
}

/// A token for `sub`/`name`, valid for `valid_for` seconds.
fn token(sub: &str, name: &str, valid_for: u64) -> String {
    signed(&json!({"sub": sub, "name": name, "exp": unix_now() + valid_for}))
}

fn jwt(leeway: Duration) -> JwtAuth {
    let mut config = JwtConfig::new(JwtAlgorithm::Hs256 {
        secret: SECRET.to_vec(),
    });
    config.leeway = leeway;
    JwtAuth::new(config).expect("valid config")
}

async fn server(admission: impl Admission) -> TestServer {
    TestServer::with_admission(
        Config::default(),
        RuntimeConfig::default(),
        |_, warp| warp,
        Arc::new(admission),
    )
    .await
}

/// Opens a WebSocket at `/ws{query}` with these extra headers: the socket, or the
/// refusal's HTTP status and body.
async fn handshake(
    server: &TestServer,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    let mut request = format!("ws://{}/ws{query}", server.addr())
        .into_client_request()
        .expect("a valid request");
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
    }
    match timeout(PROMPT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("handshake failed unexpectedly: {e}"),
    }
}

/// A signed-in client: its `connection` and `username_set` frames have been read.
async fn signed_in(server: &TestServer, token: &str, sub: &str, name: &str) -> Peer {
    let mut ws = handshake(server, &format!("?token={token}"), &[])
        .await
        .expect("admitted");
    assert_eq!(
        next_text(&mut ws).await,
        json!({"type": "connection", "clientId": sub})
    );
    assert_eq!(
        next_text(&mut ws).await,
        json!({"type": "username_set", "username": name})
    );
    Peer {
        ws,
        id: sub.to_owned(),
    }
}

async fn join(peer: &mut Peer, room: &str) -> Value {
    peer.send(json!({"type": "join_room", "room": room})).await;
    peer.expect_type("room_joined").await;
    peer.expect_type("message_history").await;
    peer.expect_type("room_users").await
}

fn rejected(server: &TestServer, status: u16) -> bool {
    server.chat.metrics().encode_text().contains(&format!(
        "chat_handshakes_rejected_total{{status=\"{status}\"}} 1"
    ))
}

// ---- JWT ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_handshake_is_refused_with_401() {
    let server = server(jwt(Duration::from_secs(30))).await;
    let (status, body) = handshake(&server, "", &[]).await.expect_err("refused");
    assert_eq!(status, 401);
    assert!(body.starts_with("missing token"), "{body}");
    assert!(rejected(&server, 401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_with_401() {
    let server = server(jwt(Duration::from_secs(30))).await;
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "user-1", "name": "Alice", "exp": unix_now() + 3600}),
        &EncodingKey::from_secret(b"not the server's secret, but long enough"),
    )
    .expect("signing works");
    let (status, body) = handshake(&server, &format!("?token={forged}"), &[])
        .await
        .expect_err("refused");
    assert_eq!((status, body.as_str()), (401, "invalid token signature"));
    let expired = signed(&json!({"sub": "user-1", "name": "Alice", "exp": unix_now() - 3600}));
    let (status, body) = handshake(
        &server,
        "",
        &[("authorization", &format!("Bearer {expired}"))],
    )
    .await
    .expect_err("refused");
    assert_eq!((status, body.as_str()), (401, "token expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_names_the_connection_and_locks_the_name() {
    let server = server(jwt(Duration::from_secs(30))).await;
    let mut alice = signed_in(&server, &token("user-1", "Alice", 3600), "user-1", "Alice").await;
    alice
        .send(json!({"type": "set_username", "username": "Mallory"}))
        .await;
    alice
        .expect_error(
            "Your username comes from your sign-in token",
            "username_locked",
        )
        .await;
    let users = join(&mut alice, "lobby").await;
    assert_eq!(
        users["users"],
        json!([{"id": "user-1", "username": "Alice"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_may_come_in_the_authorization_header() {
    let server = server(jwt(Duration::from_secs(30))).await;
    let bearer = format!("Bearer {}", token("user-7", "Grace", 3600));
    let mut ws = handshake(&server, "", &[("authorization", &bearer)])
        .await
        .expect("admitted");
    assert_eq!(
        next_text(&mut ws).await,
        json!({"type": "connection", "clientId": "user-7"})
    );
    assert_eq!(
        next_text(&mut ws).await,
        json!({"type": "username_set", "username": "Grace"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_with_the_same_sub_are_one_user() {
    let server = server(jwt(Duration::from_secs(30))).await;
    let mut bob = signed_in(&server, &token("user-2", "Bob", 3600), "user-2", "Bob").await;
    join(&mut bob, "lobby").await;

    let alice_token = token("user-1", "Alice", 3600);
    let mut tab1 = signed_in(&server, &alice_token, "user-1", "Alice").await;
    join(&mut tab1, "lobby").await;
    bob.expect(
        json!({"type": "user_joined", "room": "lobby", "username": "Alice", "userId": "user-1"}),
    )
    .await;

    let mut tab2 = signed_in(&server, &alice_token, "user-1", "Alice").await;
    let users = join(&mut tab2, "lobby").await;
    assert_eq!(
        users["users"],
        json!([{"id": "user-2", "username": "Bob"}, {"id": "user-1", "username": "Alice"}])
    );
    // Presence counts users: Alice's second tab announces nobody. Its join is answered,
    // so a `user_joined` for Bob would already be queued before the probe's answer.
    bob.expect_nothing_pending().await;

    // A message from one tab reaches the other tab too.
    tab2.send(json!({"type": "chat_message", "content": "from tab 2"}))
        .await;
    for peer in [&mut tab1, &mut tab2, &mut bob] {
        let got = peer.expect_type("message_received").await;
        assert_eq!(
            (got["userId"].as_str(), got["content"].as_str()),
            (Some("user-1"), Some("from tab 2"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_during_the_session_closes_it_with_4001() {
    let server = server(jwt(Duration::ZERO)).await;
    // `exp` is in whole seconds: this token has between 2 and 3 seconds left, time
    // enough to sign in and join before it runs out.
    let mut alice = signed_in(&server, &token("user-1", "Alice", 3), "user-1", "Alice").await;
    join(&mut alice, "lobby").await;
    let close = loop {
        match timeout(PROMPT, alice.ws.next())
            .await
            .expect("closed within the token's lifetime")
        {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4001, "token expired")
    );
    // The same token cannot open a new session.
    let (status, _) = handshake(
        &server,
        &format!("?token={}", token("user-1", "Alice", 0)),
        &[],
    )
    .await
    .expect_err("refused");
    assert_eq!(status, 401);
}

// ---- Origin -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_with_403_even_with_a_good_token() {
    let admission = Chain::new()
        .then(OriginAllowList::new(["http://chat.example:8080"]).expect("valid list"))
        .then(jwt(Duration::from_secs(30)));
    let server = server(admission).await;
    let query = format!("?token={}", token("user-1", "Alice", 3600));
    for origin in [
        "http://evil.example",
        "http://chat.example",
        "https://chat.example:8080",
        "http://chat.example:8080.evil.example",
        "null",
    ] {
        let (status, _) = handshake(&server, &query, &[("origin", origin)])
            .await
            .expect_err("refused");
        assert_eq!(status, 403, "{origin}");
    }
    // The listed origin (any case) and no Origin at all (not a browser) get in.
    for headers in [&[("origin", "HTTP://Chat.Example:8080")][..], &[]] {
        let mut ws = handshake(&server, &query, headers).await.expect("admitted");
        assert_eq!(next_text(&mut ws).await["clientId"], "user-1");
    }
    // The Origin check comes first: a foreign page learns nothing about tokens.
    let (status, _) = handshake(&server, "", &[("origin", "http://evil.example")])
        .await
        .expect_err("refused");
    assert_eq!(status, 403);
}

// ---- per-IP limits ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_per_ip_cap_the_handshake_is_refused_with_429_until_one_closes() {
    let server = server(PerIpLimits::new(
        PerIpConfig::default()
            .with_max_connections(Some(2))
            .with_rate(None)
            // The test clients are on 127.0.0.1, exempt by default.
            .with_exempt_loopback(false),
    ))
    .await;
    let first = server.connect().await;
    let _second = server.connect().await;
    let (status, body) = handshake(&server, "", &[]).await.expect_err("refused");
    assert_eq!(
        (status, body.as_str()),
        (429, "too many connections from your address")
    );
    first.disconnect().await;
    // The slot comes back when the server has seen the connection end.
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        match handshake(&server, "", &[]).await {
            Ok(_) => break,
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(other) => panic!("the released slot was not given back: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_too_fast_from_one_address_is_refused_with_429() {
    let server = server(PerIpLimits::new(
        PerIpConfig::default()
            .with_max_connections(None)
            .with_rate(Some(Rate::per_second(2, 1)))
            // The test clients are on 127.0.0.1, exempt by default.
            .with_exempt_loopback(false),
    ))
    .await;
    let _a = server.connect().await;
    let _b = server.connect().await;
    let (status, _) = handshake(&server, "", &[]).await.expect_err("refused");
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refusal_gives_the_per_ip_slot_back() {
    let admission = Chain::new()
        .then(PerIpLimits::new(
            PerIpConfig::default()
                .with_max_connections(Some(1))
                .with_rate(None)
                // The test clients are on 127.0.0.1, exempt by default.
                .with_exempt_loopback(false),
        ))
        .then(jwt(Duration::from_secs(30)));
    let server = server(admission).await;
    for _ in 0..3 {
        let (status, _) = handshake(&server, "?token=garbage", &[])
            .await
            .expect_err("refused");
        assert_eq!(status, 401);
    }
    let _alice = signed_in(&server, &token("user-1", "Alice", 3600), "user-1", "Alice").await;
    let (status, _) = handshake(
        &server,
        &format!("?token={}", token("user-2", "Bob", 3600)),
        &[],
    )
    .await
    .expect_err("refused");
    assert_eq!(status, 429);
}
