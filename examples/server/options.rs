//! Every knob of the engine, the runtime, the WebSocket transport and the store, as a
//! command-line flag with an environment variable and its default (`--help` lists them).

use std::net::SocketAddr;
use std::time::Duration;

use chat_core::{Config, Rate, RuntimeConfig};
use chat_memory_store::MemoryConfig;
use chat_ws_warp::WarpConfig;
use clap::Parser;

/// A rate limit: `BURST/PER_SECOND` (e.g. `10/1`), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateArg(pub(crate) Option<Rate>);

fn parse_rate(s: &str) -> Result<RateArg, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(RateArg(None));
    }
    let (burst, per_second) = s
        .split_once('/')
        .ok_or_else(|| format!("expected BURST/PER_SECOND or off, got {s:?}"))?;
    let burst: u32 = burst.trim().parse().map_err(|e| format!("burst: {e}"))?;
    let per_second: u32 = per_second
        .trim()
        .parse()
        .map_err(|e| format!("per second: {e}"))?;
    if burst == 0 || per_second == 0 {
        return Err("burst and rate must be at least 1 (or say `off`)".into());
    }
    Ok(RateArg(Some(Rate::per_second(burst, per_second))))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// A duration where `off` (or 0) means disabled. (A newtype: clap reads a bare
/// `Option<T>` field as "the flag may be absent".)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OptionalDuration(pub(crate) Option<Duration>);

fn parse_optional_duration(s: &str) -> Result<OptionalDuration, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OptionalDuration(None));
    }
    parse_duration(s).map(|d| OptionalDuration((!d.is_zero()).then_some(d)))
}

