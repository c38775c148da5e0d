//! The Engine.IO v4 server layer, usable on its own.
//!
//! Layout, from the wire up:
//! - [`packet`]: Engine.IO packets and the pre-encoded, shareable [`Frame`];
//! - [`ws`]: the WebSocket frame codec (handshake key, client frame decoder);
//! - [`session`]: one session's queue, heartbeat and close state;
//! - `polling` and `ws_conn`: the two transports, and the upgrade between them;
//!   `ws_io`: the connections the WebSocket transport drives (a raw `TcpStream`, or any
//!   upgraded connection);
//! - `service`: the HTTP entry point (routing, handshake, the reference errors);
//! - [`config`] and [`error`]: options and HTTP errors.
//!
//! An application implements [`EngineHandler`] and hands requests to
//! [`Engine::handle`] (or serves it with [`crate::http::serve`]); any request body
//! works, so the engine mounts in any hyper or axum server.

pub mod config;
pub mod error;
pub mod packet;
mod polling;
mod service;
pub mod session;
pub mod sid;
pub mod ws;
mod ws_conn;
mod ws_io;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

pub use config::{CookieConfig, CorsConfig, CorsOrigin, EngineConfig, TransportKind};
pub use error::HttpError;
pub use packet::{Frame, FrameBuilder, Packet, PacketType};
pub use session::{CloseReason, Session, SessionClosed};
pub use sid::Sid;

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
}

/// What the server knows of the request that opened a session.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    pub parts: http::request::Parts,
    pub remote: Option<SocketAddr>,
}

/// Receives the events of every session. Calls for one session never overlap, except
/// `on_close`, which may come from another task after the last message.
pub trait EngineHandler: Send + Sync + 'static {
    /// Per-session state, created with `Default` when the session opens.
    type Data: Default + Send + Sync + 'static;

    fn on_open(&self, session: &Arc<Session<Self::Data>>, req: &OpenRequest);
    fn on_message(&self, session: &Arc<Session<Self::Data>>, msg: Message);
    fn on_close(&self, session: &Arc<Session<Self::Data>>, reason: CloseReason);
}

/// An Engine.IO server: the sessions and the handler they report to.
pub struct Engine<H: EngineHandler> {
    pub(crate) config: EngineConfig,
    pub(crate) handler: H,
    sessions: RwLock<HashMap<Sid, Arc<Session<H::Data>>>>,
}

impl<H: EngineHandler> std::fmt::Debug for Engine<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("sessions", &self.sessions.read().len())
            .finish()
    }
}

impl<H: EngineHandler> Engine<H> {
    pub fn new(config: EngineConfig, handler: H) -> Arc<Self> {
        Arc::new(Engine {
            config,
            handler,
            sessions: RwLock::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    pub fn session(&self, sid: Sid) -> Option<Arc<Session<H::Data>>> {
        self.sessions.read().get(&sid).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    /// Calls `f` for every session (under the session map's read lock: `f` must not
    /// open or finish sessions; closing one only marks it).
    pub fn for_each_session(&self, mut f: impl FnMut(&Arc<Session<H::Data>>)) {
        self.sessions.read().values().for_each(&mut f);
    }

    /// Closes every session gracefully with `reason` (queued packets are flushed).
    pub fn close_all(&self, reason: CloseReason) {
        let all: Vec<_> = self.sessions.read().values().cloned().collect();
        for s in all {
            s.close(reason);
        }
    }

    fn insert(&self, s: Arc<Session<H::Data>>) {
        self.sessions.write().insert(s.id(), s);
    }

    /// The session is gone: forget it and tell the handler, exactly once (only the
    /// session's driver calls this).
    pub(crate) fn finish(&self, s: &Arc<Session<H::Data>>) {
        let reason = {
            let mut st = s.state.lock();
            st.finished = true;
            st.closing.unwrap_or(CloseReason::TransportClose)
        };
        // An upgrade still waiting on the session ends now.
        s.closed.notify_waiters();
        let removed = {
            let mut map = self.sessions.write();
            match map.get(&s.id()) {
                Some(cur) if Arc::ptr_eq(cur, s) => map.remove(&s.id()).is_some(),
                _ => false,
            }
        };
        if removed {
            tracing::debug!(sid = %s.id(), reason = reason.as_str(), "session closed");
            self.handler.on_close(s, reason);
        }
    }

    /// Handles one decoded client packet. Returns false when the session must stop
    /// reading (it is closing).
    pub(crate) fn on_packet(&self, s: &Arc<Session<H::Data>>, p: Packet) -> bool {
        match p {
            Packet::Pong(_) => s.on_pong(),
            Packet::Message(text) => self.handler.on_message(s, Message::Text(text)),
            Packet::Binary(bin) => self.handler.on_message(s, Message::Binary(bin)),
            Packet::Close => {
                s.close_by_client();
                return false;
            }
            // In v4 only the server pings; a client ping outside an upgrade probe is
            // an "invalid heartbeat direction" for the reference.
            Packet::Ping(_) => {
                s.abort(CloseReason::TransportError);
                return false;
            }
            Packet::Open | Packet::Upgrade | Packet::Noop => {}
        }
        !s.is_closed()
    }
}
