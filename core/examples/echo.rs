//! A minimal Socket.IO server on the library: `echo` answers with its arguments, `join`
//! joins a room, `say` broadcasts to a room. Run: `cargo run -p skein-core --example echo`
//! (listens on `$ECHO_ADDR`, default 127.0.0.1:3000).

use std::time::Duration;

use serde_json::Value;
use skein::{Data, SocketIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::default();
    io.ns("/", |socket| {
        socket.on("echo", |socket, args, ack| match ack {
            Some(ack) => ack.send(args),
            None => {
                let _ = socket.emit("echo", args);
            }
        });
        socket.on("join", |socket, args, _| {
            if let Some(room) = args.args.first().and_then(Value::as_str) {
                socket.join(room);
            }
        });
        socket.on("say", |socket, args, _| {
            if let Some(room) = args.args.first().and_then(Value::as_str) {
                let msg = args.args.get(1).cloned().unwrap_or(Value::Null);
                let _ = socket.to(room).emit("said", Data::one(msg));
            }
        });
    });
    let listener = tokio::net::TcpListener::bind(
        std::env::var("ECHO_ADDR").unwrap_or("127.0.0.1:3000".into()),
    )
    .await?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    skein::http::serve(
        listener,
        io.http_handler(),
        shutdown,
        Duration::from_secs(5),
    )
    .await;
    io.close(Duration::from_secs(5)).await;
    Ok(())
}
