//! The WebSocket transport: one task per connection that reads, writes and drives the
//! heartbeat, plus the polling → WebSocket upgrade.
//!
//! The task waits on its connection ([`WsIo`]) rather than on a read into a buffer, so
//! an idle connection holds no read buffer at all: memory per idle connection is the
//! task, the socket and the session. Writes never block the task: a slow reader cannot
//! keep it from reading its pongs, or from hearing that its session closed.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::packet::{Frame, Packet, PacketType};
use super::session::{Beat, CloseReason, Session};
use super::ws::{self, Decoder, WsError, WsMessage};
use super::ws_io::WsIo;
use super::{Engine, EngineHandler, TransportKind};

const READ_CHUNK: usize = 4096;
const MAX_IOV: usize = 64;
/// How often a pending GET gets a noop during an upgrade.
const NOOP_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

struct Conn<T> {
    io: T,
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

/// What woke the connection.
enum Io {
    Read(io::Result<Read>),
    /// Everything queued was written (or writing failed).
    Written(io::Result<()>),
}

impl<T: WsIo> Conn<T> {
    fn new(io: T, leftover: Bytes) -> Self {
        Conn {
            io,
            rbuf: BytesMut::from(&leftover[..]),
            need: 0,
            decoder: Decoder::default(),
            out: VecDeque::new(),
            frames: VecDeque::new(),
        }
    }

    /// Reads what is available and decodes complete messages.
    fn poll_read(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Read>> {
        let want = self.need.saturating_sub(self.rbuf.len()).max(READ_CHUNK);
        let n = ready!(self.io.poll_read_into(cx, &mut self.rbuf, want))?;
        if n == 0 {
            return Poll::Ready(Ok(Read::Eof));
        }
        Poll::Ready(Ok(self.decode(max)))
    }

    /// Decodes the complete messages in the read buffer.
    fn decode(&mut self, max: usize) -> Read {
        let mut msgs = Vec::new();
        loop {
            match self.decoder.decode(&mut self.rbuf, max, &mut self.need) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(e) => return Read::Failed(e),
            }
        }
        if self.rbuf.is_empty() {
            // Idle connections keep no read buffer.
            self.rbuf = BytesMut::new();
        }
        Read::Messages(msgs)
    }

    fn push_frames(&mut self) {
        for f in self.frames.drain(..) {
            self.out.push_back(f.into_ws_bytes());
        }
    }

