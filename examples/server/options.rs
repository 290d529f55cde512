//! Every knob of the engine, the runtime, the WebSocket transport, the store and the
//! admission policies, as a command-line flag with an environment variable and its
//! default (`--help` lists them).

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_auth::{
    Chain, InvalidOrigin, JwtAlgorithm, JwtAuth, JwtConfig, JwtConfigError, OriginAllowList,
    PerIpConfig, PerIpLimits,
};
use chat_core::{Config, NodeId, Rate, RuntimeConfig, TrustedProxies};
use chat_memory_store::MemoryConfig;
use chat_redis::RedisClusterConfig;
use chat_sqlite_store::{Retention, SqliteConfig, Synchronous};
use chat_ws_warp::WarpConfig;
use clap::{ArgAction, ArgGroup, Parser, ValueEnum};

use crate::stores::StoreChoice;

/// `--sqlite-synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SynchronousArg {
    /// Sync the WAL at every commit.
    Full,
    /// Sync only at checkpoints.
    Normal,
}
use thiserror::Error;

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

/// A count where `off` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OptionalCount(pub(crate) Option<u32>);

fn parse_optional_count(s: &str) -> Result<OptionalCount, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OptionalCount(None));
    }
    match s.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1 (or say `off`)".into()),
        Ok(n) => Ok(OptionalCount(Some(n))),
        Err(e) => Err(format!("expected a number or off: {e}")),
    }
}

fn parse_trusted_proxies(s: &str) -> Result<TrustedProxies, String> {
    s.parse()
        .map_err(|e: chat_core::proxies::InvalidProxy| e.to_string())
}

