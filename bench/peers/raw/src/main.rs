//! The ceiling of the Skein benchmark: what this machine can do with the bench's frames
//! when no Socket.IO server stands behind them. It is not a Socket.IO server: it speaks
//! just enough Engine.IO / Socket.IO framing for the generator (open packet, CONNECT
//! reply) and answers the contract's events as directly as it can:
//!
//! - its own WebSocket frame I/O on a tokio `TcpStream` (no codec layers, no UTF-8
//!   validation, no per-connection writer task): every frame read in one `read` is
//!   answered, and the replies leave in one `write`;
//! - `echo` → the ack frame, built by rewriting the event frame;
//! - `join` → the connection added to a room and the ack;
//! - `pub` → one `msg` frame, encoded once, written straight to every member's socket
//!   from the publisher's task (`try_write`, one syscall per member, no wake-up of the
//!   member's task unless its socket is full, when the rest waits in its queue).
//!
//! Usage: raw-peer [--port N] [--host 127.0.0.1]; prints `listening on HOST:PORT`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest frame accepted from a client.
const MAX_FRAME: usize = 1 << 20;

/// One connection's sending side, shared with the publishers that write to it.
struct Peer {
    write: OwnedWriteHalf,
    out: Mutex<Out>,
    /// Wakes the connection's task to flush `out.queued`.
    flush: Notify,
}

#[derive(Default)]
struct Out {
    /// Bytes that did not fit in the socket, in order.
    queued: Vec<u8>,
    /// The connection's task is writing `queued`: others append behind it.
    flushing: bool,
    closed: bool,
}

impl Peer {
    /// Sends `frame` now if the socket takes it, else queues it (order kept).
    fn send(&self, frame: &[u8]) {
        let mut out = self.out.lock().unwrap();
        if out.closed {
            return;
        }
        if !out.flushing && out.queued.is_empty() {
            match self.write.try_write(frame) {
                Ok(n) if n == frame.len() => return,
                Ok(n) => out.queued.extend_from_slice(&frame[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.queued.extend_from_slice(frame)
                }
                Err(_) => {
                    out.closed = true;
                    return;
                }
            }
            drop(out);
            self.flush.notify_one();
        } else {
            out.queued.extend_from_slice(frame);
        }
    }
}

/// A room's members: (connection id, its sending side).
type Members = Vec<(u64, Arc<Peer>)>;

#[derive(Default)]
struct State {
    next: AtomicU64,
    rooms: Mutex<HashMap<String, Members>>,
}

fn arg(name: &str, def: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    let flag = format!("--{name}");
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| def.to_owned())
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let port = arg("port", "0");
    let host = arg("host", "127.0.0.1");
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(
        format!("{host}:{port}")
            .parse()
            .expect("--host must be an IP"),
    )?;
    let listener = socket.listen(4096)?;
    let mut out = io::stdout();
    writeln!(out, "listening on {}", listener.local_addr()?)?;
    out.flush()?;
    let state = Arc::new(State::default());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp, state.clone()));
    }
}

/// Appends a server (unmasked) text frame of `payload` to `out`.
fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    frame_op(out, 0x1, payload);
}