    /// Writes as much as the connection takes; ready once everything is written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .out
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = ready!(self.io.poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
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
        ready!(self.io.poll_flush(cx))?;
        if self.out.capacity() > 256 {
            self.out = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Waits for the connection: output is written first (so it always makes
    /// progress), then input is read.
    fn poll_io(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Io> {
        if !self.out.is_empty() {
            if let Poll::Ready(r) = self.poll_write(cx) {
                return Poll::Ready(Io::Written(r));
            }
        }
        self.poll_read(cx, max).map(Io::Read)
    }

    /// Best effort: sends a close frame and flushes, without waiting long.
    async fn close_with(&mut self, code: u16) {
        self.out.push_back(ws::close_frame(code));
        let flush = poll_fn(|cx| self.poll_write(cx));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
    }
}

/// What an accepted WebSocket connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A session opened on WebSocket (its open packet is already queued).
    Fresh,
    /// The upgrade of a polling session.
    Upgrade,
    /// A connection the reference accepts and closes at once (a second WebSocket for a
    /// session that is upgrading or already upgraded).
    Refuse,
}

/// Runs an accepted WebSocket connection; `leftover` is what came after the HTTP
/// request in the same read.
pub(crate) async fn run<H: EngineHandler, T: WsIo>(
    engine: Arc<Engine<H>>,
    s: Arc<Session<H::Data>>,
    mode: Mode,
    io: T,
    leftover: Bytes,
) {
    let mut conn = Conn::new(io, leftover);
    match mode {
        Mode::Fresh => drive(&engine, &s, &mut conn, Vec::new()).await,
        Mode::Upgrade => {
            if let Some(rest) = upgrade(&engine, &s, &mut conn).await {
                drive(&engine, &s, &mut conn, rest).await;
            } else {
                s.state.lock().upgrading = false;
                conn.close_with(1000).await;
            }
        }
        Mode::Refuse => conn.close_with(1000).await,
    }
}

/// The probe exchange: `2probe` → `3probe` (and a noop to release a pending GET), then
/// `5`, within `upgrade_timeout`. On success, returns the messages that came right
/// after `5` in the same read: they belong to the session.
async fn upgrade<H: EngineHandler, T: WsIo>(
    engine: &Arc<Engine<H>>,
    s: &Arc<Session<H::Data>>,
    conn: &mut Conn<T>,
) -> Option<Vec<WsMessage>> {
    let deadline = Instant::now() + engine.config.upgrade_timeout;
    let max = engine.config.max_payload;
    let mut probed = false;
    // Bytes already received with the upgrade request are decoded first.
    let mut pending = match conn.decode(max) {
        Read::Messages(m) => m,
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
                    if s.transport() != TransportKind::Polling {
                        return None;
                    }
                    probed = true;
                    let probe = Frame::text(PacketType::Pong, b"probe");
                    conn.out.push_back(probe.ws_bytes().clone());
                    // Release a pending GET so the client can pause polling. Only a
                    // pending one, as the reference: a queued noop would otherwise go
                    // out over the WebSocket after the upgrade.
                    release_idle_get(s);
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
        // Created before looking at the state, so that no close is missed. A session
        // closing gracefully may still upgrade (and flush over the WebSocket); one that
        // is gone may not.
        let closed = s.closed.notified();
        tokio::pin!(closed);
        if s.is_gone() {
            return None;
        }
        let noop_due = tokio::time::Instant::now() + NOOP_EVERY;
        tokio::select! {
            ev = poll_fn(|cx| conn.poll_io(cx, max)) => match ev {
                Io::Read(Ok(Read::Messages(m))) => pending = m,
                Io::Written(Ok(())) => {}
                _ => return None,
            },
            // The session closed (the client went away on polling, a ping timed out):
            // the reference drops the upgrading connection at once.
            _ = &mut closed => {}
            // While the probe waits for `5`, keep releasing polling GETs, as the
            // reference does, so the client can finish pausing its polling.
            _ = tokio::time::sleep_until(noop_due), if probed => release_idle_get(s),
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(sid = %s.id(), "upgrade timed out");
                return None;
            }
        }
    }
}

/// Answers a GET that waits with nothing to send with a noop.
fn release_idle_get<D>(s: &Session<D>) {
    let idle_get = {
        let st = s.state.lock();
        st.get_pending && st.queue.is_empty()
    };
    if idle_get {
        let _ = s.send_frame(Frame::text(PacketType::Noop, b""));
    }
}

/// The session's main loop while on WebSocket: this task is its driver. `early` are
/// messages already decoded (those after `5` in the upgrade's last read); bytes that
/// came with the HTTP request are decoded at once, not when more arrive.
async fn drive<H: EngineHandler, T: WsIo>(
    engine: &Arc<Engine<H>>,
    s: &Arc<Session<H::Data>>,
    conn: &mut Conn<T>,
    early: Vec<WsMessage>,
) {
    let max = engine.config.max_payload;
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    let mut code = 1000u16;
    on_read(engine, s, conn, Ok(Read::Messages(early)));
    if !s.is_closed() {
        let r = conn.decode(max);
        if let Some(c) = on_read(engine, s, conn, Ok(r)) {
            code = c;
        }
    }
    loop {
        // New frames are taken only once the previous ones are written.
        let take = conn.out.is_empty();
        // While output is pending, only a close may wake the task besides its
        // connection (an overflowing queue closes the session: a slow reader is
        // dropped at once, not at its next ping). Created (which costs nothing) before
        // looking at the state, so that no close is missed; waited on only while
        // output is pending, since the writer wake-up covers closes otherwise.
        let closed = s.closed.notified();
        tokio::pin!(closed);
        let step = s.writer_step(take.then_some(&mut conn.frames), Instant::now());
        conn.push_frames();
        if step.closing.is_some() && (!step.flush_on_close || conn.out.is_empty()) {
            break;
        }
        match step.beat {
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
            ev = poll_fn(|cx| conn.poll_io(cx, max)) => match ev {
                Io::Written(Ok(())) => {}
                Io::Written(Err(_)) => s.abort(CloseReason::TransportError),
                Io::Read(r) => {
                    if let Some(c) = on_read(engine, s, conn, r) {
                        code = c;
                    }
                }
            },
            _ = s.writer.notified(), if idle_out => {}
            _ = &mut closed, if !idle_out => {}
            _ = &mut sleep => {}
        }
    }
    let reason = s.state.lock().closing;
    if reason == Some(CloseReason::ParseError) {
        code = 1000;
    }
    // The session is gone for the application before the close frame is flushed: a
    // client that does not read must not keep it listed for the flush's timeout.
    engine.finish(s);
    if reason != Some(CloseReason::TransportClose) || code != 1000 {
        conn.close_with(code).await;
    }
}

/// Applies the outcome of a read; returns the close code a protocol error calls for.
fn on_read<H: EngineHandler, T: WsIo>(
    engine: &Arc<Engine<H>>,
    s: &Arc<Session<H::Data>>,
    conn: &mut Conn<T>,
    r: io::Result<Read>,
) -> Option<u16> {
    match r {
        Ok(Read::Messages(msgs)) => {
            for m in msgs {
                if !on_message(engine, s, conn, m) {
                    break;
                }
            }
            None
        }
        Ok(Read::Eof) => {
            s.abort(CloseReason::TransportClose);
            None
        }
        Ok(Read::Failed(e)) => {
            tracing::debug!(sid = %s.id(), error = %e, "websocket protocol error");
            s.abort(CloseReason::TransportError);
            Some(e.close_code())
        }
        Err(_) => {
            s.abort(CloseReason::TransportError);
            None
        }
    }
}

/// Handles one WebSocket message; false when the session is closing.
fn on_message<H: EngineHandler, T: WsIo>(
    engine: &Arc<Engine<H>>,
    s: &Arc<Session<H::Data>>,
    conn: &mut Conn<T>,
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
            // Best effort, without waiting: the peer is leaving.
            let _ = conn.poll_write(&mut Context::from_waker(std::task::Waker::noop()));
            false
        }
    }
}
