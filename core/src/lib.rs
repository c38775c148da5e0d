//! Skein's server core: Engine.IO v4, Socket.IO v5, rooms and the cluster `Adapter`.
//!
//! The crate is layered like the protocols, each layer usable through the one below:
//!
//! - [`engineio`]: sessions over WebSocket and HTTP long-polling, the upgrade between
//!   them, heartbeats and the reference server's HTTP errors. It knows nothing of
//!   Socket.IO and can be used alone through [`engineio::EngineHandler`].
//! - [`socketio`]: the packet codec, namespaces, sockets, events and acks, middlewares,
//!   rooms and broadcast operators, built on an Engine.IO handler.
//! - [`adapter`]: the seam between a namespace and the cluster. Every room operation,
//!   broadcast and socket-management call goes through an [`adapter::Adapter`]; the
//!   in-memory [`adapter::LocalAdapter`] serves a single node, cluster backends live in
//!   their own crates. Connection state recovery's store is behind
//!   [`adapter::SessionStore`] ([`adapter::recovery`] has the in-memory one), and the
//!   adapter orders replays ([`adapter::Adapter::replay`]).
//! - [`http`]: the accept loop that serves any of this over TCP, with its limits
//!   (header timeout, connection limit). To serve from an axum or other tower
//!   application instead, mount [`SocketIo::layer`].
//!
//! Outgoing packets are encoded once into shared [`engineio::Frame`]s: a broadcast to
//! ten thousand sockets serializes its packet once and queues ten thousand references.

#![doc(html_root_url = "https://docs.rs/skein-core")]

pub mod adapter;
pub mod engineio;
pub mod http;
pub mod socketio;

pub use adapter::{Adapter, AdapterFactory, BroadcastOptions, LocalAdapter};
pub use engineio::{EngineConfig, Sid};
pub use socketio::{
    AckSender, ConnectError, Data, DisconnectReason, Namespace, SocketIo, SocketIoConfig, SocketRef,
};
