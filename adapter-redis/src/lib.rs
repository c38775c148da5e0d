//! Skein's Redis adapter, wire-compatible with `@socket.io/redis-adapter` 8.x (classic
//! mode) and `@socket.io/redis-emitter` 5.x: Node.js socket.io servers and Skein nodes
//! on one Redis serve one cluster.
//!
//! - [`wire`]: channel names and message types; [`msgpack`]: notepack's dialect;
//! - [`driver`]: the pub/sub seam ([`Driver`]) and the Redis implementation;
//! - `adapter`: the per-namespace [`RedisAdapter`] (what it sends);
//! - `incoming`: what it does with other nodes' messages;
//! - this file: configuration, the factory, and node liveness.
//!
//! Liveness: the reference counts nodes with `PUBSUB NUMSUB` on the request channel,
//! which a dead node leaves as soon as Redis sees its connection close. Skein nodes also
//! publish a heartbeat every 2 s on `<key>-skein#heartbeat#` (and a goodbye when they
//! stop), so a request can name the Skein nodes that did not answer; a node silent for
//! 6 s is dropped.

mod adapter;
pub mod driver;
mod incoming;
pub mod msgpack;
mod recovery;
pub mod streams;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::json;
use skein::adapter::{Adapter, AdapterFactory, LocalAdapter, RecoverySupport};

pub use adapter::RedisAdapter;
pub use driver::{Driver, Health, RedisDriver};

/// Errors of the Redis adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisAdapterError {
    #[error("invalid redis URL: {0}")]
    Url(String),
    #[error("redis unreachable: {0}")]
    Unreachable(String),
}

/// Checks the syntax of a Redis URL without connecting (`skein --check-config`).
pub fn check_url(url: &str) -> Result<(), RedisAdapterError> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| RedisAdapterError::Url(e.to_string()))
}

/// Options of the Redis adapter, with the reference's defaults.
#[derive(Debug, Clone)]
pub struct RedisAdapterConfig {
    pub url: String,
    /// Channel prefix (`key` in the reference).
    pub key: String,
    /// How long a cluster request waits for the other nodes (`requestsTimeout`).
    pub request_timeout: Duration,
    /// This node's id (`uid`); random when empty.
    pub node_id: String,
}

impl Default for RedisAdapterConfig {
    fn default() -> Self {
        RedisAdapterConfig {
            url: "redis://127.0.0.1:6379".into(),
            key: "socket.io".into(),
            request_timeout: Duration::from_millis(5000),
            node_id: String::new(),
        }
    }
}

const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const PEER_TIMEOUT: Duration = Duration::from_secs(6);

pub(crate) struct Shared {
    pub uid: String,
    pub key: String,
    pub timeout: Duration,
    pub driver: Arc<dyn Driver>,
    adapters: RwLock<HashMap<String, Weak<RedisAdapter>>>,
    peers: Mutex<HashMap<String, Instant>>,
    heartbeat_channel: String,
    /// Streams mode: the stream log and session store.
    pub(crate) streams: OnceLock<Arc<streams::StreamLog>>,
}

impl Shared {
    pub(crate) fn adapter(&self, nsp: &str) -> Option<Arc<RedisAdapter>> {
        self.adapters.read().get(nsp).and_then(Weak::upgrade)
    }

    /// Routes a message from a subscription to its namespace's adapter.
    fn route(&self, channel: &str, payload: &[u8]) {
        if channel == self.heartbeat_channel {
            self.on_heartbeat(payload);
            return;
        }
        let Some(nsp) = wire::nsp_of(channel, &self.key) else {
            return;
        };
        let adapter = self.adapters.read().get(nsp).and_then(Weak::upgrade);
        if let Some(a) = adapter {
            a.on_message(channel, payload);
        }
    }

