//! The WebSocket transport: one task per connection that reads, writes and drives the
//! heartbeat, plus the polling → WebSocket upgrade.
//!
//! The task owns the raw `TcpStream` and waits on readiness rather than on a read into
//! a buffer, so an idle connection holds no read buffer at all: memory per idle
//! connection is the task, the socket and the session. Writes are vectored and
//! non-blocking, so a slow reader never blocks the task from reading its pongs.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::packet::{Frame, Packet, PacketType};
use super::session::{Beat, CloseReason, Session};
use super::ws::{self, Decoder, WsError, WsMessage};
use super::{Engine, EngineHandler, TransportKind};

const READ_CHUNK: usize = 4096;
const MAX_IOV: usize = 64;
/// How often a pending GET gets a noop during an upgrade.
const NOOP_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    need: usize,
    decoder: Decoder,
    out: VecDeque<Bytes>,
    frames: VecDeque<Frame>,
}

enum Read {
    Messages(Vec<WsMessage>),
    Eof,
    Failed(WsError),
}

impl Conn {
    fn new(stream: TcpStream, leftover: Bytes) -> Self {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            rbuf: BytesMut::from(&leftover[..]),
            need: 0,
            decoder: Decoder::default(),
            out: VecDeque::new(),
            frames: VecDeque::new(),
        }
    }

    /// Reads what is available and decodes complete messages.
    fn read(&mut self, max: usize) -> io::Result<Read> {
        let want = self.need.saturating_sub(self.rbuf.len()).max(READ_CHUNK);
        self.rbuf.reserve(want);
        let eof = match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => return Err(e),
        };
        let msgs = self.decode(max);
        if eof {
            return Ok(Read::Eof);
        }
        msgs
    }

    fn decode(&mut self, max: usize) -> io::Result<Read> {
        let mut msgs = Vec::new();
        loop {
            match self.decoder.decode(&mut self.rbuf, max, &mut self.need) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(e) => return Ok(Read::Failed(e)),
            }
        }
        if self.rbuf.is_empty() {
            // Idle connections keep no read buffer.
            self.rbuf = BytesMut::new();
        }
        Ok(Read::Messages(msgs))
    }

    fn push_frames(&mut self) {
        for f in self.frames.drain(..) {
            self.out.push_back(f.ws_bytes().clone());
        }
    }

    /// Writes as much as the socket takes without blocking.
    fn write(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .out
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = match self.stream.try_write_vectored(&slices) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            while n > 0 {
                let front = self.out.front_mut().expect("written bytes came from out");
                if n >= front.len() {
                    n -= front.len();
                    self.out.pop_front();
                } else {
                    let _ = front.split_to(n);
                    n = 0;
                }
            }
        }
        if self.out.capacity() > 256 {
            self.out = VecDeque::new();
        }
        Ok(())
    }

    /// Best effort: sends a close frame and flushes, without waiting long.
    async fn close_with(&mut self, code: u16) {
        self.out.push_back(ws::close_frame(code));
        let flush = async {
            while !self.out.is_empty() {
                if self.stream.writable().await.is_err() || self.write().is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
    }
}

/// Runs a session that was opened on WebSocket (its open packet is already queued).
pub(crate) async fn run_fresh<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    s: Arc<Session<H::Data>>,
    stream: TcpStream,
    leftover: Bytes,
) {
    let mut conn = Conn::new(stream, leftover);
    drive(&engine, &s, &mut conn, Vec::new()).await;
}

/// Runs the upgrade of a polling session, then the session itself if it succeeds.
pub(crate) async fn run_upgrade<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    s: Arc<Session<H::Data>>,
    stream: TcpStream,
    leftover: Bytes,
) {
    let mut conn = Conn::new(stream, leftover);
    if let Some(rest) = upgrade(&engine, &s, &mut conn).await {
        drive(&engine, &s, &mut conn, rest).await;
    } else {
        s.state.lock().upgrading = false;
        conn.close_with(1000).await;
    }
}

