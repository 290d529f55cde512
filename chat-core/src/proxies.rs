//! [`TrustedProxies`]: which client a connection from a reverse proxy stands for.
//!
//! Behind a reverse proxy every connection comes from the proxy, so anything keyed by
//! address (per-IP limits, logs) would see one client. The proxy says who its client
//! is in a forwarding header; this module reads that header, **only when the peer is a
//! proxy the operator listed**, because anyone else can send it.
//!
//! It lives in `chat-core` (not in a transport or in `chat-auth`) so that every
//! transport resolves the same way and records the result in
//! [`ConnectionInfo::client_addr`](crate::ConnectionInfo::client_addr), where every
//! admission policy and the runtime's log read it without parsing headers themselves.
//!
//! # The rules
//!
//! * **Untrusted peer** (not in the list, or the list is empty): the forwarding headers
//!   change nothing; the client is the peer.
//! * **Trusted peer**: the client is the **right-most untrusted address** of the
//!   forwarding chain. Each proxy appends the address it received the request from, so
//!   walking from the right past our own proxies reaches the first address none of them
//!   vouches for; everything to its left was written by the client and is ignored. When
//!   every address in the chain is trusted, the left-most one is the client.
//! * **Which header**: `X-Forwarded-For` when present (every `X-Forwarded-For` header in
//!   order, each a comma list), otherwise RFC 7239 `Forwarded` (every header in order,
//!   each a comma list of elements; the `for=` parameter of each). `X-Forwarded-For`
//!   wins because it is what nginx, HAProxy, Caddy, Traefik and cloud load balancers
//!   write by default, and they pass a client's own `Forwarded` header through
//!   untouched: preferring `Forwarded` would let any client behind such a proxy choose
//!   its address. A proxy that writes only `Forwarded` must drop any `X-Forwarded-For`
//!   its clients send (nginx: `proxy_set_header X-Forwarded-For "";`).
//! * **Forms accepted**: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`,
//!   `[2001:db8::1]:4711`; in `Forwarded`, quoted or not (`for="[2001:db8::1]:4711"`),
//!   parameter names in any case, other parameters (`by`, `proto`, `host`) ignored.
//! * **Unknown hops**: `unknown`, an obfuscated identifier (`_hidden`), or a `Forwarded`
//!   element without `for=` says a hop exists but not who it is. If the walk reaches
//!   one, the client cannot be named: the result is the proxy's own address
//!   ([`Resolution::Unidentified`]), so such clients share the proxy's per-IP budget
//!   instead of escaping it.
//! * **Malformed** (an element that is none of the above, an unterminated quote): the
//!   same fallback, the proxy's address ([`Resolution::Malformed`]). Refusing the
//!   handshake (400) was the alternative, but a broken proxy configuration would then
//!   take the whole service down, while the fallback only makes its clients share one
//!   budget — limits still hold, nobody chooses an address. Garbage *left* of the
//!   client's address (written by the client itself) is never read, so it cannot
//!   cause either.
//!
//! The work is bounded by the request's header limits (the HTTP server caps their count
//! and size) and is linear in their length.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use thiserror::Error;

/// The networks whose connections are reverse proxies allowed to name their client.
///
/// Empty by default: no forwarding header is believed.
///
/// ```
/// use chat_core::proxies::{Resolution, TrustedProxies};
///
/// let proxies: TrustedProxies = "10.0.0.0/8, 192.0.2.7".parse().unwrap();
/// let headers = [("x-forwarded-for".to_owned(), "198.51.100.9, 10.1.2.3".to_owned())];
/// let from_proxy = proxies.resolve("10.0.0.1".parse().unwrap(), &headers);
/// assert_eq!(from_proxy, Resolution::Client("198.51.100.9".parse().unwrap()));
/// // From anybody else the header changes nothing.
/// let direct = proxies.resolve("203.0.113.5".parse().unwrap(), &headers);
/// assert_eq!(direct, Resolution::Direct);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// An entry of a trusted-proxy list that is neither a CIDR block nor an address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a CIDR block or IP address: {0:?}")]
pub struct InvalidProxy(pub String);

