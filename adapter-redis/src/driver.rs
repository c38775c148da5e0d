//! The pub/sub seam: the adapter's routing logic talks to a [`Driver`], so it can be
//! tested with an in-process stub; [`RedisDriver`] is the real one.
//!
//! The Redis driver keeps three connections: a `ConnectionManager` for commands, another
//! one for the ordered publisher task that pipelines what is queued, and a subscriber
//! connection that is re-established with backoff (and every subscription replayed) when
//! it drops. While Redis is unreachable the node keeps serving its local clients; what
//! cannot cross nodes is counted, and the outage is logged once when it starts and once
//! when it ends.
//!
//! Counting what was not delivered: `PUBLISH` answers how many subscribers received the
//! message, and every node subscribes to every channel a message for all nodes is sent
//! on, so a message that reached fewer than the live nodes missed the others (typically:
//! after a Redis restart, before they subscribed again). This node's own subscription is
//! among those counted, and it may come back at any moment, so each publish pipeline is
//! a transaction (`MULTI`/`EXEC`: no subscription changes inside it) that starts with
//! two probes, one on a channel and one on a pattern that only this node's current
//! subscriber connection holds; they say exactly whether this node was counted. The
//! subscriber subscribes its channels (probe first) in one command and its patterns
//! (probe last) in another, so the probes tell the three states apart: none, channels
//! only, all. A message to one node (its own channel) should reach 1.
//! The publisher has no response timeout:
//! a Redis that is stopped (SIGSTOP) or slow delivers the queued messages when it resumes,
//! so they are not counted as lost; only a connection error, a stall longer than
//! [`STALL_LIMIT`] or a full queue is. A stall longer than [`STALL_DOWN`] shows as an
//! outage on `/metrics` meanwhile.

use std::collections::BTreeMap;
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
/// How many other nodes are alive now: each published message should reach all of them.
pub type PeerCount = Arc<dyn Fn() -> usize + Send + Sync>;

/// A publish pipeline in flight this long shows as an outage (`backend_up` 0).
pub const STALL_DOWN: Duration = Duration::from_secs(2);
/// A publish pipeline in flight this long is given up and its messages counted as lost.
pub const STALL_LIMIT: Duration = Duration::from_secs(15);

/// Who should receive a published message, so that what did not cross is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every live node (a broadcast, a request): this one included.
    All,
    /// The one node whose own channel it is sent on.
    One,
    /// Housekeeping (heartbeats): a loss is not counted in `undelivered`, which tells
    /// operators what application traffic did not cross.
    Uncounted,
}

impl Reach {
    /// The deliveries to other nodes a message misses if it does not cross at all.
    fn if_lost(self, peers: u64) -> u64 {
        match self {
            Reach::All => peers,
            Reach::One => 1,
            Reach::Uncounted => 0,
        }
    }
}

/// What the adapter needs from a pub/sub backend.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Queues a message for every node; messages are published in the order queued.
    /// Never blocks.
    fn publish(&self, channel: String, payload: Vec<u8>) {
        self.publish_to(channel, payload, Reach::All)
    }
    /// Queues a message for the receivers `reach` says, in the same order as the rest.
    fn publish_to(&self, channel: String, payload: Vec<u8>, reach: Reach);
    /// How many connections subscribe to `channel` (how the reference counts nodes).
    async fn num_sub(&self, channel: &str) -> Result<usize, RedisAdapterError>;
    /// Adds subscriptions, kept across reconnections.
    async fn subscribe(
        &self,
        channels: Vec<String>,
        patterns: Vec<String>,
    ) -> Result<(), RedisAdapterError>;
    /// Drops subscriptions (a namespace was removed).
    async fn unsubscribe(&self, channels: Vec<String>, patterns: Vec<String>);
}