/// The probe exchange: `2probe` → `3probe` (and a noop to release the pending GET),
/// then `5`, within `upgrade_timeout`. On success, returns the messages that came
/// right after `5` in the same read: they belong to the session.
async fn upgrade<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    s: &Arc<Session<H::Data>>,
    conn: &mut Conn,
) -> Option<Vec<WsMessage>> {
    let deadline = Instant::now() + engine.config.upgrade_timeout;
    let max = engine.config.max_payload;
    let mut probed = false;
    // Bytes already received with the upgrade request are decoded first.
    let mut pending = match conn.decode(max) {
        Ok(Read::Messages(m)) => m,
        _ => return None,
    };
    loop {
        let mut msgs = std::mem::take(&mut pending).into_iter();
        while let Some(m) = msgs.next() {
            let WsMessage::Text(t) = m else {
                return None;
            };
            match Packet::decode_text(t) {
                Ok(Packet::Ping(p)) if &p[..] == b"probe" && !probed => {
                    {
                        let mut st = s.state.lock();
                        if st.upgrading || st.transport != TransportKind::Polling {
                            return None;
                        }
                        st.upgrading = true;
                    }
                    probed = true;
                    let probe = Frame::text(PacketType::Pong, b"probe");
                    conn.out.push_back(probe.ws_bytes().clone());
                    // Release the pending GET so the client can pause polling.
                    let _ = s.send_frame(Frame::text(PacketType::Noop, b""));
                }
                Ok(Packet::Upgrade) if probed => {
                    {
                        // A session closing gracefully still upgrades: the WebSocket
                        // flushes what is queued, then closes.
                        let mut st = s.state.lock();
                        if st.closing.is_some() && !st.flush_on_close {
                            return None;
                        }
                        st.transport = TransportKind::Websocket;
                        st.upgrading = false;
                    }
                    // Release a waiting GET, and leave a wake-up for this task.
                    s.writer.notify_waiters();
                    s.writer.notify_one();
                    s.driver.notify_one();
                    tracing::debug!(sid = %s.id(), "upgraded to websocket");
                    return Some(msgs.collect());
                }
                _ => return None,
            }
        }
        if conn.write().is_err() || s.is_closed() {
            return None;
        }
        let noop_due = tokio::time::Instant::now() + NOOP_EVERY;
        tokio::select! {
            r = conn.stream.readable() => {
                if r.is_err() { return None; }
                match conn.read(max) {
                    Ok(Read::Messages(m)) => pending = m,
                    _ => return None,
                }
            }
            w = conn.stream.writable(), if !conn.out.is_empty() => {
                if w.is_err() { return None; }
            }
            // While the probe waits for `5`, keep releasing polling GETs, as the
            // reference does, so the client can finish pausing its polling.
            _ = tokio::time::sleep_until(noop_due), if probed => {
                let idle_get = {
                    let st = s.state.lock();
                    st.get_pending && st.queue.is_empty()
                };
                if idle_get {
                    let _ = s.send_frame(Frame::text(PacketType::Noop, b""));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(sid = %s.id(), "upgrade timed out");
                return None;
            }
        }
    }
}

/// The session's main loop while on WebSocket: this task is its driver.
async fn drive<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    s: &Arc<Session<H::Data>>,
    conn: &mut Conn,
    early: Vec<WsMessage>,
) {
    let max = engine.config.max_payload;
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    let mut code = 1000u16;
    for m in early {
        if !on_message(engine, s, conn, m) {
            break;
        }
    }
    loop {
        // Drain the session queue into the socket's write list.
        if conn.out.is_empty() {
            s.take_queue(&mut conn.frames);
            conn.push_frames();
        }
        let (closing, flush) = {
            let st = s.state.lock();
            (st.closing, st.flush_on_close)
        };
        if closing.is_some() && (!flush || conn.out.is_empty()) {
            break;
        }
        if !conn.out.is_empty() && conn.write().is_err() {
            s.abort(CloseReason::TransportError);
            continue;
        }
        match s.beat(Instant::now()) {
            Beat::Wait(t) | Beat::PingSent(t) => {
                if sleep.deadline() != t {
                    sleep.as_mut().reset(t);
                }
            }
            Beat::TimedOut => {
                s.abort(CloseReason::PingTimeout);
                continue;
            }
        }
        let idle_out = conn.out.is_empty();
        tokio::select! {
            biased;
            r = conn.stream.readable() => {
                if r.is_err() {
                    s.abort(CloseReason::TransportError);
                    continue;
                }
                match conn.read(max) {
                    Ok(Read::Messages(msgs)) => {
                        for m in msgs {
                            if !on_message(engine, s, conn, m) { break; }
                        }
                    }
                    Ok(Read::Eof) => s.abort(CloseReason::TransportClose),
                    Ok(Read::Failed(e)) => {
                        tracing::debug!(sid = %s.id(), error = %e, "websocket protocol error");
                        code = e.close_code();
                        s.abort(CloseReason::TransportError);
                    }
                    Err(_) => s.abort(CloseReason::TransportError),
                }
            }
            w = conn.stream.writable(), if !idle_out => {
                if w.is_err() { s.abort(CloseReason::TransportError); }
            }
            _ = s.writer.notified(), if idle_out => {}
            _ = &mut sleep => {}
        }
    }
    let reason = s.state.lock().closing;
    if reason == Some(CloseReason::ParseError) {
        code = 1000;
    }
    if reason != Some(CloseReason::TransportClose) || code != 1000 {
        conn.close_with(code).await;
    }
    engine.finish(s);
}

/// Handles one WebSocket message; false when the session is closing.
fn on_message<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    s: &Arc<Session<H::Data>>,
    conn: &mut Conn,
    m: WsMessage,
) -> bool {
    tracing::trace!(sid = %s.id(), message = ?m, "websocket message");
    match m {
        WsMessage::Text(t) => match Packet::decode_text(t) {
            Ok(p) => engine.on_packet(s, p),
            Err(e) => {
                tracing::debug!(sid = %s.id(), error = %e, "invalid packet");
                s.abort(CloseReason::ParseError);
                false
            }
        },
        WsMessage::Binary(b) => engine.on_packet(s, Packet::Binary(b)),
        WsMessage::Ping(p) => {
            conn.out.push_back(ws::control_frame(0xA, &p));
            true
        }
        WsMessage::Pong => true,
        WsMessage::Close => {
            s.abort(CloseReason::TransportClose);
            conn.out.push_back(ws::close_frame(1000));
            let _ = conn.write();
            false
        }
    }
}
