//! Serving over TCP: the accept loop, connection-level details and query parsing.
//!
//! Each connection is served by hyper's HTTP/1.1 server with upgrades enabled, so the
//! WebSocket transport can take the raw `TcpStream` back after the handshake.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The peer address of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// An HTTP handler: what `serve` calls for each request.
pub type HttpHandler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Full<Bytes>>> + Send + Sync>;

/// Serves `handler` on `listener` until `shutdown` resolves; then stops accepting and
/// gives open connections `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    handler: HttpHandler,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    // Connection tasks watch this to finish their in-flight request and close; the
    // strong count of `live` tells how many are still running.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let live = Arc::new(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            acc = listener.accept() => {
                let (stream, remote) = match acc {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small writes (a 101 then the open packet, a polling answer) must not
                // wait on the peer's delayed ACK.
                let _ = stream.set_nodelay(true);
                let h = handler.clone();
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(RemoteAddr(remote));
                    let fut = h(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                let mut stop = stop_rx.clone();
                let token = live.clone();
                tokio::spawn(async move {
                    let _token = token;
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