/// What [`TrustedProxies::resolve`] concluded about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// The peer is not a trusted proxy: it is the client, headers ignored.
    Direct,
    /// The peer is a trusted proxy and the chain names this client.
    Client(IpAddr),
    /// The peer is a trusted proxy that sent no forwarding header: the proxy's own
    /// address stands for the client.
    NoHeader,
    /// The walk reached an `unknown` or obfuscated hop: the proxy's address stands for
    /// the client.
    Unidentified,
    /// The chain is malformed where it matters: the proxy's address stands for the
    /// client.
    Malformed,
}

impl Resolution {
    /// The client's address: the named one, or `peer` in every other case.
    pub fn client_ip(self, peer: IpAddr) -> IpAddr {
        match self {
            Resolution::Client(ip) => ip,
            _ => peer,
        }
    }

    /// Whether the peer was a trusted proxy.
    pub fn via_proxy(self) -> bool {
        !matches!(self, Resolution::Direct)
    }
}

impl TrustedProxies {
    /// No trusted proxy (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// These networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies {
            nets: nets.into_iter().map(|net| net.trunc()).collect(),
        }
    }

    /// The networks, as given.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` belongs to a trusted proxy (IPv4-mapped IPv6 addresses count as
    /// their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Who the client of a connection from `peer` with these request headers (names
    /// lower-case, as in [`ConnectionInfo`](crate::ConnectionInfo)) is. See the module
    /// docs for the rules.
    pub fn resolve(&self, peer: IpAddr, headers: &[(String, String)]) -> Resolution {
        if !self.contains(peer) {
            return Resolution::Direct;
        }
        let values = |name: &'static str| {
            headers
                .iter()
                .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let xff: Vec<&str> = values("x-forwarded-for").collect();
        let hops: Vec<Hop> = if !xff.is_empty() {
            xff.iter()
                .flat_map(|v| v.split(','))
                .map(|item| parse_xff_item(item.trim()))
                .collect()
        } else {
            let forwarded: Vec<&str> = values("forwarded").collect();
            if forwarded.is_empty() {
                return Resolution::NoHeader;
            }
            forwarded
                .iter()
                .flat_map(|v| split_outside_quotes(v, b','))
                .map(parse_forwarded_element)
                .collect()
        };
        self.walk(&hops)
    }

    /// The right-most untrusted hop; the left-most when all are trusted.
    fn walk(&self, hops: &[Hop]) -> Resolution {
        let mut leftmost = None;
        for hop in hops.iter().rev() {
            match *hop {
                Hop::Ip(ip) if self.contains(ip) => leftmost = Some(ip),
                Hop::Ip(ip) => return Resolution::Client(canonical(ip)),
                Hop::Unknown => return Resolution::Unidentified,
                Hop::Malformed => return Resolution::Malformed,
            }
        }
        leftmost.map_or(Resolution::Malformed, |ip| {
            Resolution::Client(canonical(ip))
        })
    }
}

impl FromStr for TrustedProxies {
    type Err = InvalidProxy;

    /// A comma-separated list of CIDR blocks (`10.0.0.0/8`, `fd00::/8`) or single
    /// addresses (`192.0.2.7`, `::1`); spaces and empty entries are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let nets = s
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| InvalidProxy(entry.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies::new(nets))
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.nets.iter().map(|n| n.to_string()))
            .finish()
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.nets.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack socket reports) as
/// the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The address a client counts as for per-address limits: its [`canonical`]
/// address, and for IPv6 its first `ipv6_prefix_len` bits (one /64 is usually one
/// customer). Shared by the per-IP admission limits and the transport's per-address
/// HTTP cap, so both group clients alike.
pub fn address_group(ip: IpAddr, ipv6_prefix_len: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let prefix = u32::from(ipv6_prefix_len.min(128));
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// One hop of a forwarding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Ip(IpAddr),
    /// `unknown`, an obfuscated identifier, or no `for=`.
    Unknown,
    Malformed,
}

/// One `X-Forwarded-For` item: an address, with a port or in brackets, or `unknown`.
fn parse_xff_item(item: &str) -> Hop {
    if item.eq_ignore_ascii_case("unknown") || item.starts_with('_') {
        return Hop::Unknown;
    }
    parse_node(item).map_or(Hop::Malformed, Hop::Ip)
}

