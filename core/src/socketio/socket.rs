//! A socket: one client connected to one namespace.
//!
//! Handlers run inline on the connection's task, in packet order, like the reference's
//! event emitter; a handler that must wait spawns its own task. A socket's per-connection
//! cost is its handler table (empty maps allocate nothing), its ack table and its data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::broadcast::{BroadcastOperator, IntoRooms};
use super::client::ClientData;
use super::handshake::{ConnInfo, Handshake};
use super::namespace::Namespace;
use super::packet::{encode_control, encode_event, Encoded, PacketKind};
use super::{Data, DisconnectReason};
use crate::adapter::{AckEvent, SessionRecord, SocketInfo};
use crate::engineio::{CloseReason, Session, Sid};

pub(crate) use super::ack::{check_event, AckWaiter};
pub use super::ack::{AckError, AckSender, EmitError};

/// A shared handle to a socket.
pub type SocketRef = Arc<Socket>;

/// Handles an event: the socket, its arguments, and the ack to answer if the client
/// asked for one.
pub type EventHandler = Arc<dyn Fn(&SocketRef, Data, Option<AckSender>) + Send + Sync>;
/// Sees every incoming event before its handler (`onAny`).
pub type AnyHandler = Arc<dyn Fn(&SocketRef, &str, &Data) + Send + Sync>;
/// Takes an event that has no handler of its own: the socket, the event name, its
/// arguments and the ack to answer if the client asked for one.
pub type FallbackHandler = Arc<dyn Fn(&SocketRef, &str, Data, Option<AckSender>) + Send + Sync>;
/// Runs when the socket disconnects.
pub type DisconnectHandler = Arc<dyn Fn(&SocketRef, DisconnectReason) + Send + Sync>;
/// Checks or rewrites an incoming event before its handler (`socket.use`); an `Err`
/// drops the event.
pub type PacketMiddleware =
    Arc<dyn Fn(&SocketRef, &str, &mut Data) -> Result<(), String> + Send + Sync>;

/// The handler an event goes to.
enum Handler {
    Event(EventHandler),
    Fallback(FallbackHandler),
}

#[derive(Default)]
struct Handlers {
    events: HashMap<String, EventHandler>,
    any: Vec<AnyHandler>,
    fallback: Option<FallbackHandler>,
    disconnecting: Vec<DisconnectHandler>,
    disconnect: Vec<DisconnectHandler>,
    middlewares: Vec<PacketMiddleware>,
    /// Events that arrived before the connect handler finished registering the
    /// handlers: the client may answer the CONNECT reply while the handler (run on
    /// another task after middlewares or a recovery) is still running. `None` after.
    early: Option<Vec<(String, Data, Option<u64>)>>,
}

/// One client in one namespace.
pub struct Socket {
    id: Sid,
    ns: Arc<Namespace>,
    pub(crate) session: Arc<Session<ClientData>>,
    conn: Arc<ConnInfo>,
    auth: Value,
    handlers: RwLock<Handlers>,
    acks: Mutex<HashMap<u64, AckWaiter>>,
    data: Mutex<Value>,
    connected: AtomicBool,
    /// Connection state recovery: the private session id (`None`: recovery is off).
    pub(crate) pid: Option<Arc<str>>,
    /// Tells this socket instance's session writes from another instance's.
    pub(crate) owner: u64,
    /// The log position when the session began (see `SessionRecord::offset`).
    pub(crate) start: Option<Arc<str>>,
    recovered: bool,
    /// Holds outgoing packets while a session write is on its way.
    gate: super::gate::Gate,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.ns.name())
            .finish()
    }
}

