//! Serving over TCP: the accept loop, connection-level limits and query parsing.
//!
//! Each connection is served by hyper's HTTP/1.1 server with upgrades enabled, so the
//! WebSocket transport can take the raw `TcpStream` back after the handshake. The loop
//! bounds what a hostile or broken client can hold: a request head must arrive within
//! [`ServeConfig::header_timeout`] (which also closes idle keep-alive connections), and
//! past [`ServeConfig::max_connections`] new connections are answered 503 and closed.

mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use limits::ConnectionSlot;
use limits::{out_of_fds, Burst, Limiter, Reserve};

/// The error type request bodies may have (what hyper and axum use).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The peer address of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// An HTTP handler: what `serve` calls for each request.
pub type HttpHandler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Full<Bytes>>> + Send + Sync>;

/// Options of [`serve_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Time open connections get to finish once shutdown starts.
    pub grace: Duration,
    /// Time a connection has to send a complete request head, counted from when it
    /// opens or its previous response went out. It bounds slow heads and idle
    /// keep-alive connections alike (not WebSocket connections, which the heartbeat
    /// watches, nor a long-polling GET waiting for packets). `None`: no limit.
    pub header_timeout: Option<Duration>,
    /// Connections served at once, HTTP and WebSocket alike; over it, a new connection
    /// gets `503` with `Retry-After` and is closed. `None`: no limit.
    pub max_connections: Option<usize>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            grace: Duration::from_secs(5),
            header_timeout: Some(Duration::from_secs(10)),
            max_connections: None,
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` resolves; then stops accepting and
/// gives open connections `grace` to finish. The other options are the defaults of
/// [`ServeConfig`].
pub async fn serve(
    listener: TcpListener,
    handler: HttpHandler,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let config = ServeConfig {
        grace,
        ..ServeConfig::default()
    };
    serve_with(listener, handler, shutdown, config).await
}

/// Serves `handler` on `listener` until `shutdown` resolves; then stops accepting and
/// gives open connections `config.grace` to finish.
pub async fn serve_with(
    listener: TcpListener,
    handler: HttpHandler,
    shutdown: impl Future<Output = ()>,
    config: ServeConfig,
) {
    let grace = config.grace;
    // Connection tasks watch this to finish their in-flight request and close; the
    // strong count of `live` tells how many are still running.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let live = Arc::new(());
    let limiter = Limiter::new(config.max_connections);
    let mut accept_errors = Burst::new("accept failed");
    let mut over_limit = Burst::new("connection limit reached, answering 503");
    let mut reserve = Reserve::open();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            acc = listener.accept() => {
                let (stream, remote) = match acc {
                    Ok(a) => a,
                    Err(e) => {
                        accept_errors.hit(&e);
                        if out_of_fds(&e) && reserve.release() {
                            // The freed descriptor takes the waiting connection, which
                            // is told to come back later instead of waiting unanswered.
                            let mut cx = Context::from_waker(Waker::noop());
                            let answered = match listener.poll_accept(&mut cx) {
                                Poll::Ready(Ok((s, _))) => s.try_write(limits::BUSY).is_ok(),
                                _ => false,
                            };
                            reserve.reopen();
                            if answered {
                                continue;
                            }
                        }
                        // Out of descriptors with no spare, and the like: back off,
                        // keep serving.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                accept_errors.clear();
                let Some(slot) = limiter.try_acquire() else {
                    over_limit.hit(&format_args!("{} connections", config.max_connections.unwrap_or(0)));
                    limiter.reject(stream);
                    continue;
                };
                over_limit.clear();
                // Small writes (a 101 then the open packet, a polling answer) must not
                // wait on the peer's delayed ACK.
                let _ = stream.set_nodelay(true);
                let h = handler.clone();
                let req_slot = slot.clone();
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(RemoteAddr(remote));
                    req.extensions_mut().insert(req_slot.clone());
                    let fut = h(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                let mut stop = stop_rx.clone();
                let token = live.clone();
                tokio::spawn(async move {
                    let _token = token;
                    let _slot = slot;
                    tokio::pin!(conn);
                    let res = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            match tokio::time::timeout(grace, conn.as_mut()).await {
                                Ok(r) => r,
                                Err(_) => Ok(()),
                            }
                        }
                    };
                    if let Err(e) = res {
                        tracing::trace!(error = %e, "http connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + grace;
    while Arc::strong_count(&live) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first value of `key` in a query string, percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    parse_query(query).find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Iterates the decoded `key=value` pairs of a query string.
pub fn parse_query(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query() {
        let q = "EIO=4&transport=polling&t=N8h&name=a%20b+c&bad=%zz&end=%4";
        assert_eq!(query_param(q, "EIO").as_deref(), Some("4"));
        assert_eq!(query_param(q, "name").as_deref(), Some("a b c"));
        assert_eq!(query_param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(q, "end").as_deref(), Some("%4"));
        assert_eq!(query_param(q, "sid"), None);
    }
}
