//! The Socket.IO v5 server layer, on top of [`crate::engineio`].
//!
//! - [`packet`] and [`data`]: the codec and event arguments with binary attachments;
//! - `client`: the Engine.IO handler that decodes packets and connects namespaces;
//! - [`namespace`], [`socket`]: namespaces with middlewares, sockets with handlers and acks;
//! - [`broadcast`]: the broadcast operators and remote sockets;
//! - [`server`]: [`SocketIo`], its options and HTTP entry point; [`layer`]: the tower
//!   layer that mounts it in a hyper or axum application.

mod ack;
pub mod broadcast;
mod client;
mod connect_timeout;
pub mod data;
pub mod gate;
mod handshake;
pub mod layer;
pub mod namespace;
pub mod packet;
#[cfg(test)]
mod packet_tests;
mod recover;
pub mod server;
pub mod socket;

pub use broadcast::{BroadcastOperator, IntoRooms, PartialAcks, RemoteSocket};
pub use client::ClientData;
pub use data::Data;
pub use handshake::Handshake;
pub use layer::{SocketIoLayer, SocketIoService};
pub use namespace::{ConnectError, Namespace, NsHandlers};
pub use server::{SocketIo, SocketIoConfig};
pub use socket::{AckError, AckSender, EmitError, Socket, SocketRef};

use crate::engineio::CloseReason;

/// Why a socket disconnected, as the reference names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    TransportClose,
    TransportError,
    PingTimeout,
    ParseError,
    ForcedClose,
    ServerShuttingDown,
    ForcedServerClose,
    ClientNamespaceDisconnect,
    ServerNamespaceDisconnect,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ForcedClose => "forced close",
            Self::ServerShuttingDown => "server shutting down",
            Self::ForcedServerClose => "forced server close",
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
        }
    }
}

impl DisconnectReason {
    /// Whether the session stays recoverable after this disconnect (the reference's
    /// `RECOVERABLE_DISCONNECT_REASONS`).
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            Self::TransportError
                | Self::TransportClose
                | Self::ForcedClose
                | Self::PingTimeout
                | Self::ServerShuttingDown
                | Self::ForcedServerClose
        )
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<CloseReason> for DisconnectReason {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::TransportClose => Self::TransportClose,
            CloseReason::TransportError => Self::TransportError,
            CloseReason::PingTimeout => Self::PingTimeout,
            CloseReason::ParseError => Self::ParseError,
            CloseReason::ForcedClose => Self::ForcedClose,
            CloseReason::ServerShutdown => Self::ServerShuttingDown,
        }
    }
}
