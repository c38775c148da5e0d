//! The node: its id, its transport (and log), its namespaces' adapters, its peers and
//! its pending requests; where incoming messages are routed; the heartbeat and the
//! session keepalive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::RwLock;

use super::adapter::ClusterAdapter;
use super::message::{Envelope, Message, NodeId};
use super::peers::{Peers, HEARTBEAT_EVERY};
use super::requests::Requests;
use super::transport::{ClusterLog, Delivery, Inbound, PeerCount, PeerIds, Transport};
use crate::adapter::{Adapter, AdapterFactory, LocalAdapter, RecoverySupport, SessionStore};

/// How often a node rewrites the sessions of its connected sockets, so that a node that
/// dies leaves them recoverable for the whole disconnection duration.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// Options of the cluster layer.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id; random when empty.
    pub node_id: String,
    /// How long a request to the other nodes waits for their answers.
    pub request_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            request_timeout: Duration::from_millis(5000),
        }
    }
}

pub(crate) struct Node {
    pub id: NodeId,
    pub cfg: ClusterConfig,
    pub transport: OnceLock<Arc<dyn Transport>>,
    pub log: OnceLock<Arc<dyn ClusterLog>>,
    adapters: RwLock<HashMap<String, Weak<ClusterAdapter>>>,
    pub peers: Arc<Peers>,
    pub requests: Requests,
    /// The goodbye was sent: no more heartbeats.
    leaving: AtomicBool,
}

impl Node {
    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        self.transport
            .get()
            .expect("the transport is set before any namespace exists")
    }

    pub(crate) fn adapter(&self, nsp: &str) -> Option<Arc<ClusterAdapter>> {
        self.adapters.read().get(nsp).and_then(Weak::upgrade)
    }

    /// Forgets a namespace's adapter, unless a new one took its name meanwhile.
    pub(crate) fn forget(&self, nsp: &str, adapter: &ClusterAdapter) {
        let mut map = self.adapters.write();
        if map
            .get(nsp)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), adapter))
        {
            map.remove(nsp);
        }
    }

    fn all_adapters(&self) -> Vec<Arc<ClusterAdapter>> {
        self.adapters
            .read()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    fn beat(&self, msg: Message) {
        if let Some(t) = self.transport.get() {
            t.publish("/", &msg);
        }
    }

    /// Routes what a transport or a log received.
    fn on_inbound(&self, env: Envelope, delivery: Delivery) {
        let own = *env.from == *self.id;
        if own && delivery == Delivery::Bus {
            return;
        }
        match env.msg {
            Message::Heartbeat | Message::InitialHeartbeat if !own => {
                let new = self.peers.heard(&env.from);
                // A node we did not know may not know us either (it may have started
                // after our last heartbeat): answer at once rather than leave it blind.
                if (new || env.msg == Message::InitialHeartbeat)
                    && !self.leaving.load(Ordering::Acquire)
                {
                    self.beat(Message::Heartbeat);
                }
            }
            Message::Goodbye if !own => self.peers.gone(&env.from),
            Message::Heartbeat | Message::InitialHeartbeat | Message::Goodbye => {}
            Message::Response(r) => self.requests.answer(env.from, &r.req, r.body),
            msg => {
                if let Some(a) = self.adapter(&env.nsp) {
                    a.on_message(env.from, msg, delivery);
                }
            }
        }
    }
}

/// Builds a node's cluster layer: give its [`Cluster::inbound`] to the backend's
/// transport (and log), then [`Cluster::start`] it with them.
pub struct Cluster {
    node: Arc<Node>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.node.id)
            .finish()
    }
}

