//! WebSocket close codes: how the server ends a connection, and why.
//!
//! They belong to the protocol (PROTOCOL.md *Close codes*), not to a transport: the
//! engine decides to close with 1008 exactly as it decides to send an `error`, and a
//! transport without close frames carries the code in its last frame
//! ([`closed_frame`](crate::transport::closed_frame)).

use std::fmt;

/// A WebSocket-style close code (RFC 6455 §7.4) with the ones this project uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the WebSocket framing protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the peer sent data of a kind the protocol does not accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: a text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation (sustained abuse: floods of refused requests).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a frame or message over the size limit.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: try again later (slow reader: outbound queue full; server overloaded).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 4001: the session's token expired.
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4001);
    /// 4009: formerly "the authenticated user's name is held by another online user".
    /// **No longer sent**: since display names of authenticated users are disambiguated
    /// instead of refused (PROTOCOL.md, "Identity"), nothing in this project closes with
    /// it. Kept, reserved, so that clients that handle it still compile and the number
    /// is not reused for something else.
    pub const USERNAME_CONFLICT: CloseCode = CloseCode(4009);
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
