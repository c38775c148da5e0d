//! The adapter's routing over an in-process pub/sub stub: several nodes in one process,
//! no Redis. Checks the cross-node requests and how a silent node is reported.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;
use skein::adapter::{AdapterFactory, BroadcastOptions, LocalAdapter};
use skein::{Data, Sid};
use skein_adapter_redis::{Driver, RedisAdapterConfig, RedisAdapterError, RedisAdapterFactory};

/// A pub/sub bus: every published message goes to each subscriber whose channel or
/// pattern (`prefix*`) matches, like Redis.
#[derive(Default)]
struct Bus {
    nodes: Mutex<Vec<(Arc<StubDriver>, Weak<RedisAdapterFactory>)>>,
}

#[derive(Default)]
struct StubDriver {
    bus: Mutex<Weak<Bus>>,
    channels: Mutex<HashSet<String>>,
    patterns: Mutex<HashSet<String>>,
    /// A muted node receives but never publishes (a node that stopped answering).
    muted: std::sync::atomic::AtomicBool,
}

impl StubDriver {
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
    fn publish(&self, channel: String, payload: Vec<u8>) {
        if self.muted.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Some(bus) = self.bus.lock().upgrade() else {
            return;
        };
        let targets: Vec<_> = bus
            .nodes
            .lock()
            .iter()
            .filter(|(d, _)| d.matches(&channel))
            .filter_map(|(_, f)| f.upgrade())
            .collect();
        // Deliver asynchronously, as a broker would.
        tokio::spawn(async move {
            for f in targets {
                f.route(&channel, &payload);
            }
        });
    }

    async fn num_sub(&self, channel: &str) -> Result<usize, RedisAdapterError> {
        let bus = self.bus.lock().upgrade().expect("bus alive");
        let n = bus
            .nodes
            .lock()
            .iter()
            .filter(|(d, _)| d.channels.lock().contains(channel))
            .count();
        Ok(n)
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

struct Node {
    factory: Arc<RedisAdapterFactory>,
    driver: Arc<StubDriver>,
    ns: Arc<dyn skein::Adapter>,
}

async fn cluster(n: usize) -> (Arc<Bus>, Vec<Node>) {
    let bus = Arc::new(Bus::default());
    let mut nodes = Vec::new();
    for i in 0..n {
        let driver = Arc::new(StubDriver::default());
        *driver.bus.lock() = Arc::downgrade(&bus);
        let config = RedisAdapterConfig {
            node_id: format!("node{i}"),
            request_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let factory = Arc::new(RedisAdapterFactory::with_driver(config, driver.clone()));
        bus.nodes
            .lock()
            .push((driver.clone(), Arc::downgrade(&factory)));
        let ns = factory.create(LocalAdapter::new("/"));
        ns.init().await.expect("stub subscribe");
        nodes.push(Node {
            factory,
            driver,
            ns,
        });
    }
    (bus, nodes)
}

#[tokio::test]
async fn requests_gather_every_node() {
    let (_bus, nodes) = cluster(3).await;
    for (i, n) in nodes.iter().enumerate() {
        let sid = Sid::new();
        n.ns.add_all(sid, &[format!("room-{i}").into(), "shared".into()]);
        let me = n.factory.node_id().to_owned();
        n.ns.local().on_server_event(
            "ping",
            Arc::new(move |d: Data, ack| {
                if let Some(ack) = ack {
                    ack(Data::one(json!({ "node": me, "got": d.args })));
                }
            }),
        );
    }
    assert_eq!(nodes[0].ns.server_count().await, 3);
    let rooms = nodes[0].ns.all_rooms().await.unwrap();
    for r in ["room-0", "room-1", "room-2", "shared"] {
        assert!(
            rooms.items.contains(&r.to_owned()),
            "{r} missing from {:?}",
            rooms.items
        );
    }
    assert!(rooms.missing.is_empty());
    let g = nodes[1]
        .ns
        .server_side_emit_with_ack(
            skein::adapter::EventPacket {
                event: "ping".into(),
                data: Data::one(json!(42)),
            },
            Duration::from_millis(500),
        )
        .await
        .unwrap();
    let mut answered: Vec<String> = g
        .items
        .iter()
        .map(|d| d.args[0]["node"].as_str().unwrap().to_owned())
        .collect();
    answered.sort();
    assert_eq!(answered, ["node0", "node2"]);
    assert_eq!(g.items[0].args[0]["got"], json!([42]));
    // No sockets are connected: every node answers the fetch with an empty list.
    let f = nodes[0]
        .ns
        .fetch_sockets(BroadcastOptions::default())
        .await
        .unwrap();
    assert!(f.items.is_empty(), "no sockets are connected in this test");
}

#[tokio::test]
async fn a_silent_node_is_named_and_does_not_stall_requests() {
    let (_bus, nodes) = cluster(3).await;
    // Heartbeats as the real factory sends them, so node0 knows its peers by name.
    for n in &nodes[1..] {
        let hb = json!({ "uid": n.factory.node_id(), "type": "hb" }).to_string();
        nodes[0]
            .factory
            .route("socket.io-skein#heartbeat#", hb.as_bytes());
    }
    assert_eq!(nodes[0].factory.live_peers(), ["node1", "node2"]);
    nodes[2]
        .driver
        .muted
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let rooms = nodes[0].ns.all_rooms().await.unwrap();
    let took = start.elapsed();
    assert_eq!(rooms.missing, ["node2"]);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A goodbye drops the node at once.
    let bye = json!({ "uid": "node2", "type": "bye" }).to_string();
    nodes[0]
        .factory
        .route("socket.io-skein#heartbeat#", bye.as_bytes());
    assert_eq!(nodes[0].factory.live_peers(), ["node1"]);
}