    fn on_heartbeat(&self, payload: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let Some(uid) = v.get("uid").and_then(|u| u.as_str()) else {
            return;
        };
        if uid == self.uid {
            return;
        }
        let is_new = {
            let mut peers = self.peers.lock();
            if v.get("type").and_then(|t| t.as_str()) == Some("bye") {
                peers.remove(uid);
                false
            } else {
                peers.insert(uid.to_owned(), Instant::now()).is_none()
            }
        };
        // A node we did not know may not know us either (it may have started after our
        // last heartbeat): answer at once rather than leave it blind for a period.
        if is_new {
            self.beat("hb");
        }
    }

    /// Forgets a namespace's adapter, unless a new one took its name meanwhile.
    pub(crate) fn forget(&self, nsp: &str, adapter: &RedisAdapter) {
        let mut map = self.adapters.write();
        if map
            .get(nsp)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), adapter))
        {
            map.remove(nsp);
        }
    }

    /// The adapter of a namespace, without keeping it alive.
    pub fn adapter_handle(&self, nsp: &str) -> Weak<RedisAdapter> {
        self.adapters.read().get(nsp).cloned().unwrap_or_default()
    }

    /// Skein peers heard from within the liveness window.
    pub fn live_peers(&self) -> Vec<String> {
        let mut peers = self.peers.lock();
        peers.retain(|_, seen| seen.elapsed() < PEER_TIMEOUT);
        let mut v: Vec<String> = peers.keys().cloned().collect();
        v.sort();
        v
    }

    fn beat(&self, kind: &str) {
        let msg = json!({ "uid": self.uid, "type": kind }).to_string();
        self.driver
            .publish_uncounted(self.heartbeat_channel.clone(), msg.into_bytes());
    }
}

/// Builds a [`RedisAdapter`] for each namespace; all share one driver.
#[derive(Clone)]
pub struct RedisAdapterFactory {
    shared: Arc<Shared>,
    health: Option<Arc<Health>>,
}

impl std::fmt::Debug for RedisAdapterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapterFactory")
            .field("uid", &self.shared.uid)
            .field("key", &self.shared.key)
            .finish()
    }
}

impl RedisAdapterFactory {
    /// Connects to Redis; a bad URL or an unreachable server is an error here, so a
    /// misconfigured node fails at startup rather than running alone.
    pub async fn connect(config: RedisAdapterConfig) -> Result<Self, RedisAdapterError> {
        let slot: Arc<OnceLock<Weak<Shared>>> = Arc::new(OnceLock::new());
        let route_slot = slot.clone();
        let on_message: driver::OnMessage = Arc::new(move |channel, payload| {
            if let Some(shared) = route_slot.get().and_then(Weak::upgrade) {
                shared.route(channel, payload);
            }
        });
        let peers_slot = slot.clone();
        let peers: driver::PeerCount = Arc::new(move || {
            peers_slot
                .get()
                .and_then(Weak::upgrade)
                .map_or(0, |s| s.live_peers().len())
        });
        let driver = RedisDriver::connect(&config.url, on_message, peers).await?;
        let health = driver.health.clone();
        let factory = Self::with_driver(config, driver);
        let _ = slot.set(Arc::downgrade(&factory.shared));
        let hb = factory.shared.heartbeat_channel.clone();
        factory.shared.driver.subscribe(vec![hb], vec![]).await?;
        factory.start_heartbeat();
        Ok(RedisAdapterFactory {
            health: Some(health),
            ..factory
        })
    }

    /// A factory over any driver (an in-process stub in tests). The caller routes
    /// incoming messages with [`RedisAdapterFactory::route`].
    pub fn with_driver(config: RedisAdapterConfig, driver: Arc<dyn Driver>) -> Self {
        let uid = if config.node_id.is_empty() {
            random_id(6)
        } else {
            config.node_id.clone()
        };
        let shared = Arc::new(Shared {
            heartbeat_channel: format!("{}-skein#heartbeat#", config.key),
            uid,
            key: config.key,
            timeout: config.request_timeout,
            driver,
            adapters: RwLock::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            streams: OnceLock::new(),
        });
        RedisAdapterFactory {
            shared,
            health: None,
        }
    }

