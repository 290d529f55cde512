//! The plain HTTP routes next to the socket: the web client (compiled into the binary),
//! `/healthz` and `/metrics`.
//!
//! The client is served with `Cache-Control: no-cache` (browsers revalidate, so a new
//! server version is picked up on reload) and a Content-Security-Policy that allows only
//! this origin's own scripts and styles: the client has no inline script or style, and
//! needs nothing from elsewhere.
//!
//! `/healthz` answers what [`WarpConfig::health`] says (`200` with its text, or `503`
//! with what is wrong, never cached); without a source it answers `200 ok` whenever the
//! HTTP server answers at all.

use http::{HeaderValue, StatusCode, header};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

use crate::config::{HealthSource, MetricsSource, WarpConfig};

const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The client's files under `/`, one ES module per concept (see `assets/app.js`). A
/// module that another one imports must be listed here: the unit test
/// `every_imported_module_is_served` checks it.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", include_str!("../assets/app.js"), JAVASCRIPT),
    (
        "commands.js",
        include_str!("../assets/commands.js"),
        JAVASCRIPT,
    ),
    (
        "connection.js",
        include_str!("../assets/connection.js"),
        JAVASCRIPT,
    ),
    (
        "handlers.js",
        include_str!("../assets/handlers.js"),
        JAVASCRIPT,
    ),
    (
        "protocol.js",
        include_str!("../assets/protocol.js"),
        JAVASCRIPT,
    ),
    ("render.js", include_str!("../assets/render.js"), JAVASCRIPT),
    ("state.js", include_str!("../assets/state.js"), JAVASCRIPT),
    ("style.css", include_str!("../assets/style.css"), CSS),
];

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The policy for the web client's responses.
///
/// * `default-src 'none'` — everything not listed below is refused;
/// * `script-src 'self'` / `style-src 'self'` — the module scripts and the stylesheet
///   from this origin, no inline code (the client sets heights through the CSSOM, which
///   CSP does not restrict);
/// * `connect-src 'self' ws: wss:` — the socket. CSP Level 3 lets `'self'` cover
///   `ws(s)://` of the same host, but some browsers still in use do not, so the schemes
///   are named; `script-src` already keeps foreign code from using that freedom;
/// * `img-src 'self' data:` — the favicon lookup and nothing else;
/// * `base-uri`, `form-action`, `frame-ancestors 'none'` — no base rewriting, no form
///   posts (the forms are handled in script), no framing (clickjacking).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/healthz`, `/metrics` (when configured) and the web client (when enabled).
pub(crate) fn web_routes(config: &WarpConfig) -> BoxedFilter<(Response,)> {
    let health = config.health.clone();
    let healthz = get_or_head()
        .and(warp::path("healthz"))
        .and(warp::path::end())
        .map(move || match &health {
            Some(source) => health_response(source),
            None => plain("ok", "no-store"),
        });
    let mut routes = healthz.boxed();

    if let Some(source) = config.metrics.clone() {
        let metrics = get_or_head()
            .and(warp::path("metrics"))
            .and(warp::path::end())
            .map(move || metrics_response(&source));
        routes = routes.or(metrics).unify().boxed();
    }

    if config.serve_web_client {
        routes = routes.or(web_client()).unify().boxed();
    }
    routes
}

/// `GET /` and each of [`ASSETS`] under its name.
fn web_client() -> BoxedFilter<(Response,)> {
    let mut routes = warp::path::end().map(|| asset(INDEX_HTML, HTML)).boxed();
    for &(name, body, content_type) in ASSETS {
        let route = file(name).map(move || asset(body, content_type));
        routes = routes.or(route).unify().boxed();
    }
    get_or_head().and(routes).boxed()
}

/// A path of exactly one segment.
fn file(name: &'static str) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path(name).and(warp::path::end())
}

/// `GET`, or `HEAD` (hyper drops the body of a HEAD response itself).
fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    security_headers(&mut response);
    response
}

fn plain(body: &'static str, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    security_headers(&mut response);
    response
}

/// `200` with the source's body when healthy, `503` with what is wrong otherwise.
fn health_response(source: &HealthSource) -> Response {
    let (status, body) = match source.check() {
        Ok(body) => (StatusCode::OK, body),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, body),
    };
    let mut response = body.into_response();
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(&mut response);
    response
}

fn metrics_response(source: &MetricsSource) -> Response {
    let mut response = source.encode().into_response();
    let content_type = HeaderValue::from_str(source.content_type())
        .unwrap_or_else(|_| HeaderValue::from_static(TEXT));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(&mut response);
    response
}

/// Headers every response of ours carries: no MIME sniffing (a text body is never run as
/// script), and no referrer leaking a `?token=` of the page to other sites.
fn security_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// The relative module paths (`from './x.js'`) a script imports.
    fn imports(source: &str) -> Vec<&str> {
        source
            .split("from './")
            .skip(1)
            .filter_map(|rest| rest.split_once('\''))
            .map(|(path, _)| path)
            .collect()
    }

    #[test]
    fn every_imported_module_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|(name, _, _)| *name).collect();
        let mut checked = 0;
        for (name, body, _) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for path in imports(body) {
                assert!(
                    served.contains(&path),
                    "{name} imports ./{path}, which is not served"
                );
                checked += 1;
            }
        }
        // app.js alone imports six modules: a parser that finds nothing is a broken test.
        assert!(checked >= 6, "found only {checked} imports");
    }

    #[test]
    fn the_import_parser_reads_relative_imports() {
        let source = "import { a } from './one.js';\nimport {\n  b,\n} from './two.js';";
        assert_eq!(imports(source), ["one.js", "two.js"]);
    }
}
