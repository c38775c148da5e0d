//! One Engine.IO session: its outgoing queue, heartbeat and close state.
//!
//! A session is driven by exactly one task at a time, its *driver*: the WebSocket
//! connection task, or, while on long-polling, a small heartbeat task. The driver sends
//! the pings, enforces the pong deadline, removes the session from the server when it
//! closes and calls the handler's `on_close` once. Everyone else only touches the state
//! under its mutex and wakes the driver or the writer.
//!
//! The outgoing queue holds shared [`Frame`]s, so a broadcast to many sessions costs one
//! reference per recipient. It is bounded: a client that does not read is closed once it
//! has `max_buffered_packets` waiting, rather than growing memory without limit.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::TransportKind;
use super::packet::{Frame, PacketType};
use super::sid::Sid;

/// Why a session closed, as the reference names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The connection was closed (client went away, or its TCP connection dropped).
    TransportClose,
    /// The transport failed: a write error, an overlapping request, a queue overflow.
    TransportError,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The client sent something that is not an Engine.IO packet.
    ParseError,
    /// The server closed the session.
    ForcedClose,
    /// The server is shutting down.
    ServerShutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ForcedClose => "forced close",
            Self::ServerShutdown => "server shutting down",
        }
    }
}

/// The session is closed; nothing more can be sent on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session closed")]
pub struct SessionClosed;

/// What the heartbeat wants next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing to do before this instant.
    Wait(Instant),
    /// The ping is due: it has been queued, wait for the pong until this instant.
    PingSent(Instant),
    /// The pong did not come in time.
    TimedOut,
}

#[derive(Debug)]
pub(crate) struct State {
    pub transport: TransportKind,
    pub queue: VecDeque<Frame>,
    /// Set once the session closes; a graceful close still flushes `queue`.
    pub closing: Option<CloseReason>,
    /// Graceful (flush first) or abrupt close.
    pub flush_on_close: bool,
    /// A long-polling GET is waiting for packets.
    pub get_pending: bool,
    pub post_pending: bool,
    /// A WebSocket upgrade is under way.
    pub upgrading: bool,
    /// A polling GET carried the close packet: a graceful close is complete.
    pub close_delivered: bool,
    /// The client closed the session with a close packet: a pending polling GET is
    /// released with a noop, as the reference's polling transport does, not a close.
    pub closed_by_client: bool,
    /// The driver removed the session from the server.
    pub finished: bool,
    /// The writer (the WebSocket task, or a pending polling GET) found the queue empty
    /// and waits: the next frame wakes it. A frame queued while the writer runs does
    /// not, since the writer looks at the queue again before it waits: a reply a
    /// handler queues from the connection's own task costs no wake-up, and a burst
    /// of broadcasts costs one.
    pub writer_idle: bool,
    next_beat: Instant,
    awaiting_pong: bool,
}

/// An Engine.IO session. `D` is the data the handler attaches to it.
pub struct Session<D> {
    id: Sid,
    pub data: D,
    pub(crate) state: Mutex<State>,
    /// Wakes the writer: the WebSocket task, or the pending polling GET.
    pub(crate) writer: Notify,
    /// Wakes the polling driver (close, upgrade).
    pub(crate) driver: Notify,
    /// Wakes every task that waits for the session to close (`notify_waiters`: it
    /// leaves no permit, so waiters create their `notified()` before they look at
    /// `closing`). Separate from `writer`, so that a WebSocket task with output
    /// pending hears of a close without waking for every queued frame, and from
    /// `driver`, whose single permit belongs to the polling driver.
    pub(crate) closed: Notify,
    ping_interval: Duration,
    ping_timeout: Duration,
    max_buffered: usize,
}

impl<D> std::fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).finish()
    }
}

impl<D> Session<D> {
    pub(crate) fn new(
        id: Sid,
        data: D,
        transport: TransportKind,
        ping_interval: Duration,
        ping_timeout: Duration,
        max_buffered: usize,
    ) -> Self {
        Session {
            id,
            data,
            state: Mutex::new(State {
                transport,
                queue: VecDeque::new(),
                closing: None,
                flush_on_close: false,
                get_pending: false,
                post_pending: false,
                upgrading: false,
                close_delivered: false,
                closed_by_client: false,
                finished: false,
                writer_idle: false,
                next_beat: Instant::now() + ping_interval,
                awaiting_pong: false,
            }),
            writer: Notify::new(),
            driver: Notify::new(),
            closed: Notify::new(),
            ping_interval,
            ping_timeout,
            max_buffered,
        }
    }

    pub fn id(&self) -> Sid {
        self.id
    }

    /// The transport currently carrying the session.
    pub fn transport(&self) -> TransportKind {
        self.state.lock().transport
    }

    /// How many packets may wait for this client before it is closed as too slow.
    pub fn max_buffered(&self) -> usize {
        self.max_buffered
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closing.is_some()
    }