/// Outage bookkeeping shared by the publisher and the subscriber.
#[derive(Debug, Default)]
pub struct Health {
    /// Deliveries to other nodes that did not happen: one per message and node missed.
    pub undelivered: AtomicU64,
    /// The publisher cannot reach Redis: messages are counted as lost at once, until a
    /// probe gets an answer again.
    publish_down: AtomicBool,
    /// This node's subscriber connection is attached (for `is_down`; the publisher
    /// learns whether it was counted from its probes).
    subscribed: AtomicBool,
    /// Unix ms when the publish pipeline now in flight was sent (0: none).
    inflight_since: AtomicU64,
    /// An outage was logged and its end was not yet.
    logged: AtomicBool,
}

impl Health {
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        if !self.logged.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %e, "redis unreachable ({what}); serving local clients only until it returns");
        }
    }

    /// One side works again; the end of the outage is logged once both do.
    fn ok(&self) {
        if !self.is_down() && self.logged.swap(false, Ordering::AcqRel) {
            tracing::info!(
                undelivered_total = self.undelivered.load(Ordering::Relaxed),
                "redis reachable again"
            );
        }
    }

    /// Redis is unreachable, this node's subscription is not live, or Redis has not
    /// answered a publish for [`STALL_DOWN`].
    pub fn is_down(&self) -> bool {
        let since = self.inflight_since.load(Ordering::Acquire);
        self.publish_down.load(Ordering::Acquire)
            || !self.subscribed.load(Ordering::Acquire)
            || (since != 0 && now_ms().saturating_sub(since) >= STALL_DOWN.as_millis() as u64)
    }

    /// Counts `n` deliveries that did not happen.
    pub fn lost(&self, n: u64, why: &'static str) {
        if n > 0 {
            tracing::debug!(n, why, "deliveries to other nodes lost");
            self.undelivered.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn now_ms() -> u64 {
    skein::adapter::recovery::now_ms()
}

/// Subscriptions, counted: a namespace removed and created again at once (a dynamic
/// child) holds the same channels twice for a moment, and only the last release
/// unsubscribes. Changed only under the sink lock, so that the wire follows the counts.
#[derive(Default)]
struct Subs {
    channels: BTreeMap<String, usize>,
    patterns: BTreeMap<String, usize>,
}

/// Counts one more holder of each name; returns the names that were not held.
fn hold(map: &mut BTreeMap<String, usize>, names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| {
            let c = map.entry(n.clone()).or_default();
            *c += 1;
            *c == 1
        })
        .collect()
}

/// Counts one holder less of each name; returns the names no longer held.
fn release(map: &mut BTreeMap<String, usize>, names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| match map.get_mut(n) {
            Some(c) if *c > 1 => {
                *c -= 1;
                false
            }
            Some(_) => {
                map.remove(n);
                true
            }
            None => false,
        })
        .collect()
}

/// The probes of one driver: a channel and a pattern (a literal: no glob characters)
/// that only its subscriber connection holds, and no other Redis client publishes on.
#[derive(Clone)]
struct Probes {
    channel: String,
    pattern: String,
}

impl Probes {
    fn new() -> Self {
        let id: u64 = rand::random();
        Probes {
            channel: format!("__skein-probe#{id:016x}#c"),
            pattern: format!("__skein-probe#{id:016x}#p"),
        }
    }

    fn is_probe(&self, channel: &str) -> bool {
        channel == self.channel || channel == self.pattern
    }
}

/// The Redis driver.
pub struct RedisDriver {
    tx: mpsc::Sender<Outgoing>,
    cmd: ConnectionManager,
    subs: parking_lot::Mutex<Subs>,
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    pub health: Arc<Health>,
    peers: PeerCount,
    probes: Probes,
}

/// A message to publish: channel, payload, and who should receive it.
type Outgoing = (String, Vec<u8>, Reach);

/// Messages queued for publishing beyond which new ones are dropped (and counted).
const PUBLISH_QUEUE: usize = 65_536;

