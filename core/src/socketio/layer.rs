//! Mounting a Socket.IO server in any hyper or axum application, beside its own routes:
//! a tower [`Layer`] whose service answers the server's path and hands every other
//! request to the service it wraps.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use axum::{routing::get, Router};
//! let io = skein::SocketIo::default();
//! io.ns("/", |socket| { /* handlers */ });
//! let app = Router::<()>::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .layer(io.layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! The WebSocket transport needs the server to keep hyper's upgrades on (axum's and
//! hyper-util's servers do). Served on a plain `TcpStream` by hyper's HTTP/1 server, it
//! takes the stream back and drives it itself; any other connection (axum's own server
//! wraps the stream in a private type, TLS) is driven through `AsyncRead`/`AsyncWrite`.
//! The peer address reaches the handshake when the request carries a
//! [`crate::http::RemoteAddr`] extension.

use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use super::SocketIo;
use crate::http::BoxError;

/// Wraps a service: requests on the Socket.IO path go to the server, others to the
/// service. Made by [`SocketIo::layer`].
#[derive(Clone)]
pub struct SocketIoLayer {
    io: SocketIo,
}

impl std::fmt::Debug for SocketIoLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SocketIoLayer")
    }
}

impl<S> Layer<S> for SocketIoLayer {
    type Service = SocketIoService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SocketIoService {
            io: self.io.clone(),
            inner,
        }
    }
}

/// The service of [`SocketIoLayer`]. Its response body is the server's (`Left`) or the
/// wrapped service's (`Right`).
#[derive(Clone)]
pub struct SocketIoService<S> {
    io: SocketIo,
    inner: S,
}

impl<S> std::fmt::Debug for SocketIoService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SocketIoService")
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SocketIoService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<Either<Full<Bytes>, ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if self.io.owns(req.uri().path()) {
            let io = self.io.clone();
            return Box::pin(async move { Ok(io.handle(req).await.map(Either::Left)) });
        }
        // The instance that was polled ready serves the call, as tower expects.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { Ok(inner.call(req).await?.map(Either::Right)) })
    }
}

impl SocketIo {
    /// A tower layer that serves this server's path in front of another service (an
    /// axum `Router`, any tower HTTP service).
    pub fn layer(&self) -> SocketIoLayer {
        SocketIoLayer { io: self.clone() }
    }
}
