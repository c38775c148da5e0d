//! socketioxide peer for the Skein benchmark.
//!
//! Default socketioxide settings, axum, bench handler contract on namespace "/":
//! `echo(arg, ack)` -> `ack(arg)`, `join(room, ack?)` -> join then `ack(room)`,
//! `pub({room, ...})` -> `io.to(room).emit("msg", obj)`.
//!
//! Usage: socketioxide-peer [--port N] [--host 127.0.0.1]
//!        [--adapter memory|redis] [--redis-url URL] [--redis-key PREFIX]
//! prints `listening on HOST:PORT`. With `--adapter redis` (the bench's cluster cases)
//! the nodes form one cluster through socketioxide-redis (its defaults, the key as
//! channel prefix; RESP3, which Redis 6+ speaks).

use axum::serve::ListenerExt;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use std::io::Write;

fn arg(name: &str, def: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    let flag = format!("--{name}");
    let prefix = format!("--{name}=");
    for (i, a) in args.iter().enumerate() {
        if *a == flag {
            if let Some(v) = args.get(i + 1) {
                return v.clone();
            }
        } else if let Some(v) = a.strip_prefix(&prefix) {
            return v.to_string();
        }
    }
    def.to_string()
}

/// Registers the event handlers. It runs as a connect *middleware*: socketioxide
/// awaits middlewares before it sends the CONNECT packet, but spawns the connect
/// handler after sending it, so an event emitted right on connect (as the bench's
/// `join` is) could otherwise beat the handler registration and be dropped.
async fn register<A: Adapter>(s: SocketRef<A>) -> Result<(), std::convert::Infallible> {
    s.on("echo", async |Data::<Value>(data), ack: AckSender<A>| {
        ack.send(&data).ok();
    });
    s.on(
        "join",
        async |s: SocketRef<A>, Data::<String>(room), ack: AckSender<A>| {
            s.join(room.clone());
            ack.send(&room).ok();
        },
    );
    s.on("pub", async |io: SocketIo<A>, Data::<Value>(obj)| {
        if let Some(room) = obj.get("room").and_then(|r| r.as_str()).map(str::to_owned) {
            io.to(room).emit("msg", &obj).await.ok();
        }
    });
    Ok(())
}

async fn on_connect<A: Adapter>(_: SocketRef<A>) {}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = arg("port", "0").parse().expect("--port must be a number");
    let host = arg("host", "127.0.0.1");
    match arg("adapter", "memory").as_str() {
        "memory" => {
            let (layer, io) = SocketIo::new_layer();
            io.ns("/", on_connect.with(register));
            serve(layer, &host, port).await?;
        }
        "redis" => {
            let mut url = arg("redis-url", "redis://127.0.0.1:6379");
            if !url.contains("protocol=") {
                url += if url.contains('?') { "&" } else { "?" };
                url += "protocol=resp3";
            }
            let client = redis::Client::open(url)?;
            let config = RedisAdapterConfig::new().with_prefix(arg("redis-key", "socket.io"));
            let adapter = RedisAdapterCtr::new_with_redis_config(&client, config).await?;
            let (layer, io) = SocketIo::builder()
                .with_adapter::<RedisAdapter<_>>(adapter)
                .build_layer();
            io.ns("/", on_connect.with(register)).await?;
            serve(layer, &host, port).await?;
        }
        other => {
            eprintln!("unknown adapter {other:?} (memory, redis)");
            std::process::exit(2);
        }
    }
    Ok(())
}

async fn serve<A: Adapter>(layer: SocketIoLayer<A>, host: &str, port: u16) -> std::io::Result<()> {
    let app = axum::Router::new().layer(layer);
    // Backlog 1024 (tokio's bind() gives 128, Node's default is 511): bursts of
    // handshakes from the connect scenario must not end in SYN retransmits.
    let addr: std::net::SocketAddr = format!("{host}:{port}")
        .parse()
        .expect("--host must be an IP");
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    // TCP_NODELAY like Node's http server (noDelay defaults to true there): without it
    // small broadcast frames wait on Nagle + the client's delayed ACK (~40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await
}
