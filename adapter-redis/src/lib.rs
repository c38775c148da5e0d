//! Skein's Redis adapter, wire-compatible with `@socket.io/redis-adapter` 8.x (classic
//! mode), `@socket.io/redis-emitter` 5.x and `@socket.io/redis-streams-adapter` 0.3:
//! Node.js socket.io servers and Skein nodes on one Redis serve one cluster.
//!
//! It is a transport of Skein's cluster layer (`skein::adapter::cluster`), which holds
//! the cross-node protocol; this crate holds only what is Redis's:
//!
//! - [`transport`]: Redis pub/sub as a cluster transport; [`codec`]: the protocol in
//!   the Node adapters' formats; [`wire`]: channel names and message types; [`msgpack`]:
//!   notepack's dialect;
//! - [`driver`]: the pub/sub seam ([`Driver`]), and the Redis driver with its outage
//!   handling and the count of what did not cross;
//! - [`streams`]: streams mode, the cluster log of connection state recovery (the
//!   stream carries broadcasts and socket management, keys hold the sessions);
//! - this file: configuration and [`connect`].
//!
//! Liveness: the reference counts nodes with `PUBSUB NUMSUB` on the request channel,
//! which a dead node leaves as soon as Redis sees its connection close; the layer's
//! heartbeats (on `<key>-skein#heartbeat#`, which Node servers ignore) name the Skein
//! nodes that did not answer a request.

pub(crate) mod codec;
pub mod driver;
pub mod msgpack;
pub mod streams;
pub mod transport;
pub mod wire;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use skein::adapter::cluster::{Cluster, ClusterConfig, ClusterFactory, ClusterLog, Inbound};

pub use driver::{Driver, Health, RedisDriver};
pub use transport::RedisTransport;

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

/// Connects to Redis and starts the node's cluster layer over it; with `streams`, in
/// streams mode (broadcasts through the stream, connection state recovery across
/// nodes). A bad URL or an unreachable server is an error here, so a misconfigured node
/// fails at startup rather than running alone.
pub async fn connect(
    config: RedisAdapterConfig,
    streams: Option<streams::StreamsConfig>,
) -> Result<ClusterFactory, RedisAdapterError> {
    let cluster = Cluster::new(ClusterConfig {
        node_id: config.node_id.clone(),
        request_timeout: config.request_timeout,
    });
    let inbound = cluster.inbound();
    // The driver routes through the transport, which exists once the driver does.
    let slot: Arc<OnceLock<Weak<RedisTransport>>> = Arc::new(OnceLock::new());
    let route_slot = slot.clone();
    let route_inbound: Inbound = inbound.clone();
    let on_message: driver::OnMessage = Arc::new(move |channel, payload| {
        if let Some(t) = route_slot.get().and_then(Weak::upgrade) {
            t.route(channel, payload, &route_inbound);
        }
    });
    let driver = RedisDriver::connect(&config.url, on_message, cluster.peer_count()).await?;
    let health = driver.health.clone();
    let transport = Arc::new(RedisTransport::new(
        &config.key,
        cluster.node_id(),
        driver.clone(),
        Some(health),
    ));
    let _ = slot.set(Arc::downgrade(&transport));
    driver.subscribe(transport.node_channels(), vec![]).await?;
    let log = match streams {
        Some(cfg) => Some(
            streams::StreamLog::start(
                &config.url,
                cfg,
                cluster.node_id().to_owned(),
                inbound,
                cluster.peer_count(),
            )
            .await? as Arc<dyn ClusterLog>,
        ),
        None => None,
    };
    Ok(cluster.start(transport, log))
}
