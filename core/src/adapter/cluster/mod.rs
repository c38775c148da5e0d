//! The cluster layer: the cross-node protocol, written once for every backend.
//!
//! A backend (Redis, NATS, the gRPC mesh) is a [`Transport`]: it carries typed
//! [`Message`]s to every node of a namespace, or to one node, in its own encoding, and
//! hands what it receives to the layer. Everything else is here, the same for all:
//!
//! - [`ClusterAdapter`] implements [`crate::Adapter`]: broadcasts (also with acks,
//!   counted then gathered), socket management, server-side events (to every node, or
//!   to one), `fetch_sockets` and `all_rooms`;
//! - `requests`: a request to every node gathers one answer per node and names the
//!   nodes that did not answer; `peers`: heartbeats, goodbye, the dead-node timeout;
//! - connection state recovery across nodes: a backend may bring a [`ClusterLog`], an
//!   ordered log that carries the broadcasts and stores the sessions; the layer runs the
//!   session keepalive and asks the node holding a session whether its socket is alive;
//! - [`codec`]: the native encoding for backends without another server's format;
//!   [`memory`]: an in-process bus, and `testing` (feature `testing`): N nodes with
//!   connected clients over any transport, for every backend's routing tests.
//!
//! It follows the split of Node's `ClusterAdapterWithHeartbeat` and of
//! socketioxide-core's adapter module: the protocol here, the transport elsewhere.
//!
//! Usage: `let c = Cluster::new(cfg);`, build the transport (and log) with
//! `c.inbound()`, then `let factory = c.start(transport, log);` and give the factory to
//! `SocketIoConfig::adapter`. The factory is also the node's handle: id, live peers,
//! backend health, undelivered count, goodbye.

mod adapter;
pub mod codec;
mod incoming;
pub mod memory;
pub mod message;
mod node;
mod peers;
pub mod replay;
mod requests;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod transport;

pub use adapter::ClusterAdapter;
pub use message::{Envelope, Message, NodeId, ReqId, Response, ResponseBody};
pub use node::{Cluster, ClusterConfig, ClusterFactory, KEEPALIVE};
pub use peers::{HEARTBEAT_EVERY, PEER_TIMEOUT};
pub use replay::{Replay, ReplayReceiver, Replays};
pub use transport::{ClusterLog, Delivery, Inbound, PeerCount, PeerIds, Transport, TransportError};
