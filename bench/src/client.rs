//! A small Socket.IO v5 client over Engine.IO v4 WebSocket transport (no polling
//! upgrade dance: it opens `?EIO=4&transport=websocket` directly, as the official
//! client does with `transports: ["websocket"]`).

use crate::proto::{self, Packet};
use crate::ws::{LeanWs, WsMsg};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Which WebSocket implementation carries the frames.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WsImpl {
    /// Own frame I/O on tokio (see ws.rs): the cheap default.
    #[default]
    Lean,
    /// tokio-tungstenite's WebSocketStream, for cross-checking.
    Tungstenite,
}

static WS_IMPL: OnceLock<WsImpl> = OnceLock::new();

pub fn set_ws_impl(i: WsImpl) {
    let _ = WS_IMPL.set(i);
}

/// One server to talk to, parsed from `http://127.0.0.1:3000`, `ws://…` or `127.0.0.1:3000`.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub ws_url: String,
    pub path_query: String,
    pub url: String,
}

impl Target {
    pub fn parse(url: &str, path: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .unwrap_or(url);
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr = hostport
            .to_socket_addrs()
            .with_context(|| format!("bad target address {hostport:?}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| anyhow!("no IPv4 address for {hostport:?}"))?;
        // The bench only ever loads servers on this machine.
        if !addr.ip().is_loopback() {
            bail!("refusing non-loopback target {addr}: the bench only targets 127.0.0.0/8");
        }
        let path = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        Ok(Target {
            addr,
            ws_url: format!("ws://{addr}{path}?EIO=4&transport=websocket"),
            path_query: format!("{path}?EIO=4&transport=websocket"),
            url: format!("http://{addr}"),
        })
    }
}

/// Chooses the local source address of each client socket. One 127.0.0.x address
/// gives about 28k ephemeral ports towards one server port, so past that the
/// clients are spread over 127.0.0.1, 127.0.0.2, … (bound before connect).
#[derive(Clone, Copy, Debug)]
pub struct SrcAddrs {
    pub count: u32,
}

/// Connections per (source address, server) pair before another source address is used.
pub const PER_SRC_ADDR: u64 = 25_000;

impl SrcAddrs {
    /// `requested` 0 means automatic, from the largest number of connections
    /// that will be open towards a single server at once.
    pub fn new(requested: u32, conns_per_target: u64) -> SrcAddrs {
        let count = if requested > 0 {
            requested
        } else {
            conns_per_target.div_ceil(PER_SRC_ADDR).max(1) as u32
        };
        SrcAddrs {
            count: count.min(250),
        }
    }

    /// Source address for client number `i`, or None to let the kernel choose (one address).
    pub fn for_client(&self, i: u64) -> Option<Ipv4Addr> {
        if self.count <= 1 {
            return None;
        }
        let k = (i % self.count as u64) as u8;
        Some(Ipv4Addr::new(127, 0, 0, 1 + k))
    }
}

async fn tcp_connect(
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    rcvbuf: Option<u32>,
) -> Result<TcpStream> {
    let stream = match (src, rcvbuf) {
        (None, None) => TcpStream::connect(addr).await?,
        _ => {
            let sock = TcpSocket::new_v4()?;
            if let Some(size) = rcvbuf {
                // Before connect, so that the window it advertises is small from the start
                // (a fixed size also turns the kernel's receive autotuning off).
                sock.set_recv_buffer_size(size)?;
            }
            if let Some(ip) = src {
                sock.set_reuseaddr(true)?;
                sock.bind(SocketAddr::new(ip.into(), 0))
                    .with_context(|| format!("bind {ip}"))?;
            }
            sock.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn ws_config() -> WebSocketConfig {
    // Small eager buffers: tens of thousands of clients live in this process.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

enum Ws {
    Lean(LeanWs),
    Tt(Box<WebSocketStream<TcpStream>>),
}

/// A connected Socket.IO client on namespace `/`.
pub struct Conn {
    ws: Ws,
    next_ack: u64,
}

impl Conn {
    /// TCP connect, WebSocket handshake, Engine.IO open, Socket.IO CONNECT to `/`;
    /// with a fixed socket receive buffer of `rcvbuf` bytes if given (e.g. for a client
    /// that is going to stop reading).
    pub async fn connect_with(
        target: &Target,
        src: Option<Ipv4Addr>,
        rcvbuf: Option<u32>,
    ) -> Result<Conn> {
        let tcp = tcp_connect(target.addr, src, rcvbuf)
            .await
            .context("tcp connect")?;
        let ws = match WS_IMPL.get().copied().unwrap_or_default() {
            WsImpl::Lean => Ws::Lean(
                LeanWs::handshake(tcp, &target.addr.to_string(), &target.path_query)
                    .await
                    .context("websocket handshake")?,
            ),
            WsImpl::Tungstenite => {
                let (ws, _resp) = tokio_tungstenite::client_async_with_config(
                    target.ws_url.as_str(),
                    tcp,
                    Some(ws_config()),
                )
                .await
                .context("websocket handshake")?;
                Ws::Tt(Box::new(ws))
            }
        };
        let mut conn = Conn { ws, next_ack: 0 };
        let open = conn
            .recv()
            .await?
            .ok_or_else(|| anyhow!("closed before open"))?;
        if !matches!(proto::parse(&open), Packet::Open(_)) {
            bail!(
                "expected Engine.IO open, got {:?}",
                &open[..open.len().min(80)]
            );
        }
        conn.send(proto::CONNECT).await?;
        loop {
            let text = conn
                .recv()
                .await?
                .ok_or_else(|| anyhow!("closed before connect"))?;
            match proto::parse(&text) {
                Packet::Connect(_) => return Ok(conn),
                Packet::ConnectError(e) => bail!("connect_error {e}"),
                _ => continue,
            }
        }
    }

    /// Like `connect`, bounded in time.
    pub async fn connect_timeout(
        target: &Target,
        src: Option<Ipv4Addr>,
        limit: Duration,
    ) -> Result<Conn> {
        Conn::connect_timeout_with(target, src, None, limit).await
    }

    /// Like `connect_with`, bounded in time.
    pub async fn connect_timeout_with(
        target: &Target,
        src: Option<Ipv4Addr>,
        rcvbuf: Option<u32>,
        limit: Duration,
    ) -> Result<Conn> {
        tokio::time::timeout(limit, Conn::connect_with(target, src, rcvbuf))
            .await
            .map_err(|_| anyhow!("connect timed out after {limit:?}"))?
    }

    pub async fn send(&mut self, text: &str) -> Result<()> {
        match &mut self.ws {
            Ws::Lean(ws) => ws.send_text(text).await,
            Ws::Tt(ws) => Ok(ws.send(Message::text(text)).await?),
        }
    }

    async fn recv_text(&mut self) -> Result<Option<String>> {
        match &mut self.ws {
            Ws::Lean(ws) => match ws.recv().await? {
                WsMsg::Text(t) => Ok(Some(t)),
                WsMsg::Close => Ok(None),
            },
            Ws::Tt(ws) => loop {
                match ws.next().await {
                    None => return Ok(None),
                    Some(msg) => match msg? {
                        Message::Text(t) => return Ok(Some(t.to_string())),
                        Message::Close(_) => return Ok(None),
                        _ => continue,
                    },
                }
            },
        }
    }

    /// Next Engine.IO text packet, answering pings on the way. `None` once the
    /// server disconnected us or closed the socket. Safe to use in `select!`:
    /// a cancelled call loses no packet.
    pub async fn recv(&mut self) -> Result<Option<String>> {
        loop {
            let Some(t) = self.recv_text().await? else {
                return Ok(None);
            };
            match proto::parse(&t) {
                Packet::Ping(data) => {
                    let pong = format!("{}{}", proto::PONG, data);
                    self.send(&pong).await?;
                }
                Packet::Disconnect => return Ok(None),
                _ => return Ok(Some(t)),
            }
        }
    }

    /// Emits `event` with already-encoded JSON `args` and an ack id; returns the id.
    pub async fn emit_with_ack(&mut self, event: &str, args: &str) -> Result<u64> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(&proto::emit(event, args, Some(id))).await?;
        Ok(id)
    }

    /// Waits for the ack `id`, skipping other packets; returns the ack packet.
    pub async fn wait_ack(&mut self, id: u64) -> Result<String> {
        loop {
            let text = self
                .recv()
                .await?
                .ok_or_else(|| anyhow!("disconnected while waiting for ack"))?;
            if let Packet::Ack(got, _) = proto::parse(&text) {
                if got == id {
                    return Ok(text);
                }
            }
        }
    }

    /// `join(room, ack)` and wait for the ack.
    pub async fn join(&mut self, room: &str) -> Result<()> {
        let id = self.emit_with_ack("join", &proto::json_str(room)).await?;
        self.wait_ack(id).await?;
        Ok(())
    }

    /// Clean close: Socket.IO DISCONNECT then a WebSocket close handshake (bounded).
    pub async fn close(mut self) {
        let _ = self.send(proto::DISCONNECT).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            match &mut self.ws {
                Ws::Lean(ws) => {
                    let _ = ws.close().await;
                }
                Ws::Tt(ws) => {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }
        })
        .await;
    }
}