    fn start_heartbeat(&self) {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(s) => s.beat("hb"),
                    None => return,
                }
                tokio::time::sleep(HEARTBEAT_EVERY).await;
            }
        });
    }

    /// Hands a message from a subscription to its namespace.
    pub fn route(&self, channel: &str, payload: &[u8]) {
        self.shared.route(channel, payload)
    }

    pub fn node_id(&self) -> &str {
        &self.shared.uid
    }

    /// Skein nodes currently alive (heartbeats), this one excluded.
    pub fn live_peers(&self) -> Vec<String> {
        self.shared.live_peers()
    }

    /// Deliveries to other nodes that did not happen (Redis unreachable or saturated, or
    /// a node not subscribed when a message was published): one per message and node.
    pub fn undelivered(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let pubsub = self
            .health
            .as_ref()
            .map_or(0, |h| h.undelivered.load(Relaxed));
        let stream = self
            .shared
            .streams
            .get()
            .map_or(0, |l| l.stats.lost.load(Relaxed));
        pubsub + stream
    }

    /// Redis is not usable now: unreachable, not answering, or (streams mode) the stream
    /// is not being written or read.
    pub fn redis_down(&self) -> bool {
        self.health.as_ref().is_some_and(|h| h.is_down())
            || self.shared.streams.get().is_some_and(|l| l.is_down())
    }

    /// Switches to streams mode (see [`streams`]): broadcasts through the stream, and
    /// connection state recovery with sessions in Redis. Call before creating namespaces.
    pub async fn enable_streams(
        &self,
        url: &str,
        cfg: streams::StreamsConfig,
    ) -> Result<(), RedisAdapterError> {
        let log = streams::StreamLog::start(
            url,
            cfg,
            self.shared.uid.clone(),
            Arc::downgrade(&self.shared),
        )
        .await?;
        let _ = self.shared.streams.set(log.clone());
        let weak = Arc::downgrade(&self.shared);
        let resync = log.resync.clone();
        tokio::spawn(async move {
            loop {
                // Also at once when Redis comes back: it may have lost every session.
                tokio::select! {
                    _ = tokio::time::sleep(streams::KEEPALIVE) => {}
                    _ = resync.notified() => {}
                }
                let Some(s) = weak.upgrade() else { return };
                let Some(log) = s.streams.get().cloned() else {
                    return;
                };
                log.trim_by_age();
                let adapters: Vec<_> = s
                    .adapters
                    .read()
                    .values()
                    .filter_map(Weak::upgrade)
                    .collect();
                for a in adapters {
                    for rec in a.local.session_records() {
                        // A refresh: no packet waits for it.
                        let _ = skein::adapter::SessionStore::save(&*log, &rec);
                    }
                }
            }
        });
        Ok(())
    }

    /// Streams mode: broadcasts delivered on this node only, because they could not be
    /// logged (Redis away, or the write queue full).
    pub fn streams_unlogged(&self) -> u64 {
        self.shared.streams.get().map_or(0, |l| {
            l.stats.unlogged.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Tells the other nodes this one is leaving.
    pub fn goodbye(&self) {
        self.shared.beat("bye");
    }
}

impl AdapterFactory for RedisAdapterFactory {
    fn recovery(&self) -> RecoverySupport {
        if self.shared.streams.get().is_some() {
            RecoverySupport::Own
        } else {
            RecoverySupport::Unsupported
        }
    }

    fn create(&self, local: LocalAdapter) -> Arc<dyn Adapter> {
        if let Some(log) = self.shared.streams.get() {
            local.set_session_store(log.clone());
        }
        let nsp = local.nsp().to_owned();
        let a = Arc::new(RedisAdapter::new(local, self.shared.clone()));
        self.shared.adapters.write().insert(nsp, Arc::downgrade(&a));
        a
    }
}

pub(crate) fn random_id(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
