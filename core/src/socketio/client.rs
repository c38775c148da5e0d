//! The Socket.IO side of an Engine.IO session: decoding packets (with their binary
//! attachments), connecting to namespaces, and dispatching to sockets.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::handshake::ConnInfo;
use super::packet::{encode_control, DecodeError, Packet, PacketKind};
use super::server::IoInner;
use super::socket::{Socket, SocketRef};
use super::{Data, DisconnectReason};
use crate::engineio::{CloseReason, EngineHandler, Message, OpenRequest, Session};

/// A binary packet waiting for its attachments.
struct Partial {
    packet: Packet,
    bins: Vec<Bytes>,
    /// Bytes of `bins` so far: one packet's attachments are bounded by `max_payload`,
    /// as a polling POST, which carries a whole binary packet, is.
    bytes: usize,
}

/// Per-connection state: the sockets of each joined namespace.
pub struct ClientData {
    sockets: Mutex<Vec<SocketRef>>,
    partial: Mutex<Option<Partial>>,
    conn: OnceLock<Arc<ConnInfo>>,
    /// When the connection opened, for `connectTimeout`.
    pub(crate) opened: tokio::time::Instant,
}

impl Default for ClientData {
    fn default() -> Self {
        ClientData {
            sockets: Mutex::new(Vec::new()),
            partial: Mutex::new(None),
            conn: OnceLock::new(),
            opened: tokio::time::Instant::now(),
        }
    }
}

impl std::fmt::Debug for ClientData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientData")
            .field("sockets", &self.sockets.lock().len())
            .finish()
    }
}

impl ClientData {
    /// The connection's sockets, one per namespace.
    pub fn sockets(&self) -> Vec<SocketRef> {
        self.sockets.lock().clone()
    }

    pub(crate) fn has_no_socket(&self) -> bool {
        self.sockets.lock().is_empty()
    }

    fn socket_of(&self, nsp: &str) -> Option<SocketRef> {
        self.sockets.lock().iter().find(|s| s.nsp() == nsp).cloned()
    }

    pub(crate) fn remove(&self, sid: crate::engineio::Sid) {
        self.sockets.lock().retain(|s| s.id() != sid);
    }
}

type Sess = Arc<Session<ClientData>>;

/// The Engine.IO handler of a Socket.IO server.
pub struct SioHandler {
    pub(crate) io: Arc<IoInner>,
}

impl std::fmt::Debug for SioHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SioHandler")
    }
}

impl EngineHandler for SioHandler {
    type Data = ClientData;

    fn on_open(&self, s: &Sess, req: &OpenRequest) {
        let _ = s.data.conn.set(Arc::new(ConnInfo::from_request(req)));
        self.io.start_connect_timeouts();
    }

    fn on_message(&self, s: &Sess, msg: Message) {
        let res = match msg {
            Message::Text(t) => self.on_text(s, &t),
            Message::Binary(b) => self.on_binary(s, b),
        };
        if let Err(e) = res {
            tracing::debug!(sid = %s.id(), error = %e, "invalid Socket.IO packet, closing");
            // As the reference: the connection closes ("forced close" for its sockets).
            close_client(s, DisconnectReason::ForcedClose);
        }
    }

    fn on_close(&self, s: &Sess, reason: CloseReason) {
        s.data.partial.lock().take();
        let reason = DisconnectReason::from(reason);
        for sock in s.data.sockets() {
            sock.close(reason);
        }
    }
}

fn close_client(s: &Sess, reason: DisconnectReason) {
    for sock in s.data.sockets() {
        sock.close(reason);
    }
    s.close(CloseReason::ForcedClose);
}

impl SioHandler {
    fn on_text(&self, s: &Sess, t: &[u8]) -> Result<(), DecodeError> {
        if s.data.partial.lock().is_some() {
            return Err(DecodeError::UnexpectedText);
        }
        // The engine only hands over valid UTF-8 text.
        let text = std::str::from_utf8(t).map_err(|_| DecodeError::InvalidPayload)?;
        let packet = Packet::decode(text)?;
        if packet.attachments > 0 {
            *s.data.partial.lock() = Some(Partial {
                packet,
                bins: Vec::new(),
                bytes: 0,
            });
            return Ok(());
        }
        if matches!(packet.kind, PacketKind::BinaryEvent | PacketKind::BinaryAck)
            && !packet.attachments_valid(0)
        {
            return Err(DecodeError::IllegalAttachments);
        }
        self.dispatch(s, packet, Vec::new());
        Ok(())
    }

    fn on_binary(&self, s: &Sess, b: Bytes) -> Result<(), DecodeError> {
        let done = {
            let mut guard = s.data.partial.lock();
            let Some(p) = guard.as_mut() else {
                return Err(DecodeError::UnexpectedBinary);
            };
            p.bytes = p.bytes.saturating_add(b.len());
            if p.bytes > self.io.config.engine.max_payload {
                guard.take();
                return Err(DecodeError::AttachmentsTooLarge);
            }
            p.bins.push(b);
            if p.bins.len() < p.packet.attachments {
                return Ok(());
            }
            guard.take().expect("checked above")
        };
        if !done.packet.attachments_valid(done.bins.len()) {
            return Err(DecodeError::IllegalAttachments);
        }
        self.dispatch(s, done.packet, done.bins);
        Ok(())
    }

