//! The WebSocket handshake as a question to the runtime.
//!
//! A warp filter matches an upgrade request at one of the socket paths (`/` and `/ws`
//! by default), describes it as a
//! [`ConnectionInfo`], and queues a [`WarpHandshake`] for
//! [`WarpTransport::accept`](crate::WarpTransport). The request then waits (bounded by
//! `handshake_timeout` + [`DECISION_MARGIN`]) for the runtime's [`Decision`]:
//!
//! * rejected → an ordinary HTTP response with the rejection's status and reason, so
//!   nothing is upgraded and the client sees e.g. `401` or `403`;
//! * accepted → the `101 Switching Protocols` reply, written by us (see
//!   [`socket`](crate::socket)); hyper's pending upgrade travels back to the `accept`
//!   call that is waiting for it, which builds the socket once hyper hands the
//!   connection over;
//! * no answer in time, the queue full, or the runtime gone → `503`.
//!
//! The refusals answered here without the runtime (those `503`s, and `400` for a
//! malformed upgrade) are reported to
//! [`MetricsSource::rejected`](crate::MetricsSource::rejected), so `/metrics` counts
//! them with the runtime's own.
//!
//! A request hyper cannot upgrade (no pending upgrade in its extensions, e.g. HTTP/2)
//! is answered `500` before the runtime is asked: no socket could follow.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_core::proxies::Resolution;
use chat_core::{
    Channel, ConnectionInfo, Handshake, Rejection, TransportError, TrustedProxies, async_trait,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::filters::path::{FullPath, Peek};
use warp::reply::{Reply, Response};
use warp::ws::Ws;

use crate::config::WarpConfig;
use crate::socket;

/// The peer address our own server (see [`serve`](crate::serve)) attaches to each
/// request. warp's `addr::remote()` reads a private extension that only `warp::serve`
/// can set, so requests served by our accept loop carry this one instead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// The HTTP version of a request, attached by [`serve`](crate::serve) like [`PeerAddr`]:
/// warp has no filter for it, and RFC 6455 §4.1 requires HTTP/1.1 or later for an
/// upgrade. (Under `warp::serve` it is absent and the check is skipped.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestVersion(pub(crate) warp::http::Version);

/// Whether a `Sec-WebSocket-Key` is what RFC 6455 §4.2.1 requires: the base64 encoding
/// of 16 bytes (24 characters, two `=` of padding, and a last data character whose
/// unused low bits are zero). warp only checks that the header is present.
fn valid_key(key: Option<&str>) -> bool {
    let Some(key) = key.map(str::trim) else {
        return false;
    };
    let b = key.as_bytes();
    let base64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    b.len() == 24
        && b[..22].iter().all(|&c| base64(c))
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
        && &b[22..] == b"=="
}

/// What the runtime decided about a handshake.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Upgrade, and send hyper's pending upgrade here.
    Accept(oneshot::Sender<OnUpgrade>),
    /// Answer with this status and reason instead.
    Reject(Rejection),
}

/// A WebSocket handshake waiting for the runtime's decision.
#[derive(Debug)]
pub(crate) struct WarpHandshake {
    info: ConnectionInfo,
    decision: oneshot::Sender<Decision>,
    handshake_timeout: Duration,
    close_timeout: Duration,
    /// The settings the socket is built with.
    socket_config: WebSocketConfig,
}

#[async_trait]
impl Handshake for WarpHandshake {
    fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    async fn accept(self: Box<Self>) -> Result<Channel, TransportError> {
        let (upgrade_tx, upgrade_rx) = oneshot::channel();
        self.decision
            .send(Decision::Accept(upgrade_tx))
            .map_err(|_| TransportError::Handshake("the request timed out or went away".into()))?;
        // The route answers `101` and hands over hyper's pending upgrade; hyper fulfils
        // it once the `101` is written. Either step failing (the client left, hyper
        // could not hand the connection over) is a failed upgrade.
        let upgraded = tokio::time::timeout(self.handshake_timeout, async {
            let on_upgrade = upgrade_rx.await.ok()?;
            socket::upgrade(on_upgrade, self.socket_config).await.ok()
        });
        match upgraded.await {
            Ok(Some(socket)) => {
                let (inbound, outbound) = socket::split(socket, self.close_timeout);
                Ok(Channel {
                    inbound: Box::new(inbound),
                    outbound: Box::new(outbound),
                })
            }
            Ok(None) => Err(TransportError::Handshake("upgrade failed".into())),
            Err(_) => Err(TransportError::Handshake("upgrade timed out".into())),
        }
    }

