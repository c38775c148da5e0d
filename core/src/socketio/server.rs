//! The Socket.IO server: configuration, namespaces (static and dynamic), and the HTTP
//! entry point.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use parking_lot::RwLock;
use regex::Regex;

use super::client::SioHandler;
use super::namespace::{Namespace, NsHandlers};
use super::socket::SocketRef;
use super::DisconnectReason;
use crate::adapter::{
    AdapterFactory, LocalAdapter, MemoryAdapterFactory, RecoveryConfig, RecoverySupport,
};
use crate::engineio::{CloseReason, Engine, EngineConfig};
use crate::http::HttpHandler;

/// Socket.IO server options. Defaults are those of socket.io 4.8.
#[derive(Clone)]
pub struct SocketIoConfig {
    /// Engine.IO options; `path` defaults to `/socket.io/` here.
    pub engine: EngineConfig,
    /// How long a client may stay without joining a namespace.
    pub connect_timeout: Duration,
    /// Builds each namespace's adapter (in-memory by default).
    pub adapter: Arc<dyn AdapterFactory>,
    /// Connection state recovery (off by default, as in the reference).
    pub recovery: Option<RecoveryConfig>,
    /// Remove a child of a dynamic namespace when its last socket leaves
    /// (`cleanupEmptyChildNamespaces`; off by default, as in the reference). Without it,
    /// every name a client connects to that a dynamic namespace accepts stays for good.
    pub cleanup_empty_child_namespaces: bool,
}

/// The longest namespace name a client may connect to; a longer one is an invalid
/// namespace (the reference sets no bound, but a name is kept per namespace and shown in
/// logs).
pub const MAX_NAMESPACE_LEN: usize = 256;

impl std::fmt::Debug for SocketIoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIoConfig")
            .field("engine", &self.engine)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            engine: EngineConfig {
                path: "/socket.io/".into(),
                ..EngineConfig::default()
            },
            connect_timeout: Duration::from_millis(45_000),
            adapter: Arc::new(MemoryAdapterFactory),
            recovery: None,
            cleanup_empty_child_namespaces: false,
        }
    }
}

/// Decides whether a namespace name belongs to a dynamic namespace.
pub type NsMatcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub(crate) struct IoInner {
    pub(crate) config: SocketIoConfig,
    /// The engine (set once it exists) and whether its connectTimeout sweeper runs.
    engine: std::sync::OnceLock<std::sync::Weak<Engine<SioHandler>>>,
    sweeper: std::sync::OnceLock<()>,
    nsps: RwLock<HashMap<String, Arc<Namespace>>>,
    parents: RwLock<Vec<(NsMatcher, Arc<NsHandlers>)>>,
    draining: std::sync::atomic::AtomicBool,
    /// This server, for the children that remove themselves when empty.
    me: std::sync::OnceLock<std::sync::Weak<IoInner>>,
}

