//! Keeping the accept loop healthy against too many clients: a connection limit answered
//! politely, accept errors logged once per burst, and a spare file descriptor for the
//! moment the process runs out of them.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a connection over the limit gets before it is closed.
pub(crate) const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n";
/// Rejected connections being closed gracefully at once; past this, they are closed
/// right after the 503 is written (each one holds a descriptor while it lingers).
const MAX_LINGERING: usize = 32;
/// How long a rejected connection may take to read its 503 and close.
const LINGER: Duration = Duration::from_secs(1);

/// One accepted connection, counted against the limit while any clone lives: the HTTP
/// connection task holds one, and every request carries one in its extensions, so the
/// WebSocket transport keeps it for the life of the upgraded connection.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<SlotGuard>);

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

struct SlotGuard(Arc<AtomicUsize>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts connections and says whether one more fits.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    open: Arc<AtomicUsize>,
    lingering: Arc<AtomicUsize>,
    max: Option<usize>,
}

impl Limiter {
    pub(crate) fn new(max: Option<usize>) -> Self {
        Limiter {
            max,
            ..Default::default()
        }
    }

    /// A slot for a new connection, or `None` when the limit is reached.
    pub(crate) fn try_acquire(&self) -> Option<ConnectionSlot> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(Arc::new(SlotGuard(self.open.clone())));
        match self.max {
            Some(max) if n >= max => None,
            _ => Some(slot),
        }
    }

    /// Answers 503 (`Retry-After`, `Connection: close`) and closes. The close lingers
    /// briefly, reading what the client sent, so that the 503 is not lost to a reset.
    pub(crate) fn reject(&self, stream: TcpStream) {
        let _ = stream.try_write(BUSY);
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let lingering = self.lingering.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let drain = async {
                let mut sink = [0u8; 1024];
                let _ = stream.shutdown().await;
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
            lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Logs a condition once per burst: a warning when it starts, an info line with the
/// count when it ends, instead of a line per occurrence.
#[derive(Debug)]
pub(crate) struct Burst {
    what: &'static str,
    count: u64,
}

impl Burst {
    pub(crate) fn new(what: &'static str) -> Self {
        Burst { what, count: 0 }
    }

    pub(crate) fn hit(&mut self, detail: &dyn std::fmt::Display) {
        if self.count == 0 {
            tracing::warn!(error = %detail, "{} (logged once until it recovers)", self.what);
        }
        self.count += 1;
    }

    pub(crate) fn clear(&mut self) {
        if self.count > 0 {
            tracing::info!(count = self.count, "{}: recovered", self.what);
            self.count = 0;
        }
    }
}

/// Whether an accept error means the process or system is out of file descriptors.
pub(crate) fn out_of_fds(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and the BSDs.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// A descriptor kept open to be given up when accept fails for lack of descriptors: it
/// lets the loop take the waiting connection, answer it 503 and close it, instead of
/// leaving it in the backlog while accept fails in a loop.
#[derive(Debug)]
pub(crate) struct Reserve(Option<std::fs::File>);

impl Reserve {
    pub(crate) fn open() -> Self {
        Reserve(std::fs::File::open("/dev/null").ok())
    }

    /// Frees the descriptor; false if there was none to free.
    pub(crate) fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    pub(crate) fn reopen(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_response_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
    }

    #[tokio::test]
    async fn slots_are_counted_until_every_clone_is_gone() {
        let l = Limiter::new(Some(2));
        let a = l.try_acquire().unwrap();
        let a2 = a.clone();
        let b = l.try_acquire().unwrap();
        assert!(
            l.try_acquire().is_none(),
            "third connection over a limit of 2"
        );
        drop(a);
        assert!(l.try_acquire().is_none(), "a clone still holds the slot");
        drop(a2);
        let c = l.try_acquire();
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(l.open.load(Ordering::Acquire), 0);
    }
}
