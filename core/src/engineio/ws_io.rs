//! What the WebSocket transport needs of its connection, for the two kinds it gets.
//!
//! - A plain `TcpStream`, taken back out of hyper's upgrade (served by
//!   [`crate::http::serve`], or by any hyper HTTP/1 server on `TokioIo<TcpStream>`): the
//!   transport waits on readiness and reads straight into its buffer.
//! - Anything else hyper upgrades (axum's server wraps the stream in a private type;
//!   TLS): [`Generic`] reads through `AsyncRead` into a buffer on the stack first.
//!
//! Either way an idle connection holds no read buffer: bytes land in the connection's
//! buffer only when they arrive, and it is freed once they are decoded.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Size of the stack buffer a [`Generic`] connection reads into when its read buffer is
/// empty (small enough for any task's stack, large enough for a typical message).
const STACK_READ: usize = 4096;

/// A connection the WebSocket transport can drive.
pub(crate) trait WsIo: Send + Unpin + 'static {
    /// Waits until bytes are available and appends them to `buf`, growing it by about
    /// `want` (the rest of the frame being read). `Ok(0)` is the end of the stream.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>>;

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// Pushes written bytes out (a TLS layer may hold them).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl WsIo for TcpStream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            // Memory is reserved only once the socket is readable.
            buf.reserve(want);
            match self.try_read_buf(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A spurious wake-up must not leave an idle connection a buffer.
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Any upgraded connection, through `AsyncRead`/`AsyncWrite`.
pub(crate) struct Generic<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> WsIo for Generic<T> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            // Idle: read into the stack, so waiting costs no heap buffer.
            let mut stack = [0u8; STACK_READ];
            let mut rb = ReadBuf::new(&mut stack);
            ready!(Pin::new(&mut self.0).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            buf.extend_from_slice(rb.filled());
            return Poll::Ready(Ok(n));
        }
        // Inside a message: read straight into the buffer it is being collected in.
        let len = buf.len();
        buf.resize(len + want.max(STACK_READ), 0);
        let mut rb = ReadBuf::new(&mut buf[len..]);
        let res = Pin::new(&mut self.0).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        buf.truncate(len + n);
        match res {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
}