impl IoInner {
    fn create(&self, name: &str, handlers: Arc<NsHandlers>, child: bool) -> Arc<Namespace> {
        let local = match (&self.config.recovery, self.config.adapter.recovery()) {
            (Some(cfg), RecoverySupport::Memory) => {
                LocalAdapter::with_recovery(name, cfg.clone(), true)
            }
            (Some(cfg), RecoverySupport::Own) => {
                LocalAdapter::with_recovery(name, cfg.clone(), false)
            }
            (Some(_), RecoverySupport::Unsupported) => {
                tracing::warn!(
                    nsp = name,
                    "connection state recovery is off: the adapter does not support it"
                );
                LocalAdapter::new(name)
            }
            (None, _) => LocalAdapter::new(name),
        };
        let adapter = self.config.adapter.create(local);
        let owner = if child && self.config.cleanup_empty_child_namespaces {
            self.me.get().cloned()
        } else {
            None
        };
        let ns = Namespace::new(name, adapter.clone(), handlers, child, owner);
        let nsp = name.to_owned();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let ready = ns.clone();
                rt.spawn(async move {
                    if let Err(e) = adapter.init().await {
                        // Serve local clients anyway; the adapter retries on its own.
                        tracing::error!(nsp, error = %e, "adapter init failed");
                    }
                    ready.set_ready();
                });
            }
            Err(_) => ns.set_ready(),
        }
        ns
    }

    /// Starts the connectTimeout sweeper on the first connection.
    pub(crate) fn start_connect_timeouts(&self) {
        self.sweeper.get_or_init(|| {
            if let Some(engine) = self.engine.get() {
                super::connect_timeout::start(engine.clone(), self.config.connect_timeout);
            }
        });
    }

    /// The namespace a CONNECT names: a registered one, or a new child of a matching
    /// dynamic namespace. The returned guard counts the connection as under way until it
    /// is dropped, so that an empty child is not removed under it.
    pub(crate) fn namespace_for(&self, name: &str) -> Option<Connecting> {
        if name.len() > MAX_NAMESPACE_LEN {
            return None;
        }
        if let Some(ns) = self.nsps.read().get(name) {
            return Some(Connecting::new(ns.clone()));
        }
        let handlers = self
            .parents
            .read()
            .iter()
            .find(|(m, _)| m(name))
            .map(|(_, h)| h.clone())?;
        let mut nsps = self.nsps.write();
        if let Some(ns) = nsps.get(name) {
            return Some(Connecting::new(ns.clone()));
        }
        let ns = self.create(name, handlers, true);
        nsps.insert(name.to_owned(), ns.clone());
        Some(Connecting::new(ns))
    }

    /// A socket left `ns`: a child of a dynamic namespace with no socket left and none
    /// connecting is removed, with its adapter, when the option is on.
    pub(crate) fn left(&self, ns: &Arc<Namespace>) {
        if !self.config.cleanup_empty_child_namespaces || !ns.is_child() {
            return;
        }
        let removed = {
            let mut nsps = self.nsps.write();
            let current = nsps.get(ns.name()).is_some_and(|cur| Arc::ptr_eq(cur, ns));
            if !current || !ns.is_unused() {
                return;
            }
            nsps.remove(ns.name())
        };
        if let Some(ns) = removed {
            tracing::debug!(nsp = ns.name(), "empty child namespace removed");
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { ns.adapter().close().await });
            }
        }
    }
}

/// A namespace with a connection under way in it (see [`IoInner::namespace_for`]).
pub(crate) struct Connecting(Arc<Namespace>);

impl Connecting {
    fn new(ns: Arc<Namespace>) -> Self {
        ns.connecting(1);
        Connecting(ns)
    }

    pub(crate) fn ns(&self) -> &Arc<Namespace> {
        &self.0
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        self.0.connecting(-1);
        // A connection that did not join (refused, or gone) may leave the child empty.
        self.0.maybe_remove();
    }
}

/// A Socket.IO server. Cheap to clone.
#[derive(Clone)]
pub struct SocketIo {
    inner: Arc<IoInner>,
    engine: Arc<Engine<SioHandler>>,
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Default for SocketIo {
    fn default() -> Self {
        Self::new(SocketIoConfig::default())
    }
}

impl SocketIo {
    pub fn new(config: SocketIoConfig) -> Self {
        let engine_config = config.engine.clone();
        let inner = Arc::new(IoInner {
            config,
            engine: std::sync::OnceLock::new(),
            sweeper: std::sync::OnceLock::new(),
            nsps: RwLock::new(HashMap::new()),
            parents: RwLock::new(Vec::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
            me: std::sync::OnceLock::new(),
        });
        let _ = inner.me.set(Arc::downgrade(&inner));
        let engine = Engine::new(engine_config, SioHandler { io: inner.clone() });
        let _ = inner.engine.set(Arc::downgrade(&engine));
        SocketIo { inner, engine }
    }

    pub fn config(&self) -> &SocketIoConfig {
        &self.inner.config
    }

    /// Registers a namespace; `on_connect` runs for each socket that connects to it.
    pub fn ns<F>(&self, name: &str, on_connect: F) -> Arc<Namespace>
    where
        F: Fn(SocketRef) + Send + Sync + 'static,
    {
        let ns = self
            .inner
            .create(name, NsHandlers::new(Arc::new(on_connect)), false);
        self.inner.nsps.write().insert(name.to_owned(), ns.clone());
        ns
    }

    /// Registers a dynamic namespace: any name `matcher` accepts becomes a namespace
    /// with these handlers when a client first connects to it.
    pub fn dyn_ns<M, F>(&self, matcher: M, on_connect: F) -> Arc<NsHandlers>
    where
        M: Fn(&str) -> bool + Send + Sync + 'static,
        F: Fn(SocketRef) + Send + Sync + 'static,
    {
        let h = NsHandlers::new(Arc::new(on_connect));
        self.inner
            .parents
            .write()
            .push((Arc::new(matcher), h.clone()));
        h
    }

    /// A dynamic namespace matched by a regular expression.
    pub fn dyn_ns_regex<F>(&self, re: Regex, on_connect: F) -> Arc<NsHandlers>
    where
        F: Fn(SocketRef) + Send + Sync + 'static,
    {
        self.dyn_ns(move |name| re.is_match(name), on_connect)
    }

    /// A namespace that exists (registered, or a dynamic child already created).
    pub fn of(&self, name: &str) -> Option<Arc<Namespace>> {
        self.inner.nsps.read().get(name).cloned()
    }

    /// Whether a client could connect to `name`: a registered namespace, or a name one
    /// of the dynamic namespaces matches (nothing is created).
    pub fn accepts_namespace(&self, name: &str) -> bool {
        self.inner.nsps.read().contains_key(name)
            || self.inner.parents.read().iter().any(|(m, _)| m(name))
    }

    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.inner.nsps.read().values().cloned().collect()
    }

