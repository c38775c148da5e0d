//! The test application (tests/CONTRACT.md) and its subset, the bench contract.

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_json::{json, Value};
use skein::socketio::{BroadcastOperator, RemoteSocket};
use skein::{ConnectError, Data, Namespace, SocketIo, SocketRef};

use super::{rooms_of, Hook};

/// `echo`, `join` and `pub` on `/`: what every benchmarked server runs.
pub fn register_bench(io: &SocketIo, hook: Hook) {
    io.ns("/", move |s| {
        hook(&s);
        bench_handlers(&s)
    });
}

fn bench_handlers(s: &SocketRef) {
    s.on("echo", |s, d, ack| match ack {
        Some(a) => a.send(d),
        None => {
            let _ = s.emit("echo", d);
        }
    });
    // The ack says "joined": with a cluster adapter that routes by interest (the mesh),
    // it waits until every node would send this socket the room's broadcasts.
    s.on("join", |s, d, ack| {
        let visible = s.join_visible(rooms_of(d.args.first()));
        if let Some(a) = ack {
            let reply = Data::new(d.args.into_iter().take(1).collect());
            match visible {
                None => a.send(reply),
                Some(v) => {
                    tokio::spawn(async move {
                        v.await;
                        a.send(reply);
                    });
                }
            }
        }
    });
    s.on("pub", |s, d, _| {
        if let Some(obj) = d.args.first() {
            let room = obj.get("room").and_then(Value::as_str).unwrap_or_default();
            let _ = s.ns().to(room).emit("msg", Data::one(obj.clone()));
        }
    });
}

/// Every namespace and handler of tests/CONTRACT.md.
pub fn register(io: &SocketIo, node_id: &str, hook: Hook) {
    let node: Arc<str> = node_id.into();
    let connect = {
        let node = node.clone();
        move |s: SocketRef| {
            hook(&s);
            on_connect(s, &node)
        }
    };
    let root = io.ns("/", connect.clone());
    let custom = io.ns("/custom", connect.clone());
    let re = Regex::new(r"^/dyn-[a-z0-9]+$").expect("valid regex");
    io.dyn_ns_regex(re, connect.clone());
    let private = io.ns("/private", connect);
    // `/quiet`: the same handlers, but the server sends nothing on connection (a session
    // that never received an event, for connection state recovery).
    let quiet = {
        let node = node.clone();
        io.ns("/quiet", move |s: SocketRef| on_connect(s, &node))
    };
    // `/slow`: a middleware (so the connect completes on another task), then a connect
    // handler that takes 200 ms before it registers the handlers: events the client
    // sends as soon as it is connected must wait for them, not be dropped.
    let slow = {
        let node = node.clone();
        io.ns("/slow", move |s: SocketRef| {
            // block_in_place: the connection's own task must stay free to run meanwhile.
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(200)));
            on_connect(s, &node)
        })
    };
    slow.use_middleware(|_| async { Ok(()) });
    for ns in [&root, &custom, &private, &quiet, &slow] {
        server_events(ns, &node);
    }
    private.use_middleware(|s: SocketRef| async move {
        if s.auth().get("token").and_then(Value::as_str) == Some("secret") {
            Ok(())
        } else {
            Err(ConnectError::new("unauthorized").with_data(json!({ "reason": "bad token" })))
        }
    });
}

fn arg(d: &Data) -> Value {
    d.args.first().cloned().unwrap_or(Value::Null)
}

fn ms(v: &Value, default: u64) -> Duration {
    Duration::from_millis(v.as_u64().unwrap_or(default))
}

/// The operator for `{rooms?, except?}`.
fn select(s: &SocketRef, o: &Value) -> BroadcastOperator {
    s.ns()
        .to(rooms_of(o.get("rooms")))
        .except(rooms_of(o.get("except")))
}

/// The `args` of a request, with the attachments its placeholders point to.
fn args_of(o: &Value, d: &Data) -> Data {
    Data {
        args: o
            .get("args")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        binary: d.binary.clone(),
    }
}

fn event_of(o: &Value) -> String {
    o.get("event")
        .and_then(Value::as_str)
        .unwrap_or("event")
        .to_owned()
}