fn frame_op(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n < 65536 {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Reads the HTTP upgrade request and answers 101; leftover bytes stay in `buf`.
async fn handshake(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 || read_more(tcp, buf).await? == 0 {
            return Err(io::ErrorKind::InvalidData.into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let key = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.trim().to_owned())
        .ok_or(io::ErrorKind::InvalidData)?;
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    tcp.write_all(resp.as_bytes()).await
}

async fn read_more<R: AsyncReadExt + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(16 * 1024);
    r.read_buf(buf).await
}

async fn serve(mut tcp: TcpStream, state: Arc<State>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    if handshake(&mut tcp, &mut buf).await.is_err() {
        return;
    }
    let id = state.next.fetch_add(1, Ordering::Relaxed);
    let (read, write) = tcp.into_split();
    let peer = Arc::new(Peer {
        write,
        out: Mutex::new(Out::default()),
        flush: Notify::new(),
    });
    let mut joined: Vec<String> = Vec::new();
    let _ = run(id, read, buf, &peer, &state, &mut joined).await;
    peer.out.lock().unwrap().closed = true;
    let mut rooms = state.rooms.lock().unwrap();
    for r in joined {
        if let Some(members) = rooms.get_mut(&r) {
            members.retain(|(m, _)| *m != id);
        }
    }
}

async fn run(
    id: u64,
    mut read: OwnedReadHalf,
    mut buf: Vec<u8>,
    peer: &Arc<Peer>,
    state: &State,
    joined: &mut Vec<String>,
) -> io::Result<()> {
    let mut replies = Vec::with_capacity(4096);
    let open = format!(
        r#"0{{"sid":"raw{id:017}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
    );
    frame(&mut replies, open.as_bytes());
    peer.send(&replies);
    replies.clear();
    loop {
        // Answer every complete frame in the buffer, then send the replies at once.
        let mut at = 0;
        while let Some((opcode, start, end)) = parse_frame(&mut buf[at..])? {
            let payload = &buf[at + start..at + end];
            match opcode {
                0x1 => answer(payload, id, peer, state, joined, &mut replies),
                0x8 => {
                    frame_op(&mut replies, 0x8, &[]);
                    peer.send(&replies);
                    return Ok(());
                }
                0x9 => frame_op(&mut replies, 0xA, payload),
                _ => {}
            }
            at += end;
        }
        buf.drain(..at);
        if !replies.is_empty() {
            peer.send(&replies);
            replies.clear();
        }
        tokio::select! {
            n = read_more(&mut read, &mut buf) => if n? == 0 { return Ok(()) },
            _ = peer.flush.notified() => flush(peer).await?,
        }
    }
}

/// Writes what the socket did not take, until the queue is empty.
async fn flush(peer: &Peer) -> io::Result<()> {
    loop {
        let chunk = {
            let mut out = peer.out.lock().unwrap();
            if out.queued.is_empty() || out.closed {
                out.flushing = false;
                return Ok(());
            }
            out.flushing = true;
            std::mem::take(&mut out.queued)
        };
        let mut done = 0;
        while done < chunk.len() {
            peer.write.writable().await?;
            match peer.write.try_write(&chunk[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    peer.out.lock().unwrap().closed = true;
                    return Err(e);
                }
            }
        }
    }
}

/// A complete client frame at the start of `b`: (opcode, payload start, payload end),
/// its payload unmasked in place; `None` if incomplete.
fn parse_frame(b: &mut [u8]) -> io::Result<Option<(u8, usize, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_FRAME {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mask = if masked {
        if b.len() < at + 4 {
            return Ok(None);
        }
        let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    if b.len() < at + len {
        return Ok(None);
    }
    if let Some(m) = mask {
        for (i, x) in b[at..at + len].iter_mut().enumerate() {
            *x ^= m[i & 3];
        }
    }
    Ok(Some((opcode, at, at + len)))
}

/// Appends the frames answering text frame `t` to `replies` (a `pub` goes straight
/// to the room's members).
fn answer(
    t: &[u8],
    id: u64,
    peer: &Arc<Peer>,
    state: &State,
    joined: &mut Vec<String>,
    replies: &mut Vec<u8>,
) {
    if t == b"40" || t.starts_with(b"40{") {
        frame(replies, format!(r#"40{{"sid":"rs{id:018}"}}"#).as_bytes());
        return;
    }
    // 42<ackid>["event", ...]
    let Some(rest) = t.strip_prefix(b"42") else {
        return; // pong, close, anything else
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let (ack, json) = rest.split_at(digits);
    if let Some(args) = json.strip_prefix(br#"["echo""#) {
        // The ack carries the arguments as they came: cut the event name out.
        if !ack.is_empty() {
            let args = args.strip_prefix(b",").unwrap_or(args);
            let mut p = Vec::with_capacity(3 + ack.len() + args.len());
            p.extend_from_slice(b"43");
            p.extend_from_slice(ack);
            p.push(b'[');
            p.extend_from_slice(args);
            frame(replies, &p);
        }
    } else if let Some(obj) = json.strip_prefix(br#"["pub","#) {
        let obj = obj.strip_suffix(b"]").unwrap_or(obj);
        let Some(room) = room_of(obj) else { return };
        let mut payload = Vec::with_capacity(9 + obj.len());
        payload.extend_from_slice(br#"42["msg","#);
        payload.extend_from_slice(obj);
        payload.push(b']');
        let mut f = Vec::with_capacity(payload.len() + 10);
        frame(&mut f, &payload);
        let rooms = state.rooms.lock().unwrap();
        for (_, m) in rooms.get(&room).into_iter().flatten() {
            m.send(&f);
        }
    } else if json.starts_with(br#"["join""#) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
            return;
        };
        let Some(room) = v.get(1).and_then(|r| r.as_str()) else {
            return;
        };
        state
            .rooms
            .lock()
            .unwrap()
            .entry(room.to_owned())
            .or_default()
            .push((id, peer.clone()));
        joined.push(room.to_owned());
        if !ack.is_empty() {
            let reply = format!(
                "43{}[{}]",
                String::from_utf8_lossy(ack),
                serde_json::Value::String(room.to_owned())
            );
            frame(replies, reply.as_bytes());
        }
    }
}

/// The `room` of a published object: a scan for `"room":"…"` (no escapes), else JSON.
fn room_of(obj: &[u8]) -> Option<String> {
    const KEY: &[u8] = br#""room":""#;
    if let Some(i) = obj.windows(KEY.len()).position(|w| w == KEY) {
        let rest = &obj[i + KEY.len()..];
        let end = rest.iter().position(|c| *c == b'"' || *c == b'\\')?;
        if rest[end] == b'"' {
            return std::str::from_utf8(&rest[..end]).ok().map(str::to_owned);
        }
    }
    let v: serde_json::Value = serde_json::from_slice(obj).ok()?;
    v.get("room")?.as_str().map(str::to_owned)
}
