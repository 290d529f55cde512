//! # chat-auth
//!
//! Who may connect to a `chat-core` server, and as whom: composable
//! [`Admission`](chat_core::Admission) policies that run on every handshake *before* the
//! WebSocket upgrade, so a refused client gets a plain HTTP status and nothing else.
//!
//! | policy | refuses with | what it checks |
//! |---|---|---|
//! | [`OriginAllowList`] | 403 | the `Origin` header is one of a fixed list (exact scheme, host, port) |
//! | [`PerIpLimits`] | 429 | connections held and opened per client address |
//! | [`JwtAuth`] | 401 | a JWT in `?token=` or `Authorization: Bearer`; its `sub` and `name` become the user |
//!
//! [`Chain`] stacks them. The global connection cap (503) is the runtime's own
//! ([`RuntimeConfig::max_connections`](chat_core::RuntimeConfig::max_connections)).
//!
//! ```
//! use std::sync::Arc;
//!
//! use chat_auth::{Chain, JwtAlgorithm, JwtAuth, JwtConfig, OriginAllowList, PerIpConfig, PerIpLimits};
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = std::env::var("CHAT_JWT_HS256_SECRET")?.into_bytes();
//! let admission = Chain::new()
//!     .then(OriginAllowList::new(["https://chat.example"])?)
//!     .then(PerIpLimits::new(PerIpConfig::default()))
//!     .then(JwtAuth::new(JwtConfig::new(JwtAlgorithm::Hs256 { secret }))?);
//! let store = Arc::new(chat_memory_store::MemoryStore::new());
//! let server = chat_core::Server::new(Default::default(), Default::default(), store)
//!     .with_admission(Arc::new(admission));
//! # drop(server);
//! # Ok(())
//! # }
//! ```
//!
//! With a token, the connection's user id is the token's `sub` (shared by all of that
//! user's connections: presence counts the user once), its display name is the token's
//! `name` — disambiguated (`John Smith (2)`) when another online user already shows
//! that name, never refused — and `set_username` is refused with `username_locked`. When the token's `exp` (plus the
//! leeway) passes during the session, the runtime closes the connection with 4001.
//!
//! Tokens never reach the logs: the policies log refusal *reasons* only, and
//! [`ConnectionInfo`](chat_core::ConnectionInfo)'s `Debug` redacts `Authorization` and
//! `?token=`. `docs/SECURITY.md` in the repository has the threat model and every rule.

mod chain;
mod jwt;
mod origin;
mod per_ip;
mod token;

pub use chain::Chain;
pub use jwt::{
    DEFAULT_LEEWAY, JwtAlgorithm, JwtAuth, JwtConfig, JwtConfigError, MIN_HS256_SECRET_BYTES,
    TokenError,
};
pub use origin::{InvalidOrigin, Origin, OriginAllowList, OriginError, OriginRefusal};
pub use per_ip::{PerIpConfig, PerIpLimits, PerIpRefusal};
pub use token::{MAX_TOKEN_BYTES, TOKEN_QUERY_PARAM, presented_token};
