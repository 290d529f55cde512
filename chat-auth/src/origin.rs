//! [`OriginAllowList`]: only pages from these origins may open a socket.
//!
//! A WebSocket is not bound by the same-origin policy: any page a user visits can open
//! one to our server, and the browser sends the user's cookies along. The `Origin` header
//! is how the server tells which page asked, so checking it is what stops cross-site
//! WebSocket hijacking.
//!
//! Matching is exact on the triple (scheme, host, port) after normalisation — scheme and
//! host lower-cased, the scheme's default port dropped (`https://a.example:443` is
//! `https://a.example`), IPv6 literals in their canonical form, one trailing `/` in a
//! configured entry ignored. There are no wildcards and no suffix matching, so
//! `https://chat.example.evil` or `https://evil-chat.example` never pass for
//! `https://chat.example`. Refused (HTTP 403):
//!
//! * an origin not in the list (other scheme, host or port);
//! * `Origin: null` — the opaque origin of sandboxed frames, `file:` pages and some
//!   redirects: it says nothing about who is asking;
//! * a malformed value, or more than one `Origin` header;
//! * a request without `Origin`, when configured so (see below).
//!
//! **A missing `Origin` is accepted by default.** Browsers always send `Origin` on a
//! WebSocket handshake (the Fetch standard makes WebSocket requests CORS-mode), so a
//! request without one does not come from a web page; it comes from a native client, a
//! script or a test tool, which could send any `Origin` it liked anyway. The allow-list
//! protects *browser users* from hostile pages; it cannot keep non-browser clients out —
//! authentication does that. [`OriginAllowList::allow_missing`]`(false)` refuses such
//! requests for deployments that only serve browsers.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use chat_core::{Admission, Admitted, ConnectionInfo, Rejection, async_trait};
use thiserror::Error;

/// A normalised web origin: `scheme://host` or `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);

/// Why a string is not an [`Origin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OriginError {
    /// `null`: an opaque origin, which can never be allowed.
    #[error("`null` is an opaque origin and cannot be allowed")]
    Null,
    /// Not `scheme://host[:port]`.
    #[error("expected scheme://host[:port]")]
    Shape,
    /// The scheme is empty or has characters a URL scheme cannot have.
    #[error("invalid scheme")]
    Scheme,
    /// The host is empty, not ASCII (use the punycode `xn--` form) or has characters a
    /// host cannot have.
    #[error("invalid host (internationalised names must be given in punycode)")]
    Host,
    /// The port is not a number from 1 to 65535.
    #[error("invalid port")]
    Port,
    /// A path, query, fragment or user name: an origin has none.
    #[error("an origin has no path, query, fragment or user name")]
    NotAnOrigin,
}

impl Origin {
    /// Parses and normalises an origin (see the module docs). One trailing `/` is
    /// accepted, so a URL copied from a browser's address bar works as a configured
    /// entry.
    pub fn parse(s: &str) -> Result<Self, OriginError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("null") {
            return Err(OriginError::Null);
        }
        let (scheme, rest) = s.split_once("://").ok_or(OriginError::Shape)?;
        let scheme = scheme.to_ascii_lowercase();
        let mut chars = scheme.chars();
        let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(OriginError::Scheme);
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@', '\\']) {
            return Err(OriginError::NotAnOrigin);
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => None,
            Some(p) => {
                let ok = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|&n| ok && n != 0)
                    .ok_or(OriginError::Port)?;
                (Some(port) != default_port(&scheme)).then_some(port)
            }
        };
        Ok(Origin(match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }))
    }

    /// The normalised form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Origin::parse(s)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The normalised host and the raw port text, if any.
