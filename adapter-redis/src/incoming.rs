//! What a node does with the other nodes' messages: broadcasts, requests and responses.

use serde_json::{json, Value};
use skein::adapter::{AckEvent, BroadcastFlags, BroadcastOptions, EventPacket};
use skein::socketio::packet::event_name;
use skein::Data;
use tokio::sync::mpsc;

use crate::adapter::{RedisAdapter, Response};
use crate::msgpack;
use crate::wire::{self, decode_body, rooms_of};

fn opts_from(v: Option<&Value>) -> BroadcastOptions {
    let flags = v.and_then(|o| o.get("flags"));
    BroadcastOptions {
        rooms: rooms_of(v.and_then(|o| o.get("rooms"))),
        except: rooms_of(v.and_then(|o| o.get("except"))),
        flags: BroadcastFlags {
            volatile: flags.and_then(|f| f.get("volatile")) == Some(&Value::Bool(true)),
            local: false,
            timeout: flags
                .and_then(|f| f.get("timeout"))
                .and_then(Value::as_u64)
                .map(std::time::Duration::from_millis),
        },
    }
}

/// `{type, data: [event, ...args], nsp}` to an event, if it is for this namespace.
fn event_of(packet: &Value, bins: Vec<bytes::Bytes>, nsp: &str) -> Option<EventPacket> {
    let p_nsp = packet.get("nsp").and_then(Value::as_str).unwrap_or("/");
    if p_nsp != nsp {
        return None;
    }
    let mut data = packet.get("data")?.as_array()?.clone();
    if data.is_empty() {
        return None;
    }
    let event = event_name(data.remove(0))?;
    Some(EventPacket {
        event,
        data: Data {
            args: data,
            binary: bins,
        },
    })
}

impl RedisAdapter {
    pub(crate) fn on_message(&self, channel: &str, payload: &[u8]) {
        if let Some(rest) = channel.strip_prefix(self.ch.broadcast.as_str()) {
            // `<room>#` for a single-room broadcast: skip rooms with no member here
            // before decoding anything.
            let room = rest.strip_suffix('#').unwrap_or(rest);
            if !room.is_empty() && !self.local.has_room(room) {
                return;
            }
            self.on_broadcast(payload);
        } else if channel == self.ch.request {
            self.on_request(payload);
        } else if channel == self.ch.response || channel == self.ch.own_response {
            self.on_response(payload);
        }
    }

    fn on_broadcast(&self, payload: &[u8]) {
        let Some(rmpv::Value::Array(parts)) = msgpack::decode(payload) else {
            tracing::debug!("ignoring a malformed broadcast");
            return;
        };
        if parts.len() < 3 || parts[0].as_str() == Some(self.shared.uid.as_str()) {
            return;
        }
        let mut bins = Vec::new();
        let packet = msgpack::from_mp(&parts[1], &mut bins);
        let opts = msgpack::from_mp(&parts[2], &mut Vec::new());
        if let Some(ev) = event_of(&packet, bins, self.local.nsp()) {
            self.local.broadcast(&ev, &opts_from(Some(&opts)));
        }
    }

    fn respond(&self, mut body: Value) {
        body["uid"] = json!(self.shared.uid);
        self.shared
            .driver
            .publish(self.ch.response.clone(), body.to_string().into_bytes());
    }

    fn on_request(&self, payload: &[u8]) {
        let mut bins = Vec::new();
        let Some(req) = decode_body(payload, &mut bins) else {
            tracing::debug!("ignoring a malformed request");
            return;
        };
        if req.get("uid").and_then(Value::as_str) == Some(self.shared.uid.as_str()) {
            return;
        }
        let id = req.get("requestId").cloned();
        let opts = opts_from(req.get("opts"));
        let legacy_sid = req
            .get("sid")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .and_then(|sid| self.local.get(sid));
        match req.get("type").and_then(Value::as_u64) {
            Some(wire::SOCKETS) => {
                let ids: Vec<String> = self
                    .local
                    .fetch_sockets(&opts_from(Some(&req)))
                    .iter()
                    .map(|s| s.id.to_string())
                    .collect();
                self.respond(json!({ "requestId": id, "sockets": ids }));
            }
            Some(wire::ALL_ROOMS) => {
                self.respond(json!({ "requestId": id, "rooms": self.local.rooms() }))
            }
            Some(t @ (wire::REMOTE_JOIN | wire::REMOTE_LEAVE)) => {
                let rooms = rooms_of(req.get("rooms"));
                if req.get("opts").is_some() {
                    if t == wire::REMOTE_JOIN {
                        self.local.add_sockets(&opts, &rooms);
                    } else {
                        self.local.del_sockets(&opts, &rooms);
                    }
                } else if let Some(s) = legacy_sid {
                    let room = req.get("room").and_then(Value::as_str).unwrap_or_default();
                    if t == wire::REMOTE_JOIN {
                        s.join(room);
                    } else {
                        s.leave(room);
                    }
                    self.respond(json!({ "requestId": id }));
                }
            }
            Some(wire::REMOTE_DISCONNECT) => {
                let close = req.get("close") == Some(&Value::Bool(true));
                if req.get("opts").is_some() {
                    self.local.disconnect_sockets(&opts, close);
                } else if let Some(s) = legacy_sid {
                    s.disconnect(close);
                    self.respond(json!({ "requestId": id }));
                }
            }
            Some(wire::REMOTE_FETCH) => {
                let sockets = self.local.fetch_sockets(&opts);
                self.respond(json!({ "requestId": id, "sockets": sockets }));
            }
            Some(wire::SERVER_SIDE_EMIT) => self.on_server_side_emit(&req, bins, id),
            Some(wire::BROADCAST) => self.on_broadcast_with_ack(&req, bins, id, opts),
            other => tracing::debug!(?other, "ignoring an unknown request type"),
        }
    }