impl Socket {
    /// A new socket, or with `restore` the socket of a recovered session.
    pub(crate) fn new(
        ns: Arc<Namespace>,
        session: Arc<Session<ClientData>>,
        conn: Arc<ConnInfo>,
        auth: Value,
        restore: Option<(Sid, &SessionRecord)>,
    ) -> SocketRef {
        let recovery = ns.adapter().local().recovery().is_some();
        let recovered = restore.is_some();
        let (id, pid, data, start) = match restore {
            Some((id, rec)) => (
                id,
                Some(Arc::from(rec.pid.as_str())),
                rec.data.clone(),
                rec.offset.as_deref().map(Arc::from),
            ),
            None if recovery => (
                Sid::new(),
                Some(Arc::from(Sid::new().as_str())),
                Value::Null,
                ns.adapter().log_position().map(Arc::from),
            ),
            None => (Sid::new(), None, Value::Null, None),
        };
        Arc::new(Socket {
            id,
            ns,
            session,
            conn,
            auth,
            handlers: RwLock::new(Handlers {
                early: Some(Vec::new()),
                ..Handlers::default()
            }),
            acks: Mutex::new(HashMap::new()),
            data: Mutex::new(data),
            connected: AtomicBool::new(false),
            pid,
            owner: rand::random(),
            start,
            recovered,
            gate: Default::default(),
        })
    }

    pub(crate) fn gate(&self) -> &super::gate::Gate {
        &self.gate
    }

    /// Holds this socket's outgoing packets until `write` (of its session) is durable.
    pub(crate) fn hold_until(self: &Arc<Self>, write: crate::adapter::Written) {
        self.gate.hold_until(Arc::downgrade(self), write);
    }

    /// Queues a control packet (CONNECT reply, DISCONNECT) behind the gate.
    pub(crate) fn send_frame(&self, frame: crate::engineio::Frame) {
        self.gate.send(self, std::iter::once(frame));
    }

    /// Pings the client now and waits up to `timeout` for its pong; without it, the
    /// connection closes (`ping timeout`). See [`Session::probe`].
    pub async fn probe(&self, timeout: Duration) -> bool {
        self.session.probe(timeout).await
    }

