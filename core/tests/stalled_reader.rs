//! A broadcast reaches a client that reads at once and one that does not read for a
//! while (a tiny receive buffer, so the server's writes stall and the rest waits in its
//! queue) whole and in order, with the heartbeat's pings interleaved, over a real
//! socket on 127.0.0.1. Any change to how frames reach the connection (batched writes,
//! writes from the sender's task) must keep this.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use skein::{Data, SocketIo, SocketIoConfig};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

const COUNT: usize = 400;
const SIZE: usize = 16 * 1024;

async fn start() -> (SocketIo, std::net::SocketAddr) {
    let mut config = SocketIoConfig::default();
    // Pings while the slow client's backlog drains.
    config.engine.ping_interval = Duration::from_millis(100);
    config.engine.ping_timeout = Duration::from_secs(10);
    let io = SocketIo::new(config);
    io.ns("/", |s| s.join("r"));
    let addr = common::serve(&io).await;
    (io, addr)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket client connected to `/` (the CONNECT answered), on a socket whose
/// receive buffer is `rcvbuf` bytes when given.
async fn connect(addr: std::net::SocketAddr, rcvbuf: Option<u32>) -> Ws {
    let sock = TcpSocket::new_v4().unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    let tcp = sock.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let open = next_text(&mut ws).await;
    assert!(open.starts_with('0'), "open packet, got {open}");
    ws.send(Message::text("40")).await.unwrap();
    let ok = next_text(&mut ws).await;
    assert!(ok.starts_with("40{"), "CONNECT answered, got {ok}");
    ws
}

/// The next Socket.IO text, answering pings on the way.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.next().await.expect("stream open").expect("frame") {
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).await.unwrap(),
            Message::Text(t) => return t.as_str().to_owned(),
            _ => {}
        }
    }
}

/// Reads the `COUNT` broadcasts and checks each one's index and payload.
async fn expect_all(mut ws: Ws) {
    for i in 0..COUNT {
        let text = next_text(&mut ws).await;
        let body = text.strip_prefix("42").expect("an EVENT");
        let v: Value = serde_json::from_str(body).expect("a whole JSON array");
        assert_eq!(v[0], "m");
        assert_eq!(v[1], json!(i), "in order");
        let payload = v[2].as_str().expect("payload");
        assert_eq!(payload.len(), SIZE);
        assert!(
            payload.bytes().all(|b| b == b'a' + (i % 26) as u8),
            "intact"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_and_a_stalled_reader_both_get_every_frame_whole_and_in_order() {
    let (io, addr) = start().await;
    let fast = connect(addr, None).await;
    let slow = connect(addr, Some(4096)).await;
    let ns = io.of("/").unwrap();
    let fast_task = tokio::spawn(expect_all(fast));
    for i in 0..COUNT {
        let payload = String::from_utf8(vec![b'a' + (i % 26) as u8; SIZE]).unwrap();
        ns.to("r")
            .emit("m", Data::new(vec![json!(i), json!(payload)]))
            .unwrap();
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // ~6.5 MB sit in the kernel's buffers and the slow session's queue meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let within = Duration::from_secs(30);
    tokio::time::timeout(within, expect_all(slow))
        .await
        .expect("the stalled reader gets everything once it reads");
    tokio::time::timeout(within, fast_task)
        .await
        .expect("the reader gets everything")
        .unwrap();
}
