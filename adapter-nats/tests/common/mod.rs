//! A private `nats-server` on free loopback ports (monitoring on too), which a test may
//! stop and start again, and nodes of the in-process cluster fixture over the real
//! NATS transport.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skein::adapter::cluster::testing::TestCluster;
use skein::adapter::cluster::Transport;
use skein_adapter_nats::connection;
use skein_adapter_nats::subjects::Subjects;
use skein_adapter_nats::{NatsAdapterConfig, NatsTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000
    )
}

/// A `nats-server` of this test alone.
pub struct NatsServer {
    pub port: u16,
    pub monitor: u16,
    child: Option<Child>,
    store: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts one on free ports; `jetstream` with a fresh store directory.
    pub fn start(jetstream: bool) -> NatsServer {
        let mut s = NatsServer {
            port: free_port(),
            monitor: free_port(),
            child: None,
            store: jetstream.then(|| tempfile::tempdir().unwrap()),
        };
        s.launch();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let mut cmd =
            Command::new(std::env::var("NATS_SERVER_BIN").unwrap_or("nats-server".into()));
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(d) = &self.store {
            cmd.args(["-js", "-sd", d.path().to_str().unwrap()]);
        }
        self.child = Some(
            cmd.spawn()
                .expect("nats-server (apt-get install nats-server)"),
        );
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no goodbye to the clients.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports (and store).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A monitoring endpoint's JSON (`/connz?subs=1`...).
    pub async fn monitor(&self, path: &str) -> serde_json::Value {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor))
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        let json = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null)
    }

    /// The subjects each connection (by name) subscribes now.
    pub async fn subscriptions(&self) -> Vec<(String, Vec<String>)> {
        let v = self.monitor("/connz?subs=1").await;
        v["connections"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let subs = c["subscriptions_list"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                (c["name"].as_str().unwrap_or("").to_owned(), subs)
            })
            .collect()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` nodes (`node0`...) on the fixture, each with its own NATS connection to `url`.
pub async fn cluster(n: usize, url: &str, prefix: &str, timeout: Duration) -> TestCluster {
    let handle = tokio::runtime::Handle::current();
    TestCluster::start(n, timeout, |i, cluster| {
        let cfg = NatsAdapterConfig {
            servers: vec![url.to_owned()],
            prefix: prefix.to_owned(),
            node_id: format!("node{i}"),
            request_timeout: timeout,
            ..Default::default()
        };
        // The fixture builds its backends synchronously: block this worker meanwhile.
        let t = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let conn = connection::connect(&cfg).await.expect("NATS");
                NatsTransport::start(
                    conn,
                    Subjects::new(prefix),
                    cluster.node_id(),
                    cluster.inbound(),
                    cluster.peer_count(),
                    cluster.live_peers(),
                )
                .await
                .expect("transport")
            })
        });
        (t as Arc<dyn Transport>, None)
    })
    .await
}

/// Polls `f` until it holds, or panics after `ms`.
pub async fn until<F, Fut>(ms: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_millis(ms);
    while !f().await {
        assert!(Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
