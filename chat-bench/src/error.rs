//! The tool's error type: every failure says what was being done.

use std::io;

/// Why a scenario or the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket or `/proc` read failed.
    #[error("{what}: {source}")]
    Io {
        /// What the tool was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The WebSocket layer failed (handshake, framing, closed socket).
    #[error("{what}: {source}")]
    Ws {
        /// What the tool was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The server answered something the protocol does not allow here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server took too long to answer.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The arguments cannot describe a run (e.g. a non-loopback address).
    #[error("invalid arguments: {0}")]
    Config(String),
}

impl BenchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps a WebSocket error with what was being done.
    pub fn ws(what: impl Into<String>, source: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::Ws {
            what: what.into(),
            source: Box::new(source),
        }
    }
}