    /// Whether this socket resumed a previous session (`socket.recovered`).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    pub fn id(&self) -> Sid {
        self.id
    }

    pub fn ns(&self) -> &Arc<Namespace> {
        &self.ns
    }

    pub fn nsp(&self) -> &str {
        self.ns.name()
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The Engine.IO session carrying this socket.
    pub fn session(&self) -> &Arc<Session<ClientData>> {
        &self.session
    }

    /// The CONNECT auth payload.
    pub fn auth(&self) -> &Value {
        &self.auth
    }

    pub fn handshake(&self) -> Handshake {
        Handshake::build(&self.conn, &self.auth)
    }

    /// `socket.data`: application state that `fetch_sockets` reports on every node.
    pub fn data(&self) -> Value {
        self.data.lock().clone()
    }

    pub fn set_data(&self, v: Value) {
        *self.data.lock() = v;
        self.ns.adapter().local().persist(self.id);
    }

    /// Registers the handler of an event (replacing any previous one).
    pub fn on<F>(&self, event: impl Into<String>, f: F)
    where
        F: Fn(&SocketRef, Data, Option<AckSender>) + Send + Sync + 'static,
    {
        self.handlers
            .write()
            .events
            .insert(event.into(), Arc::new(f));
    }

    /// Sees every incoming event (`onAny`).
    pub fn on_any<F>(&self, f: F)
    where
        F: Fn(&SocketRef, &str, &Data) + Send + Sync + 'static,
    {
        self.handlers.write().any.push(Arc::new(f));
    }

    /// Takes every event that has no handler registered with [`Socket::on`] (replacing
    /// any previous fallback). Without one, such events are dropped, as in the reference.
    /// The node uses it to hand client events to app servers over its API.
    pub fn on_fallback<F>(&self, f: F)
    where
        F: Fn(&SocketRef, &str, Data, Option<AckSender>) + Send + Sync + 'static,
    {
        self.handlers.write().fallback = Some(Arc::new(f));
    }

    /// Runs before the socket leaves its rooms on disconnect.
    pub fn on_disconnecting<F>(&self, f: F)
    where
        F: Fn(&SocketRef, DisconnectReason) + Send + Sync + 'static,
    {
        self.handlers.write().disconnecting.push(Arc::new(f));
    }

    pub fn on_disconnect<F>(&self, f: F)
    where
        F: Fn(&SocketRef, DisconnectReason) + Send + Sync + 'static,
    {
        self.handlers.write().disconnect.push(Arc::new(f));
    }

    /// Adds a per-packet middleware (`socket.use`).
    pub fn use_packet<F>(&self, f: F)
    where
        F: Fn(&SocketRef, &str, &mut Data) -> Result<(), String> + Send + Sync + 'static,
    {
        self.handlers.write().middlewares.push(Arc::new(f));
    }

    /// Sends an event to this client.
    pub fn emit(&self, event: &str, data: Data) -> Result<(), EmitError> {
        check_event(event)?;
        if !self.connected() {
            return Err(EmitError::Disconnected);
        }
        if self.pid.is_some() {
            // With recovery on, the event is logged like a broadcast to this socket's
            // room, so that it gets an offset and is replayed if the client misses it.
            let opts = crate::adapter::BroadcastOptions {
                rooms: vec![self.id.as_str().into()],
                ..Default::default()
            };
            let packet = crate::adapter::EventPacket {
                event: event.to_owned(),
                data,
            };
            return Ok(self.ns.adapter().broadcast(&packet, &opts)?);
        }
        self.send_encoded(&encode_event(self.nsp(), event, &data, None), false);
        Ok(())
    }

    /// Sends an event and waits up to `timeout` for the client's ack.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: Data,
        timeout: Duration,
    ) -> Result<Data, AckError> {
        if check_event(event).is_err() || !self.connected() {
            return Err(AckError::Disconnected);
        }
        let id = self.ns.next_ack_id();
        let (tx, rx) = oneshot::channel();
        self.acks.lock().insert(id, AckWaiter::One(tx));
        self.send_encoded(&encode_event(self.nsp(), event, &data, Some(id)), false);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                self.acks.lock().remove(&id);
                Err(AckError::Timeout)
            }
        }
    }

    pub fn join(self: &Arc<Self>, rooms: impl IntoRooms) {
        self.ns.adapter().add_all(self, &rooms.into_rooms());
    }

    /// Joins `rooms` now, and returns what to await before telling the client it joined
    /// (e.g. before the ack of a `join` event): once it resolves, every broadcast to
    /// those rooms that starts afterwards, on any node of a cluster, reaches this
    /// socket. `None`: the join is already visible everywhere (a single node, or an
    /// adapter that sends every broadcast to every node).
    pub fn join_visible(
        self: &Arc<Self>,
        rooms: impl IntoRooms,
    ) -> Option<futures_util::future::BoxFuture<'static, ()>> {
        let rooms = rooms.into_rooms();
        let adapter = self.ns.adapter();
        adapter.add_all(self, &rooms);
        adapter.joined(&rooms)
    }

    pub fn leave(&self, room: &str) {
        self.ns.adapter().del(self.id, room);
    }

    /// The socket's rooms, its own id first.
    pub fn rooms(&self) -> Vec<String> {
        self.ns.adapter().local().socket_rooms(self.id)
    }

    /// A broadcast to `rooms` that leaves this socket out.
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast().to(rooms)
    }

    /// A broadcast to every other socket of the namespace (`socket.broadcast`).
    pub fn broadcast(&self) -> BroadcastOperator {
        self.ns.broadcast_op().except(self.id)
    }

    /// Disconnects from the namespace; with `close`, closes the whole connection.
    pub fn disconnect(self: &Arc<Self>, close: bool) {
        self.disconnect_with(close, DisconnectReason::ServerNamespaceDisconnect);
    }

    pub(crate) fn disconnect_with(self: &Arc<Self>, close: bool, reason: DisconnectReason) {
        if !self.connected() {
            return;
        }
        self.send_frame(encode_control(PacketKind::Disconnect, self.nsp(), None));
        if close {
            for s in self.session.data.sockets() {
                s.close(reason);
            }
            self.session.close(CloseReason::ForcedClose);
        } else {
            self.close(reason);
        }
    }

    /// Queues an encoded packet (and its attachments) for this client.
    pub(crate) fn send_encoded(&self, enc: &Encoded, volatile: bool) {
        let frames = std::iter::once(enc.text.clone()).chain(enc.binary.iter().cloned());
        if volatile {
            // Dropped rather than queued behind anything, held packets included.
            if self.gate.is_open() && self.session.send_volatile(enc.text.clone()) {
                for b in &enc.binary {
                    if self.session.send_frame(b.clone()).is_err() {
                        return;
                    }
                }
            }
            return;
        }
        self.gate.send(self, frames);
    }

    pub(crate) fn expect_broadcast_ack(&self, id: u64, tx: mpsc::UnboundedSender<AckEvent>) {
        self.acks.lock().insert(id, AckWaiter::Many(tx));
    }

    pub(crate) fn info(&self) -> SocketInfo {
        SocketInfo {
            id: self.id,
            handshake: self.handshake(),
            rooms: self.rooms(),
            data: self.data(),
            node: None,
        }
    }

    pub(crate) fn set_connected(&self) {
        self.connected.store(true, Ordering::Release);
    }

    /// The connect handler has run: events held meanwhile are dispatched, in order, and
    /// the next ones go straight to their handlers.
    pub(crate) fn handlers_ready(self: &Arc<Self>) {
        loop {
            let batch = {
                let mut h = self.handlers.write();
                match h.early.as_mut() {
                    Some(q) if !q.is_empty() => std::mem::take(q),
                    _ => {
                        h.early = None;
                        return;
                    }
                }
            };
            for (event, data, id) in batch {
                self.dispatch_event(event, data, id, false);
            }
        }
    }

    /// An event from the client.
    pub(crate) fn on_event(self: &Arc<Self>, event: String, data: Data, id: Option<u64>) {
        self.dispatch_event(event, data, id, true);
    }

    /// Runs an event's middlewares, `onAny` handlers and handler (or the fallback). With
    /// `hold`, an event that arrives before the connect handler has run waits for it.
    fn dispatch_event(
        self: &Arc<Self>,
        event: String,
        mut data: Data,
        id: Option<u64>,
        hold: bool,
    ) {
        let (mws, any, handler) = {
            let h = self.handlers.read();
            if hold && h.early.is_some() {
                drop(h);
                let mut w = self.handlers.write();
                if let Some(q) = w.early.as_mut() {
                    q.push((event, data, id));
                    return;
                }
                drop(w);
                return self.dispatch_event(event, data, id, false);
            }
            let handler = match h.events.get(&event) {
                Some(f) => Some(Handler::Event(f.clone())),
                None => h.fallback.clone().map(Handler::Fallback),
            };
            (
                (!h.middlewares.is_empty()).then(|| h.middlewares.clone()),
                (!h.any.is_empty()).then(|| h.any.clone()),
                handler,
            )
        };
        for m in mws.iter().flatten() {
            if let Err(e) = m(self, &event, &mut data) {
                tracing::debug!(sid = %self.id, event, error = e, "packet middleware refused event");
                return;
            }
        }
        for a in any.iter().flatten() {
            a(self, &event, &data);
        }
        let ack = id.map(|id| AckSender {
            socket: self.clone(),
            id,
        });
        match handler {
            Some(Handler::Event(h)) => h(self, data, ack),
            Some(Handler::Fallback(f)) => f(self, &event, data, ack),
            None => {}
        }
    }

    /// An ack from the client.
    pub(crate) fn on_ack(&self, id: u64, data: Data) {
        let waiter = self.acks.lock().remove(&id);
        match waiter {
            Some(AckWaiter::One(tx)) => {
                let _ = tx.send(data);
            }
            Some(AckWaiter::Many(tx)) => {
                let _ = tx.send(AckEvent::Ack {
                    sid: Some(self.id),
                    data,
                });
            }
            None => tracing::trace!(sid = %self.id, id, "ack for no pending emit"),
        }
    }

    /// Leaves the namespace: handlers run, rooms are left, pending acks fail.
    pub(crate) fn close(self: &Arc<Self>, reason: DisconnectReason) {
        if !self.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        let disconnecting = self.handlers.read().disconnecting.clone();
        for h in &disconnecting {
            h(self, reason);
        }
        self.ns.adapter().local().end_session(self, reason);
        self.ns.adapter().del_all(self.id);
        self.ns.adapter().local().remove(self.id);
        self.session.data.remove(self.id);
        self.acks.lock().clear();
        // Taking the handlers breaks the cycles closures make by holding the socket.
        let handlers = std::mem::take(&mut *self.handlers.write());
        for h in &handlers.disconnect {
            h(self, reason);
        }
        self.ns.maybe_remove();
        tracing::debug!(sid = %self.id, nsp = self.nsp(), reason = reason.as_str(), "socket disconnected");
    }
}