    /// Queues a pre-encoded packet. Closes the session if its queue is full.
    pub fn send_frame(&self, frame: Frame) -> Result<(), SessionClosed> {
        let mut st = self.state.lock();
        if st.closing.is_some() {
            return Err(SessionClosed);
        }
        if st.queue.len() >= self.max_buffered {
            drop(st);
            tracing::debug!(sid = %self.id, "outgoing queue full, closing slow client");
            self.abort(CloseReason::TransportError);
            return Err(SessionClosed);
        }
        st.queue.push_back(frame);
        let wake = std::mem::take(&mut st.writer_idle);
        drop(st);
        if wake {
            self.writer.notify_one();
        }
        Ok(())
    }

    /// Queues `frame` only if nothing is waiting to be written (a volatile packet is
    /// dropped rather than queued behind others). Returns whether it was queued.
    pub fn send_volatile(&self, frame: Frame) -> bool {
        let mut st = self.state.lock();
        if st.closing.is_some() || !st.queue.is_empty() || st.upgrading {
            return false;
        }
        st.queue.push_back(frame);
        let wake = std::mem::take(&mut st.writer_idle);
        drop(st);
        if wake {
            self.writer.notify_one();
        }
        true
    }

    /// Sends a text message (`4` + `text`).
    pub fn send_text(&self, text: &str) -> Result<(), SessionClosed> {
        self.send_frame(Frame::text(PacketType::Message, text.as_bytes()))
    }

    /// Sends a binary message.
    pub fn send_binary(&self, data: &[u8]) -> Result<(), SessionClosed> {
        self.send_frame(Frame::binary(data))
    }

    /// Closes the session after flushing what is queued.
    pub fn close(&self, reason: CloseReason) {
        self.begin_close(reason, true);
    }

    /// Closes the session at once, dropping what is queued.
    pub fn abort(&self, reason: CloseReason) {
        self.begin_close(reason, false);
    }

    fn begin_close(&self, reason: CloseReason, flush: bool) {
        let mut st = self.state.lock();
        if st.closing.is_some() {
            return;
        }
        st.closing = Some(reason);
        st.flush_on_close = flush;
        if !flush {
            st.queue.clear();
        }
        drop(st);
        self.writer.notify_one();
        self.driver.notify_one();
        self.closed.notify_waiters();
    }

    /// The client sent the close packet: the session ends at once.
    pub(crate) fn close_by_client(&self) {
        let mut st = self.state.lock();
        if st.closing.is_none() {
            st.closed_by_client = true;
        }
        drop(st);
        self.abort(CloseReason::TransportClose);
    }

    /// Records a pong.
    pub(crate) fn on_pong(&self) {
        let mut st = self.state.lock();
        st.awaiting_pong = false;
        st.next_beat = Instant::now() + self.ping_interval;
    }

    /// Asks the client for a sign of life now: a ping whose pong is due within `timeout`
    /// (sooner than the regular heartbeat's). Without the pong the session closes with
    /// `ping timeout`, as for any missed pong. True when the pong came.
    ///
    /// Connection state recovery uses it when a client presents the session of a socket
    /// that still looks connected: a dead connection (a network change the server has not
    /// noticed yet) is closed within `timeout` and its session resumes on the new one,
    /// while a live one keeps it.
    pub async fn probe(&self, timeout: Duration) -> bool {
        {
            let mut st = self.state.lock();
            if st.closing.is_some() {
                return false;
            }
            let deadline = Instant::now() + timeout;
            if !st.awaiting_pong {
                st.awaiting_pong = true;
                st.queue.push_back(Frame::text(PacketType::Ping, b""));
            }
            st.next_beat = st.next_beat.min(deadline);
        }
        // The transport's task recomputes its heartbeat deadline when woken.
        self.writer.notify_one();
        self.driver.notify_one();
        let give_up = Instant::now() + timeout + Duration::from_millis(500);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (closing, waiting) = {
                let st = self.state.lock();
                (st.closing.is_some(), st.awaiting_pong)
            };
            if closing {
                return false;
            }
            if !waiting {
                return true;
            }
            if Instant::now() >= give_up {
                self.abort(CloseReason::PingTimeout);
                return false;
            }
        }
    }

    /// Whether the session is over for new requests and upgrades: aborted, its close
    /// packet went out, or it was removed. Its driver may not have removed it yet, but
    /// the reference forgets a session the moment it closes, so a request arriving now
    /// is for an unknown session. (A graceful close still flushing is not over.)
    pub(crate) fn is_gone(&self) -> bool {
        let st = self.state.lock();
        st.finished || (st.closing.is_some() && (!st.flush_on_close || st.close_delivered))
    }

    /// Closes the session if its pong is overdue; used when a request arrives, so that a
    /// late timer never lets a dead session live on.
    pub(crate) fn check_pong_deadline(&self) -> bool {
        let late = {
            let st = self.state.lock();
            st.awaiting_pong && Instant::now() >= st.next_beat
        };
        if late {
            self.abort(CloseReason::PingTimeout);
        }
        late
    }

    /// Advances the heartbeat at `now`: queues the ping when it is due.
    pub(crate) fn beat(&self, now: Instant) -> Beat {
        let mut st = self.state.lock();
        if now < st.next_beat {
            return Beat::Wait(st.next_beat);
        }
        if st.awaiting_pong {
            return Beat::TimedOut;
        }
        st.awaiting_pong = true;
        st.next_beat = now + self.ping_timeout;
        if st.closing.is_none() {
            st.queue.push_back(Frame::text(PacketType::Ping, b""));
        }
        let next = st.next_beat;
        drop(st);
        self.writer.notify_one();
        Beat::PingSent(next)
    }
}