/// One `Forwarded` element (`for=…;proto=…;by=…`): the hop its `for` names.
fn parse_forwarded_element(element: &str) -> Hop {
    let mut found = None;
    for pair in split_outside_quotes(element, b';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return Hop::Malformed;
        };
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            return Hop::Malformed; // RFC 7239 §4: a parameter at most once per element
        }
        let Some(value) = unquote(value.trim()) else {
            return Hop::Malformed;
        };
        found = Some(
            if value.eq_ignore_ascii_case("unknown") || value.starts_with('_') {
                Hop::Unknown
            } else {
                parse_node(&value).map_or(Hop::Malformed, Hop::Ip)
            },
        );
    }
    found.unwrap_or(Hop::Unknown)
}

/// A token, or a quoted string with its `\` escapes undone; `None` for an unterminated
/// quote.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:80`, or with an obfuscated port (`:_abc`).
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip = inside.parse::<Ipv6Addr>().ok()?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port))
            .then_some(IpAddr::V6(ip));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let (ip, port) = node.rsplit_once(':')?;
    let ip = ip.parse::<std::net::Ipv4Addr>().ok()?;
    valid_port(port).then_some(IpAddr::V4(ip))
}

/// A port number, or an obfuscated port (`_` followed by letters, digits, `.`, `_`, `-`).
fn valid_port(port: &str) -> bool {
    if let Some(obfuscated) = port.strip_prefix('_') {
        return obfuscated
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    }
    port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
}

