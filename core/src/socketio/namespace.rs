//! Namespaces: their connect handler and middlewares, and their adapter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::RwLock;
use serde_json::Value;

use super::broadcast::{BroadcastOperator, IntoRooms, RemoteSocket};
use super::socket::{EmitError, SocketRef};
use super::Data;
use crate::adapter::{Adapter, AdapterError, EventPacket, Gathered};

/// Why a namespace middleware refused a connection; the client gets `connect_error`
/// with this message and data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

impl ConnectError {
    pub fn new(message: impl Into<String>) -> Self {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Runs once per connected socket, where its event handlers are registered.
pub type ConnectHandler = Arc<dyn Fn(SocketRef) + Send + Sync>;
/// Decides whether a socket may connect (`io.use`), before its connect handler.
pub type Middleware =
    Arc<dyn Fn(SocketRef) -> BoxFuture<'static, Result<(), ConnectError>> + Send + Sync>;

/// What an application registers for a namespace (shared by the children of a dynamic
/// namespace).
pub struct NsHandlers {
    pub(crate) on_connect: ConnectHandler,
    pub(crate) middlewares: RwLock<Vec<Middleware>>,
}

impl NsHandlers {
    pub(crate) fn new(on_connect: ConnectHandler) -> Arc<Self> {
        Arc::new(NsHandlers {
            on_connect,
            middlewares: RwLock::new(Vec::new()),
        })
    }

    /// Adds a connect middleware; they run in the order added.
    pub fn use_middleware<F, Fut>(&self, f: F)
    where
        F: Fn(SocketRef) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.middlewares
            .write()
            .push(Arc::new(move |s| Box::pin(f(s))));
    }
}

/// A namespace: a name, its sockets (through its adapter) and its handlers.
pub struct Namespace {
    name: Arc<str>,
    adapter: Arc<dyn Adapter>,
    pub(crate) handlers: Arc<NsHandlers>,
    /// Ack ids are per namespace, as in the reference, so that one encoded packet with
    /// an ack id can go to many sockets.
    ack_ids: AtomicU64,
    /// Set once the adapter's `init` has finished (e.g. its cluster subscriptions are
    /// live); connections wait for it so that nothing sent to them is missed.
    ready: std::sync::atomic::AtomicBool,
    ready_notify: tokio::sync::Notify,
    /// A child of a dynamic namespace (created when a client first named it).
    child: bool,
    /// Connections under way (a child is not removed under them).
    connecting: std::sync::atomic::AtomicIsize,
    /// The server that removes this child when it is empty (cleanup on).
    owner: Option<std::sync::Weak<super::server::IoInner>>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish()
    }
}

impl Namespace {
    pub(crate) fn new(
        name: &str,
        adapter: Arc<dyn Adapter>,
        handlers: Arc<NsHandlers>,
        child: bool,
        owner: Option<std::sync::Weak<super::server::IoInner>>,
    ) -> Arc<Self> {
        Arc::new(Namespace {
            name: name.into(),
            adapter,
            handlers,
            ack_ids: AtomicU64::new(0),
            ready: std::sync::atomic::AtomicBool::new(false),
            ready_notify: tokio::sync::Notify::new(),
            child,
            connecting: std::sync::atomic::AtomicIsize::new(0),
            owner,
        })
    }

    /// A socket left, or a connection ended: an empty child may go.
    pub(crate) fn maybe_remove(self: &Arc<Self>) {
        if let Some(io) = self.owner.as_ref().and_then(std::sync::Weak::upgrade) {
            io.left(self);
        }
    }

    /// Whether this is a child of a dynamic namespace.
    pub fn is_child(&self) -> bool {
        self.child
    }

    pub(crate) fn connecting(&self, delta: isize) {
        self.connecting.fetch_add(delta, Ordering::AcqRel);
    }