    fn dispatch(&self, s: &Sess, packet: Packet, bins: Vec<Bytes>) {
        let socket = s.data.socket_of(&packet.nsp);
        match (socket, packet.kind) {
            (None, PacketKind::Connect) => self.connect(s, packet),
            (Some(sock), PacketKind::Event | PacketKind::BinaryEvent) => {
                let id = packet.id;
                if let Some((event, args)) = packet.into_event() {
                    sock.on_event(event, Data { args, binary: bins }, id);
                }
            }
            (Some(sock), PacketKind::Ack | PacketKind::BinaryAck) => {
                if let (Some(id), Some(Value::Array(args))) = (packet.id, packet.data) {
                    sock.on_ack(id, Data { args, binary: bins });
                }
            }
            (Some(sock), PacketKind::Disconnect) => {
                sock.close(DisconnectReason::ClientNamespaceDisconnect)
            }
            (_, kind) => {
                tracing::debug!(sid = %s.id(), ?kind, nsp = packet.nsp, "packet in invalid state, closing");
                close_client(s, DisconnectReason::ForcedServerClose);
            }
        }
    }

    fn connect(&self, s: &Sess, packet: Packet) {
        let nsp = packet.nsp;
        let Some(connecting) = self.io.namespace_for(&nsp) else {
            let err = json!({ "message": "Invalid namespace" });
            let _ = s.send_frame(encode_control(PacketKind::ConnectError, &nsp, Some(&err)));
            return;
        };
        let ns = connecting.ns().clone();
        let Some(conn) = s.data.conn.get().cloned() else {
            return;
        };
        let auth = packet.data.unwrap_or_else(|| json!({}));
        let recovering = super::recover::wants_recovery(&ns, &auth);
        let middlewares = ns.handlers.middlewares.read().clone();
        if middlewares.is_empty() && ns.is_ready() && !recovering {
            finish_connect(s, Socket::new(ns.clone(), s.clone(), conn, auth, None));
            return;
        }
        let s = s.clone();
        tokio::spawn(async move {
            // Until the socket is registered or refused, the namespace is in use.
            let _connecting = connecting;
            ns.wait_ready().await;
            if recovering {
                match super::recover::resume(&ns, &s, conn.clone(), auth.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::info!(sid = %s.id(), nsp = ns.name(), reason = %e, "session not recovered, starting a new one");
                    }
                }
            }
            let socket = Socket::new(ns.clone(), s.clone(), conn, auth, None);
            if !run_middlewares(&s, &socket, middlewares).await {
                return;
            }
            finish_connect(&s, socket);
        });
    }
}

/// Runs the connect middlewares; the first refusal answers `connect_error` (false).
pub(crate) async fn run_middlewares(
    s: &Sess,
    socket: &SocketRef,
    middlewares: Vec<super::namespace::Middleware>,
) -> bool {
    for m in middlewares {
        if let Err(e) = m(socket.clone()).await {
            let mut body = json!({ "message": e.message });
            if let Some(d) = e.data {
                body["data"] = d;
            }
            let _ = s.send_frame(encode_control(
                PacketKind::ConnectError,
                socket.nsp(),
                Some(&body),
            ));
            return false;
        }
    }
    true
}

/// Registers a socket that passed its middlewares and answers the CONNECT.
fn finish_connect(s: &Sess, socket: SocketRef) {
    if s.is_closed() {
        return;
    }
    // Stored before the client hears of it: the CONNECT reply waits for the write.
    socket.ns().adapter().local().persist_socket(&socket);
    register(s, &socket);
    tracing::debug!(sid = %socket.id(), nsp = socket.nsp(), "socket connected");
    run_connect_handler(socket);
}

/// Makes a socket part of its namespace and connection, and answers the CONNECT (with
/// its `pid` when recovery is on).
pub(crate) fn register(s: &Sess, socket: &SocketRef) {
    socket.ns().adapter().local().insert(socket.clone());
    s.data.sockets.lock().push(socket.clone());
    socket.set_connected();
    let reply = match &socket.pid {
        Some(pid) => json!({ "sid": socket.id(), "pid": pid.as_ref() }),
        None => json!({ "sid": socket.id() }),
    };
    socket.send_frame(encode_control(
        PacketKind::Connect,
        socket.nsp(),
        Some(&reply),
    ));
}

/// Runs the namespace's connect handler, then lets the events held meanwhile through.
pub(crate) fn run_connect_handler(socket: SocketRef) {
    (socket.ns().handlers.on_connect)(socket.clone());
    socket.handlers_ready();
}
