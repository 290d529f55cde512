//! The HTTP server: our own accept loop around hyper, instead of `warp::serve`.
//!
//! `warp::serve` in 0.4 gives no way to touch an accepted socket or to tune hyper, and
//! a chat server needs both:
//!
//! * **TCP_NODELAY** on every accepted socket: chat frames are small and latency-bound;
//!   Nagle's algorithm would hold a frame back until the previous one is acknowledged.
//! * **Bounded HTTP**: a header read timeout (slow-header clients are cut off, idle
//!   keep-alive connections too), limits on header count and size, and a cap on
//!   HTTP connections served at once, in all and per peer address (so one address
//!   cannot hold every slot). An upgraded WebSocket leaves these counts: hyper's
//!   connection task ends when it hands the socket over.
//! * **Graceful shutdown**: stop accepting, let in-flight requests finish, then close.
//!
//! Requests go through the same warp filters as under `warp::serve`; the only
//! difference is that the peer address travels in our own request extension, which the
//! handshake filter reads when warp's is missing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chat_core::TrustedProxies;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use warp::Filter;
use warp::reply::Reply;

use crate::config::WarpConfig;
use crate::handshake::{PeerAddr, RequestVersion};

/// How long the accept loop pauses after an accept error that is not about one
/// connection (e.g. out of file descriptors), so it does not spin while the process
/// recovers.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A running server: its address, and the switch that stops it.
///
/// Dropping the handle does **not** stop the server (it runs until its runtime ends);
/// call [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and asks every HTTP connection to finish its current
    /// request and close. Returns at once; [`stopped`](Self::stopped) waits for the end.
    ///
    /// Upgraded WebSockets are not touched: they belong to the runtime, which closes them
    /// (with 1001) in its own shutdown. Once the last HTTP connection is gone,
    /// [`WarpTransport::accept`](crate::WarpTransport) returns `None`.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until the listener is closed and every HTTP connection has ended.
    pub async fn stopped(self) {
        let HttpServer { stop, task, .. } = self;
        // A panic in the accept loop has nothing left to clean up; the server is stopped.
        let _ = task.await;
        drop(stop);
    }
}

