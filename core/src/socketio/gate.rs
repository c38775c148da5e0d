//! Holding a socket's outgoing packets until its session write is durable.
//!
//! With connection state recovery, a session is written to the store when it changes
//! (connect, join, leave, `set_data`). A client must not hear of a change before the
//! change is stored: if it did, a crash right after (or a reconnect that reaches another
//! node first) could lose a join the client was told about. So while a write of the
//! socket's session is on its way, everything sent to the socket waits, in order, behind
//! it: the CONNECT reply, the ack of a `join` handler, broadcasts. A store that is
//! durable at once (the in-memory one) returns no write to wait for, and nothing is held.
//!
//! The wait is bounded by [`MAX_HOLD`]: a store that does not confirm in time (a backend
//! outage) delays the socket's packets by that much, never indefinitely; the store
//! itself decides not to be waited for while it knows it is down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Weak;
use std::time::Duration;

use parking_lot::Mutex;

use super::socket::Socket;
use crate::adapter::Written;
use crate::engineio::Frame;

/// The longest a socket's packets wait for a session write.
pub const MAX_HOLD: Duration = Duration::from_secs(2);

/// The gate of one socket. Open (the common case) it costs one atomic load per packet.
#[derive(Default)]
pub(crate) struct Gate {
    /// Session writes not confirmed yet.
    writes: AtomicU32,
    /// Frames waiting for them (allocated only while something is held). Boxed: 8 bytes
    /// on every socket instead of a deque's 32, for a queue almost always absent.
    #[allow(clippy::box_collection)]
    held: Mutex<Option<Box<VecDeque<Frame>>>>,
}

impl Gate {
    /// Nothing is held: packets go straight to the session.
    pub(crate) fn is_open(&self) -> bool {
        self.writes.load(Ordering::Acquire) == 0
    }

    /// Sends `frames` now, or queues them behind the pending writes. False when the
    /// session refused a frame (it is closed, or its queue overflowed).
    pub(crate) fn send(&self, socket: &Socket, frames: impl Iterator<Item = Frame>) -> bool {
        if self.writes.load(Ordering::Acquire) == 0 {
            return send_all(socket, frames);
        }
        let mut held = self.held.lock();
        // The last write may have been confirmed while this waited for the lock.
        if self.writes.load(Ordering::Acquire) == 0 {
            drop(held);
            return send_all(socket, frames);
        }
        let q = held.get_or_insert_with(Default::default);
        q.extend(frames);
        // A held queue is bounded like the session's own.
        if q.len() > socket.session().max_buffered() {
            held.take();
            drop(held);
            tracing::debug!(sid = %socket.id(), "packets held for a session write overflowed, closing slow client");
            socket
                .session()
                .abort(crate::engineio::CloseReason::TransportError);
            return false;
        }
        true
    }

    /// Holds the socket's packets until `write` completes (or [`MAX_HOLD`] passed).
    pub(crate) fn hold_until(&self, socket: Weak<Socket>, write: Written) {
        let Some(write) = write else { return };
        self.writes.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if tokio::time::timeout(MAX_HOLD, write).await.is_err() {
                tracing::warn!("session write not confirmed in time; sending anyway");
            }
            if let Some(s) = socket.upgrade() {
                s.gate().release(&s);
            }
        });
    }

    /// One write is confirmed: with none left, the held frames go out, in order, before
    /// anything sent after this.
    fn release(&self, socket: &Socket) {
        let mut held = self.held.lock();
        // Flushed before the count drops: a sender that then finds the gate open sends
        // after these.
        if self.writes.load(Ordering::Acquire) == 1 {
            if let Some(q) = held.take() {
                send_all(socket, q.into_iter());
            }
        }
        self.writes.fetch_sub(1, Ordering::AcqRel);
    }
}

fn send_all(socket: &Socket, frames: impl Iterator<Item = Frame>) -> bool {
    for f in frames {
        if socket.session().send_frame(f).is_err() {
            return false;
        }
    }
    true
}