/// What the WebSocket task learns of its session in one look (see [`Session::writer_step`]).
pub(crate) struct WriterStep {
    pub closing: Option<CloseReason>,
    pub flush_on_close: bool,
    pub beat: Beat,
}

impl<D> Session<D> {
    /// One look at the session for the WebSocket task, under one lock: the heartbeat
    /// (a due ping is queued first), the queued frames when `take` (none: the task is
    /// about to wait, and the next frame wakes it), and the close state. The task asks
    /// once per turn of its loop, so a delivery costs it one lock, not one per question.
    pub(crate) fn writer_step(
        &self,
        take: Option<&mut VecDeque<Frame>>,
        now: Instant,
    ) -> WriterStep {
        let mut st = self.state.lock();
        let beat = if now < st.next_beat {
            Beat::Wait(st.next_beat)
        } else if st.awaiting_pong {
            Beat::TimedOut
        } else {
            st.awaiting_pong = true;
            st.next_beat = now + self.ping_timeout;
            if st.closing.is_none() {
                st.queue.push_back(Frame::text(PacketType::Ping, b""));
            }
            Beat::PingSent(st.next_beat)
        };
        if let Some(into) = take {
            if st.queue.is_empty() {
                st.writer_idle = true;
            } else {
                if into.is_empty() {
                    std::mem::swap(into, &mut st.queue);
                } else {
                    into.extend(st.queue.drain(..));
                }
                if st.queue.capacity() > 64 {
                    st.queue = VecDeque::new();
                }
            }
        }
        WriterStep {
            closing: st.closing,
            flush_on_close: st.flush_on_close,
            beat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn session(max: usize) -> Session<()> {
        Session::new(
            Sid::new(),
            (),
            TransportKind::Polling,
            Duration::from_millis(100),
            Duration::from_millis(50),
            max,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_cycle() {
        let s = session(10);
        let start = Instant::now();
        assert_eq!(
            s.beat(start),
            Beat::Wait(start + Duration::from_millis(100))
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        let now = Instant::now();
        assert_eq!(s.beat(now), Beat::PingSent(now + Duration::from_millis(50)));
        assert_eq!(s.state.lock().queue.len(), 1);
        s.on_pong();
        assert!(matches!(s.beat(Instant::now()), Beat::Wait(_)));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(matches!(s.beat(Instant::now()), Beat::PingSent(_)));
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(s.beat(Instant::now()), Beat::TimedOut);
        assert!(s.check_pong_deadline());
        assert!(s.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn probe_pings_now_and_closes_a_silent_client() {
        let s = Arc::new(Session::new(
            Sid::new(),
            (),
            TransportKind::Polling,
            Duration::from_secs(25),
            Duration::from_secs(20),
            10,
        ));
        // A client that answers: the pong ends the probe early.
        let answering = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            answering.on_pong();
        });
        assert!(s.probe(Duration::from_secs(2)).await);
        assert_eq!(s.state.lock().queue.len(), 1, "a ping was queued at once");
        assert!(!s.is_closed());
        // A silent one: the heartbeat deadline moved from 25 s to the probe's 2 s.
        let t0 = Instant::now();
        assert!(!s.probe(Duration::from_secs(2)).await);
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(s.is_closed());
    }

    #[test]
    fn bounded_queue_closes_slow_client() {
        let s = session(2);
        let f = Frame::text(PacketType::Message, b"x");
        s.send_frame(f.clone()).unwrap();
        s.send_frame(f.clone()).unwrap();
        assert_eq!(s.send_frame(f.clone()), Err(SessionClosed));
        assert_eq!(s.state.lock().closing, Some(CloseReason::TransportError));
        assert!(s.state.lock().queue.is_empty());
    }

    #[test]
    fn volatile_is_dropped_behind_queue() {
        let s = session(10);
        let f = Frame::text(PacketType::Message, b"x");
        s.send_volatile(f.clone());
        s.send_volatile(f.clone());
        assert_eq!(s.state.lock().queue.len(), 1);
    }
}