    /// The Engine.IO server underneath.
    pub fn engine(&self) -> &Arc<Engine<SioHandler>> {
        &self.engine
    }

    /// Handles a request on the server's path; anything else gets 404. Any request body
    /// works (hyper's `Incoming`, axum's `Body`, ...); see [`SocketIo::layer`] to mount
    /// the server beside other routes.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::http::BoxError>,
    {
        if self.owns(req.uri().path()) {
            self.engine.handle(req).await
        } else {
            let mut r = Response::new(Full::new(Bytes::from_static(b"Not Found")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }

    /// Whether a request path is the server's (its path, with or without the slash).
    pub fn owns(&self, p: &str) -> bool {
        let path = &self.inner.config.engine.path;
        p.starts_with(path.as_str()) || p == path.trim_end_matches('/')
    }

    /// This server as an [`HttpHandler`] for [`crate::http::serve`].
    pub fn http_handler(&self) -> HttpHandler {
        let io = self.clone();
        Arc::new(move |req| {
            let io = io.clone();
            Box::pin(async move { io.handle(req).await })
        })
    }

    /// Whether [`SocketIo::drain`] has started: the node should report itself not ready.
    pub fn is_draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the node as draining (not ready) without closing anything yet.
    pub fn begin_drain(&self) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Closes every connection with the recoverable reason `server shutting down`,
    /// spread evenly over `period` so that the clients, which reconnect at once (to other
    /// nodes, behind a load balancer), do not all arrive together. No Socket.IO
    /// DISCONNECT is sent: to the client this is a transport close, which it answers by
    /// reconnecting and, with recovery on, resuming its session. Sessions are stored
    /// before each connection closes. Call it after the listener stopped accepting.
    pub async fn drain(&self, period: Duration) {
        self.begin_drain();
        let mut all = Vec::new();
        self.engine.for_each_session(|s| all.push(s.clone()));
        if all.is_empty() {
            return;
        }
        // Evenly spread: at most one batch per 50 ms tick, one pause between batches.
        const TICK: Duration = Duration::from_millis(50);
        let batches = ((period.as_millis() / TICK.as_millis()).max(1) as usize).min(all.len());
        let per_batch = all.len().div_ceil(batches);
        let pause = period / batches as u32;
        tracing::info!(connections = all.len(), ?period, "draining connections");
        for (i, batch) in all.chunks(per_batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for s in batch {
                for sock in s.data.sockets() {
                    sock.close(DisconnectReason::ServerShuttingDown);
                }
                s.close(CloseReason::ServerShutdown);
            }
        }
    }

    /// Disconnects every socket with reason `server shutting down`, closes every
    /// connection (flushing what is queued) and the adapters. Waits up to `grace` for
    /// the connections to finish.
    pub async fn close(&self, grace: Duration) {
        for ns in self.namespaces() {
            let local = ns.adapter().local();
            let all = local.fetch_sockets(&Default::default());
            for info in all {
                if let Some(s) = local.get(info.id) {
                    s.close(DisconnectReason::ServerShuttingDown);
                }
            }
        }
        self.engine.close_all(CloseReason::ServerShutdown);
        let deadline = tokio::time::Instant::now() + grace;
        while self.engine.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for ns in self.namespaces() {
            ns.adapter().close().await;
        }
    }
}
