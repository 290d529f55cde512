//! One bench client: a loopback TCP socket bound to a chosen `127.0.0.x` source address,
//! the WebSocket handshake, and the base-protocol join (`set_username` → `join_room` →
//! the three join replies).
//!
//! Source addresses are spread because one source IP has about 28k ephemeral ports and
//! a port taken by `bind(…:0)` is reserved for that address only: 16 addresses give room
//! for far more connections than the 20,000 open files one process may hold.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::BenchError;

/// A connected bench client.
pub type Ws = WebSocketStream<TcpStream>;

/// Where and how clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address; must be in `127.0.0.0/8`.
    pub addr: SocketAddr,
    /// The WebSocket path (`/` for every server here).
    pub path: String,
    /// How many source addresses (`127.0.0.2` …) the clients are spread over.
    pub source_ips: u8,
    /// How long one join (connect, handshake, replies) may take.
    pub join_timeout: Duration,
}

impl Target {
    /// A target on `addr` with the defaults (path `/`, 16 source addresses, 30 s joins).
    pub fn new(addr: SocketAddr) -> Result<Self, BenchError> {
        let target = Self {
            addr,
            path: "/".to_owned(),
            source_ips: 16,
            join_timeout: Duration::from_secs(30),
        };
        target.check()?;
        Ok(target)
    }

    /// Refuses anything but a loopback IPv4 server: this tool loads this machine only.
    pub fn check(&self) -> Result<(), BenchError> {
        match self.addr.ip() {
            IpAddr::V4(ip) if ip.octets()[0] == 127 => {}
            other => {
                return Err(BenchError::Config(format!(
                    "server address {other} is not in 127.0.0.0/8; this tool only loads this machine"
                )));
            }
        }
        if self.source_ips == 0 || self.source_ips > 250 {
            return Err(BenchError::Config(
                "--source-ips must be 1..=250".to_owned(),
            ));
        }
        Ok(())
    }

    /// The source address of client `index`: `127.0.0.(2 + index mod source_ips)`.
    pub fn source_for(&self, index: usize) -> SocketAddr {
        let offset = u8::try_from(index % usize::from(self.source_ips)).unwrap_or(0);
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + offset)), 0)
    }
}

/// The client side's WebSocket configuration: small buffers, because the tool must stay
/// lighter than the servers it loads (tungstenite's default 128 KiB read buffer is zeroed
/// before every read).
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Connects client `index` (TCP from its source address, then the handshake).
pub async fn connect(target: &Target, index: usize) -> Result<Ws, BenchError> {
    let socket = TcpSocket::new_v4().map_err(|e| BenchError::io("create socket", e))?;
    let source = target.source_for(index);
    socket
        .bind(source)
        .map_err(|e| BenchError::io(format!("bind {source}"), e))?;
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| BenchError::io(format!("connect to {}", target.addr), e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| BenchError::io("TCP_NODELAY", e))?;
    let url = format!("ws://{}{}", target.addr, target.path);
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config()))
            .await
            .map_err(|e| BenchError::ws("WebSocket handshake", e))?;
    Ok(ws)
}

/// The fields of a server event the tool looks at; the rest is skipped unparsed.
#[derive(Debug, Deserialize)]
pub struct Event<'a> {
    /// The event's `type`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// `content` of a `message_received`.
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    /// `seq` of a `message_received` (ext; absent on the base protocol).
    #[serde(default)]
    pub seq: Option<u64>,
    /// `message` of an `error`.
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
}

impl<'a> Event<'a> {
    /// Parses one text frame.
    pub fn parse(text: &'a str) -> Result<Self, BenchError> {
        serde_json::from_str(text)
            .map_err(|e| BenchError::Protocol(format!("unparsable frame ({e}): {text:.120}")))
    }
}

/// The fast path for the hot frame: `(content, seq)` of a compact `message_received`
/// without a full JSON parse, or `None` to fall back to [`Event::parse`].
///
/// Sound because both servers write compact JSON (no spaces) and `message_received` has no
/// nested objects: inside a JSON string every `"` is escaped, so `"content":"` and
/// `"seq":` can only be keys. Contents with an escape are left to the full parser.
pub fn scan_message_received(text: &str) -> Option<(&str, Option<u64>)> {
    if !text.contains(r#""type":"message_received""#) {
        return None;
    }
    const KEY: &str = r#""content":""#;
    let start = text.find(KEY)? + KEY.len();
    let len = text[start..].find('"')?;
    let content = &text[start..start + len];
    if content.contains('\\') {
        return None;
    }
    let seq = match text.find(r#""seq":"#) {
        Some(at) => {
            let digits = &text[at + 6..];
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            Some(digits[..end].parse().ok()?)
        }
        None => None,
    };
    Some((content, seq))
}

/// A unique username for client `index` of a run: ≤ 20 characters, as both servers
/// require, and distinct between runs (the salt) and between clients.
pub fn username(salt: u32, index: usize) -> String {
    format!("b{}u{index}", salt % 100_000)
}

