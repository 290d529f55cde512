//! [`Admission`]: the decision to let a handshake in, and as whom.
//!
//! Runs before a connection is upgraded, with everything the transport knows about it
//! ([`ConnectionInfo`]: peer address, path, query, headers). This is where a deployment
//! checks `Origin` against an allow-list, validates a token and turns it into an
//! [`Identity`], or limits connections per address. The default,
//! [`AllowAnonymous`], lets everyone in without an identity (the base protocol).

use crate::engine::Identity;
use crate::transport::{ConnectionInfo, Rejection};

/// Decides whether a handshake may become a connection.
///
/// Called once per handshake, on the connection's own task (never on the hub), so it may
/// do CPU work such as verifying a signature; it must not block on I/O.
pub trait Admission: Send + Sync + 'static {
    /// `Ok(None)`: admit anonymously (the engine assigns a fresh user id).
    /// `Ok(Some(identity))`: admit as this authenticated user.
    /// `Err(rejection)`: refuse; the transport answers with the rejection's status.
    fn admit(&self, info: &ConnectionInfo) -> Result<Option<Identity>, Rejection>;

    /// Called exactly once for every admitted handshake when its connection ends
    /// (whether or not the upgrade then succeeded), so limits that count open
    /// connections (per address, per user) can release their slot. Default: nothing.
    fn release(&self, info: &ConnectionInfo) {
        let _ = info;
    }
}

/// Admits every handshake anonymously: the base protocol's behaviour.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAnonymous;

impl Admission for AllowAnonymous {
    fn admit(&self, _info: &ConnectionInfo) -> Result<Option<Identity>, Rejection> {
        Ok(None)
    }
}
