//! [`WarpTransport`]: the [`Transport`] the chat runtime pulls handshakes from, and the
//! two ways to get one — with the routes to mount ([`WarpTransport::routes`]) or with a
//! running server ([`WarpTransport::bind`]).

use std::io;
use std::sync::Arc;

use chat_core::{Handshake, Transport, TransportError, async_trait};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::mpsc;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::config::WarpConfig;
use crate::handshake::{self, WarpHandshake};
use crate::server::{HttpServer, serve};
use crate::web;

/// The chat's warp routes: the socket at `/` and `/ws`, `/healthz`, `/metrics` when
/// configured, and the web client when enabled. A boxed filter, so it can be stored and
/// combined with `.or(…)` like any other.
pub type Routes = BoxedFilter<(Response,)>;

/// WebSocket connections arriving through warp, as a [`Transport`].
///
/// Each WebSocket upgrade request becomes a [`Handshake`] that waits for the runtime to
/// accept or reject it; see the [crate documentation](crate) for the whole flow.
#[derive(Debug)]
pub struct WarpTransport {
    handshakes: mpsc::Receiver<WarpHandshake>,
}

impl WarpTransport {
    /// The transport and the routes that feed it, to mount in a warp app of your own.
    ///
    /// The transport's [`accept`](Transport::accept) returns `None` once every copy of
    /// the routes is dropped (your server stopped and its connections ended).
    ///
    /// ```
    /// use chat_ws_warp::{WarpConfig, WarpTransport};
    /// use warp::Filter;
    ///
    /// let (transport, chat) = WarpTransport::routes(WarpConfig::default());
    /// // Your own routes first, then the chat's (socket at `/` and `/ws`, web client…).
    /// let app = warp::path("version").map(|| "1.0").or(chat);
    /// # drop((transport, app));
    /// ```
    ///
    /// Under `warp::serve` the peer address, limits and keep-alive handling are warp's;
    /// [`serve`] adds TCP_NODELAY, header limits and a connection cap.
    pub fn routes(config: WarpConfig) -> (WarpTransport, Routes) {
        let config = Arc::new(config);
        let (queue, handshakes) = mpsc::channel(config.accept_backlog.max(1));
        let routes = handshake::socket_route(queue, Arc::clone(&config))
            .or(web::web_routes(&config))
            .unify()
            .boxed();
        (WarpTransport { handshakes }, routes)
    }

    /// Binds `addr`, serves the chat's [routes](Self::routes) there with [`serve`], and
    /// returns the transport with the server's handle (which knows the bound address).
    ///
    /// ```no_run
    /// use chat_ws_warp::{WarpConfig, WarpTransport};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let (transport, server) = WarpTransport::bind("127.0.0.1:8080", WarpConfig::default()).await?;
    /// println!("chat on http://{}", server.local_addr());
    /// // … run the chat runtime with `transport` until it is time to stop …
    /// # drop(transport);
    /// server.shutdown();
    /// server.stopped().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: WarpConfig,
    ) -> io::Result<(WarpTransport, HttpServer)> {
        let listener = TcpListener::bind(addr).await?;
        let (transport, routes) = WarpTransport::routes(config.clone());
        let server = serve(listener, routes, &config)?;
        Ok((transport, server))
    }
}

#[async_trait]
impl Transport for WarpTransport {
    /// Cancel-safe (a channel receive). Never `Err`: warp's server accepts sockets and
    /// handles its own accept errors; only completed upgrade requests arrive here.
    async fn accept(&mut self) -> Option<Result<Box<dyn Handshake>, TransportError>> {
        loop {
            let handshake = self.handshakes.recv().await?;
            // The request gave up waiting (and answered and counted its 503): the runtime
            // must not admit, refuse or count it again.
            if handshake.abandoned() {
                continue;
            }
            return Some(Ok(Box::new(handshake)));
        }
    }
}