/// Reads the next text frame, answering nothing else (tungstenite answers pings itself).
async fn next_text(ws: &mut Ws) -> Result<String, BenchError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                return Err(BenchError::Protocol(format!(
                    "closed by the server: {frame:?}"
                )));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(BenchError::ws("read", e)),
            None => return Err(BenchError::Protocol("connection ended".to_owned())),
        }
    }
}

/// Sets the username and joins `room`, returning once `room_users` (the last join reply)
/// arrived. Frames for other members' joins that arrive meanwhile are skipped.
pub async fn join(ws: &mut Ws, username: &str, room: &str) -> Result<(), BenchError> {
    let set = serde_json::json!({"type": "set_username", "username": username}).to_string();
    ws.send(Message::text(set))
        .await
        .map_err(|e| BenchError::ws("send set_username", e))?;
    wait_for(ws, "username_set").await?;
    let join = serde_json::json!({"type": "join_room", "room": room}).to_string();
    ws.send(Message::text(join))
        .await
        .map_err(|e| BenchError::ws("send join_room", e))?;
    wait_for(ws, "room_users").await
}

/// Skips frames until one of type `kind`; an `error` frame fails the join.
async fn wait_for(ws: &mut Ws, kind: &str) -> Result<(), BenchError> {
    // Bounded: a join sees at most the connection frame, its replies, and one
    // `user_joined` per member joining meanwhile; the caller's timeout bounds the rest.
    loop {
        let text = next_text(ws).await?;
        let event = Event::parse(&text)?;
        if event.kind == kind {
            return Ok(());
        }
        if event.kind == "error" {
            return Err(BenchError::Protocol(format!(
                "error while waiting for {kind}: {}",
                event.message.as_deref().unwrap_or("(no message)")
            )));
        }
    }
}

/// Connects client `index` and joins it to `room` within the target's join timeout.
pub async fn connect_and_join(
    target: &Target,
    index: usize,
    username: &str,
    room: &str,
) -> Result<Ws, BenchError> {
    let work = async {
        let mut ws = connect(target, index).await?;
        join(&mut ws, username, room).await?;
        Ok(ws)
    };
    tokio::time::timeout(target.join_timeout, work)
        .await
        .map_err(|_| BenchError::Timeout(format!("join of client {index} ({username})")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_accepted() {
        assert!(Target::new("127.0.0.1:3000".parse().expect("addr")).is_ok());
        assert!(Target::new("127.1.2.3:3000".parse().expect("addr")).is_ok());
        assert!(Target::new("10.0.0.1:3000".parse().expect("addr")).is_err());
        assert!(Target::new("[::1]:3000".parse().expect("addr")).is_err());
    }

    #[test]
    fn sources_cycle_over_127_0_0_x() {
        let mut t = Target::new("127.0.0.1:3000".parse().expect("addr")).expect("target");
        t.source_ips = 3;
        let ips: Vec<String> = (0..4).map(|i| t.source_for(i).ip().to_string()).collect();
        assert_eq!(ips, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
    }

    #[test]
    fn usernames_fit_the_servers_limit() {
        let name = username(u32::MAX, 99_999);
        assert!(name.len() <= 20, "{name}");
        assert_ne!(username(1, 2), username(1, 3));
    }

    #[test]
    fn events_keep_the_fields_the_tool_needs() {
        let e = Event::parse(
            r#"{"type":"message_received","id":"x","room":"r","userId":"u","username":"n","content":"1:2:3","timestamp":"t","seq":7}"#,
        )
        .expect("parse");
        assert_eq!(e.kind, "message_received");
        assert_eq!(e.content.as_deref(), Some("1:2:3"));
        assert_eq!(e.seq, Some(7));
        assert!(Event::parse("not json").is_err());
    }

    #[test]
    fn the_fast_path_agrees_with_the_parser_or_declines() {
        let ours = r#"{"type":"message_received","id":"x","room":"r","userId":"u","username":"n","content":"1:2:3","timestamp":"t","seq":7}"#;
        assert_eq!(scan_message_received(ours), Some(("1:2:3", Some(7))));
        // Node's order, no seq.
        let node = r#"{"id":"x","type":"message_received","room":"r","userId":"u","username":"n","content":"4:5:6","timestamp":"t"}"#;
        assert_eq!(scan_message_received(node), Some(("4:5:6", None)));
        // A username holding the key text is escaped, so it cannot be mistaken for the key.
        let tricky =
            r#"{"type":"message_received","username":"\"content\":\"9:9:9","content":"1:1:1"}"#;
        assert_eq!(scan_message_received(tricky), Some(("1:1:1", None)));
        // Escapes in the content: left to the parser.
        let escaped = r#"{"type":"message_received","content":"a\"b"}"#;
        assert_eq!(scan_message_received(escaped), None);
        assert_eq!(
            scan_message_received(r#"{"type":"user_joined","username":"n"}"#),
            None
        );
        assert_eq!(
            scan_message_received(r#"{"type":"message_received","seq":x,"content":"1"}"#),
            None
        );
    }
}
