//! Helpers of the cluster tests: nodes on 127.0.0.1:0 with short timings, in one
//! process, and waiting for conditions with a bound.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use skein_adapter_mesh::{Mesh, MeshConfig, MeshMetrics, Role};
use tokio::net::TcpListener;

pub const SECRET: &str = "test-cluster-secret";

/// The cluster tests share two cores with everything else: one at a time, so that
/// elections are not decided by the scheduler.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn init_logs() {
    if let Ok(filter) = std::env::var("SKEIN_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A node's configuration with short timings.
pub fn config(dir: &Path, name: &str, seeds: &[SocketAddr]) -> MeshConfig {
    let mut c = MeshConfig::new("127.0.0.1:0".parse().unwrap(), dir.join(name), SECRET);
    c.node_id = Some(name.into());
    c.seeds = seeds.iter().map(ToString::to_string).collect();
    c.socketio_addr = format!("{name}.example:3000");
    c.heartbeat = Duration::from_millis(100);
    c.election_timeout_min = Duration::from_millis(600);
    c.election_timeout_max = Duration::from_millis(1200);
    c.probe_interval = Duration::from_millis(200);
    c.gone_after = Duration::from_secs(2);
    c.rpc_timeout = Duration::from_millis(800);
    c.propose_timeout = Duration::from_secs(4);
    c
}

pub async fn listeners(n: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let mut ls = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        ls.push(l);
    }
    (ls, addrs)
}

/// Starts `n` nodes `n1..` that all list all of them as seeds, and waits until each is
/// admitted.
pub async fn cluster(dir: &Path, n: usize) -> (Vec<Mesh>, Vec<SocketAddr>) {
    let (ls, addrs) = listeners(n).await;
    let mut nodes = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let c = config(dir, &format!("n{}", i + 1), &addrs);
        nodes.push(Mesh::start_on(c, l).await.unwrap());
    }
    for node in &nodes {
        node.joined(Duration::from_secs(20)).await.unwrap();
    }
    (nodes, addrs)
}

/// Polls `check` until it holds, or panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The metrics of the node that leads, if exactly one does.
pub fn leader_of(nodes: &[&Mesh]) -> Option<MeshMetrics> {
    let leaders: Vec<MeshMetrics> = nodes
        .iter()
        .map(|n| n.metrics())
        .filter(|m| m.role == Role::Leader)
        .collect();
    (leaders.len() == 1).then(|| leaders.into_iter().next().unwrap())
}
