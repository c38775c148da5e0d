//! Writing a frame straight to an idle WebSocket connection, from the task that sends it.
//!
//! A broadcast to N sockets used to queue the shared frame N times and wake N
//! WebSocket tasks, each of which then ran once to write one frame: per recipient a
//! wake-up, a task poll and a trip through the scheduler, on top of the write itself.
//! When a socket's task waits with nothing pending, nothing can be ahead of the new
//! frame, so the sender writes it itself with one non-blocking write and nobody is
//! woken. Anything else (something queued, a write that would block or fails, a
//! partial write) falls back to the queue and the task, which stays the one place that
//! handles back-pressure and write errors.
//!
//! The rules that keep the byte stream whole, all under the session's state mutex:
//! - only the WebSocket task opens the wire, when it goes idle with its own output
//!   written and the queue empty;
//! - it closes it before it touches the connection again (a read it handles may queue
//!   replies or push a pong), and every fallback closes it too;
//! - the unwritten tail of a partial write (`rest`) goes out before anything else.
//!
//! Only plain TCP connections have a wire; TLS and other upgraded streams always queue.

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;

use super::packet::Frame;

/// What became of a frame offered to the wire.
pub(crate) enum Sent {
    /// Written whole: the task need not hear of it.
    Whole,
    /// Written in part: the rest waits in the wire, and the task must be woken.
    Partly,
    /// Not written: queue it (and wake the task, which closed the wire).
    No(Frame),
}

/// The connection a session's sender may write to directly.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    stream: Option<Arc<TcpStream>>,
    open: bool,
    rest: Option<Bytes>,
}

impl Wire {
    /// The WebSocket task runs this connection from now on.
    pub(crate) fn attach(&mut self, stream: Arc<TcpStream>) {
        self.stream = Some(stream);
    }

    /// The task stops: nobody writes directly any more. Returns the unwritten tail of a
    /// partial write, which must precede whatever the task still writes.
    pub(crate) fn detach(&mut self) -> Option<Bytes> {
        self.stream = None;
        self.open = false;
        self.rest.take()
    }

    /// The task goes idle with nothing pending: senders may write.
    pub(crate) fn open(&mut self) {
        self.open = self.stream.is_some() && self.rest.is_none();
    }

    /// The task is about to use the connection itself.
    pub(crate) fn close(&mut self) {
        self.open = false;
    }

    /// The tail of a partial write, for the task to write first.
    pub(crate) fn take_rest(&mut self) -> Option<Bytes> {
        self.rest.take()
    }

    /// Writes `frame` if the wire is open. The caller has checked that nothing is queued.
    pub(crate) fn send(&mut self, frame: Frame) -> Sent {
        let Some(stream) = self.stream.as_ref().filter(|_| self.open) else {
            return Sent::No(frame);
        };
        let written = stream.try_write(frame.ws_bytes());
        match written {
            Ok(n) if n == frame.len() => Sent::Whole,
            Ok(n) => {
                self.open = false;
                self.rest = Some(frame.into_ws_bytes().slice(n..));
                Sent::Partly
            }
            // Would block, or failed: the task writes it, and meets the error itself.
            Err(_) => {
                self.open = false;
                Sent::No(frame)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::packet::PacketType;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (Arc::new(server), client)
    }

    fn frame(len: usize, fill: u8) -> Frame {
        Frame::text(PacketType::Message, &vec![fill; len])
    }

    #[tokio::test]
    async fn writes_only_while_open_and_keeps_the_tail_of_a_partial_write() {
        let (server, mut client) = pair().await;
        let mut w = Wire::default();
        // Not attached, or attached but not opened by the task: nothing is written.
        assert!(matches!(w.send(frame(10, b'a')), Sent::No(_)));
        w.attach(server);
        assert!(matches!(w.send(frame(10, b'a')), Sent::No(_)));
        w.open();
        let small = frame(10, b'a');
        assert!(matches!(w.send(small.clone()), Sent::Whole));
        // A frame larger than the socket buffers can take while the peer does not read.
        let big = frame(32 << 20, b'b');
        assert!(matches!(w.send(big.clone()), Sent::Partly));
        // Closed by the partial write: the next frame is queued, not written after a hole.
        assert!(matches!(w.send(frame(10, b'c')), Sent::No(_)));
        let rest = w.take_rest().expect("the unwritten tail");
        assert!(!rest.is_empty() && rest.len() < big.len());
        // The peer reads the small frame, then the big one's head; the tail completes it.
        let mut got = vec![0u8; small.len() + big.len() - rest.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..small.len()], &small.ws_bytes()[..]);
        assert_eq!(
            &got[small.len()..],
            &big.ws_bytes()[..big.len() - rest.len()]
        );
        assert_eq!(&rest[..], &big.ws_bytes()[big.len() - rest.len()..]);
        // Reopened only once the tail is gone, and closed for good by detach.
        w.rest = Some(rest);
        w.open();
        assert!(matches!(w.send(frame(10, b'd')), Sent::No(_)));
        assert!(w.detach().is_some());
        w.open();
        assert!(matches!(w.send(frame(10, b'd')), Sent::No(_)));
    }
}
