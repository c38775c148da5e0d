//! Skein mounted in an axum application, beside the application's own route.
//!
//! `cargo run -p skein-core --example axum -- [--host H] [--port N] [--http1]`
//!
//! By default it serves with `axum::serve`, which wraps each connection in a type of its
//! own: WebSockets then run on hyper's upgraded connection. With `--http1` it serves the
//! same router with hyper's HTTP/1 server on plain `TcpStream`s, and WebSockets run on
//! the stream itself (the same path as `skein::http::serve`). It prints
//! `listening on ADDR` once it accepts connections.
//!
//! `GET /hello` is an ordinary axum route; `/socket.io/` is Skein: on connection it emits
//! `hello` with `{id, nsp}`, and `echo` answers with its arguments.

use std::convert::Infallible;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use skein::{Data, SocketIo};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::default();
    io.ns("/", |socket| {
        let hello = json!({ "id": socket.id(), "nsp": socket.nsp() });
        let _ = socket.emit("hello", Data::one(hello));
        socket.on("echo", |socket, args, ack| match ack {
            Some(ack) => ack.send(args),
            None => {
                let _ = socket.emit("echo", args);
            }
        });
    });
    let app = Router::new()
        .route("/hello", get(|| async { "hello from axum" }))
        .layer(io.layer());

    let host = arg("--host").unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = arg("--port").and_then(|p| p.parse().ok()).unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    println!("listening on {}", listener.local_addr()?);

    if !std::env::args().any(|a| a == "--http1") {
        return axum::serve(listener, app).await;
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                eprintln!("connection error: {e}");
            }
            Ok::<_, Infallible>(())
        });
    }
}