/// A secret from the command line or the environment. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret(s.to_owned()))
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
/// `/healthz` and `/metrics`, messages kept in SQLite (`chat-data/chat.db`) by default.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
#[command(group = ArgGroup::new("jwt_key").multiple(false))]
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
    /// Outbound bytes all connections together may hold (queues plus batches being
    /// written); past it the connections holding the most (at least 64 KiB each) are
    /// closed with 1013 "server busy". Default 67108864 (64 MiB).
    #[arg(long, env = "CHAT_OUTBOUND_GLOBAL_BYTES", default_value_t = 64 << 20, help_heading = "Runtime")]
    pub(crate) outbound_global_bytes: usize,
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
    /// After a close frame, time to keep reading (and discarding) until the peer's close,
    /// so a peer that is still sending gets what was queued instead of a reset (`0s`: off).
    #[arg(long, env = "CHAT_CLOSE_LINGER", default_value = "2s", value_parser = parse_duration, help_heading = "Runtime")]
    pub(crate) close_linger: Duration,
    /// After a close frame, most bytes read and discarded before the socket is dropped.
    #[arg(long, env = "CHAT_CLOSE_LINGER_BYTES", default_value_t = 1 << 20, help_heading = "Runtime")]
    pub(crate) close_linger_bytes: usize,
    /// On Ctrl-C or SIGTERM, time to flush queues and close every connection with 1001.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration, help_heading = "Runtime")]
    pub(crate) shutdown_grace: Duration,
    /// Longest one store operation may take, counted from the request; past it the client
    /// gets `store_timeout` (an append that may still commit: resend with the same
    /// clientMsgId) or `store_unavailable` (it never reached the store).
    #[arg(long, env = "CHAT_STORE_TIMEOUT", default_value = "10s", value_parser = parse_duration, help_heading = "Runtime")]
    pub(crate) store_timeout: Duration,
    /// Most store operations running at once; further requests wait in order.
    #[arg(
        long,
        env = "CHAT_STORE_CONCURRENCY",
        default_value_t = 64,
        help_heading = "Runtime"
    )]
    pub(crate) store_concurrency: usize,
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
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = chat_core::MAX_FRAME_BYTES, help_heading = "WebSocket")]
    pub(crate) max_frame_bytes: usize,
    /// Largest WebSocket message (all fragments) accepted; larger → close 1009.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = chat_core::MAX_FRAME_BYTES, help_heading = "WebSocket")]
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
    /// Most HTTP connections not yet upgraded from one peer address, or off; past it a
    /// connection gets 429 and is closed. Trusted proxies and (unless --limit-loopback)
    /// loopback peers are not counted.
    #[arg(long, env = "CHAT_MAX_HTTP_CONNECTIONS_PER_IP", default_value = "256", value_parser = parse_optional_count, help_heading = "WebSocket")]
    pub(crate) max_http_connections_per_ip: OptionalCount,
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

    // ---- admission: authentication, Origin, per-IP limits -------------------------
    /// Require a JWT signed with this HS256 shared secret (at least 32 bytes) on every
    /// connection, by `?token=` or `Authorization: Bearer`. Off when no key is given.
    #[arg(long, env = "CHAT_JWT_HS256_SECRET", hide_env_values = true, value_parser = parse_secret, group = "jwt_key", help_heading = "Security")]
    pub(crate) jwt_hs256_secret: Option<Secret>,
    /// Require a JWT signed with RS256; the RSA public key is in this PEM file.
    #[arg(
        long,
        env = "CHAT_JWT_RS256_PUBLIC_KEY",
        value_name = "PEM_FILE",
        group = "jwt_key",
        help_heading = "Security"
    )]
    pub(crate) jwt_rs256_public_key: Option<PathBuf>,
    /// Require a JWT signed with EdDSA (Ed25519); the public key is in this PEM file.
    #[arg(
        long,
        env = "CHAT_JWT_EDDSA_PUBLIC_KEY",
        value_name = "PEM_FILE",
        group = "jwt_key",
        help_heading = "Security"
    )]
    pub(crate) jwt_eddsa_public_key: Option<PathBuf>,
    /// The token's `iss` must be this.
    #[arg(
        long,
        env = "CHAT_JWT_ISSUER",
        requires = "jwt_key",
        help_heading = "Security"
    )]
    pub(crate) jwt_issuer: Option<String>,
    /// The token's `aud` must name this (without it, tokens carrying an `aud` are refused).
    #[arg(
        long,
        env = "CHAT_JWT_AUDIENCE",
        requires = "jwt_key",
        help_heading = "Security"
    )]
    pub(crate) jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`; a session lasts until `exp` plus this.
    #[arg(long, env = "CHAT_JWT_LEEWAY", default_value = "30s", value_parser = parse_duration, help_heading = "Security")]
    pub(crate) jwt_leeway: Duration,
    /// Refuse tokens without a `name` claim (by default `sub` is used as the name).
    #[arg(long, env = "CHAT_JWT_REQUIRE_NAME", help_heading = "Security")]
    pub(crate) jwt_require_name: bool,
    /// Only pages from these origins may connect (exact scheme://host[:port],
    /// comma-separated; others get 403). Include this server's own origin to keep the
    /// built-in web client working. Off when empty.
    #[arg(
        long,
        env = "CHAT_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS",
        help_heading = "Security"
    )]
    pub(crate) allowed_origins: Vec<String>,
    /// With --allowed-origins: accept handshakes without an Origin header (non-browser
    /// clients; browsers always send one).
    #[arg(long, env = "CHAT_ALLOW_MISSING_ORIGIN", default_value_t = true, action = ArgAction::Set, help_heading = "Security")]
    pub(crate) allow_missing_origin: bool,
    /// Connections one client address may hold open (more get 429), or off. Loopback
    /// peers that are not trusted proxies are not limited per IP unless --limit-loopback.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value = "64", value_parser = parse_optional_count, help_heading = "Security")]
    pub(crate) max_connections_per_ip: OptionalCount,
    /// New connections per client address: BURST/PER_SECOND (more get 429), or off.
    /// Loopback peers are exempt as above.
    #[arg(long, env = "CHAT_CONNECTIONS_PER_IP_RATE", default_value = "20/5", value_parser = parse_rate, help_heading = "Security")]
    pub(crate) connections_per_ip_rate: RateArg,
    /// Apply the per-IP limits (connections, rate, HTTP connections) to loopback peers
    /// too. By default a loopback peer (127.0.0.0/8, ::1) that is not a trusted proxy is
    /// not limited per IP — it is this machine: a test suite, a health checker — while
    /// every other limit still applies.
    #[arg(long, env = "CHAT_LIMIT_LOOPBACK", help_heading = "Security")]
    pub(crate) limit_loopback: bool,
    /// Reverse proxies to believe, as CIDR blocks or addresses, comma-separated (e.g.
    /// `127.0.0.1,10.0.0.0/8`). From these peers the client address is the right-most
    /// untrusted one of X-Forwarded-For (preferred when present) or Forwarded; per-IP
    /// limits count it and logs show it. From any other peer those headers change
    /// nothing. Default: none.
    #[arg(long, env = "CHAT_TRUSTED_PROXIES", value_name = "CIDRS", value_parser = parse_trusted_proxies, help_heading = "Security")]
    pub(crate) trusted_proxies: Option<TrustedProxies>,

    // ---- store --------------------------------------------------------------------
    /// Where messages are kept: `sqlite:PATH` (one file, created on first start;
    /// history survives restarts), `postgres://USER@HOST:PORT/DB` (several servers may
    /// share it) or `memory` (lost at exit; for benchmarks).
    #[arg(
        long,
        env = "CHAT_STORE",
        default_value = crate::stores::DEFAULT_STORE,
        value_name = "STORE",
        help_heading = "Store"
    )]
    pub(crate) store: StoreChoice,
    /// SQLite store: `full` syncs the WAL at every commit (an acknowledged message
    /// survives a power loss); `normal` does not (it survives a process crash only).
    #[arg(
        long,
        env = "CHAT_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value_t = SynchronousArg::Full,
        help_heading = "Store"
    )]
    pub(crate) sqlite_synchronous: SynchronousArg,
    /// SQLite and PostgreSQL stores: keep only the newest N messages per room and DM conversation
    /// (older ones are deleted in the background), or `off` to keep all.
    #[arg(long, env = "CHAT_RETENTION_KEEP_LAST", value_name = "N", value_parser = parse_optional_count, default_value = "off", help_heading = "Store")]
    pub(crate) retention_keep_last: OptionalCount,
    /// SQLite and PostgreSQL stores: delete messages older than this (e.g. `30days`), or `off`.
    #[arg(long, env = "CHAT_RETENTION_MAX_AGE", value_name = "DURATION", value_parser = parse_optional_duration, default_value = "off", help_heading = "Store")]
    pub(crate) retention_max_age: OptionalDuration,
    /// Memory store: messages kept per room.
    #[arg(
        long,
        env = "CHAT_ROOM_HISTORY",
        default_value_t = 1000,
        help_heading = "Store"
    )]
    pub(crate) room_history: usize,
    /// Memory store: messages kept per DM conversation.
    #[arg(
        long,
        env = "CHAT_DM_HISTORY",
        default_value_t = 1000,
        help_heading = "Store"
    )]
    pub(crate) dm_history: usize,
    /// Memory store: rooms kept at most; a new room beyond it forgets the least recently used ones.
    #[arg(
        long,
        env = "CHAT_STORE_MAX_ROOMS",
        default_value_t = 10_000,
        help_heading = "Store"
    )]
    pub(crate) store_max_rooms: usize,
    /// Memory store: DM conversations kept at most; beyond it, the least recently used are forgotten.
    #[arg(
        long,
        env = "CHAT_STORE_MAX_DM_CONVERSATIONS",
        default_value_t = 100_000,
        help_heading = "Store"
    )]
    pub(crate) store_max_dm_conversations: usize,
    /// Bytes the in-memory store may hold (messages plus per-stream overhead); past it
    /// the least recently used rooms and conversations are forgotten (their next message
    /// starts a new epoch). Default 268435456 (256 MiB).
    #[arg(
        long,
        env = "CHAT_STORE_MAX_BYTES",
        default_value_t = chat_memory_store::DEFAULT_MAX_BYTES,
        help_heading = "Store"
    )]
    pub(crate) store_max_bytes: usize,

    // ---- cluster ------------------------------------------------------------------
    /// Join a cluster through this Redis (`redis://HOST:PORT`): several servers behind a
    /// load balancer then share rooms, presence, usernames and DMs. Needs
    /// `--store postgres://…`, the same database for every node. Without it the server
    /// is a single node.
    #[arg(long, env = "CHAT_REDIS", value_name = "URL", help_heading = "Cluster")]
    pub(crate) redis: Option<String>,
    /// This node's id in the cluster (1 to 64 of A-Z a-z 0-9 _ -), unique among the
    /// running nodes; a restarted node may reuse its id. Default: a random one.
    #[arg(long, env = "CHAT_NODE_ID", value_name = "ID", value_parser = parse_node_id, help_heading = "Cluster")]
    pub(crate) node_id: Option<NodeId>,
    /// Prefix of the cluster's Redis keys and channels (several clusters may share
    /// one Redis).
    #[arg(
        long,
        env = "CHAT_CLUSTER_PREFIX",
        default_value = "chat:",
        help_heading = "Cluster"
    )]
    pub(crate) cluster_prefix: String,
    /// A node that stops renewing its lease (crash, partition) is removed from every
    /// member list after this long, plus a quarter of it (the renewal period).
    #[arg(long, env = "CHAT_CLUSTER_LEASE", default_value = "10s", value_parser = parse_duration, help_heading = "Cluster")]
    pub(crate) cluster_lease: Duration,
}

