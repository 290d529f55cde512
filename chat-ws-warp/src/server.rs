//! The HTTP server: our own accept loop around hyper, instead of `warp::serve`.
//!
//! `warp::serve` in 0.4 gives no way to touch an accepted socket or to tune hyper, and
//! a chat server needs both:
//!
//! * **TCP_NODELAY** on every accepted socket: chat frames are small and latency-bound;
//!   Nagle's algorithm would hold a frame back until the previous one is acknowledged.
//! * **Bounded HTTP**: a header read timeout (slow-header clients are cut off, idle
//!   keep-alive connections too), limits on header count and size, and a cap on
//!   HTTP connections served at once. An upgraded WebSocket leaves this count: hyper's
//!   connection task ends when it hands the socket over.
//! * **Graceful shutdown**: stop accepting, let in-flight requests finish, then close.
//!
//! Requests go through the same warp filters as under `warp::serve`; the only
//! difference is that the peer address travels in our own request extension, which the
//! handshake filter reads when warp's is missing.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

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
    #[allow(clippy::disallowed_methods)] // the server's one long-lived task
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
}

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
        if let Err(err) = tune(&stream) {
            tracing::debug!(%err, %peer, "could not set TCP_NODELAY");
        }
        let service = PeerService {
            inner: TowerToHyperService::new(warp::service(filter.clone())),
            peer,
        };
        let connection = serve_connection(stream, service, Arc::clone(&http), stop.clone(), permit);
        #[allow(clippy::disallowed_methods)] // one task per HTTP connection, as hyper needs
        tokio::spawn(connection);
    }
    drop(listener);
    // Every connection task holds a slot until it ends: holding them all means they are done.
    let _ = slots.acquire_many(limits.max_connections).await;
}

/// Drives one HTTP/1.1 connection (with upgrades) until it ends or the server stops.
async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    http: Arc<http1::Builder>,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
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
}
