//! [`Admission`]: the decision to let a handshake in, as whom, and for how long.
//!
//! Runs before a connection is upgraded, with everything the transport knows about it
//! ([`ConnectionInfo`]: peer address, path, query, headers). This is where a deployment
//! checks `Origin` against an allow-list, validates a token and turns it into an
//! [`Identity`], or limits connections per address (the `chat-auth` crate has all
//! three). The default, [`AllowAnonymous`], lets everyone in without an identity (the
//! base protocol).

use std::time::Duration;

use async_trait::async_trait;

use crate::engine::Identity;
use crate::transport::{ConnectionInfo, Rejection};

/// Decides whether a handshake may become a connection.
///
/// Called once per handshake, on the connection's own task (never on the hub), so it may
/// do CPU work such as verifying a signature, and — being `async` — I/O: a session
/// lookup in a database, fetching a JWKS. (Long CPU work belongs in
/// `tokio::task::spawn_blocking`, as anywhere in async code.)
///
/// **Bounded.** The runtime gives `admit` at most
/// [`RuntimeConfig::handshake_timeout`](crate::RuntimeConfig::handshake_timeout). When it
/// takes longer, its future is dropped, the handshake is refused with `503`
/// ([`Rejection::Unavailable`], "admission timed out") and [`release`](Self::release) is
/// **not** called for it: a connection that was never admitted has nothing to give
/// back. So `admit` must be *cancel-safe*: anything it counted before an `.await` must be
/// undone if the future is dropped there (a guard whose `Drop` gives it back, as
/// `chat_auth::Chain` does for the steps it already ran). The same happens if the server
/// is dropped mid-admission.
#[async_trait]
pub trait Admission: Send + Sync + 'static {
    /// `Ok(admitted)`: let the connection in, anonymously or as an authenticated user,
    /// possibly only for a while (see [`Admitted`]).
    /// `Err(rejection)`: refuse; the transport answers with the rejection's status.
    async fn admit(&self, info: &ConnectionInfo) -> Result<Admitted, Rejection>;

    /// Called exactly once for every handshake [`admit`](Self::admit) let in, when its
    /// connection ends (whether or not the upgrade then succeeded), so limits that count
    /// open connections (per address, per user) can release their slot. Never called for
    /// a refused handshake or an `admit` that timed out. Synchronous, because it runs
    /// when the connection task ends, even by panic. Default: nothing.
    fn release(&self, info: &ConnectionInfo) {
        let _ = info;
    }
}

/// A handshake that [`Admission::admit`] let in.
///
/// Expiry is a *remaining duration*, not a wall-clock instant: the admission already read
/// the wall clock to validate its credential (a token's `exp`), so it is the one to turn
/// that into "how long from now". The runtime adds it to its own (tokio) clock once, at
/// admission, which keeps `SystemTime` out of `chat-core` and lets paused-time tests
/// drive expiry like every other timer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admitted {
    /// `None`: anonymous (the engine assigns a fresh user id). `Some`: this
    /// authenticated user; its name is fixed and `set_username` is refused.
    pub identity: Option<Identity>,
    /// How long the connection may stay open from now. When it runs out the runtime
    /// stops reading from the connection, writes what is already queued for it and
    /// closes it with [`CloseCode::TOKEN_EXPIRED`](crate::CloseCode::TOKEN_EXPIRED)
    /// (4001, "token expired"). `None`: no limit.
    pub expires_in: Option<Duration>,
}

impl Admitted {
    /// Admitted without an identity and without an expiry.
    pub fn anonymous() -> Self {
        Admitted::default()
    }

    /// Admitted as this authenticated user, without an expiry.
    pub fn user(identity: Identity) -> Self {
        Admitted {
            identity: Some(identity),
            expires_in: None,
        }
    }

    /// The same admission, ending after `expires_in` (or earlier, if it already had a
    /// shorter expiry).
    #[must_use]
    pub fn expiring_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = Some(self.expires_in.map_or(expires_in, |e| e.min(expires_in)));
        self
    }
}

/// Admits every handshake anonymously: the base protocol's behaviour.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAnonymous;

#[async_trait]
impl Admission for AllowAnonymous {
    async fn admit(&self, _info: &ConnectionInfo) -> Result<Admitted, Rejection> {
        Ok(Admitted::anonymous())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shorter_expiry_wins() {
        let a = Admitted::anonymous()
            .expiring_in(Duration::from_secs(10))
            .expiring_in(Duration::from_secs(20));
        assert_eq!(a.expires_in, Some(Duration::from_secs(10)));
        let b = Admitted::anonymous()
            .expiring_in(Duration::from_secs(20))
            .expiring_in(Duration::from_secs(5));
        assert_eq!(b.expires_in, Some(Duration::from_secs(5)));
        assert_eq!(Admitted::anonymous().expires_in, None);
    }
}