    async fn reject(self: Box<Self>, rejection: Rejection) {
        // The request may have timed out meanwhile (it then answered 503 already).
        let _ = self.decision.send(Decision::Reject(rejection));
    }
}

/// The filter for WebSocket upgrades at the configured socket paths.
pub(crate) fn socket_route(
    queue: mpsc::Sender<WarpHandshake>,
    config: Arc<WarpConfig>,
) -> BoxedFilter<(Response,)> {
    socket_path(&config.socket_paths)
        // hyper's pending upgrade, cloned before `warp::ws()` takes it: we answer the
        // upgrade ourselves (see `socket`). `warp::ws()` still checks the request, so
        // its rejections (400, 405, …) are warp's as before.
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ws())
        .and(connection_info(Arc::new(config.trusted_proxies.clone())))
        .and(warp::ext::optional::<RequestVersion>())
        .and_then(
            move |on_upgrade: Option<OnUpgrade>,
                  _: Ws,
                  info: ConnectionInfo,
                  version: Option<RequestVersion>| {
                let queue = queue.clone();
                let config = Arc::clone(&config);
                async move {
                    // Malformed upgrades are answered before they cost an admission.
                    if version.is_some_and(|RequestVersion(v)| v < warp::http::Version::HTTP_11) {
                        let why = "WebSocket upgrades need HTTP/1.1 or later";
                        return Ok::<_, Infallible>(bad_request(why, &config));
                    }
                    if !valid_key(info.header("sec-websocket-key")) {
                        return Ok(bad_request("invalid Sec-WebSocket-Key", &config));
                    }
                    let Some(on_upgrade) = on_upgrade else {
                        // hyper offers no upgrade for this request (e.g. HTTP/2): do not
                        // ask the runtime about a socket that cannot exist.
                        return Ok(cannot_upgrade());
                    };
                    Ok(decide(on_upgrade, info, &queue, &config).await)
                }
            },
        )
        .boxed()
}

