//! The pub/sub seam: the adapter's routing logic talks to a [`Driver`], so it can be
//! tested with an in-process stub; [`RedisDriver`] is the real one.
//!
//! The Redis driver keeps two connections: a `ConnectionManager` for commands, fed by an
//! ordered publisher task that pipelines what is queued, and a subscriber connection
//! that is re-established with backoff (and every subscription replayed) when it drops.
//! While Redis is unreachable the node keeps serving its local clients; messages that
//! cannot cross nodes are counted, and the outage is logged once when it starts and
//! once when it ends.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use tokio::sync::mpsc;

use crate::RedisAdapterError;

/// Handles one message from a subscription: (channel, payload).
pub type OnMessage = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// What the adapter needs from a pub/sub backend.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Queues a message; messages are published in the order queued. Never blocks.
    fn publish(&self, channel: String, payload: Vec<u8>);
    /// How many connections subscribe to `channel` (how the reference counts nodes).
    async fn num_sub(&self, channel: &str) -> Result<usize, RedisAdapterError>;
    /// Adds subscriptions, kept across reconnections.
    async fn subscribe(
        &self,
        channels: Vec<String>,
        patterns: Vec<String>,
    ) -> Result<(), RedisAdapterError>;
}

/// Outage bookkeeping shared by the publisher and the subscriber.
#[derive(Debug, Default)]
pub struct Health {
    /// Messages that could not be published (they did not reach the other nodes).
    pub undelivered: AtomicU64,
    down: AtomicBool,
}

impl Health {
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %e, "redis unreachable ({what}); serving local clients only until it returns");
        }
    }

    fn ok(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(
                undelivered_total = self.undelivered.load(Ordering::Relaxed),
                "redis reachable again"
            );
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct Subs {
    channels: BTreeSet<String>,
    patterns: BTreeSet<String>,
}

/// The Redis driver.
pub struct RedisDriver {
    tx: mpsc::Sender<(String, Vec<u8>)>,
    cmd: ConnectionManager,
    subs: parking_lot::Mutex<Subs>,
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    pub health: Arc<Health>,
}

/// Messages queued for publishing beyond which new ones are dropped (and counted).
const PUBLISH_QUEUE: usize = 65_536;

impl RedisDriver {
    /// Connects (failing fast on a bad URL or an unreachable server) and starts the
    /// publisher and subscriber tasks.
    pub async fn connect(url: &str, on_message: OnMessage) -> Result<Arc<Self>, RedisAdapterError> {
        let client = redis::Client::open(url).map_err(|e| RedisAdapterError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let cmd = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| RedisAdapterError::Unreachable(format!("{url}: timed out")))?
        .map_err(|e| RedisAdapterError::Unreachable(format!("{url}: {e}")))?;
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let driver = Arc::new(RedisDriver {
            tx,
            cmd: cmd.clone(),
            subs: parking_lot::Mutex::new(Subs::default()),
            sink: tokio::sync::Mutex::new(None),
            health: Arc::new(Health::default()),
        });
        tokio::spawn(publisher(rx, cmd, driver.health.clone()));
        tokio::spawn(subscriber(client, Arc::downgrade(&driver), on_message));
        Ok(driver)
    }

    /// (Re)subscribes everything on a fresh subscriber connection.
    async fn attach(&self, mut sink: PubSubSink) -> redis::RedisResult<()> {
        let mut guard = self.sink.lock().await;
        let (channels, patterns) = {
            let s = self.subs.lock();
            (s.channels.clone(), s.patterns.clone())
        };
        for c in channels {
            sink.subscribe(c).await?;
        }
        for p in patterns {
            sink.psubscribe(p).await?;
        }
        *guard = Some(sink);
        Ok(())
    }
}

#[async_trait]
impl Driver for RedisDriver {
    fn publish(&self, channel: String, payload: Vec<u8>) {
        if self.tx.try_send((channel, payload)).is_err() {
            self.health.undelivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn num_sub(&self, channel: &str) -> Result<usize, RedisAdapterError> {
        let mut c = self.cmd.clone();
        let r: redis::RedisResult<(String, usize)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut c)
            .await;
        r.map(|(_, n)| n)
            .map_err(|e| RedisAdapterError::Unreachable(e.to_string()))
    }

    async fn subscribe(
        &self,
        channels: Vec<String>,
        patterns: Vec<String>,
    ) -> Result<(), RedisAdapterError> {
        {
            let mut s = self.subs.lock();
            s.channels.extend(channels.iter().cloned());
            s.patterns.extend(patterns.iter().cloned());
        }
        let mut guard = self.sink.lock().await;
        if let Some(sink) = guard.as_mut() {
            // Broadcast patterns first: they carry the traffic a new namespace's first
            // client is waiting for.
            for p in patterns {
                sink.psubscribe(p)
                    .await
                    .map_err(|e| RedisAdapterError::Unreachable(e.to_string()))?;
            }
            for c in channels {
                sink.subscribe(c)
                    .await
                    .map_err(|e| RedisAdapterError::Unreachable(e.to_string()))?;
            }
        }
        // Without a connection, the subscriber replays these when it reconnects.
        Ok(())
    }
}

async fn publisher(
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    mut conn: ConnectionManager,
    health: Arc<Health>,
) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut pipe = redis::pipe();
        for (c, p) in &batch {
            pipe.cmd("PUBLISH").arg(c).arg(p).ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => health.ok(),
            Err(e) => {
                health
                    .undelivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                health.failed("publish", &e);
            }
        }
        batch.clear();
    }
}

async fn subscriber(
    client: redis::Client,
    driver: std::sync::Weak<RedisDriver>,
    on_message: OnMessage,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(d) = driver.upgrade() else { return };
        let health = d.health.clone();
        match client.get_async_pubsub().await {
            Ok(ps) => {
                let (sink, mut stream) = ps.split();
                match d.attach(sink).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        health.ok();
                        drop(d);
                        while let Some(msg) = stream.next().await {
                            on_message(msg.get_channel_name(), msg.get_payload_bytes());
                        }
                        let Some(d) = driver.upgrade() else { return };
                        *d.sink.lock().await = None;
                        health.failed("subscription lost", &"connection closed");
                    }
                    Err(e) => health.failed("subscribe", &e),
                }
            }
            Err(e) => health.failed("subscriber connect", &e),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