/// The server-side events of the contract: `ping-servers` and `relay`.
fn server_events(ns: &Arc<Namespace>, node: &Arc<str>) {
    let me = node.clone();
    ns.on_server_event("ping-servers", move |d, ack| {
        if let Some(ack) = ack {
            ack(Data::one(json!({ "node": &*me, "args": d.args })));
        }
    });
    let weak = Arc::downgrade(ns);
    ns.on_server_event("relay", move |d, _| {
        let (Some(ns), Some(o)) = (weak.upgrade(), d.args.first()) else {
            return;
        };
        let room = o.get("room").and_then(Value::as_str).unwrap_or_default();
        let _ = ns.to(room).local().emit(&event_of(o), args_of(o, &d));
    });
}

fn on_connect(s: SocketRef, node: &Arc<str>) {
    cluster_handlers(&s, node);
    // A recovered socket keeps the data of its session.
    if !s.recovered() {
        s.set_data(json!({ "auth": s.auth() }));
    }
    let hs = s.handshake();
    if s.nsp() != "/quiet" {
        let _ = s.emit(
            "hello",
            Data::one(json!({ "id": s.id(), "nsp": s.nsp(), "auth": s.auth(), "query": hs.query })),
        );
    }
    bench_handlers(&s);
    s.on("leave", |s, d, ack| {
        for r in rooms_of(d.args.first()) {
            s.leave(&r);
        }
        if let Some(a) = ack {
            a.send(Data::new(d.args.into_iter().take(1).collect()));
        }
    });
    s.on("rooms", |s, _, ack| {
        if let Some(a) = ack {
            a.send(Data::one(json!(s.rooms())));
        }
    });
    s.on("broadcast", |s, d, ack| {
        let o = arg(&d);
        let mut op = select(s, &o);
        if o.get("volatile") == Some(&Value::Bool(true)) {
            op = op.volatile();
        }
        if o.get("local") == Some(&Value::Bool(true)) {
            op = op.local();
        }
        let _ = op.emit(&event_of(&o), args_of(&o, &d));
        if let Some(a) = ack {
            a.send(Data::empty());
        }
    });
    s.on("socket-broadcast", |s, d, ack| {
        let o = arg(&d);
        let _ = s
            .broadcast()
            .to(rooms_of(o.get("rooms")))
            .emit(&event_of(&o), args_of(&o, &d));
        if let Some(a) = ack {
            a.send(Data::empty());
        }
    });
    s.on("server-ack", |s, d, ack| {
        let o = arg(&d);
        let s = s.clone();
        tokio::spawn(async move {
            let r = s
                .emit_with_ack(&event_of(&o), args_of(&o, &d), ms(&o["timeout"], 1000))
                .await;
            // The ack's placeholders keep pointing at its attachments once nested.
            let reply = match r {
                Ok(d) => Data {
                    args: vec![json!({ "err": null, "response": d.args })],
                    binary: d.binary,
                },
                Err(e) => Data::one(json!({ "err": e.to_string() })),
            };
            if let Some(a) = ack {
                a.send(reply);
            }
        });
    });
    s.on("broadcast-ack", |s, d, ack| {
        let o = arg(&d);
        let op = select(s, &o).timeout(ms(&o["timeout"], 1000));
        tokio::spawn(async move {
            // One response per client (its first ack value), binaries kept.
            let collect = |v: Vec<Data>| -> (Vec<Value>, Data) {
                let mut all = Data::empty();
                let list = v
                    .into_iter()
                    .map(|d| all.adopt(d).into_iter().next().unwrap_or(Value::Null))
                    .collect();
                (list, all)
            };
            let (err, (responses, mut reply)) =
                match op.emit_with_ack(&event_of(&o), args_of(&o, &d)).await {
                    Ok(v) => (Value::Null, collect(v)),
                    Err(p) => (json!("operation has timed out"), collect(p.responses)),
                };
            reply.args = vec![json!({ "err": err, "responses": responses })];
            if let Some(a) = ack {
                a.send(reply);
            }
        });
    });
    s.on("fetch-sockets", |s, d, ack| {
        let op = select(s, &arg(&d));
        tokio::spawn(async move {
            let mut list: Vec<RemoteSocket> = op.fetch_sockets().await.unwrap_or_default();
            list.sort_by_key(|r| r.id());
            let out: Vec<Value> = list
                .iter()
                .map(|r| json!({ "id": r.id(), "rooms": r.info.rooms, "data": r.info.data }))
                .collect();
            if let Some(a) = ack {
                a.send(Data::one(Value::Array(out)));
            }
        });
    });
    s.on("sockets-join", |s, d, ack| {
        let o = arg(&d);
        let op = select(s, &o);
        tokio::spawn(async move {
            let _ = op.sockets_join_visible(rooms_of(o.get("join"))).await;
            if let Some(a) = ack {
                a.send(Data::empty());
            }
        });
    });
    s.on("sockets-leave", |s, d, ack| {
        let o = arg(&d);
        let _ = select(s, &o).sockets_leave(rooms_of(o.get("leave")));
        if let Some(a) = ack {
            a.send(Data::empty());
        }
    });
    s.on("disconnect-sockets", |s, d, ack| {
        let o = arg(&d);
        let close = o.get("close") == Some(&Value::Bool(true));
        // Answer first: the caller may be among the disconnected.
        if let Some(a) = ack {
            a.send(Data::empty());
        }
        let _ = select(s, &o).disconnect_sockets(close);
    });
    s.on("remote-emit", |s, d, ack| {
        let o = arg(&d);
        let op = select(s, &o);
        tokio::spawn(async move {
            let list = op.fetch_sockets().await.unwrap_or_default();
            for r in &list {
                let _ = r.emit(&event_of(&o), args_of(&o, &d));
            }
            if let Some(a) = ack {
                a.send(Data::one(json!(list.len())));
            }
        });
    });
    s.on("disconnect-me", |s, d, _| {
        s.disconnect(arg(&d) == Value::Bool(true));
    });
    s.on("set-data", |s, d, ack| {
        s.set_data(arg(&d));
        if let Some(a) = ack {
            a.send(Data::empty());
        }
    });
    s.on_disconnect(|s, reason| {
        let _ = s.ns().to("observers").emit(
            "left",
            Data::one(json!({ "id": s.id(), "nsp": s.nsp(), "reason": reason.as_str() })),
        );
    });
}