/// Matches the configured socket paths. They are compared with what is left of the
/// path where the routes are mounted (`peek`), so mounting under a prefix works.
fn socket_path(
    paths: &[String],
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone + use<> {
    let paths: Arc<[String]> = paths
        .iter()
        .map(|path| path.trim_start_matches('/').to_owned())
        .collect();
    warp::path::peek()
        .and_then(move |rest: Peek| {
            let matched = paths.iter().any(|path| path == rest.as_str());
            async move {
                if matched {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one()
}

/// How much longer than `handshake_timeout` a request waits for the runtime's decision:
/// 1 s. The runtime bounds its admission by its own `handshake_timeout` (the same 10 s by
/// default) and counts the refusal it decides; waiting a little longer lets it decide
/// first, so a refusal is not counted twice (our 503 "did not answer in time", then the
/// runtime's own refusal that no client sees).
pub(crate) const DECISION_MARGIN: Duration = Duration::from_secs(1);

impl WarpHandshake {
    /// Whether the request stopped waiting for the decision (it answered by itself).
    pub(crate) fn abandoned(&self) -> bool {
        self.decision.is_closed()
    }
}

/// How long a queued request waits for the runtime's decision.
fn decision_wait(config: &WarpConfig) -> Duration {
    config.handshake_timeout.saturating_add(DECISION_MARGIN)
}

/// Queues the handshake and turns the runtime's decision into the HTTP response.
async fn decide(
    on_upgrade: OnUpgrade,
    info: ConnectionInfo,
    queue: &mpsc::Sender<WarpHandshake>,
    config: &WarpConfig,
) -> Response {
    let (decision_tx, decision_rx) = oneshot::channel();
    // `valid_key` passed, so the header is there.
    let key = info
        .header("sec-websocket-key")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let handshake = WarpHandshake {
        info,
        decision: decision_tx,
        handshake_timeout: config.handshake_timeout,
        close_timeout: config.close_timeout,
        socket_config: socket::websocket_config(config),
    };
    // `try_send`: a full queue means the runtime is not keeping up; waiting would only
    // pile up more requests, so answer at once.
    if let Err(err) = queue.try_send(handshake) {
        let reason = match err {
            mpsc::error::TrySendError::Full(_) => "server busy, try again later",
            mpsc::error::TrySendError::Closed(_) => "server is not accepting connections",
        };
        return refused_here(&Rejection::Unavailable(reason.into()), config);
    }
    match tokio::time::timeout(decision_wait(config), decision_rx).await {
        Ok(Ok(Decision::Accept(upgrade_tx))) => {
            if upgrade_tx.send(on_upgrade).is_err() {
                // `accept` gave up meanwhile: nobody would drive the socket.
                return refused_here(
                    &Rejection::Unavailable("server is not accepting connections".into()),
                    config,
                );
            }
            socket::switching_protocols(key.as_bytes())
        }
        Ok(Ok(Decision::Reject(rejection))) => rejection_response(&rejection),
        // The runtime dropped the handshake without deciding (e.g. it is shutting down).
        Ok(Err(_)) => refused_here(
            &Rejection::Unavailable("server is not accepting connections".into()),
            config,
        ),
        Err(_) => refused_here(
            &Rejection::Unavailable("server did not answer in time".into()),
            config,
        ),
    }
}

/// An upgrade request that hyper cannot upgrade (no pending upgrade in its
/// extensions): a server error, not the client's.
pub(crate) fn cannot_upgrade() -> Response {
    plain_text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "this server cannot upgrade the connection".to_owned(),
    )
}

/// A refused handshake as plain text with the rejection's status.
fn rejection_response(rejection: &Rejection) -> Response {
    let status =
        StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    plain_text(status, rejection.reason().to_owned())
}

/// A refusal the transport decided without the runtime: counted here, since the runtime
/// never saw it.
fn refused_here(rejection: &Rejection, config: &WarpConfig) -> Response {
    if let Some(metrics) = &config.metrics {
        metrics.rejected(rejection.status());
    }
    rejection_response(rejection)
}

/// A malformed upgrade request: 400 with a plain-text reason (counted like
/// [`refused_here`]).
fn bad_request(why: &'static str, config: &WarpConfig) -> Response {
    if let Some(metrics) = &config.metrics {
        metrics.rejected(StatusCode::BAD_REQUEST.as_u16());
    }
    plain_text(StatusCode::BAD_REQUEST, why.to_owned())
}

/// A short plain-text answer that is never sniffed as anything else.
fn plain_text(status: StatusCode, body: String) -> Response {
    let mut response = body.into_response();
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Extracts what the runtime needs to decide: peer address, path, raw query, headers.
///
/// From a peer in `trusted_proxies`, the client named by its forwarding headers goes
/// into `client_addr` (see [`TrustedProxies`]); a malformed or unidentified chain is
/// logged and stands for the proxy itself.
fn connection_info(
    trusted_proxies: Arc<TrustedProxies>,
) -> impl Filter<Extract = (ConnectionInfo,), Error = Infallible> + Clone {
    let raw_query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::addr::remote()
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::path::full())
        .and(raw_query)
        .and(warp::header::headers_cloned())
        .map(
            move |remote: Option<SocketAddr>,
                  ours: Option<PeerAddr>,
             path: FullPath,
             query: Option<String>,
             headers: HeaderMap| {
                let peer = remote.or(ours.map(|PeerAddr(addr)| addr));
                let headers = header_list(&headers);
                if let Some(peer) = peer {
                    warn_once_if_untrusted_local_proxy(&trusted_proxies, peer.ip(), &headers);
                }
                let client_addr = peer.and_then(|peer| {
                    let resolution = trusted_proxies.resolve(peer.ip(), &headers);
                    if matches!(resolution, Resolution::Malformed | Resolution::Unidentified) {
                        tracing::debug!(%peer, ?resolution, "forwarding header names no client; counting the proxy");
                    }
                    resolution
                        .via_proxy()
                        .then(|| resolution.client_ip(peer.ip()))
                });
                ConnectionInfo {
                    peer: peer.map(Into::into),
                    client_addr,
                    path: path.as_str().to_owned(),
                    query,
                    headers,
                }
            },
        )
}

/// Whether a request looks forwarded by a proxy on this host that is not trusted: a
/// loopback peer, not in `trusted`, with an `X-Forwarded-For` or `Forwarded` header.
/// Then every client arrives from loopback, which is exempt from the per-IP limits by
/// default: a reverse proxy on the same host that is missing from the trusted list
/// silently removes them all.
fn untrusted_local_proxy(
    trusted: &TrustedProxies,
    peer: IpAddr,
    headers: &[(String, String)],
) -> bool {
    chat_core::proxies::canonical(peer).is_loopback()
        && !trusted.contains(peer)
        && headers
            .iter()
            .any(|(name, _)| name == "x-forwarded-for" || name == "forwarded")
}

/// Logs (once per process) the mistake [`untrusted_local_proxy`] detects.
fn warn_once_if_untrusted_local_proxy(
    trusted: &TrustedProxies,
    peer: IpAddr,
    headers: &[(String, String)],
) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if untrusted_local_proxy(trusted, peer, headers) && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            "a loopback peer sends X-Forwarded-For/Forwarded but is not a trusted proxy: \
             every client counts as the proxy's loopback address (exempt from per-IP limits \
             by default); list the proxy in --trusted-proxies (WarpConfig::trusted_proxies)"
        );
    }
}

/// Headers as `(lower-case name, value)` pairs. hyper has already bounded their number
/// and size (`max_request_headers`, `max_request_header_bytes` under our server). Names
/// come lower-cased from `http`; values that are not UTF-8 are kept lossily rather than
/// dropped, so a check on them fails instead of silently passing.
fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{
        DECISION_MARGIN, TrustedProxies, WarpConfig, decision_wait, untrusted_local_proxy,
        valid_key,
    };

    #[test]
    fn a_forwarding_loopback_peer_that_is_not_trusted_is_noticed() {
        let none = TrustedProxies::none();
        let local = TrustedProxies::new(["127.0.0.0/8".parse().unwrap()]);
        let xff = vec![("x-forwarded-for".to_owned(), "203.0.113.7".to_owned())];
        let fwd = vec![("forwarded".to_owned(), "for=203.0.113.7".to_owned())];
        let plain = vec![("host".to_owned(), "x".to_owned())];
        let lo = "127.0.0.1".parse().unwrap();
        assert!(untrusted_local_proxy(&none, lo, &xff));
        assert!(untrusted_local_proxy(&none, lo, &fwd));
        assert!(untrusted_local_proxy(
            &none,
            "::ffff:127.0.0.1".parse().unwrap(),
            &xff
        ));
        assert!(untrusted_local_proxy(&none, "::1".parse().unwrap(), &fwd));
        assert!(!untrusted_local_proxy(&local, lo, &xff), "trusted");
        assert!(!untrusted_local_proxy(&none, lo, &plain), "not forwarded");
        assert!(
            !untrusted_local_proxy(&none, "203.0.113.9".parse().unwrap(), &xff),
            "not on this host"
        );
    }

    #[test]
    fn the_runtime_decides_before_the_request_gives_up() {
        let warp = WarpConfig::default();
        let runtime = chat_core::RuntimeConfig::default();
        assert!(decision_wait(&warp) > runtime.handshake_timeout);
        assert_eq!(
            decision_wait(&warp) - warp.handshake_timeout,
            DECISION_MARGIN
        );
    }

    #[test]
    fn only_base64_of_16_bytes_is_a_valid_key() {
        assert!(
            valid_key(Some("dGhlIHNhbXBsZSBub25jZQ==")),
            "RFC 6455's example"
        );
        for bad in [
            "short",
            "!!!!",
            "dGhlIHNhbXBsZSBub25jZQ==dGhl",
            "dGhlIHNhbXBsZSBub25jZR==",
            "",
        ] {
            assert!(!valid_key(Some(bad)), "{bad}");
        }
        assert!(!valid_key(None));
    }
}
