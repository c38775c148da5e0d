//! The chat demo of the Socket.IO tutorial, with rooms and a typing indicator.
//!
//! Client → server: `join room` (room name), `chat message` `{room, message}`, `typing`
//! and `stop typing` `{room}`. Server → room: `chat message` `{user, message, timestamp}`;
//! to the others in the room: `typing` / `stop typing` `{user}`.
//!
//! With `--demo-logic api` the node only serves the page and the sockets: an app server
//! outside the node (`examples/chat-app-server/`) runs this logic through the gRPC API.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use skein::{Data, SocketIo, SocketRef};

use super::Hook;

/// The page served at `/`.
pub const INDEX_HTML: &str = include_str!("../../demo/index.html");

/// The chat on `/`: handled here (`builtin`), or left to the API's subscribers.
pub fn register(io: &SocketIo, hook: Hook, builtin: bool) {
    io.ns("/", move |s| {
        hook(&s);
        if builtin {
            on_connect(s);
        }
    });
}

/// The user's name: `auth.username` if given, else a short name from the socket id.
fn user_of(s: &SocketRef) -> String {
    match s.auth().get("username").and_then(Value::as_str) {
        Some(u) if !u.trim().is_empty() => u.trim().chars().take(32).collect(),
        _ => format!("user-{}", &s.id().as_str()[..5]),
    }
}

fn room_of(d: &Data) -> Option<String> {
    let v = d.args.first()?;
    let r = v
        .as_str()
        .or_else(|| v.get("room").and_then(Value::as_str))?;
    let r = r.trim();
    (!r.is_empty() && r.len() <= 64).then(|| r.to_owned())
}

fn on_connect(s: SocketRef) {
    let user = user_of(&s);
    s.set_data(json!({ "user": user }));
    s.on("join room", |s, d, ack| {
        let Some(room) = room_of(&d) else { return };
        let visible = s.join_visible(room.as_str());
        if let Some(a) = ack {
            match visible {
                None => a.send(Data::one(json!(room))),
                Some(v) => {
                    tokio::spawn(async move {
                        v.await;
                        a.send(Data::one(json!(room)));
                    });
                }
            }
        }
    });
    s.on("chat message", |s, d, _| {
        let Some(room) = room_of(&d) else { return };
        if !s.rooms().contains(&room) {
            return;
        }
        let message = d.args[0]
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("");
        let message: String = message.chars().take(2000).collect();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|t| t.as_millis() as u64)
            .unwrap_or(0);
        let user = s.data()["user"].clone();
        let out = json!({ "user": user, "message": message, "timestamp": timestamp });
        let _ = s.ns().to(room).emit("chat message", Data::one(out));
    });
    for ev in ["typing", "stop typing"] {
        s.on(ev, move |s, d, _| {
            let Some(room) = room_of(&d) else { return };
            let user = s.data()["user"].clone();
            let _ = s.to(room).emit(ev, Data::one(json!({ "user": user })));
        });
    }
}