impl RedisDriver {
    /// Connects (failing fast on a bad URL or an unreachable server) and starts the
    /// publisher and subscriber tasks. `peers` says how many other nodes each published
    /// message should reach.
    pub async fn connect(
        url: &str,
        on_message: OnMessage,
        peers: PeerCount,
    ) -> Result<Arc<Self>, RedisAdapterError> {
        let client = redis::Client::open(url).map_err(|e| RedisAdapterError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager = |config: ConnectionManagerConfig| {
            let client = client.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    client.get_connection_manager_with_config(config),
                )
                .await
                .map_err(|_| RedisAdapterError::Unreachable(format!("{url}: timed out")))?
                .map_err(|e| RedisAdapterError::Unreachable(format!("{url}: {e}")))
            }
        };
        let cmd = manager(config.clone()).await?;
        // No response timeout for publishing: a timed-out PUBLISH may still be delivered
        // (Redis resumes after a pause), so the publisher bounds the wait itself.
        let publish = manager(config.set_response_timeout(None)).await?;
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let driver = Arc::new(RedisDriver {
            tx,
            cmd,
            subs: parking_lot::Mutex::new(Subs::default()),
            sink: tokio::sync::Mutex::new(None),
            health: Arc::new(Health::default()),
            peers,
            probes: Probes::new(),
        });
        tokio::spawn(publisher(rx, publish, Arc::downgrade(&driver)));
        let probes = driver.probes.clone();
        tokio::spawn(subscriber(
            client,
            Arc::downgrade(&driver),
            on_message,
            probes,
        ));
        Ok(driver)
    }

    /// (Re)subscribes everything on a fresh subscriber connection: the channels in one
    /// command, the channel probe first, then the patterns in one, the pattern probe
    /// last (Redis runs each command whole, so the probes mark where it stands).
    async fn attach(&self, mut sink: PubSubSink) -> redis::RedisResult<()> {
        let mut guard = self.sink.lock().await;
        let (mut channels, mut patterns) = (vec![self.probes.channel.clone()], Vec::new());
        {
            let s = self.subs.lock();
            channels.extend(s.channels.keys().cloned());
            patterns.extend(s.patterns.keys().cloned());
        }
        patterns.push(self.probes.pattern.clone());
        sink.subscribe(channels).await?;
        sink.psubscribe(patterns).await?;
        *guard = Some(sink);
        Ok(())
    }

    /// How many receivers each message of a batch should have had, given how many
    /// other nodes are live and how many times this node was counted for its channels
    /// and for its patterns (`own`: the probes' answers) when Redis ran the batch.
    /// `None`: uncounted.
    fn expected(&self, batch: &[Outgoing], peers: u64, own: (u64, u64)) -> Vec<Option<u64>> {
        let subs = self.subs.lock();
        batch
            .iter()
            .map(|(channel, _, reach)| match reach {
                Reach::Uncounted => None,
                Reach::One => Some(1),
                // A message for all goes to a subscribed channel (a request) or to one
                // the namespace's pattern covers (a broadcast).
                Reach::All if subs.channels.contains_key(channel) => Some(peers + own.0),
                Reach::All => Some(peers + own.1),
            })
            .collect()
    }
}

