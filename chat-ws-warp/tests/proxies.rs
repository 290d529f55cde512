//! Proxies and per-address limits (issue 11, point 2), over real sockets on 127.0.0.1
//! against the **real example server** (a child process, see `support/process.rs`) and,
//! for what the runtime sees, an in-process server.
//!
//! * From a trusted proxy the client is the right-most untrusted address of
//!   `X-Forwarded-For` / `Forwarded`, and per-IP limits count that client; from anyone
//!   else the headers change nothing. (10.9.9.x only appear inside headers.)
//! * Loopback peers that are not trusted proxies are not limited per IP by default.
//! * HTTP connections not yet upgraded are capped per peer address too.
//!
//! `cargo test -p chat-ws-warp --test proxies`

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use chat_core::{
    Admission, Admitted, Config, ConnectionInfo, Rejection, RuntimeConfig, async_trait,
};
use support::process::{POLL, ServerProcess, ends_within, http_exchange, read_response};
use support::{PROMPT, TestServer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A WebSocket upgrade for `/ws` with extra header lines.
fn upgrade(headers: &str) -> String {
    format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n{UPGRADE}{headers}\r\n")
}

/// Sends an upgrade with `headers` on a fresh connection: the status, and the
/// connection (kept open by the caller while an admitted connection must count).
async fn handshake(addr: SocketAddr, headers: &str) -> (u16, String, TcpStream) {
    let (response, tcp) = http_exchange(addr, upgrade(headers).as_bytes()).await;
    let response = response.expect("an HTTP response");
    (response.status, response.body, tcp)
}

/// Two handshakes for client A are admitted, a third is 429, one for client B is
/// admitted: per-IP limits count the client a trusted proxy names. Returns the open
/// connections (A's two, B's one).
async fn two_per_forwarded_client(addr: SocketAddr, a: &str, b: &str) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for _ in 0..2 {
        let (status, body, tcp) = handshake(addr, a).await;
        assert_eq!(status, 101, "{a}: {body}");
        open.push(tcp);
    }
    let (status, body, _) = handshake(addr, a).await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many connections from your address"),
        "{a}"
    );
    let (status, body, tcp) = handshake(addr, b).await;
    assert_eq!(status, 101, "{b}: {body}");
    open.push(tcp);
    // Closing one of A's gives its slot back.
    drop(open.remove(0));
    let deadline = Instant::now() + PROMPT;
    loop {
        let (status, _, tcp) = handshake(addr, a).await;
        if status == 101 {
            open.push(tcp);
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "A's slot was never given back");
        tokio::time::sleep(POLL).await;
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_x_forwarded_for_names_the_client() {
    let server = ServerProcess::start(&[
        "--trusted-proxies",
        "127.0.0.0/8",
        "--max-connections-per-ip",
        "2",
        "--connections-per-ip-rate",
        "off",
    ]);
    let addr = server.addr();
    let _open = two_per_forwarded_client(
        addr,
        "X-Forwarded-For: 10.9.9.1\r\n",
        "X-Forwarded-For: 10.9.9.2\r\n",
    )
    .await;
    // What a client writes left of the proxy's entry is ignored: this is 10.9.9.1 again
    // (two open and at the cap), whatever it claims.
    let (status, _, _) = handshake(addr, "X-Forwarded-For: 10.9.9.77, 10.9.9.1\r\n").await;
    assert_eq!(status, 429);
    // Several headers are one list; a loopback hop (a second local proxy) is skipped.
    let (status, _, _) = handshake(
        addr,
        "X-Forwarded-For: 10.9.9.55\r\nX-Forwarded-For: 10.9.9.1, 127.0.0.2\r\n",
    )
    .await;
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_forwarded_names_the_client() {
    let server = ServerProcess::start(&[
        "--trusted-proxies",
        "127.0.0.0/8",
        "--max-connections-per-ip",
        "2",
        "--connections-per-ip-rate",
        "off",
    ]);
    let addr = server.addr();
    let _open = two_per_forwarded_client(
        addr,
        "Forwarded: for=10.9.9.1;proto=http\r\n",
        "Forwarded: for=\"10.9.9.2:4711\", for=127.0.0.1\r\n",
    )
    .await;
    // Quoted IPv6 with a port.
    let v6 = "Forwarded: For=\"[2001:db8::1]:4711\"\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let (status, body, tcp) = handshake(addr, v6).await;
        assert_eq!(status, 101, "{body}");
        held.push(tcp);
    }
    assert_eq!(handshake(addr, v6).await.0, 429);
    // An unknown or malformed chain stands for the proxy itself (127.0.0.1, counted
    // since it is a trusted proxy): two, then 429 — never an escape from the limit.
    let unknown = "Forwarded: for=unknown\r\n";
    for _ in 0..2 {
        let (status, _, tcp) = handshake(addr, unknown).await;
        assert_eq!(status, 101);
        held.push(tcp);
    }
    assert_eq!(handshake(addr, unknown).await.0, 429);
    assert_eq!(handshake(addr, "Forwarded: for=\"[::1\r\n").await.0, 429);
    assert_eq!(
        handshake(addr, "X-Forwarded-For: not-an-ip\r\n").await.0,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_the_headers_change_nothing() {
    // Loopback is exempt by default; `--limit-loopback` makes 127.0.0.1 count, so the
    // test shows the headers do not move a connection to another address's budget.
    let server = ServerProcess::start(&[
        "--max-connections-per-ip",
        "2",
        "--connections-per-ip-rate",
        "off",
        "--limit-loopback",
    ]);
    let addr = server.addr();
    let mut open = Vec::new();
    for forwarded in [
        "X-Forwarded-For: 10.9.9.1\r\n",
        "Forwarded: for=10.9.9.2\r\n",
    ] {
        let (status, _, tcp) = handshake(addr, forwarded).await;
        assert_eq!(status, 101);
        open.push(tcp);
    }
    for forwarded in [
        "X-Forwarded-For: 10.9.9.3\r\n",
        "Forwarded: for=10.9.9.4\r\n",
        "",
    ] {
        let (status, body, _) = handshake(addr, forwarded).await;
        assert_eq!(
            (status, body.as_str()),
            (429, "too many connections from your address"),
            "{forwarded:?}: all of them are 127.0.0.1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_connections_from_loopback_get_in_with_the_default_flags() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr();
    let started = Instant::now();
    let mut open = Vec::new();
    for i in 0..100 {
        let (status, body, tcp) = handshake(addr, "").await;
        assert_eq!(status, 101, "connection {i}: {body}");
        open.push(tcp);
    }
    // Every handshake was answered 101 within PROMPT (no refusal, no throttling); the
    // total time is a figure, not a rule (it depends on the machine's load).
    let took = started.elapsed();
    eprintln!("100 handshakes from 127.0.0.1 with default flags: all 101 in {took:?}");
    // Past the default per-IP cap (64) and burst (20): all held open at once.
    assert_eq!(open.len(), 100);
    server.await_metric("chat_connections", 100, PROMPT).await;
}

// ---- HTTP connections per peer address ------------------------------------------------

/// Opens a TCP connection and makes it count as an HTTP connection (no request yet:
/// hyper is waiting for the headers).
async fn idle_http(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("TCP connect")
}

/// A plain `GET /healthz` on `tcp`: the status, or `None` if the connection ended.
async fn healthz(tcp: &mut TcpStream) -> Option<u16> {
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    timeout(PROMPT, read_response(tcp))
        .await
        .expect("an answer or the end in time")
        .map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_are_capped_per_address() {
    let server = ServerProcess::start(&["--max-http-connections-per-ip", "3", "--limit-loopback"]);
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = idle_http(addr).await;
        // Keep-alive: answered, and the connection stays (and counts).
        assert_eq!(healthz(&mut tcp).await, Some(200));
        held.push(tcp);
    }
    // The fourth is answered 429 without being read, and closed.
    for _ in 0..5 {
        let mut extra = idle_http(addr).await;
        let response = timeout(PROMPT, read_response(&mut extra))
            .await
            .expect("answered at once")
            .expect("a complete response");
        assert_eq!(
            (response.status, response.body.as_str()),
            (429, "too many HTTP connections from your address\n")
        );
        assert_eq!(response.header("connection"), Some("close"));
        assert!(
            ends_within(&mut extra, PROMPT).await,
            "closed after the 429"
        );
    }
    // The held ones still work; when one ends its slot is given back.
    assert_eq!(healthz(&mut held[0]).await, Some(200));
    drop(held.pop());
    let deadline = Instant::now() + PROMPT;
    loop {
        let mut tcp = idle_http(addr).await;
        if healthz(&mut tcp).await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(POLL).await;
    }
}

/// A client that sends its request at once (as real ones do) must read the whole 429,
/// not a connection reset: the server drains the unread request before closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_that_already_sent_its_request_reads_the_whole_429() {
    let server = ServerProcess::start(&["--max-http-connections-per-ip", "1", "--limit-loopback"]);
    let addr = server.addr();
    let mut held = idle_http(addr).await;
    assert_eq!(healthz(&mut held).await, Some(200));
    for _ in 0..10 {
        let mut extra = idle_http(addr).await;
        extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request sent");
        // No pause needed for the case under test (request bytes unread at the close):
        // on loopback the kernel delivers a write to the peer's receive queue within the
        // `write` call, so the request is there before the server can answer.
        let response = timeout(PROMPT, read_response(&mut extra))
            .await
            .expect("answered at once")
            .expect("a complete response, not a reset");
        assert_eq!(
            (response.status, response.body.as_str()),
            (429, "too many HTTP connections from your address\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_and_trusted_proxies_are_not_capped_per_address() {
    for flags in [
        &["--max-http-connections-per-ip", "2"][..],
        &[
            "--max-http-connections-per-ip",
            "2",
            "--limit-loopback",
            "--trusted-proxies",
            "127.0.0.1",
        ][..],
    ] {
        let server = ServerProcess::start(flags);
        let addr = server.addr();
        let mut held = Vec::new();
        for _ in 0..6 {
            let mut tcp = idle_http(addr).await;
            assert_eq!(healthz(&mut tcp).await, Some(200), "{flags:?}");
            held.push(tcp);
        }
    }
}

// ---- what the runtime sees ------------------------------------------------------------

/// Records the client address of every handshake; admits everyone.
#[derive(Default)]
struct Seen(Mutex<Vec<(Option<IpAddr>, bool)>>);

#[async_trait]
impl Admission for Seen {
    async fn admit(&self, info: &ConnectionInfo) -> Result<Admitted, Rejection> {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.push((info.client_ip(), info.via_proxy()));
        Ok(Admitted::anonymous())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_info_carries_the_resolved_client_address() {
    let seen = Arc::new(Seen::default());
    let server = TestServer::with_admission(
        Config::default(),
        RuntimeConfig::default(),
        |_, warp| warp.with_trusted_proxies("127.0.0.0/8".parse().expect("valid")),
        Arc::clone(&seen) as Arc<dyn Admission>,
    )
    .await;
    let addr = server.addr();
    for headers in [
        "X-Forwarded-For: 10.9.9.1\r\n",
        "Forwarded: for=\"[2001:db8::7]:80\"\r\n",
        "",
    ] {
        let (status, _, _tcp) = handshake(addr, headers).await;
        assert_eq!(status, 101);
    }
    let seen = seen.0.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        [
            (Some("10.9.9.1".parse().expect("ip")), true),
            (Some("2001:db8::7".parse().expect("ip")), true),
            (Some("127.0.0.1".parse().expect("ip")), true),
        ]
    );
}