fn split_host_port(authority: &str) -> Result<(String, Option<&str>), OriginError> {
    if let Some(inner) = authority.strip_prefix('[') {
        let (literal, after) = inner.split_once(']').ok_or(OriginError::Host)?;
        let ip = Ipv6Addr::from_str(literal).map_err(|_| OriginError::Host)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(OriginError::Host)?),
        };
        // The canonical (compressed, lower-case) text is what browsers serialise.
        return Ok((format!("[{ip}]"), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !host_ok {
        return Err(OriginError::Host);
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// A configured entry that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("allowed origin {entry:?}: {reason}")]
pub struct InvalidOrigin {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub reason: OriginError,
}

/// Why a handshake's `Origin` was refused. The text is the 403 response's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OriginRefusal {
    /// No `Origin` header, and the list does not accept that.
    #[error("an Origin header is required")]
    Missing,
    /// More than one `Origin` header.
    #[error("more than one Origin header")]
    Repeated,
    /// `Origin: null`.
    #[error("opaque origin (null) not allowed")]
    Null,
    /// Not a parseable origin.
    #[error("malformed Origin header")]
    Malformed,
    /// A well-formed origin that is not in the list.
    #[error("origin not allowed")]
    NotAllowed,
}

/// An [`Admission`] that lets in handshakes from the listed origins only (HTTP 403
/// otherwise). See the module docs for the exact rules.
///
/// ```
/// use chat_auth::OriginAllowList;
///
/// let origins = OriginAllowList::new(["https://chat.example", "http://localhost:3000"])?
///     .allow_missing(true);
/// assert!(origins.check(Some("https://CHAT.example:443")).is_ok());
/// assert!(origins.check(Some("https://chat.example.evil")).is_err());
/// # Ok::<(), chat_auth::InvalidOrigin>(())
/// ```
#[derive(Debug, Clone)]
pub struct OriginAllowList {
    allowed: HashSet<Origin>,
    allow_missing: bool,
}

impl OriginAllowList {
    /// The allow-list, each entry parsed with [`Origin::parse`]. A request without
    /// `Origin` is accepted (see [`allow_missing`](Self::allow_missing)). An empty list
    /// refuses every request that has an `Origin`, i.e. every browser.
    pub fn new<I, S>(origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let allowed = origins
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref();
                Origin::parse(entry).map_err(|reason| InvalidOrigin {
                    entry: entry.to_owned(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(OriginAllowList {
            allowed,
            allow_missing: true,
        })
    }

    /// Whether a handshake without an `Origin` header is accepted. Default `true`:
    /// browsers always send one, so its absence means a non-browser client.
    #[must_use]
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// The normalised allowed origins, in no particular order.
    pub fn origins(&self) -> impl Iterator<Item = &Origin> {
        self.allowed.iter()
    }

    /// Checks one `Origin` header value (`None`: no header).
    pub fn check(&self, origin: Option<&str>) -> Result<(), OriginRefusal> {
        let Some(origin) = origin else {
            return if self.allow_missing {
                Ok(())
            } else {
                Err(OriginRefusal::Missing)
            };
        };
        match Origin::parse(origin) {
            Ok(origin) if self.allowed.contains(&origin) => Ok(()),
            Ok(_) => Err(OriginRefusal::NotAllowed),
            Err(OriginError::Null) => Err(OriginRefusal::Null),
            Err(_) => Err(OriginRefusal::Malformed),
        }
    }
}

#[async_trait]
impl Admission for OriginAllowList {
    async fn admit(&self, info: &ConnectionInfo) -> Result<Admitted, Rejection> {
        let mut origins = info
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("origin"))
            .map(|(_, value)| value.as_str());
        let checked = match (origins.next(), origins.next()) {
            (Some(_), Some(_)) => Err(OriginRefusal::Repeated),
            (origin, _) => self.check(origin),
        };
        checked.map(|()| Admitted::anonymous()).map_err(|why| {
            tracing::debug!(client = ?info.client_ip(), origin = ?info.origin(), reason = %why, "origin refused");
            Rejection::Forbidden(why.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> OriginAllowList {
        OriginAllowList::new([
            "https://chat.example",
            "http://localhost:3000",
            "http://[::1]:8080/",
        ])
        .expect("valid list")
    }

    fn headers(origins: &[&str]) -> ConnectionInfo {
        ConnectionInfo {
            headers: origins
                .iter()
                .map(|o| ("origin".to_owned(), (*o).to_owned()))
                .collect(),
            ..ConnectionInfo::default()
        }
    }

    #[test]
    fn an_exact_match_passes_after_normalisation() {
        let list = list();
        for origin in [
            "https://chat.example",
            "HTTPS://Chat.Example",
            "https://chat.example:443",
            "http://localhost:3000",
            "http://[0:0:0:0:0:0:0:1]:8080",
        ] {
            assert_eq!(list.check(Some(origin)), Ok(()), "{origin}");
        }
    }

    #[test]
    fn another_port_or_scheme_is_refused() {
        let list = list();
        for origin in [
            "https://chat.example:8443",
            "http://chat.example",
            "wss://chat.example",
            "http://localhost:3001",
            "http://localhost",
            "https://localhost:3000",
        ] {
            assert_eq!(
                list.check(Some(origin)),
                Err(OriginRefusal::NotAllowed),
                "{origin}"
            );
        }
    }

    #[test]
    fn look_alike_hosts_are_refused() {
        let list = list();
        for origin in [
            "https://chat.example.evil",
            "https://evil-chat.example",
            "https://sub.chat.example",
            "https://chat.examp1e",
            "https://chat.example.",
            "https://xn--chat-example-8j4e", // punycode of something else
        ] {
            assert_eq!(
                list.check(Some(origin)),
                Err(OriginRefusal::NotAllowed),
                "{origin}"
            );
        }
        // Not ASCII at all: browsers send punycode, so this is not a browser's Origin.
        assert_eq!(
            list.check(Some("https://chаt.example")), // Cyrillic а
            Err(OriginRefusal::Malformed)
        );
    }

    #[test]
    fn null_and_malformed_origins_are_refused() {
        let list = list();
        assert_eq!(list.check(Some("null")), Err(OriginRefusal::Null));
        for origin in [
            "",
            "chat.example",
            "https://",
            "https://chat.example/path",
            "https://user@chat.example",
            "https://chat.example:0",
            "https://chat.example:99999",
            "https://chat.example:",
            "https://[::1",
            "1https://chat.example",
        ] {
            assert_eq!(
                list.check(Some(origin)),
                Err(OriginRefusal::Malformed),
                "{origin:?}"
            );
        }
    }

    #[test]
    fn a_missing_origin_is_accepted_unless_configured_otherwise() {
        assert_eq!(list().check(None), Ok(()));
        assert_eq!(
            list().allow_missing(false).check(None),
            Err(OriginRefusal::Missing)
        );
    }

    #[tokio::test]
    async fn as_an_admission_it_answers_403() {
        let list = list();
        assert!(
            list.admit(&headers(&["https://chat.example"]))
                .await
                .is_ok()
        );
        assert!(list.admit(&headers(&[])).await.is_ok());
        for refused in [
            headers(&["https://evil.example"]),
            headers(&["null"]),
            headers(&["https://chat.example", "https://evil.example"]),
        ] {
            let why = list.admit(&refused).await.expect_err("refused");
            assert_eq!(why.status(), 403, "{why:?}");
        }
    }

    #[test]
    fn configured_entries_are_validated() {
        let err = OriginAllowList::new(["https://ok.example", "https://bad.example/app"])
            .expect_err("a path is not an origin");
        assert_eq!(err.entry, "https://bad.example/app");
        assert_eq!(err.reason, OriginError::NotAnOrigin);
        assert_eq!(
            OriginAllowList::new(["null"]).expect_err("opaque").reason,
            OriginError::Null
        );
        let normalised: Vec<String> = OriginAllowList::new(["HTTP://Example.COM:80/"])
            .expect("valid")
            .origins()
            .map(ToString::to_string)
            .collect();
        assert_eq!(normalised, ["http://example.com"]);
    }

    #[test]
    fn other_schemes_keep_their_port() {
        let list = OriginAllowList::new(["app://desktop:80", "tauri://localhost"]).expect("valid");
        assert_eq!(list.check(Some("app://desktop:80")), Ok(()));
        assert_eq!(
            list.check(Some("app://desktop")),
            Err(OriginRefusal::NotAllowed)
        );
        assert_eq!(list.check(Some("tauri://localhost")), Ok(()));
    }
}
