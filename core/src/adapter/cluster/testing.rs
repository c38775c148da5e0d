//! An in-process cluster for tests (feature `testing`): N nodes, each a Socket.IO server
//! on 127.0.0.1:0 over the cluster layer with the transport a test chooses, and clients
//! connected to them over real WebSockets. Every backend runs its routing tests on it:
//! the memory bus here, a stub of its broker with its own codec in its crate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::memory::{MemoryBus, MemoryTransport};
use super::node::{Cluster, ClusterConfig, ClusterFactory};
use super::transport::{ClusterLog, Transport};
use crate::{SocketIo, SocketIoConfig};

/// One node of a [`TestCluster`].
pub struct TestNode {
    pub io: SocketIo,
    pub factory: ClusterFactory,
    pub addr: SocketAddr,
}

/// N nodes of one cluster.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// What a backend gives a node: its transport, and its log when recovery is on.
pub type Backend = (Arc<dyn Transport>, Option<Arc<dyn ClusterLog>>);

impl TestCluster {
    /// Starts `n` nodes named `node0`… whose backends `backend(i, cluster)` builds (hand
    /// the transport `cluster.inbound()`), each serving "/" on a free loopback port, and
    /// waits until every node knows the others.
    pub async fn start<F>(n: usize, request_timeout: Duration, mut backend: F) -> TestCluster
    where
        F: FnMut(usize, &Cluster) -> Backend,
    {
        let mut nodes = Vec::new();
        for i in 0..n {
            let cluster = Cluster::new(ClusterConfig {
                node_id: format!("node{i}"),
                request_timeout,
            });
            let (transport, log) = backend(i, &cluster);
            let factory = cluster.start(transport, log);
            let io = SocketIo::new(SocketIoConfig {
                adapter: Arc::new(factory.clone()),
                ..SocketIoConfig::default()
            });
            io.ns("/", |_| {});
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let addr = listener.local_addr().expect("bound");
            tokio::spawn(crate::http::serve(
                listener,
                io.http_handler(),
                std::future::pending(),
                Duration::from_secs(1),
            ));
            nodes.push(TestNode { io, factory, addr });
        }
        let c = TestCluster { nodes };
        c.wait_formed().await;
        c
    }

    /// `n` nodes on one [`MemoryBus`]; their transports, to mute one.
    pub async fn memory(
        n: usize,
        request_timeout: Duration,
    ) -> (TestCluster, Vec<Arc<MemoryTransport>>) {
        let bus = MemoryBus::new();
        let mut ts = Vec::new();
        let c = TestCluster::start(n, request_timeout, |i, cluster| {
            let t = bus.transport(&format!("node{i}"), cluster.inbound());
            ts.push(t.clone());
            (t as Arc<dyn Transport>, None)
        })
        .await;
        (c, ts)
    }

    async fn wait_formed(&self) {
        let want = self.nodes.len() - 1;
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while self
            .nodes
            .iter()
            .any(|n| n.factory.live_peers().len() != want)
        {
            assert!(
                tokio::time::Instant::now() < end,
                "the test cluster did not form"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client of node `i` in namespace "/".
    pub async fn connect(&self, i: usize) -> TestClient {
        TestClient::connect(self.nodes[i].addr).await
    }

    /// The server side of a client of node `i`.
    pub fn socket(&self, i: usize, c: &TestClient) -> crate::SocketRef {
        self.nodes[i]
            .io
            .of("/")
            .and_then(|ns| ns.socket(c.sid))
            .expect("the client's socket is on that node")
    }
}

/// A Socket.IO client over a raw WebSocket: enough to connect to "/", receive events
/// (it answers pings) and emit.
pub struct TestClient {
    stream: TcpStream,
    buf: BytesMut,
    pub sid: crate::Sid,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient")
            .field("sid", &self.sid)
            .finish()
    }
}

impl TestClient {
    pub async fn connect(addr: SocketAddr) -> TestClient {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = BytesMut::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(
                stream.read_buf(&mut buf).await.expect("read") > 0,
                "closed during the handshake"
            );
        }
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("found")
            + 4;
        assert!(buf.starts_with(b"HTTP/1.1 101"), "upgrade refused");
        buf.advance(end);
        let mut c = TestClient {
            stream,
            buf,
            sid: crate::Sid::new(),
        };
        let open = c.next_text().await.expect("open packet");
        assert!(open.starts_with('0'), "open packet: {open}");
        c.send_text("40").await;
        let reply = c.next_text().await.expect("CONNECT reply");
        let v: Value =
            serde_json::from_str(reply.strip_prefix("40").expect("a CONNECT reply")).expect("JSON");
        c.sid = v["sid"].as_str().and_then(|s| s.parse().ok()).expect("sid");
        c
    }

    async fn send_text(&mut self, text: &str) {
        let mask = [1u8, 2, 3, 4];
        let p = text.as_bytes();
        let mut f = vec![0x81];
        if p.len() < 126 {
            f.push(0x80 | p.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&f).await.expect("write");
    }

    /// The next text message (Engine.IO packet); `None` when the connection closed.
    async fn next_text(&mut self) -> Option<String> {
        loop {
            if self.buf.len() >= 2 {
                let op = self.buf[0] & 0x0f;
                let (len, h) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(a) as usize, 10)
                    }
                    n @ 0..=125 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= h + len {
                    self.buf.advance(h);
                    let payload = self.buf.split_to(len);
                    match op {
                        0x1 => return Some(String::from_utf8_lossy(&payload).into_owned()),
                        0x8 => return None,
                        _ => continue,
                    }
                }
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    /// The next event within `within`, pings answered on the way: its name and arguments.
    pub async fn next_event(&mut self, within: Duration) -> Option<(String, Vec<Value>)> {
        let end = tokio::time::Instant::now() + within;
        loop {
            let t = tokio::time::timeout_at(end, self.next_text())
                .await
                .ok()??;
            if t == "2" {
                self.send_text("3").await;
                continue;
            }
            let Some(json) = t.strip_prefix("42") else {
                continue;
            };
            let Ok(Value::Array(mut a)) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            if a.is_empty() {
                continue;
            }
            let name = a.remove(0).as_str().unwrap_or_default().to_owned();
            return Some((name, a));
        }
    }

    /// Every event that arrives within `within`.
    pub async fn events(&mut self, within: Duration) -> Vec<(String, Vec<Value>)> {
        let end = tokio::time::Instant::now() + within;
        let mut v = Vec::new();
        while let Some(e) = self
            .next_event(end.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            v.push(e);
        }
        v
    }

    /// The next Engine.IO packet that is not a ping, as text (`42…` for an event).
    pub async fn raw_next(&mut self, within: Duration) -> Option<String> {
        let end = tokio::time::Instant::now() + within;
        loop {
            let t = tokio::time::timeout_at(end, self.next_text())
                .await
                .ok()??;
            if t == "2" {
                self.send_text("3").await;
                continue;
            }
            return Some(t);
        }
    }

    /// Sends an Engine.IO packet as it is (`43<id>[...]` answers an ack).
    pub async fn send_raw(&mut self, text: &str) {
        self.send_text(text).await;
    }

    /// Emits an event to the server.
    pub async fn emit(&mut self, event: &str, args: Vec<Value>) {
        let mut a = vec![Value::String(event.to_owned())];
        a.extend(args);
        self.send_text(&format!("42{}", Value::Array(a))).await;
    }
}
