//! What the black-box tests share: a server on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use skein::SocketIo;

/// Serves `io` on a free port of 127.0.0.1 until the test ends; returns the address.
pub async fn serve(io: &SocketIo) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(skein::http::serve(
        listener,
        io.http_handler(),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    addr
}