    /// No socket, and no connection under way.
    pub(crate) fn is_unused(&self) -> bool {
        self.connecting.load(Ordering::Acquire) == 0 && self.adapter.local().is_empty()
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.ready_notify.notify_waiters();
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits until the adapter is initialized.
    pub(crate) async fn wait_ready(&self) {
        while !self.is_ready() {
            let n = self.ready_notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_ready() {
                return;
            }
            n.await;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.adapter
    }

    pub(crate) fn next_ack_id(&self) -> u64 {
        self.ack_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a connect middleware (`nsp.use`).
    pub fn use_middleware<F, Fut>(&self, f: F)
    where
        F: Fn(SocketRef) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.handlers.use_middleware(f)
    }

    /// A local socket by id.
    pub fn socket(&self, sid: crate::engineio::Sid) -> Option<SocketRef> {
        self.adapter.local().get(sid)
    }

    /// How many sockets are connected to this node.
    pub fn local_len(&self) -> usize {
        self.adapter.local().len()
    }

    pub(crate) fn broadcast_op(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone())
    }

    pub fn to(self: &Arc<Self>, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast_op().to(rooms)
    }

    pub fn except(self: &Arc<Self>, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast_op().except(rooms)
    }

    pub fn volatile(self: &Arc<Self>) -> BroadcastOperator {
        self.broadcast_op().volatile()
    }

    pub fn local(self: &Arc<Self>) -> BroadcastOperator {
        self.broadcast_op().local()
    }

    pub fn timeout(self: &Arc<Self>, d: Duration) -> BroadcastOperator {
        self.broadcast_op().timeout(d)
    }

    /// Sends an event to every socket of the namespace, on every node.
    pub fn emit(self: &Arc<Self>, event: &str, data: Data) -> Result<(), EmitError> {
        self.broadcast_op().emit(event, data)
    }

    pub async fn fetch_sockets(self: &Arc<Self>) -> Result<Vec<RemoteSocket>, AdapterError> {
        self.broadcast_op().fetch_sockets().await
    }

    pub fn sockets_join(self: &Arc<Self>, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        self.broadcast_op().sockets_join(rooms)
    }

    pub fn sockets_leave(self: &Arc<Self>, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        self.broadcast_op().sockets_leave(rooms)
    }

    pub fn disconnect_sockets(self: &Arc<Self>, close: bool) -> Result<(), AdapterError> {
        self.broadcast_op().disconnect_sockets(close)
    }

    /// Handles an event that another node's server sends with `server_side_emit`
    /// (`nsp.on(event, ...)` for server-side events in the reference). With an ack, the
    /// handler answers with one value.
    pub fn on_server_event<F>(&self, event: &str, f: F)
    where
        F: Fn(Data, Option<crate::adapter::ServerAck>) + Send + Sync + 'static,
    {
        self.adapter.local().on_server_event(event, Arc::new(f));
    }

    /// Sends an event to the servers of the other nodes.
    pub fn server_side_emit(&self, event: &str, data: Data) -> Result<(), AdapterError> {
        self.adapter.server_side_emit(&EventPacket {
            event: event.to_owned(),
            data,
        })
    }

    /// Sends an event to one other node's server.
    pub fn server_side_emit_to(
        &self,
        node: &str,
        event: &str,
        data: Data,
    ) -> Result<(), AdapterError> {
        self.adapter.server_side_emit_to(
            node,
            &EventPacket {
                event: event.to_owned(),
                data,
            },
        )
    }

    /// Sends an event to one other node's server and waits for its answer.
    pub async fn server_side_emit_with_ack_to(
        &self,
        node: &str,
        event: &str,
        data: Data,
        timeout: Duration,
    ) -> Result<Data, AdapterError> {
        let packet = EventPacket {
            event: event.to_owned(),
            data,
        };
        self.adapter
            .server_side_emit_with_ack_to(node, packet, timeout)
            .await
    }

    /// Sends an event to the other servers and gathers one answer from each.
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        data: Data,
        timeout: Duration,
    ) -> Result<Gathered<Data>, AdapterError> {
        let packet = EventPacket {
            event: event.to_owned(),
            data,
        };
        self.adapter
            .server_side_emit_with_ack(packet, timeout)
            .await
    }

    /// Every room with a member on any node.
    pub async fn all_rooms(&self) -> Result<Gathered<String>, AdapterError> {
        self.adapter.all_rooms().await
    }
}
