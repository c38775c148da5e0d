//! The Redis transport over an in-process pub/sub stub, on the cluster layer's
//! in-process fixture: nodes with real clients, no Redis. It checks that the protocol
//! crosses in the Node adapters' formats (channels, encodings) as it does over the
//! in-memory bus, and how a silent node is reported.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;
use skein::adapter::cluster::testing::TestCluster;
use skein::adapter::cluster::{Inbound, Transport};
use skein::Data;
use skein_adapter_redis::driver::Reach;
use skein_adapter_redis::{Driver, RedisAdapterError, RedisTransport};
use tokio::sync::mpsc;

/// A pub/sub bus: every published message goes, in order, to each subscriber whose
/// channel or pattern (`prefix*`) matches, like Redis.
#[derive(Default)]
struct Bus {
    nodes: Mutex<Vec<Arc<StubDriver>>>,
    /// Every channel anything was published on.
    channels: Mutex<HashSet<String>>,
}

struct StubDriver {
    bus: Arc<Bus>,
    channels: Mutex<HashSet<String>>,
    patterns: Mutex<HashSet<String>>,
    tx: mpsc::UnboundedSender<(String, Vec<u8>)>,
    /// A muted node receives but never publishes (a node that stopped answering).
    muted: std::sync::atomic::AtomicBool,
}

impl StubDriver {
    fn new(
        bus: &Arc<Bus>,
        transport: Arc<OnceLock<Weak<RedisTransport>>>,
        inbound: Inbound,
    ) -> Arc<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
        tokio::spawn(async move {
            while let Some((c, p)) = rx.recv().await {
                if let Some(t) = transport.get().and_then(Weak::upgrade) {
                    t.route(&c, &p, &inbound);
                }
            }
        });
        let d = Arc::new(StubDriver {
            bus: bus.clone(),
            channels: Mutex::default(),
            patterns: Mutex::default(),
            tx,
            muted: Default::default(),
        });
        bus.nodes.lock().push(d.clone());
        d
    }

    fn matches(&self, channel: &str) -> bool {
        self.channels.lock().contains(channel)
            || self
                .patterns
                .lock()
                .iter()
                .any(|p| channel.starts_with(p.trim_end_matches('*')))
    }
}

#[async_trait]
impl Driver for StubDriver {
    fn publish_to(&self, channel: String, payload: Vec<u8>, _reach: Reach) {
        if self.muted.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        self.bus.channels.lock().insert(channel.clone());
        for n in self.bus.nodes.lock().iter().filter(|n| n.matches(&channel)) {
            let _ = n.tx.send((channel.clone(), payload.clone()));
        }
    }

    async fn num_sub(&self, channel: &str) -> Result<usize, RedisAdapterError> {
        Ok(self
            .bus
            .nodes
            .lock()
            .iter()
            .filter(|d| d.channels.lock().contains(channel))
            .count())
    }

    async fn subscribe(
        &self,
        channels: Vec<String>,
        patterns: Vec<String>,
    ) -> Result<(), RedisAdapterError> {
        self.channels.lock().extend(channels);
        self.patterns.lock().extend(patterns);
        Ok(())
    }

    async fn unsubscribe(&self, channels: Vec<String>, patterns: Vec<String>) {
        self.channels.lock().retain(|c| !channels.contains(c));
        self.patterns.lock().retain(|p| !patterns.contains(p));
    }
}

async fn cluster(n: usize, timeout: Duration) -> (TestCluster, Vec<Arc<StubDriver>>, Arc<Bus>) {
    let bus = Arc::new(Bus::default());
    let mut drivers = Vec::new();
    let mut pending = Vec::new();
    let c = TestCluster::start(n, timeout, |i, cluster| {
        let slot = Arc::new(OnceLock::new());
        let d = StubDriver::new(&bus, slot.clone(), cluster.inbound());
        let t = Arc::new(RedisTransport::new(
            "socket.io",
            &format!("node{i}"),
            d.clone(),
            None,
        ));
        let _ = slot.set(Arc::downgrade(&t));
        pending.push((d.clone(), t.node_channels()));
        drivers.push(d);
        // Node-level channels are subscribed before the layer starts heartbeating.
        let (d2, chans) = pending.last().cloned().unwrap();
        d2.channels.lock().extend(chans);
        (t as Arc<dyn Transport>, None)
    })
    .await;
    (c, drivers, bus)
}

#[tokio::test]
async fn broadcasts_and_requests_cross_on_the_node_adapters_channels() {
    let (c, _drivers, bus) = cluster(3, Duration::from_secs(2)).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let cl = c.connect(i).await;
        c.socket(i, &cl).join(["shared", &*format!("room-{i}")]);
        clients.push(cl);
    }
    let ns0 = c.nodes[0].io.of("/").unwrap();
    ns0.to("shared").emit("m", Data::one(json!("hi"))).unwrap();
    for cl in &mut clients {
        let (ev, args) = cl
            .next_event(Duration::from_secs(2))
            .await
            .expect("the broadcast");
        assert_eq!((ev.as_str(), &args[0]), ("m", &json!("hi")));
    }
    let rooms = c.nodes[1].io.of("/").unwrap().all_rooms().await.unwrap();
    for r in ["room-0", "room-1", "room-2", "shared"] {
        assert!(
            rooms.items.contains(&r.to_owned()),
            "{r} missing from {:?}",
            rooms.items
        );
    }
    assert!(rooms.missing.is_empty());
    assert_eq!(
        ns0.adapter().server_count().await,
        3,
        "NUMSUB of the request channel"
    );
    let sockets = ns0.fetch_sockets().await.unwrap();
    assert_eq!(sockets.len(), 3);
    let chans = bus.channels.lock().clone();
    for ch in [
        "socket.io#/#shared#",
        "socket.io-request#/#",
        "socket.io-response#/#",
        "socket.io-skein#heartbeat#",
    ] {
        assert!(chans.contains(ch), "{ch} not used: {chans:?}");
    }
}

#[tokio::test]
async fn a_silent_node_is_named_and_does_not_stall_requests() {
    let (c, drivers, _bus) = cluster(3, Duration::from_millis(300)).await;
    assert_eq!(c.nodes[0].factory.live_peers(), ["node1", "node2"]);
    drivers[2]
        .muted
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let rooms = c.nodes[0].io.of("/").unwrap().all_rooms().await.unwrap();
    let took = start.elapsed();
    assert_eq!(rooms.missing, ["node2"]);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A goodbye drops the node at once.
    drivers[2]
        .muted
        .store(false, std::sync::atomic::Ordering::Relaxed);
    c.nodes[2].factory.goodbye();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.nodes[0].factory.live_peers(), ["node1"]);
}