/// The cluster additions of the contract.
fn cluster_handlers(s: &SocketRef, node: &Arc<str>) {
    let me = node.clone();
    s.on("whoami", move |_, _, ack| {
        if let Some(a) = ack {
            a.send(Data::one(json!({ "node": &*me })));
        }
    });
    s.on("server-count", |s, _, ack| {
        let ns = s.ns().clone();
        tokio::spawn(async move {
            let n = ns.adapter().server_count().await;
            if let Some(a) = ack {
                a.send(Data::one(json!(n)));
            }
        });
    });
    s.on("all-rooms", |s, _, ack| {
        let ns = s.ns().clone();
        tokio::spawn(async move {
            let mut rooms = ns.all_rooms().await.map(|g| g.items).unwrap_or_default();
            rooms.sort();
            if let Some(a) = ack {
                a.send(Data::one(json!(rooms)));
            }
        });
    });
    s.on("cluster-fetch", |s, d, ack| {
        let o = arg(&d);
        let ns = s.ns().clone();
        let opts = select(s, &o).options().clone();
        tokio::spawn(async move {
            let g = ns.adapter().fetch_sockets(opts).await.unwrap_or_default();
            let mut list = g.items;
            list.sort_by_key(|i| i.id);
            let sockets: Vec<Value> = list
                .iter()
                .map(|i| json!({ "id": i.id, "rooms": i.rooms, "data": i.data }))
                .collect();
            if let Some(a) = ack {
                a.send(Data::one(
                    json!({ "sockets": sockets, "missing": g.missing }),
                ));
            }
        });
    });
    s.on("server-side-emit", |s, d, ack| {
        let o = arg(&d);
        let ns = s.ns().clone();
        let args = args_of(&o, &d);
        let event = event_of(&o);
        let Some(t) = o.get("timeout").and_then(Value::as_u64) else {
            let _ = ns.server_side_emit(&event, args);
            if let Some(a) = ack {
                a.send(Data::empty());
            }
            return;
        };
        tokio::spawn(async move {
            let r = ns
                .server_side_emit_with_ack(&event, args, Duration::from_millis(t))
                .await;
            let reply = match r {
                Ok(g) => {
                    let responses: Vec<Value> = g
                        .items
                        .into_iter()
                        .map(|d| d.args.into_iter().next().unwrap_or(Value::Null))
                        .collect();
                    let err = (!g.missing.is_empty())
                        .then(|| format!("timeout reached: missing {}", g.missing.join(", ")));
                    json!({ "err": err, "responses": responses, "missing": g.missing })
                }
                Err(e) => json!({ "err": e.to_string(), "responses": [] }),
            };
            if let Some(a) = ack {
                a.send(Data::one(reply));
            }
        });
    });
}