/// Serves `filter` on `listener` with the limits of `config` (TCP_NODELAY, header
/// timeout and limits, connection cap) until [`HttpServer::shutdown`].
///
/// Use it to run the chat's [`Routes`](crate::Routes) combined with your own warp
/// routes; [`WarpTransport::bind`](crate::WarpTransport::bind) is this plus the chat's
/// routes. Must be called inside a tokio runtime.
///
/// ```no_run
/// use chat_ws_warp::{WarpConfig, WarpTransport, serve};
/// use warp::Filter;
///
/// # async fn run() -> std::io::Result<()> {
/// let config = WarpConfig::default();
/// let (transport, chat) = WarpTransport::routes(config.clone());
/// let hello = warp::path("hello").map(|| "hello");
/// let app = hello.or(chat);
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let server = serve(listener, app, &config)?;
/// // … hand `transport` to the chat runtime …
/// # drop(transport);
/// server.shutdown();
/// server.stopped().await;
/// # Ok(())
/// # }
/// ```
pub fn serve<F, R>(listener: TcpListener, filter: F, config: &WarpConfig) -> io::Result<HttpServer>
where
    F: Filter<Extract = (R,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    R: Reply + 'static,
{
    let local_addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let limits = Limits::from(config);
    // The server's one long-lived task.
    let task = tokio::spawn(accept_loop(listener, filter, limits, stop_rx));
    Ok(HttpServer {
        local_addr,
        stop,
        task,
    })
}

/// The server-side limits, copied out of the config once.
#[derive(Debug, Clone)]
struct Limits {
    header_read_timeout: Duration,
    max_headers: usize,
    max_header_bytes: usize,
    max_connections: u32,
    per_peer: Arc<PerPeer>,
}

/// HTTP connections held per peer address (see
/// [`WarpConfig::max_http_connections_per_ip`]).
#[derive(Debug)]
struct PerPeer {
    max: Option<usize>,
    trusted: TrustedProxies,
    exempt_loopback: bool,
    // Keys are peer addresses (chosen by peers): std's randomly keyed hasher. Bounded by
    // `max_http_connections` entries, one per connection at most.
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One HTTP connection counted for its peer; given back on drop.
#[derive(Debug)]
struct PeerSlot {
    table: Arc<PerPeer>,
    key: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.table.lock();
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl PerPeer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every update leaves the map consistent.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection from `peer`: `Ok(None)` when it is not counted (no cap, a
    /// trusted proxy, an exempt loopback peer), `Err(())` at the cap.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Option<PeerSlot>, ()> {
        let Some(max) = self.max else {
            return Ok(None);
        };
        let ip = chat_core::proxies::canonical(peer);
        if self.trusted.contains(ip) || (self.exempt_loopback && ip.is_loopback()) {
            return Ok(None);
        }
        // One IPv6 /64 is usually one customer, as for the per-IP admission limits.
        let key = chat_core::proxies::address_group(ip, 64);
        let mut held = self.lock();
        let n = held.entry(key).or_insert(0);
        if *n >= max {
            return Err(());
        }
        *n += 1;
        Ok(Some(PeerSlot {
            table: Arc::clone(self),
            key,
        }))
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// What a peer over [`WarpConfig::max_http_connections_per_ip`] gets before the close.
const TOO_MANY_FROM_ADDRESS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 44\r\n\
connection: close\r\n\
\r\n\
too many HTTP connections from your address\n";

impl From<&WarpConfig> for Limits {
    fn from(config: &WarpConfig) -> Self {
        Limits {
            header_read_timeout: config.header_read_timeout,
            max_headers: config.max_request_headers,
            max_header_bytes: config.max_request_header_bytes,
            // A semaphore counts in u32 when waiting for all permits; zero would never
            // accept anything.
            max_connections: u32::try_from(config.max_http_connections)
                .unwrap_or(u32::MAX)
                .max(1),
            per_peer: Arc::new(PerPeer {
                max: config.max_http_connections_per_ip,
                trusted: config.trusted_proxies.clone(),
                exempt_loopback: config.exempt_loopback,
                held: Mutex::default(),
            }),
        }
    }
}

async fn accept_loop<F, R>(
    listener: TcpListener,
    filter: F,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    F: Filter<Extract = (R,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    R: Reply + 'static,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));

    loop {
        // Take a slot before accepting: at the cap, connections wait in the kernel's
        // listen queue instead of in our memory.
        let permit = tokio::select! {
            () = stopped(&mut stop) => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break, // never closed; ends the loop if it were
            },
        };
        let (stream, peer) = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if !is_connection_error(&err) {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        let Ok(peer_slot) = limits.per_peer.take(peer.ip()) else {
            // Its address is only known now. Answer without parsing (one non-blocking
            // write into an empty socket buffer), then close gracefully in the
            // background; the global slot goes back with `permit`.
            tracing::debug!(%peer, "too many HTTP connections from this address");
            refuse(stream);
            continue;
        };
        if let Err(err) = tune(&stream) {
            tracing::debug!(%err, %peer, "could not set TCP_NODELAY");
        }
        let service = PeerService {
            inner: TowerToHyperService::new(warp::service(filter.clone())),
            peer,
        };
        let connection = serve_connection(
            stream,
            service,
            Arc::clone(&http),
            stop.clone(),
            (permit, peer_slot),
        );
        // One task per HTTP connection, as hyper needs.
        tokio::spawn(connection);
    }
    drop(listener);
    // Every connection task holds a slot until it ends: holding them all means they are done.
    let _ = slots.acquire_many(limits.max_connections).await;
}

/// How long a refused connection is drained before it is closed: 200 ms.
const REFUSAL_LINGER: Duration = Duration::from_millis(200);

/// How much of a refused connection's request is read (and discarded) at most: 8 KiB.
const REFUSAL_DRAIN: usize = 8 * 1024;

/// Answers `stream` with the canned 429 (one non-blocking write into an empty socket
/// buffer) and closes it in a bounded background task.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(TOO_MANY_FROM_ADDRESS);
    // Bounded: REFUSAL_LINGER, REFUSAL_DRAIN.
    tokio::spawn(close_after_refusal(stream));
}

/// Closes a connection that was answered without reading its request. Closing a socket
/// with unread data makes the kernel send a reset, which can discard the answer before
/// the client reads it (ECONNRESET instead of the 429). So: send FIN, then read and
/// discard what the client sent until its EOF — briefly and boundedly — then close.
async fn close_after_refusal(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 2048];
    let drain = async {
        let mut read = 0;
        while read < REFUSAL_DRAIN {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

/// Drives one HTTP/1.1 connection (with upgrades) until it ends or the server stops.
async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    http: Arc<http1::Builder>,
    mut stop: watch::Receiver<bool>,
    _slots: (OwnedSemaphorePermit, Option<PeerSlot>),
) where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        >,
{
    let mut connection = pin!(
        http.serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
    );
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            // Finish the request in flight (a handshake waits at most
            // `handshake_timeout`), then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%err, "http connection ended with an error");
    }
}

/// Settings for an accepted socket.
fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Errors about one connection that failed while being accepted; the listener is fine.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Resolves once a shutdown was asked for. A dropped [`HttpServer`] is not a request to
/// stop, so then it never resolves.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Attaches the peer address to each request (see [`PeerAddr`]).
#[derive(Debug, Clone)]
struct PeerService<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S> hyper::service::Service<http::Request<Incoming>> for PeerService<S>
where
    S: hyper::service::Service<http::Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        let version = request.version();
        request.extensions_mut().insert(RequestVersion(version));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request is already in the server's socket when it is refused (what a real
    /// client causes): closing without reading it would reset the connection, and the
    /// client would see ECONNRESET instead of the 429.
    #[tokio::test]
    async fn a_refusal_reaches_a_client_whose_request_is_unread() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        accepted.readable().await.unwrap(); // the request has arrived, unread
        refuse(accepted);
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("closed in time")
            .expect("the whole answer, not a reset");
        assert_eq!(answer, TOO_MANY_FROM_ADDRESS);
    }

    #[tokio::test]
    async fn accepted_sockets_get_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            !accepted.nodelay().unwrap(),
            "off by default, so the test means something"
        );
        tune(&accepted).unwrap();
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }

    fn per_peer(max: usize, trusted: &str) -> Arc<PerPeer> {
        Arc::new(PerPeer {
            max: Some(max),
            trusted: trusted.parse().unwrap(),
            exempt_loopback: true,
            held: Mutex::default(),
        })
    }

    #[test]
    fn http_connections_are_counted_per_peer_and_given_back() {
        let table = per_peer(2, "10.0.0.0/8");
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let one = table.take(a).unwrap().expect("counted");
        let two = table.take(a).unwrap().expect("counted");
        assert!(table.take(a).is_err(), "at the cap");
        assert!(table.take("192.0.2.2".parse().unwrap()).is_ok());
        drop(one);
        let three = table.take(a).unwrap().expect("a freed slot");
        // IPv4-mapped is the IPv4 address; one IPv6 /64 is one address.
        assert!(table.take("::ffff:192.0.2.1".parse().unwrap()).is_err());
        let _v6a = table.take("2001:db8::1".parse().unwrap()).unwrap();
        let _v6b = table.take("2001:db8::2".parse().unwrap()).unwrap();
        assert!(table.take("2001:db8::3".parse().unwrap()).is_err());
        assert!(table.take("2001:db8:0:1::1".parse().unwrap()).is_ok());
        // Trusted proxies and loopback are not counted.
        for exempt in ["10.1.2.3", "127.0.0.1", "::1"] {
            for _ in 0..5 {
                assert!(table.take(exempt.parse().unwrap()).unwrap().is_none());
            }
        }
        drop((two, three));
        assert_eq!(table.tracked(), 1, "only the /64 still holds slots");
        let strict = Arc::new(PerPeer {
            exempt_loopback: false,
            ..Arc::into_inner(per_peer(1, "")).unwrap()
        });
        let _held = strict
            .take("127.0.0.1".parse().unwrap())
            .unwrap()
            .expect("counted");
        assert!(strict.take("127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn the_canned_refusal_is_a_complete_http_response() {
        let text = std::str::from_utf8(TOO_MANY_FROM_ADDRESS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
    }
}
