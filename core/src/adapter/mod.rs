//! The `Adapter`: the seam between a namespace and the cluster.
//!
//! Every room membership change, broadcast, broadcast-with-acks and socket-management
//! call of a namespace goes through its adapter, so a cluster backend changes no server
//! code. The trait's default methods delegate to the namespace's [`LocalAdapter`], which
//! holds the local sockets and rooms: a backend overrides only what crosses nodes (the
//! socketioxide pattern), and calls back into `local()` to apply what other nodes send.
//!
//! Calls that only send (broadcast, sockets_join/leave, disconnect_sockets,
//! server_side_emit) are synchronous, like the reference's: a backend queues the message
//! on an ordered publisher, so emits keep their order without awaiting the network.
//! Calls that wait for other nodes are async and report which nodes did not answer.

mod acks;
pub mod cluster;
pub(crate) mod local;
pub mod recovery;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use acks::{AckEvent, AckStream, AckSummary};
pub use local::{LocalAdapter, RoomHook, ServerAck, ServerEventHandler};
pub use recovery::{
    Attach, LoggedPacket, NotRecovered, RecoveryConfig, SessionRecord, SessionStore, Written,
};
pub use sessions::SessionTable;

use crate::engineio::Sid;
use crate::socketio::{Data, Handshake, SocketRef};

/// A room name. Shared, since one name is held by every membership entry.
pub type Room = Arc<str>;

/// Modifiers of a broadcast (`BroadcastFlags` in the reference).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastFlags {
    /// Drop the packet for clients that are not ready to receive it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volatile: bool,
    /// Only this node's clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// How long a broadcast with acks waits.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "millis")]
    pub timeout: Option<Duration>,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Which sockets an operation targets: members of any of `rooms` (all sockets when
/// empty) that are in none of `except`. A socket id names that socket's own room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastOptions {
    pub rooms: Vec<Room>,
    pub except: Vec<Room>,
    pub flags: BroadcastFlags,
}

/// An event sent to many sockets, or to other servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPacket {
    pub event: String,
    pub data: Data,
}

/// A socket as `fetch_sockets` reports it, wherever it lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketInfo {
    pub id: Sid,
    pub handshake: Handshake,
    pub rooms: Vec<String>,
    pub data: Value,
    /// The node that holds the socket (`None`: this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The result of a request to every node: what came back, and who did not answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered<T> {
    pub items: Vec<T>,
    /// Nodes that did not answer in time (empty on a single node).
    pub missing: Vec<String>,
}

impl<T> Default for Gathered<T> {
    fn default() -> Self {
        Gathered {
            items: Vec::new(),
            missing: Vec::new(),
        }
    }
}

/// A backend failure. Local delivery never fails; these concern other nodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    #[error("cluster backend unavailable: {0}")]
    Unavailable(String),
    #[error("cluster request failed: {0}")]
    Request(String),
}