#[async_trait]
impl Driver for RedisDriver {
    fn publish_to(&self, channel: String, payload: Vec<u8>, reach: Reach) {
        if self.tx.try_send((channel, payload, reach)).is_err() {
            // Queue full (Redis stalled for long): the message reaches no other node.
            self.health
                .lost(reach.if_lost((self.peers)() as u64), "publish queue full");
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
        let mut guard = self.sink.lock().await;
        let (channels, patterns) = {
            let mut s = self.subs.lock();
            (
                hold(&mut s.channels, channels),
                hold(&mut s.patterns, patterns),
            )
        };
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

    async fn unsubscribe(&self, channels: Vec<String>, patterns: Vec<String>) {
        let mut guard = self.sink.lock().await;
        let (channels, patterns) = {
            let mut s = self.subs.lock();
            (
                release(&mut s.channels, channels),
                release(&mut s.patterns, patterns),
            )
        };
        if let Some(sink) = guard.as_mut() {
            // Best effort: a connection that drops now comes back without them anyway.
            for p in patterns {
                let _ = sink.punsubscribe(p).await;
            }
            for c in channels {
                let _ = sink.unsubscribe(c).await;
            }
        }
    }
}

async fn publisher(
    mut rx: mpsc::Receiver<Outgoing>,
    mut conn: ConnectionManager,
    driver: std::sync::Weak<RedisDriver>,
) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let Some(d) = driver.upgrade() else { return };
        let health = d.health.clone();
        // What the batch owes other nodes if none of it crosses.
        let owed = |peers: u64| -> u64 { batch.iter().map(|m| m.2.if_lost(peers)).sum() };
        if health.publish_down.load(Ordering::Acquire) {
            // Redis is away (a probe is waiting for it): fail fast rather than queue
            // stale messages, and count them.
            health.lost(owed((d.peers)() as u64), "redis away");
            batch.clear();
            continue;
        }
        // One transaction: this node's subscriptions cannot change inside it, and the
        // two probes say which of them Redis counted.
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("PUBLISH").arg(&d.probes.channel).arg("");
        pipe.cmd("PUBLISH").arg(&d.probes.pattern).arg("");
        for (c, p, _) in &batch {
            pipe.cmd("PUBLISH").arg(c).arg(p);
        }
        health.inflight_since.store(now_ms(), Ordering::Release);
        let mut res =
            tokio::time::timeout(STALL_LIMIT, pipe.query_async::<Vec<u64>>(&mut conn)).await;
        // A connection that Redis closed (CLIENT KILL, a restart) fails on its first use
        // after that with a broken pipe: nothing was sent, and the manager has connected
        // again, so the batch goes out once more.
        let mut retry = Duration::from_millis(10);
        while matches!(&res, Ok(Err(e)) if is_broken_pipe(e)) && retry < Duration::from_millis(200)
        {
            tokio::time::sleep(retry).await;
            retry *= 2;
            res = tokio::time::timeout(STALL_LIMIT, pipe.query_async::<Vec<u64>>(&mut conn)).await;
        }
        health.inflight_since.store(0, Ordering::Release);
        // Counted after the answer: the peers known then are those that should have it.
        let peers = (d.peers)() as u64;
        match res {
            Ok(Ok(received)) if received.len() == batch.len() + 2 => {
                health.ok();
                let expected = d.expected(&batch, peers, (received[0], received[1]));
                let missed = received[2..]
                    .iter()
                    .zip(expected)
                    .filter_map(|(r, e)| e.map(|e| e.saturating_sub(*r)));
                health.lost(missed.sum(), "fewer receivers than live nodes");
            }
            Ok(Ok(received)) => {
                tracing::warn!(
                    got = received.len(),
                    sent = batch.len() + 2,
                    "redis answered a publish transaction with the wrong number of replies"
                );
                health.lost(owed(peers), "publish answer unreadable");
            }
            Ok(Err(e)) => {
                health.lost(owed(peers), "publish failed");
                go_down(&health, &conn, &e);
            }
            Err(_) => {
                health.lost(owed(peers), "publish stalled");
                go_down(&health, &conn, &"no answer within the stall limit");
            }
        }
        batch.clear();
    }
}

fn is_broken_pipe(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Io
        && (std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || e.to_string().contains("broken pipe"))
}

/// Marks publishing down and probes Redis with backoff until it answers; meanwhile
/// messages are counted as lost instead of being queued behind a dead connection.
fn go_down(health: &Arc<Health>, conn: &ConnectionManager, e: &dyn std::fmt::Display) {
    health.failed("publish", e);
    if health.publish_down.swap(true, Ordering::AcqRel) {
        return;
    }
    let (health, mut conn) = (health.clone(), conn.clone());
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            tokio::time::sleep(backoff).await;
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            if pong.is_ok() {
                health.publish_down.store(false, Ordering::Release);
                health.ok();
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
}

async fn subscriber(
    client: redis::Client,
    driver: std::sync::Weak<RedisDriver>,
    on_message: OnMessage,
    probes: Probes,
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
                        health.subscribed.store(true, Ordering::Release);
                        health.ok();
                        drop(d);
                        while let Some(msg) = stream.next().await {
                            let channel = msg.get_channel_name();
                            if !probes.is_probe(channel) {
                                on_message(channel, msg.get_payload_bytes());
                            }
                        }
                        health.subscribed.store(false, Ordering::Release);
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