fn parse_node_id(s: &str) -> Result<NodeId, String> {
    NodeId::parse(s).map_err(|e| e.to_string())
}

/// Why the cluster flags cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ClusterFlagError {
    /// `--redis` with a store other nodes cannot share.
    #[error(
        "--redis needs a store every node shares: add --store postgres://USER@HOST:PORT/DB \
         (the same database for every node; `{0}` is private to this process)"
    )]
    StoreNotShared(String),
}

impl Options {
    /// The engine's configuration.
    pub(crate) fn engine(&self) -> Config {
        // `cluster` stays off: `Server::with_cluster` sets it when the server joins one.
        Config::default()
            .with_join_history(self.join_history)
            .with_history_page_max(self.history_page_max)
            .with_resume_max(self.resume_max)
            .with_max_rooms_per_connection(self.max_rooms_per_connection)
            .with_max_connections_per_user(self.max_connections_per_user)
            .with_max_queued_commands(self.max_queued_commands)
            .with_typing_timeout(self.typing_timeout)
            .with_message_rate(self.message_rate.0)
            .with_typing_rate(self.typing_rate.0)
            .with_join_rate(self.join_rate.0)
            .with_history_rate(self.history_rate.0)
            .with_refusal_budget(self.refusal_budget.0)
    }

    /// The runtime's configuration.
    pub(crate) fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig::default()
            .with_hub_queue(self.hub_queue)
            .with_outbound_frames(self.outbound_frames)
            .with_outbound_bytes(self.outbound_bytes)
            .with_outbound_global_bytes(self.outbound_global_bytes)
            .with_write_batch(self.write_batch)
            .with_write_timeout(self.write_timeout)
            .with_heartbeat_interval(self.heartbeat.0)
            .with_handshake_timeout(self.handshake_timeout)
            .with_close_timeout(self.close_timeout)
            .with_close_linger(self.close_linger)
            .with_close_linger_bytes(self.close_linger_bytes)
            .with_shutdown_grace(self.shutdown_grace)
            .with_max_connections(self.max_connections)
            .with_store_timeout(self.store_timeout)
            .with_store_concurrency(self.store_concurrency)
    }

    /// The WebSocket transport's configuration (metrics are attached by the caller).
    pub(crate) fn warp(&self) -> WarpConfig {
        WarpConfig::default()
            .with_max_frame_bytes(self.max_frame_bytes)
            .with_max_message_bytes(self.max_message_bytes)
            .with_max_write_buffer_bytes(self.max_write_buffer_bytes)
            .with_handshake_timeout(self.handshake_timeout)
            .with_accept_backlog(self.accept_backlog)
            .with_socket_paths(self.socket_paths.clone())
            .with_close_timeout(self.ws_close_timeout)
            .with_serve_web_client(!self.no_web_client)
            .with_header_read_timeout(self.header_read_timeout)
            .with_max_request_headers(self.max_request_headers)
            .with_max_request_header_bytes(self.max_request_header_bytes)
            .with_max_http_connections(self.max_http_connections)
            .with_max_http_connections_per_ip(
                self.max_http_connections_per_ip
                    .0
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            )
            .with_trusted_proxies(self.trusted_proxies.clone().unwrap_or_default())
            .with_exempt_loopback(!self.limit_loopback)
    }

    /// The admission policies, in the order they run: Origin (cheapest, and a foreign
    /// page learns nothing more), per-IP limits (before any signature work), JWT. Reads
    /// the public key file when one is configured.
    pub(crate) fn admission(&self) -> Result<Chain, SecurityError> {
        let origins = if self.allowed_origins.is_empty() {
            None
        } else {
            Some(
                OriginAllowList::new(&self.allowed_origins)?
                    .allow_missing(self.allow_missing_origin),
            )
        };
        let per_ip = PerIpConfig::default()
            .with_max_connections(self.max_connections_per_ip.0)
            .with_rate(self.connections_per_ip_rate.0)
            .with_exempt_loopback(!self.limit_loopback);
        let per_ip = (per_ip.max_connections.is_some() || per_ip.rate.is_some())
            .then(|| PerIpLimits::new(per_ip));
        let jwt = self.jwt()?.map(JwtAuth::new).transpose()?;
        Ok(Chain::new()
            .then_maybe(origins)
            .then_maybe(per_ip)
            .then_maybe(jwt))
    }

    /// The JWT configuration, if a key was given.
    pub(crate) fn jwt(&self) -> Result<Option<JwtConfig>, SecurityError> {
        let algorithm = if let Some(Secret(secret)) = &self.jwt_hs256_secret {
            JwtAlgorithm::Hs256 {
                secret: secret.clone().into_bytes(),
            }
        } else if let Some(path) = &self.jwt_rs256_public_key {
            JwtAlgorithm::Rs256 {
                public_key_pem: read_key(path)?,
            }
        } else if let Some(path) = &self.jwt_eddsa_public_key {
            JwtAlgorithm::EdDsa {
                public_key_pem: read_key(path)?,
            }
        } else {
            return Ok(None);
        };
        Ok(Some(
            JwtConfig::new(algorithm)
                .with_issuer(self.jwt_issuer.clone())
                .with_audience(self.jwt_audience.clone())
                .with_leeway(self.jwt_leeway)
                .with_require_name(self.jwt_require_name),
        ))
    }

    /// One line for the startup log: which policies are on (never a key).
    pub(crate) fn admission_summary(&self) -> String {
        let mut on = Vec::new();
        if !self.allowed_origins.is_empty() {
            on.push(format!(
                "Origin allow-list ({} origins, missing Origin {})",
                self.allowed_origins.len(),
                if self.allow_missing_origin {
                    "accepted"
                } else {
                    "refused"
                }
            ));
        }
        if let Some(max) = self.max_connections_per_ip.0 {
            on.push(format!("{max} connections per IP"));
        }
        if let Some(rate) = self.connections_per_ip_rate.0 {
            on.push(format!(
                "new connections per IP: burst {} then one per {:?}",
                rate.burst, rate.interval
            ));
        }
        if (self.max_connections_per_ip.0.is_some() || self.connections_per_ip_rate.0.is_some())
            && !self.limit_loopback
        {
            on.push("loopback not limited per IP".into());
        }
        if let Some(proxies) = self.trusted_proxies.as_ref().filter(|p| !p.is_empty()) {
            on.push(format!("trusted proxies {proxies}"));
        }
        let jwt = if self.jwt_hs256_secret.is_some() {
            Some("HS256")
        } else if self.jwt_rs256_public_key.is_some() {
            Some("RS256")
        } else if self.jwt_eddsa_public_key.is_some() {
            Some("EdDSA")
        } else {
            None
        };
        match jwt {
            Some(alg) => on.push(format!("JWT {alg} required")),
            None => on.push("anonymous (no JWT)".into()),
        }
        on.join(", ")
    }

    /// The SQLite store's configuration.
    pub(crate) fn sqlite_store(&self) -> SqliteConfig {
        SqliteConfig::default()
            .with_synchronous(match self.sqlite_synchronous {
                SynchronousArg::Full => Synchronous::Full,
                SynchronousArg::Normal => Synchronous::Normal,
            })
            .with_retention(
                Retention::default()
                    .with_keep_last(
                        self.retention_keep_last
                            .0
                            .map(|n| NonZeroU64::new(u64::from(n)).unwrap_or(NonZeroU64::MIN)),
                    )
                    .with_max_age(self.retention_max_age.0),
            )
    }

    /// The PostgreSQL store's configuration for the database at `url`. Its own timeout
    /// is half the runtime's store timeout, so its answer (unavailable, or outcome
    /// unknown) arrives before the runtime gives up on the operation.
    pub(crate) fn postgres_store(&self, url: &str) -> chat_postgres_store::PostgresConfig {
        chat_postgres_store::PostgresConfig::new(url)
            .with_timeout(self.store_timeout / 2)
            .with_retention(
                chat_postgres_store::Retention::default()
                    .with_keep_last_per_room(self.retention_keep_last.0.map(u64::from))
                    .with_keep_last_per_conversation(self.retention_keep_last.0.map(u64::from))
                    .with_max_age(self.retention_max_age.0),
            )
    }

    /// The cluster bus's configuration: `None` for a single node (no `--redis`); an
    /// error when `--redis` comes with a store the nodes cannot share.
    pub(crate) fn cluster(&self) -> Result<Option<RedisClusterConfig>, ClusterFlagError> {
        let Some(url) = &self.redis else {
            return Ok(None);
        };
        if !matches!(self.store, StoreChoice::Postgres(_)) {
            return Err(ClusterFlagError::StoreNotShared(self.store.to_string()));
        }
        let mut config = RedisClusterConfig::new(url.as_str())
            .prefix(self.cluster_prefix.as_str())
            .lease(self.cluster_lease);
        if let Some(node) = &self.node_id {
            config = config.node_id(node.as_str());
        }
        Ok(Some(config))
    }

    /// The memory store's configuration.
    pub(crate) fn memory_store(&self) -> MemoryConfig {
        MemoryConfig::default()
            .with_room_history(self.room_history)
            .with_dm_history(self.dm_history)
            .with_max_rooms(self.store_max_rooms)
            .with_max_dm_conversations(self.store_max_dm_conversations)
            .with_max_bytes(self.store_max_bytes)
    }
}

/// Why the admission flags cannot be used.
#[derive(Debug, Error)]
pub(crate) enum SecurityError {
    /// A public key file could not be read.
    #[error("cannot read the JWT public key {path}: {source}")]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The JWT settings are invalid (short secret, not a public key…).
    #[error(transparent)]
    Jwt(#[from] JwtConfigError),
    /// An entry of `--allowed-origins` is not an origin.
    #[error(transparent)]
    Origin(#[from] InvalidOrigin),
}

fn read_key(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::ReadKey {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
