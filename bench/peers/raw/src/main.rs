//! The ceiling of the Skein benchmark: what this machine can do with the bench's frames
//! when no Socket.IO server stands behind them. It is not a Socket.IO server: it speaks
//! just enough Engine.IO / Socket.IO framing for the generator (open packet, CONNECT
//! reply, pong) and answers the contract's events as directly as it can:
//! `echo` → the ack frame, built by rewriting the event frame; `join` → a room set and
//! the ack; `pub` → one `msg` frame, encoded once and shared by every member's queue.
//!
//! Usage: raw-peer [--port N] [--host 127.0.0.1]; prints `listening on HOST:PORT`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Tx = mpsc::UnboundedSender<Message>;

#[derive(Default)]
struct State {
    next: AtomicU64,
    clients: Mutex<HashMap<u64, Tx>>,
    rooms: Mutex<HashMap<String, HashSet<u64>>>,
}

fn arg(name: &str, def: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    let flag = format!("--{name}");
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| def.to_owned())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = arg("port", "0");
    let host = arg("host", "127.0.0.1");
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(
        format!("{host}:{port}")
            .parse()
            .expect("--host must be an IP"),
    )?;
    let listener = socket.listen(4096)?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", listener.local_addr()?)?;
    out.flush()?;
    let state = Arc::new(State::default());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp, state.clone()));
    }
}

async fn serve(tcp: tokio::net::TcpStream, state: Arc<State>) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let id = state.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    state.clients.lock().unwrap().insert(id, tx.clone());
    let open = format!(
        r#"0{{"sid":"raw{id:017}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
    );
    let _ = tx.send(Message::text(open));
    // The writer drains everything queued in one flush, as a server that batches would.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        if let Some(reply) = answer(&t, id, &state, &tx, &mut joined) {
            let _ = tx.send(Message::Text(reply));
        }
    }
    state.clients.lock().unwrap().remove(&id);
    let mut rooms = state.rooms.lock().unwrap();
    for r in joined {
        if let Some(set) = rooms.get_mut(&r) {
            set.remove(&id);
        }
    }
    writer.abort();
}

/// The frame answering `t`, if any.
fn answer(t: &str, id: u64, state: &State, tx: &Tx, joined: &mut Vec<String>) -> Option<Utf8Bytes> {
    if t == "3" {
        return None; // pong
    }
    if t == "40" || t.starts_with("40{") {
        return Some(format!(r#"40{{"sid":"rs{id:018}"}}"#).into());
    }
    // 42<ackid>["event", ...]
    let rest = t.strip_prefix("42")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (ack, json) = rest.split_at(digits);
    if json.starts_with(r#"["echo""#) {
        // The ack carries the arguments as they came: cut the event name out.
        let args = json[r#"["echo""#.len()..].trim_start_matches(',');
        return (!ack.is_empty()).then(|| format!("43{ack}[{args}").into());
    }
    let v: Value = serde_json::from_str(json).ok()?;
    match v.get(0)?.as_str()? {
        "join" => {
            let room = v.get(1)?.as_str()?.to_owned();
            state
                .rooms
                .lock()
                .unwrap()
                .entry(room.clone())
                .or_default()
                .insert(id);
            joined.push(room.clone());
            (!ack.is_empty()).then(|| format!("43{ack}[{}]", Value::String(room)).into())
        }
        "pub" => {
            let obj = v.get(1)?;
            let room = obj.get("room")?.as_str()?;
            let frame = Message::text(format!(r#"42["msg",{obj}]"#));
            let members: Vec<u64> = state
                .rooms
                .lock()
                .unwrap()
                .get(room)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            let clients = state.clients.lock().unwrap();
            for m in members {
                if let Some(c) = clients.get(&m) {
                    let _ = c.send(frame.clone());
                }
            }
            let _ = tx;
            None
        }
        _ => None,
    }
}