/// The example chat server: WebSocket at `/` and `/ws`, the web client at `/`,
/// `/healthz` and `/metrics`, messages kept in memory.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
pub(crate) struct Options {
    /// Address to listen on.
    #[arg(long, env = "CHAT_ADDR", default_value = "127.0.0.1:3000")]
    pub(crate) addr: SocketAddr,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info`, `debug,hyper=info`).
    #[arg(long, env = "CHAT_LOG", default_value = "info")]
    pub(crate) log: String,

    // ---- engine -------------------------------------------------------------------
    /// Messages sent with a plain join.
    #[arg(
        long,
        env = "CHAT_JOIN_HISTORY",
        default_value_t = 50,
        help_heading = "Engine"
    )]
    pub(crate) join_history: usize,
    /// Most messages in one history page (larger `limit`s are clamped).
    #[arg(
        long,
        env = "CHAT_HISTORY_PAGE_MAX",
        default_value_t = 100,
        help_heading = "Engine"
    )]
    pub(crate) history_page_max: usize,
    /// Most messages a resume replays; more missed → `recovered: false`.
    #[arg(
        long,
        env = "CHAT_RESUME_MAX",
        default_value_t = 500,
        help_heading = "Engine"
    )]
    pub(crate) resume_max: usize,
    /// Rooms one connection may be in.
    #[arg(
        long,
        env = "CHAT_MAX_ROOMS_PER_CONNECTION",
        default_value_t = 100,
        help_heading = "Engine"
    )]
    pub(crate) max_rooms_per_connection: usize,
    /// Connections one authenticated user may hold.
    #[arg(
        long,
        env = "CHAT_MAX_CONNECTIONS_PER_USER",
        default_value_t = 32,
        help_heading = "Engine"
    )]
    pub(crate) max_connections_per_user: usize,
    /// Commands a connection may queue behind one waiting for the store.
    #[arg(
        long,
        env = "CHAT_MAX_QUEUED_COMMANDS",
        default_value_t = 32,
        help_heading = "Engine"
    )]
    pub(crate) max_queued_commands: usize,
    /// A typing indicator stops by itself after this long without news.
    #[arg(long, env = "CHAT_TYPING_TIMEOUT", default_value = "5s", value_parser = parse_duration, help_heading = "Engine")]
    pub(crate) typing_timeout: Duration,
    /// Chat messages + DMs per connection: BURST/PER_SECOND or off.
    #[arg(long, env = "CHAT_MESSAGE_RATE", default_value = "10/1", value_parser = parse_rate, help_heading = "Engine")]
    pub(crate) message_rate: RateArg,
    /// typing_start/typing_stop per connection: BURST/PER_SECOND or off.
    #[arg(long, env = "CHAT_TYPING_RATE", default_value = "10/2", value_parser = parse_rate, help_heading = "Engine")]
    pub(crate) typing_rate: RateArg,
    /// Joins per connection: BURST/PER_SECOND or off.
    #[arg(long, env = "CHAT_JOIN_RATE", default_value = "10/1", value_parser = parse_rate, help_heading = "Engine")]
    pub(crate) join_rate: RateArg,
    /// History pages per connection: BURST/PER_SECOND or off.
    #[arg(long, env = "CHAT_HISTORY_RATE", default_value = "10/2", value_parser = parse_rate, help_heading = "Engine")]
    pub(crate) history_rate: RateArg,
    /// Refused requests before a connection is closed with 1008: BURST/PER_SECOND or off.
    #[arg(long, env = "CHAT_REFUSAL_BUDGET", default_value = "30/1", value_parser = parse_rate, help_heading = "Engine")]
    pub(crate) refusal_budget: RateArg,

    // ---- runtime ------------------------------------------------------------------
    /// Most connections at once (handshakes included); more get 503.
    #[arg(
        long,
        env = "CHAT_MAX_CONNECTIONS",
        default_value_t = 10_000,
        help_heading = "Runtime"
    )]
    pub(crate) max_connections: usize,
    /// Frames queued for one connection before it counts as a slow reader.
    #[arg(
        long,
        env = "CHAT_OUTBOUND_FRAMES",
        default_value_t = 1024,
        help_heading = "Runtime"
    )]
    pub(crate) outbound_frames: usize,
    /// Bytes queued for one connection before it counts as a slow reader.
    #[arg(long, env = "CHAT_OUTBOUND_BYTES", default_value_t = 4 << 20, help_heading = "Runtime")]
    pub(crate) outbound_bytes: usize,
    /// Frames written per batch (one flush per batch).
    #[arg(
        long,
        env = "CHAT_WRITE_BATCH",
        default_value_t = 64,
        help_heading = "Runtime"
    )]
    pub(crate) write_batch: usize,
    /// A batch write taking longer closes the connection with 1013.
    #[arg(long, env = "CHAT_WRITE_TIMEOUT", default_value = "15s", value_parser = parse_duration, help_heading = "Runtime")]
    pub(crate) write_timeout: Duration,
    /// Ping interval; a peer silent for two intervals is dropped (`off` disables).
    #[arg(long, env = "CHAT_HEARTBEAT", default_value = "30s", value_parser = parse_optional_duration, help_heading = "Runtime")]
    pub(crate) heartbeat: OptionalDuration,
    /// Time for a connection's handshake and admission.
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration, help_heading = "Runtime")]
    pub(crate) handshake_timeout: Duration,
    /// Time allowed to write a close frame.
    #[arg(long, env = "CHAT_CLOSE_TIMEOUT", default_value = "2s", value_parser = parse_duration, help_heading = "Runtime")]
    pub(crate) close_timeout: Duration,
    /// On Ctrl-C, time to flush queues and close every connection with 1001.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration, help_heading = "Runtime")]
    pub(crate) shutdown_grace: Duration,
    /// Inputs waiting for the hub before readers pause (TCP backpressure).
    #[arg(
        long,
        env = "CHAT_HUB_QUEUE",
        default_value_t = 1024,
        help_heading = "Runtime"
    )]
    pub(crate) hub_queue: usize,

    // ---- WebSocket transport ------------------------------------------------------
    /// Largest WebSocket frame accepted; larger → close 1009.
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = 64 * 1024, help_heading = "WebSocket")]
    pub(crate) max_frame_bytes: usize,
    /// Largest WebSocket message (all fragments) accepted; larger → close 1009.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, help_heading = "WebSocket")]
    pub(crate) max_message_bytes: usize,
    /// Bytes a socket may hold unsent before writes wait.
    #[arg(long, env = "CHAT_MAX_WRITE_BUFFER_BYTES", default_value_t = 8 << 20, help_heading = "WebSocket")]
    pub(crate) max_write_buffer_bytes: usize,
    /// Handshakes waiting for admission at once; more get 503.
    #[arg(
        long,
        env = "CHAT_ACCEPT_BACKLOG",
        default_value_t = 1024,
        help_heading = "WebSocket"
    )]
    pub(crate) accept_backlog: usize,
    /// Time to read a request's headers.
    #[arg(long, env = "CHAT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration, help_heading = "WebSocket")]
    pub(crate) header_read_timeout: Duration,
    /// Most request headers.
    #[arg(
        long,
        env = "CHAT_MAX_REQUEST_HEADERS",
        default_value_t = 64,
        help_heading = "WebSocket"
    )]
    pub(crate) max_request_headers: usize,
    /// Most bytes of request headers.
    #[arg(long, env = "CHAT_MAX_REQUEST_HEADER_BYTES", default_value_t = 16 * 1024, help_heading = "WebSocket")]
    pub(crate) max_request_header_bytes: usize,
    /// Most HTTP connections not yet upgraded.
    #[arg(
        long,
        env = "CHAT_MAX_HTTP_CONNECTIONS",
        default_value_t = 10_000,
        help_heading = "WebSocket"
    )]
    pub(crate) max_http_connections: usize,
    /// Paths that accept WebSocket upgrades, comma-separated.
    #[arg(
        long,
        env = "CHAT_SOCKET_PATHS",
        default_value = "/,/ws",
        value_delimiter = ',',
        help_heading = "WebSocket"
    )]
    pub(crate) socket_paths: Vec<String>,
    /// Time the transport waits for a close frame to be written.
    #[arg(long, env = "CHAT_WS_CLOSE_TIMEOUT", default_value = "1s", value_parser = parse_duration, help_heading = "WebSocket")]
    pub(crate) ws_close_timeout: Duration,
    /// Do not serve the web client at `/` (socket, /healthz and /metrics only).
    #[arg(long, env = "CHAT_NO_WEB_CLIENT", help_heading = "WebSocket")]
    pub(crate) no_web_client: bool,

    // ---- store --------------------------------------------------------------------
    /// Messages kept per room.
    #[arg(
        long,
        env = "CHAT_ROOM_HISTORY",
        default_value_t = 1000,
        help_heading = "Store"
    )]
    pub(crate) room_history: usize,
    /// Messages kept per DM conversation.
    #[arg(
        long,
        env = "CHAT_DM_HISTORY",
        default_value_t = 1000,
        help_heading = "Store"
    )]
    pub(crate) dm_history: usize,
    /// Rooms kept at most.
    #[arg(
        long,
        env = "CHAT_STORE_MAX_ROOMS",
        default_value_t = 10_000,
        help_heading = "Store"
    )]
    pub(crate) store_max_rooms: usize,
    /// DM conversations kept at most.
    #[arg(
        long,
        env = "CHAT_STORE_MAX_DM_CONVERSATIONS",
        default_value_t = 100_000,
        help_heading = "Store"
    )]
    pub(crate) store_max_dm_conversations: usize,
}

impl Options {
    /// The engine's configuration.
    pub(crate) fn engine(&self) -> Config {
        Config {
            join_history: self.join_history,
            history_page_max: self.history_page_max,
            resume_max: self.resume_max,
            max_rooms_per_connection: self.max_rooms_per_connection,
            max_connections_per_user: self.max_connections_per_user,
            max_queued_commands: self.max_queued_commands,
            typing_timeout: self.typing_timeout,
            message_rate: self.message_rate.0,
            typing_rate: self.typing_rate.0,
            join_rate: self.join_rate.0,
            history_rate: self.history_rate.0,
            refusal_budget: self.refusal_budget.0,
        }
    }

    /// The runtime's configuration.
    pub(crate) fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            hub_queue: self.hub_queue,
            outbound_frames: self.outbound_frames,
            outbound_bytes: self.outbound_bytes,
            write_batch: self.write_batch,
            write_timeout: self.write_timeout,
            heartbeat_interval: self.heartbeat.0,
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            shutdown_grace: self.shutdown_grace,
            max_connections: self.max_connections,
        }
    }

    /// The WebSocket transport's configuration (metrics are attached by the caller).
    pub(crate) fn warp(&self) -> WarpConfig {
        WarpConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_message_bytes: self.max_message_bytes,
            max_write_buffer_bytes: self.max_write_buffer_bytes,
            handshake_timeout: self.handshake_timeout,
            accept_backlog: self.accept_backlog,
            socket_paths: self.socket_paths.clone(),
            close_timeout: self.ws_close_timeout,
            serve_web_client: !self.no_web_client,
            header_read_timeout: self.header_read_timeout,
            max_request_headers: self.max_request_headers,
            max_request_header_bytes: self.max_request_header_bytes,
            max_http_connections: self.max_http_connections,
            ..WarpConfig::default()
        }
    }

    /// The store's configuration.
    pub(crate) fn store(&self) -> MemoryConfig {
        MemoryConfig {
            room_history: self.room_history,
            dm_history: self.dm_history,
            max_rooms: self.store_max_rooms,
            max_dm_conversations: self.store_max_dm_conversations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_libraries() {
        let o = Options::parse_from(["server"]);
        assert_eq!(o.engine(), Config::default());
        let (r, d) = (o.runtime(), RuntimeConfig::default());
        assert_eq!(
            (
                r.hub_queue,
                r.outbound_frames,
                r.outbound_bytes,
                r.write_batch,
                r.write_timeout
            ),
            (
                d.hub_queue,
                d.outbound_frames,
                d.outbound_bytes,
                d.write_batch,
                d.write_timeout
            )
        );
        assert_eq!(
            (
                r.heartbeat_interval,
                r.handshake_timeout,
                r.close_timeout,
                r.shutdown_grace,
                r.max_connections
            ),
            (
                d.heartbeat_interval,
                d.handshake_timeout,
                d.close_timeout,
                d.shutdown_grace,
                d.max_connections
            )
        );
        let (w, dw) = (o.warp(), WarpConfig::default());
        assert_eq!(
            (
                w.max_frame_bytes,
                w.max_message_bytes,
                w.max_write_buffer_bytes,
                w.accept_backlog
            ),
            (
                dw.max_frame_bytes,
                dw.max_message_bytes,
                dw.max_write_buffer_bytes,
                dw.accept_backlog
            )
        );
        assert_eq!(
            (
                w.header_read_timeout,
                w.max_request_headers,
                w.max_request_header_bytes,
                w.max_http_connections
            ),
            (
                dw.header_read_timeout,
                dw.max_request_headers,
                dw.max_request_header_bytes,
                dw.max_http_connections
            )
        );
        assert_eq!(w.serve_web_client, dw.serve_web_client);
        assert_eq!(
            (&w.socket_paths, w.close_timeout),
            (&dw.socket_paths, dw.close_timeout)
        );
        let (s, ds) = (o.store(), MemoryConfig::default());
        assert_eq!(
            (
                s.room_history,
                s.dm_history,
                s.max_rooms,
                s.max_dm_conversations
            ),
            (
                ds.room_history,
                ds.dm_history,
                ds.max_rooms,
                ds.max_dm_conversations
            )
        );
    }

    #[test]
    fn rates_parse_and_can_be_switched_off() {
        assert_eq!(
            parse_rate("10/1"),
            Ok(RateArg(Some(Rate::per_second(10, 1))))
        );
        assert_eq!(parse_rate("OFF"), Ok(RateArg(None)));
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("0/1").is_err());
        assert_eq!(parse_optional_duration("off"), Ok(OptionalDuration(None)));
        assert_eq!(parse_optional_duration("0s"), Ok(OptionalDuration(None)));
        assert_eq!(
            parse_optional_duration("30s"),
            Ok(OptionalDuration(Some(Duration::from_secs(30))))
        );
    }
}