/// The cluster seam of a namespace. See the module documentation.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// This node's sockets and rooms.
    fn local(&self) -> &LocalAdapter;

    /// Called once, before the namespace accepts sockets.
    async fn init(&self) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Called when the server closes.
    async fn close(&self) {}

    /// How many nodes serve this namespace, this one included.
    async fn server_count(&self) -> usize {
        1
    }

    /// A local socket joins rooms (it may still be connecting: a middleware may join).
    fn add_all(&self, socket: &SocketRef, rooms: &[Room]) {
        self.local().add_all(socket, rooms)
    }

    /// A local socket leaves a room.
    fn del(&self, sid: Sid, room: &str) {
        self.local().del(sid, room)
    }

    /// A local socket leaves every room (it disconnected).
    fn del_all(&self, sid: Sid) {
        self.local().del_all(sid)
    }

    /// Sends an event to the targeted sockets of every node (or only this node's with
    /// the `local` flag).
    fn broadcast(&self, packet: &EventPacket, opts: &BroadcastOptions) -> Result<(), AdapterError> {
        self.local().broadcast(packet, opts);
        Ok(())
    }

    /// Sends an event that each client acks; the stream reports counts then acks.
    async fn broadcast_with_ack(
        &self,
        packet: EventPacket,
        opts: BroadcastOptions,
    ) -> Result<AckStream, AdapterError> {
        Ok(self.local().ack_stream(&packet, &opts, "local".into()).1)
    }

    /// The targeted sockets of every node.
    async fn fetch_sockets(
        &self,
        opts: BroadcastOptions,
    ) -> Result<Gathered<SocketInfo>, AdapterError> {
        Ok(Gathered {
            items: self.local().fetch_sockets(&opts),
            missing: vec![],
        })
    }

    /// Makes the targeted sockets join `rooms`.
    fn add_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) -> Result<(), AdapterError> {
        self.local().add_sockets(opts, rooms);
        Ok(())
    }

    /// The join promise, after a local socket joined `rooms` ([`Adapter::add_all`]):
    /// what to await before telling anyone that it joined, so that every broadcast to
    /// those rooms that starts afterwards, on any node, reaches it. `None` (the
    /// default): the join is visible at once.
    fn joined(&self, _rooms: &[Room]) -> Option<BoxFuture<'static, ()>> {
        None
    }

    /// [`Adapter::add_sockets`] that returns once the joins are visible on every node
    /// (see [`Adapter::joined`]): what a caller told "joined" can rely on.
    async fn add_sockets_visible(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        self.add_sockets(opts, rooms)
    }

    /// Makes the targeted sockets leave `rooms`.
    fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) -> Result<(), AdapterError> {
        self.local().del_sockets(opts, rooms);
        Ok(())
    }

    /// Disconnects the targeted sockets (`close`: their whole connection).
    fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) -> Result<(), AdapterError> {
        self.local().disconnect_sockets(opts, close);
        Ok(())
    }

    /// Sends an event to the other nodes' servers. A single node has none.
    fn server_side_emit(&self, _packet: &EventPacket) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Sends an event to one node's server (a node-to-node message). A single node has
    /// no other node.
    fn server_side_emit_to(&self, node: &str, _packet: &EventPacket) -> Result<(), AdapterError> {
        Err(AdapterError::Request(format!("no node {node:?}")))
    }

    /// Sends an event to one node's server and waits up to `timeout` for its answer.
    async fn server_side_emit_with_ack_to(
        &self,
        node: &str,
        _packet: EventPacket,
        _timeout: Duration,
    ) -> Result<Data, AdapterError> {
        Err(AdapterError::Request(format!("no node {node:?}")))
    }

    /// Sends an event to the other nodes' servers and gathers one answer from each.
    async fn server_side_emit_with_ack(
        &self,
        _packet: EventPacket,
        _timeout: Duration,
    ) -> Result<Gathered<Data>, AdapterError> {
        Ok(Gathered::default())
    }

    /// Every room with a member on any node.
    async fn all_rooms(&self) -> Result<Gathered<String>, AdapterError> {
        Ok(Gathered {
            items: self.local().rooms(),
            missing: vec![],
        })
    }

    /// Connection state recovery: the position of the packet log now (what a new
    /// session records as its start). `None`: no log.
    fn log_position(&self) -> Option<String> {
        self.local().memory_recovery().map(|m| m.position())
    }

    /// Connection state recovery: whether the socket of a session that a client presents
    /// is still alive somewhere. Default: a local socket that answers a ping within
    /// [`recovery::PROBE_TIMEOUT`] (a dead one is closed by the probe). A cluster adapter
    /// also asks the node that wrote the session.
    async fn session_alive(&self, rec: &SessionRecord) -> bool {
        match rec
            .sid
            .parse::<Sid>()
            .ok()
            .and_then(|sid| self.local().get(sid))
        {
            Some(s) if s.connected() => s.probe(recovery::PROBE_TIMEOUT).await,
            _ => false,
        }
    }

    /// Connection state recovery: finds the packets `rec` missed after `offset` (after
    /// its start when `None`) and calls `attach` with them, at a point where no packet
    /// logged after them can reach the socket first. The session was already taken from
    /// the store.
    async fn replay(
        &self,
        rec: &SessionRecord,
        offset: Option<&str>,
        attach: Attach,
    ) -> Result<(), NotRecovered> {
        match self.local().memory_recovery() {
            Some(m) => m.replay(rec, offset, attach),
            None => Err(NotRecovered::Unsupported),
        }
    }
}

/// How an adapter supports connection state recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverySupport {
    /// With the in-memory log and sessions (one node).
    Memory,
    /// With its own store and log: it sets the store with
    /// [`LocalAdapter::set_session_store`] and overrides [`Adapter::replay`] and
    /// [`Adapter::log_position`].
    Own,
    /// Not at all (e.g. Redis pub/sub, where nothing is persisted).
    Unsupported,
}

/// Builds the adapter of each namespace.
pub trait AdapterFactory: Send + Sync + 'static {
    fn create(&self, local: LocalAdapter) -> Arc<dyn Adapter>;

    /// How the adapters it builds support connection state recovery.
    fn recovery(&self) -> RecoverySupport {
        RecoverySupport::Unsupported
    }
}

/// The single-node adapter: everything stays in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryAdapterFactory;

impl AdapterFactory for MemoryAdapterFactory {
    fn create(&self, local: LocalAdapter) -> Arc<dyn Adapter> {
        Arc::new(local)
    }

    fn recovery(&self) -> RecoverySupport {
        RecoverySupport::Memory
    }
}

#[async_trait]
impl Adapter for LocalAdapter {
    fn local(&self) -> &LocalAdapter {
        self
    }
}