    fn on_server_side_emit(&self, req: &Value, bins: Vec<bytes::Bytes>, id: Option<Value>) {
        let Some(Value::Array(data)) = req.get("data") else {
            return;
        };
        let mut data = data.clone();
        if data.is_empty() {
            return;
        }
        let Some(event) = event_name(data.remove(0)) else {
            return;
        };
        let args = Data {
            args: data,
            binary: bins,
        };
        let ack = id.map(|id| {
            let driver = self.shared.driver.clone();
            let channel = self.ch.response.clone();
            let uid = self.shared.uid.clone();
            Box::new(move |d: Data| {
                // One value crosses, as in the reference; JSON cannot carry binaries.
                let arg = d.args.into_iter().next().unwrap_or(Value::Null);
                let body = json!({ "type": wire::SERVER_SIDE_EMIT, "requestId": id, "data": arg, "uid": uid });
                driver.publish(channel, body.to_string().into_bytes());
            }) as skein::adapter::ServerAck
        });
        if event == crate::recovery::PROBE_EVENT {
            self.on_probe(args, ack);
            return;
        }
        self.local.server_event(&event, args, ack);
    }

    /// Another node asks whether a socket of this node is alive (a client presented its
    /// session there): a local connected socket is pinged; a dead one closes.
    fn on_probe(&self, args: Data, ack: Option<skein::adapter::ServerAck>) {
        let Some(ack) = ack else { return };
        let socket = args
            .args
            .first()
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<skein::Sid>().ok())
            .and_then(|sid| self.local.get(sid))
            .filter(|s| s.connected());
        match socket {
            None => ack(Data::one(Value::Bool(false))),
            Some(s) => {
                tokio::spawn(async move {
                    let alive = s.probe(skein::adapter::recovery::PROBE_TIMEOUT).await;
                    ack(Data::one(Value::Bool(alive)));
                });
            }
        }
    }

    fn on_broadcast_with_ack(
        &self,
        req: &Value,
        bins: Vec<bytes::Bytes>,
        id: Option<Value>,
        opts: BroadcastOptions,
    ) {
        let (Some(id), Some(packet)) = (id, req.get("packet")) else {
            return;
        };
        let Some(ev) = event_of(packet, bins, self.local.nsp()) else {
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let count = self.local.broadcast_with_ack(&ev, &opts, tx);
        self.respond(
            json!({ "type": wire::BROADCAST_CLIENT_COUNT, "requestId": id, "clientCount": count }),
        );
        if count == 0 {
            return;
        }
        let driver = self.shared.driver.clone();
        let channel = self.ch.response.clone();
        let uid = self.shared.uid.clone();
        let timeout = opts
            .flags
            .timeout
            .unwrap_or(skein::socketio::broadcast::DEFAULT_ACK_TIMEOUT);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut left = count;
            while left > 0 {
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = tokio::time::sleep_until(deadline) => None,
                };
                let Some(AckEvent::Ack { data, .. }) = ev else {
                    break;
                };
                left -= 1;
                let arg = data
                    .args
                    .first()
                    .map(|v| msgpack::to_mp(v, &data.binary))
                    .unwrap_or(rmpv::Value::Nil);
                let msg = rmpv::Value::Map(vec![
                    (
                        rmpv::Value::from("type"),
                        rmpv::Value::from(wire::BROADCAST_ACK),
                    ),
                    (rmpv::Value::from("requestId"), msgpack::to_mp(&id, &[])),
                    (rmpv::Value::from("packet"), arg),
                    (rmpv::Value::from("uid"), rmpv::Value::from(uid.as_str())),
                ]);
                driver.publish(channel.clone(), msgpack::encode(&msg));
            }
        });
    }

    fn on_response(&self, payload: &[u8]) {
        let mut bins = Vec::new();
        let Some(body) = decode_body(payload, &mut bins) else {
            return;
        };
        let Some(id) = body.get("requestId").and_then(Value::as_str) else {
            return;
        };
        let tx = self.pending.lock().get(id).cloned();
        if let Some(tx) = tx {
            let uid = body.get("uid").and_then(Value::as_str).map(str::to_owned);
            let _ = tx.send(Response { uid, body, bins });
        }
    }
}