impl Cluster {
    pub fn new(cfg: ClusterConfig) -> Self {
        let id: NodeId = if cfg.node_id.is_empty() {
            super::requests::new_id()[..6].into()
        } else {
            cfg.node_id.as_str().into()
        };
        Cluster {
            node: Arc::new(Node {
                id,
                cfg,
                transport: OnceLock::new(),
                log: OnceLock::new(),
                adapters: RwLock::new(HashMap::new()),
                peers: Arc::default(),
                requests: Requests::default(),
                leaving: AtomicBool::new(false),
            }),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Where the backend hands what it receives.
    pub fn inbound(&self) -> Inbound {
        let weak = Arc::downgrade(&self.node);
        Arc::new(move |env, delivery| {
            if let Some(n) = weak.upgrade() {
                n.on_inbound(env, delivery);
            }
        })
    }

    /// How many other nodes are alive now.
    pub fn peer_count(&self) -> PeerCount {
        let peers = self.node.peers.clone();
        Arc::new(move || peers.count())
    }

    /// Which other nodes are alive now.
    pub fn live_peers(&self) -> PeerIds {
        let peers = self.node.peers.clone();
        Arc::new(move || peers.live())
    }

    /// Starts the layer over `transport` (and `log`, which carries broadcasts and stores
    /// sessions when connection state recovery is on): heartbeats, and the keepalive of
    /// the sessions.
    pub fn start(
        self,
        transport: Arc<dyn Transport>,
        log: Option<Arc<dyn ClusterLog>>,
    ) -> ClusterFactory {
        let _ = self.node.transport.set(transport);
        let has_log = log.is_some();
        if let Some(l) = log {
            let _ = self.node.log.set(l);
        }
        self.node.beat(Message::InitialHeartbeat);
        let weak = Arc::downgrade(&self.node);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                let Some(n) = weak.upgrade() else { return };
                if n.leaving.load(Ordering::Acquire) {
                    return;
                }
                n.beat(Message::Heartbeat);
            }
        });
        if has_log {
            tokio::spawn(keepalive(Arc::downgrade(&self.node)));
        }
        ClusterFactory { node: self.node }
    }
}

/// Rewrites the sessions of every connected socket every [`KEEPALIVE`], and at once
/// when the log's backend comes back after an outage.
async fn keepalive(node: Weak<Node>) {
    loop {
        let Some(log) = node.upgrade().and_then(|n| n.log.get().cloned()) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(KEEPALIVE) => {}
            _ = log.resync() => {}
        }
        let Some(n) = node.upgrade() else { return };
        log.housekeeping();
        for a in n.all_adapters() {
            for rec in a.local().session_records() {
                // A refresh: no packet waits for it.
                let _ = log.save(&rec);
            }
        }
    }
}

/// Builds a [`ClusterAdapter`] for each namespace; the node's handle for everything
/// else (its id, its peers, the backend's health).
#[derive(Clone)]
pub struct ClusterFactory {
    node: Arc<Node>,
}

impl std::fmt::Debug for ClusterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterFactory")
            .field("id", &self.node.id)
            .finish()
    }
}

impl ClusterFactory {
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Nodes alive now (heartbeats), this one excluded, sorted.
    pub fn live_peers(&self) -> Vec<String> {
        self.node
            .peers
            .live()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// Whether the backend (and the log) can be used now.
    pub fn backend_up(&self) -> bool {
        self.node.transport().is_up() && self.node.log.get().is_none_or(|l| l.is_up())
    }

    /// Deliveries to other nodes that did not happen, one per message and node.
    pub fn undelivered(&self) -> u64 {
        self.node.transport().undelivered() + self.node.log.get().map_or(0, |l| l.undelivered())
    }

    /// Tells the other nodes this one is leaving, and stops heartbeating.
    pub fn goodbye(&self) {
        if !self.node.leaving.swap(true, Ordering::AcqRel) {
            self.node.beat(Message::Goodbye);
        }
    }

    /// Lets the transport flush what it queued (after [`ClusterFactory::goodbye`]).
    pub async fn close(&self) {
        self.node.transport().close().await;
    }
}

impl AdapterFactory for ClusterFactory {
    fn create(&self, local: LocalAdapter) -> Arc<dyn Adapter> {
        if let Some(log) = self.node.log.get() {
            local.set_session_store(log.clone() as Arc<dyn SessionStore>);
        }
        let nsp = local.nsp().to_owned();
        let a = ClusterAdapter::new(local, self.node.clone());
        self.node.adapters.write().insert(nsp, Arc::downgrade(&a));
        a
    }

    fn recovery(&self) -> RecoverySupport {
        if self.node.log.get().is_some() {
            RecoverySupport::Own
        } else {
            RecoverySupport::Unsupported
        }
    }
}
