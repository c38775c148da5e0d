//! The seam between the cluster protocol and a backend: what the shared layer needs
//! from Redis, NATS or the mesh, and nothing more.
//!
//! A transport carries [`Message`]s: to every node of a namespace, or to one node. It
//! owns the encoding (a backend may have to speak another server's wire format), the
//! subscriptions and the connection, and reports what came in through [`Inbound`]. It
//! never blocks a caller: sending queues, in order, and what cannot be delivered is
//! counted (see [`Transport::undelivered`]).
//!
//! With connection state recovery, a backend may also bring a [`ClusterLog`]: an
//! ordered log that is the path of broadcasts and socket management (Redis Streams,
//! JetStream), which its reader hands to the layer through the same [`Inbound`].

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use super::message::{Envelope, Message};
use crate::adapter::{Attach, NotRecovered, Room, SessionRecord, SessionStore};

/// A transport failure, in terms the layer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The backend cannot be reached now; the transport retries by itself.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend refused (bad credentials, a permission): retrying will not help.
    #[error("backend refused: {0}")]
    Refused(String),
}

/// How a message reached this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Through the transport: this node's own messages are dropped.
    Bus,
    /// Read from the log at this offset: this node's own broadcasts are delivered too
    /// (every node delivers from the log, in its order); its own socket management
    /// was applied when it was sent.
    Log(String),
    /// This node's own message that could not be logged (the backend is away): its
    /// broadcast is delivered to this node's clients only, without an offset.
    Unlogged,
}

/// Where a transport (or a log's reader) hands what it received.
pub type Inbound = Arc<dyn Fn(Envelope, Delivery) + Send + Sync>;

/// How many other nodes are alive now (a transport counts its losses against them).
pub type PeerCount = Arc<dyn Fn() -> usize + Send + Sync>;

/// The other nodes alive now, sorted (a transport that can ask each whether it is still
/// there, as NATS can, counts the nodes of a request with them).
pub type PeerIds = Arc<dyn Fn() -> Vec<super::message::NodeId> + Send + Sync>;
/// A cluster backend. See the module documentation.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends a message to every node of `nsp` (this one may receive it too). Messages
    /// of one sender arrive in the order sent. Never blocks.
    fn publish(&self, nsp: &str, msg: &Message);

    /// Sends a message to one node: answers, and node-to-node events.
    fn send(&self, to: &str, nsp: &str, msg: &Message);

    /// The namespace exists on this node: receive its messages. Returns once they flow,
    /// so that a client of a new namespace misses nothing sent after it joined.
    async fn subscribe(&self, nsp: &str) -> Result<(), TransportError>;

    /// The namespace is gone from this node.
    async fn unsubscribe(&self, nsp: &str);

    /// This node now has (`true`) or no longer has a member of `room` in `nsp`. A
    /// transport that routes by interest subscribes to the room's broadcasts; the
    /// others ignore it.
    fn interest(&self, _nsp: &str, _room: &Room, _member: bool) {}

    /// The join promise, for a transport that routes broadcasts by an index of
    /// interest: what resolves once every live node would send this node the
    /// broadcasts to `rooms` of `nsp` that start afterwards (the index changes of their
    /// first members here are applied everywhere). `None` (the default): a transport
    /// that delivers every broadcast to every node, so a join is visible at once.
    fn visible(&self, _nsp: &str, _rooms: &[Room]) -> Option<BoxFuture<'static, ()>> {
        None
    }

    /// The nodes that hold a member of any of `rooms` in `nsp`, for a transport that
    /// keeps an index of interest: a request about those rooms (`fetch_sockets`) asks
    /// only them. `None` (the default): ask every node.
    fn holders(&self, _nsp: &str, _rooms: &[Room]) -> Option<Vec<String>> {
        None
    }

    /// How many nodes serve `nsp`, this one included, when the backend can tell (Redis
    /// counts the subscribers of the request channel, as the reference does, which also
    /// counts Node servers). `None`: the layer counts the live peers it heard from.
    async fn node_count(&self, _nsp: &str) -> Result<Option<usize>, TransportError> {
        Ok(None)
    }

    /// Whether the backend can be used now (`skein_cluster_backend_up`).
    fn is_up(&self) -> bool;

    /// Deliveries to other nodes that did not happen: one per message and node missed
    /// (`skein_cluster_undelivered_total`).
    fn undelivered(&self) -> u64;

    /// Called when the node leaves the cluster, after the goodbye was sent: flush what
    /// is queued, within reason.
    async fn close(&self) {}
}

/// An ordered log of the cluster's broadcasts and socket management, which is also the
/// path they take: every node, the sender included, applies what it reads from the log
/// in log order, so a client's last offset covers everything before it. It stores the
/// sessions too. See the recovery documentation in `crate::adapter::recovery`.
#[async_trait]
pub trait ClusterLog: SessionStore {
    /// Appends a logged message of this node ([`Message::is_logged`]). Never blocks;
    /// what cannot be logged is handed back to the layer as [`Delivery::Unlogged`].
    fn append(&self, nsp: &str, msg: &Message);

    /// The log position now: what a new session records as its start.
    fn position(&self) -> String;

    /// Finds what `rec` missed after `offset` (after its start when `None`) and calls
    /// `attach` with it, at a point where nothing logged later can reach the socket
    /// first (between two reads of the log's reader).
    async fn replay(
        &self,
        nsp: &str,
        rec: &SessionRecord,
        offset: Option<&str>,
        attach: Attach,
    ) -> Result<(), NotRecovered>;

    /// Whether the log is being written and read now.
    fn is_up(&self) -> bool;

    /// Deliveries to other nodes that did not happen because messages could not be
    /// logged (one per message and node).
    fn undelivered(&self) -> u64;

    /// Periodic housekeeping (trimming by age), every keepalive.
    fn housekeeping(&self) {}

    /// Resolves when the backend came back after an outage: the layer writes every
    /// connected session again at once (a restarted backend may have lost them).
    async fn resync(&self) {
        std::future::pending::<()>().await
    }
}
