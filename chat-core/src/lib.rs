//! # chat-core
//!
//! The heart of an embeddable real-time chat server: rooms, direct messages, typing
//! indicators, presence, message history and abuse protection, independent of how bytes
//! travel and where messages are kept.
#![doc = include_str!("../README.md")]

#[cfg(feature = "runtime")]
pub mod channel;
pub mod cluster;
pub mod engine;
pub mod ids;
pub mod message;
pub mod protocol;
pub mod proxies;
#[cfg(feature = "runtime")]
pub mod runtime;
mod setters;
pub mod store;
#[cfg(any(test, feature = "sim"))]
pub mod testkit;
pub mod transport;

/// Re-exported so `Store` and `Transport` implementations need no extra dependency.
pub use async_trait::async_trait;
#[cfg(feature = "runtime")]
pub use channel::{ChannelOptions, ChannelTransport, ClientConnection, ClientEvent, Connector};
pub use cluster::{ClusterEvent, ClusterOp, ClusterReply, NodeId, RemoteMember};
pub use engine::{
    Config, Engine, Identity, Input, Output, Rate, Recipients, StoreOp, StoreReply, StoreRequest,
    Ticket,
};
pub use ids::{
    ClientMsgId, ConnId, Content, Epoch, IdGenerator, MessageId, NameError, RoomName, Seq,
    SequentialIds, UserId, Username,
};
pub use message::{NewDm, NewRoomMessage, Stored, StoredDm, StoredMessage, Timestamp};
pub use protocol::{
    ClientCommand, CloseCode, DecodeError, ErrorCode, Refusal, RequestRef, ServerEvent, WireError,
};
pub use proxies::TrustedProxies;
#[cfg(feature = "runtime")]
pub use runtime::{
    Admission, Admitted, AllowAnonymous, BusCounter, Cluster, ClusterEvents, ClusterHealth,
    ClusterOps, Health, HealthReport, HubStatus, Metrics, RandomUserIds, RuntimeConfig,
    RuntimeError, Server, ServerHandle, StoreStatus,
};
pub use store::{Appended, Page, PageRange, Store, StoreError};
pub use transport::{
    Channel, ConnectionInfo, Handshake, Inbound, Incoming, MAX_FRAME_BYTES, Outbound, Peer,
    Rejection, Transport, TransportError, closed_frame, rejected_frame,
};