/// Splits on `sep` outside double-quoted strings (which may contain `\`-escaped
/// characters). An unterminated quote runs to the end of the input.
fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            // `sep` is ASCII, so `i` is a character boundary.
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn address_groups_are_the_ipv4_address_or_the_ipv6_prefix() {
        assert_eq!(address_group(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(address_group(ip("192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(
            address_group(ip("2001:db8:1:2:3:4:5:6"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            address_group(ip("2001:db8:1:2:3:4:5:6"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(address_group(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(address_group(ip("2001:db8::1"), 200), ip("2001:db8::1"));
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn local() -> TrustedProxies {
        "127.0.0.0/8, 10.0.0.0/8, fd00::/8".parse().expect("valid")
    }

    #[test]
    fn the_list_parses_cidrs_and_single_addresses() {
        let p: TrustedProxies = " 10.0.0.0/8,,192.0.2.7 , ::1, 2001:db8::/32"
            .parse()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "10.0.0.0/8,192.0.2.7/32,::1/128,2001:db8::/32"
        );
        assert!(p.contains(ip("10.200.0.1")));
        assert!(p.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped");
        assert!(p.contains(ip("2001:db8:1::5")));
        assert!(!p.contains(ip("192.0.2.8")));
        assert_eq!(
            "10.0.0.0/33".parse::<TrustedProxies>(),
            Err(InvalidProxy("10.0.0.0/33".into()))
        );
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        // Host bits are dropped, as a CIDR means the network.
        let p: TrustedProxies = "10.1.2.3/8".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn an_untrusted_peer_changes_nothing() {
        let h = headers(&[
            ("x-forwarded-for", "10.9.9.1"),
            ("forwarded", "for=10.9.9.2"),
        ]);
        assert_eq!(local().resolve(ip("192.0.2.1"), &h), Resolution::Direct);
        assert_eq!(
            TrustedProxies::none().resolve(ip("127.0.0.1"), &h),
            Resolution::Direct
        );
        assert_eq!(
            Resolution::Direct.client_ip(ip("192.0.2.1")),
            ip("192.0.2.1")
        );
        assert!(!Resolution::Direct.via_proxy());
    }

    #[test]
    fn x_forwarded_for_gives_the_right_most_untrusted_address() {
        let p = local();
        let peer = ip("127.0.0.1");
        let cases = [
            (vec![("x-forwarded-for", "198.51.100.1")], "198.51.100.1"),
            // The client's own entries are left of what our proxies appended.
            (
                vec![("x-forwarded-for", "6.6.6.6, 198.51.100.1, 10.0.0.5")],
                "198.51.100.1",
            ),
            // Several headers are one list, in order.
            (
                vec![
                    ("x-forwarded-for", "6.6.6.6"),
                    ("X-Forwarded-For", "198.51.100.2,10.1.1.1"),
                ],
                "198.51.100.2",
            ),
            (
                vec![("x-forwarded-for", "198.51.100.3:4711")],
                "198.51.100.3",
            ),
            (
                vec![("x-forwarded-for", "[2001:db8::1]:4711")],
                "2001:db8::1",
            ),
            (vec![("x-forwarded-for", "2001:db8::2")], "2001:db8::2"),
            (
                vec![("x-forwarded-for", "::ffff:198.51.100.4")],
                "198.51.100.4",
            ),
            // All trusted: the left-most.
            (vec![("x-forwarded-for", "10.0.0.9, 10.0.0.8")], "10.0.0.9"),
            // Garbage written by the client, left of the answer, is never read.
            (
                vec![("x-forwarded-for", "garbage, \"x, 198.51.100.5")],
                "198.51.100.5",
            ),
        ];
        for (h, want) in cases {
            assert_eq!(
                p.resolve(peer, &headers(&h)),
                Resolution::Client(ip(want)),
                "{h:?}"
            );
        }
    }

    #[test]
    fn forwarded_follows_rfc_7239() {
        let p = local();
        let peer = ip("10.0.0.1");
        let cases = [
            ("for=198.51.100.1", "198.51.100.1"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            (
                "for=6.6.6.6, for=198.51.100.2;proto=https, for=10.0.0.3",
                "198.51.100.2",
            ),
            ("for=\"198.51.100.3:_port\"", "198.51.100.3"),
            ("by=\"a,b\";for=198.51.100.4", "198.51.100.4"),
            ("for=\"198.51.100.\\5\"", "198.51.100.5"),
        ];
        for (h, want) in cases {
            let h = headers(&[("forwarded", h)]);
            assert_eq!(p.resolve(peer, &h), Resolution::Client(ip(want)), "{h:?}");
        }
        let two = headers(&[
            ("forwarded", "for=198.51.100.6"),
            ("forwarded", "for=10.0.0.4"),
        ]);
        assert_eq!(
            p.resolve(peer, &two),
            Resolution::Client(ip("198.51.100.6"))
        );
    }

    #[test]
    fn unknown_hops_and_garbage_fall_back_to_the_proxy() {
        let p = local();
        let peer = ip("127.0.0.1");
        let cases = [
            (("forwarded", "for=unknown"), Resolution::Unidentified),
            (
                ("forwarded", "for=_hidden, for=10.0.0.2"),
                Resolution::Unidentified,
            ),
            (("forwarded", "proto=https"), Resolution::Unidentified),
            (("x-forwarded-for", "unknown"), Resolution::Unidentified),
            (("forwarded", "for=\"[2001:db8::1]"), Resolution::Malformed),
            (
                ("forwarded", "for=198.51.100.1;for=198.51.100.2"),
                Resolution::Malformed,
            ),
            (("forwarded", "for"), Resolution::Malformed),
            (("forwarded", "for=not-an-ip"), Resolution::Malformed),
            (
                ("x-forwarded-for", "198.51.100.1:99999"),
                Resolution::Malformed,
            ),
            (("x-forwarded-for", ""), Resolution::Malformed),
            (("x-forwarded-for", "[::1"), Resolution::Malformed),
        ];
        for ((name, value), want) in cases {
            let got = p.resolve(peer, &headers(&[(name, value)]));
            assert_eq!(got, want, "{name}: {value}");
            assert_eq!(got.client_ip(peer), peer);
            assert!(got.via_proxy());
        }
        assert_eq!(p.resolve(peer, &[]), Resolution::NoHeader);
    }

    #[test]
    fn x_forwarded_for_wins_over_forwarded() {
        let h = headers(&[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            local().resolve(ip("127.0.0.1"), &h),
            Resolution::Client(ip("198.51.100.7"))
        );
    }
}
