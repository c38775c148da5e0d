//! The cluster protocol in the formats of `@socket.io/redis-adapter` 8.x (classic mode),
//! so Node servers and Skein nodes on one Redis serve one cluster (see [`crate::wire`]).
//!
//! Skein's own messages, which Node servers neither send nor read, have channels of
//! their own: heartbeats on `<key>-skein#heartbeat#` (JSON), and node-to-node messages
//! (a server-side event to one node) on `<key>-skein#node#<uid>#`, in the native
//! encoding of the cluster layer.

use rmpv::Value as Mp;
use serde_json::{json, Value};
use skein::adapter::cluster::message::{Envelope, Message, NodeId, ReqId, Response, ResponseBody};
use skein::adapter::{BroadcastFlags, BroadcastOptions, EventPacket, Room, SocketInfo};
use skein::socketio::packet::event_name;
use skein::Data;

use crate::driver::Reach;
use crate::msgpack::{self, event_to_mp, to_mp};
use crate::wire::{self, decode_body, rooms_of, Channels};

/// A message ready for `PUBLISH`: its channel and payload.
pub(crate) struct Outgoing {
    pub channel: String,
    pub payload: Vec<u8>,
    /// Who should receive it (heartbeats: uncounted).
    pub reach: Reach,
}

/// The channels of Skein's own node-level messages.
pub(crate) fn heartbeat_channel(key: &str) -> String {
    format!("{key}-skein#heartbeat#")
}

pub(crate) fn node_channel(key: &str, uid: &str) -> String {
    format!("{key}-skein#node#{uid}#")
}

fn rooms_json(r: &[Room]) -> Value {
    Value::Array(r.iter().map(|x| Value::String(x.to_string())).collect())
}

fn opts_json(o: &BroadcastOptions) -> Value {
    json!({ "rooms": rooms_json(&o.rooms), "except": rooms_json(&o.except) })
}

/// Broadcast options in the reference's shape (`flags` included), as msgpack.
fn opts_mp(o: &BroadcastOptions) -> Mp {
    let mut flags = Vec::new();
    if o.flags.volatile {
        flags.push((Mp::from("volatile"), Mp::Boolean(true)));
    }
    if let Some(t) = o.flags.timeout {
        flags.push((Mp::from("timeout"), Mp::from(t.as_millis() as u64)));
    }
    let rooms = |r: &[Room]| Mp::Array(r.iter().map(|x| Mp::from(&**x)).collect());
    Mp::Map(vec![
        (Mp::from("rooms"), rooms(&o.rooms)),
        (Mp::from("except"), rooms(&o.except)),
        (Mp::from("flags"), Mp::Map(flags)),
    ])
}

fn packet_mp(nsp: &str, packet: &EventPacket) -> Mp {
    Mp::Map(vec![
        (Mp::from("type"), Mp::from(2)),
        (Mp::from("data"), event_to_mp(&packet.event, &packet.data)),
        (Mp::from("nsp"), Mp::from(nsp)),
    ])
}

fn with_id(mut body: Value, uid: &str, req: Option<&ReqId>) -> Vec<u8> {
    body["uid"] = json!(uid);
    if let Some(r) = req {
        body["requestId"] = json!(&**r);
    }
    body.to_string().into_bytes()
}

/// SERVER_SIDE_EMIT: JSON, or msgpack when an argument is binary.
fn server_side_emit(uid: &str, packet: &EventPacket, req: Option<&ReqId>) -> Vec<u8> {
    if packet.data.binary.is_empty() {
        let mut data = vec![Value::String(packet.event.clone())];
        data.extend(packet.data.args.iter().cloned());
        return with_id(
            json!({ "type": wire::SERVER_SIDE_EMIT, "data": data }),
            uid,
            req,
        );
    }
    let mut m = vec![
        (Mp::from("uid"), Mp::from(uid)),
        (Mp::from("type"), Mp::from(wire::SERVER_SIDE_EMIT)),
        (Mp::from("data"), event_to_mp(&packet.event, &packet.data)),
    ];
    if let Some(id) = req {
        m.push((Mp::from("requestId"), Mp::from(&**id)));
    }
    msgpack::encode(&Mp::Map(m))
}

/// A message to every node of `nsp` (`None`: it is not sent to every node).
pub(crate) fn publish(key: &str, uid: &str, nsp: &str, msg: &Message) -> Option<Outgoing> {
    let ch = Channels::new(key, nsp, uid);
    let counted = |channel: String, payload: Vec<u8>| Outgoing {
        channel,
        payload,
        reach: Reach::All,
    };
    let heartbeat = |kind: &str| Outgoing {
        channel: heartbeat_channel(key),
        payload: json!({ "uid": uid, "type": kind }).to_string().into_bytes(),
        reach: Reach::Uncounted,
    };
    Some(match msg {
        Message::Broadcast { packet, opts } => {
            let m = Mp::Array(vec![Mp::from(uid), packet_mp(nsp, packet), opts_mp(opts)]);
            counted(ch.broadcast_to(&opts.rooms), msgpack::encode(&m))
        }
        Message::SocketsJoin { opts, rooms, .. } => counted(
            ch.request,
            with_id(
                json!({ "type": wire::REMOTE_JOIN, "opts": opts_json(opts), "rooms": rooms_json(rooms) }),
                uid,
                None,
            ),
        ),
        Message::SocketsLeave { opts, rooms, .. } => counted(
            ch.request,
            with_id(
                json!({ "type": wire::REMOTE_LEAVE, "opts": opts_json(opts), "rooms": rooms_json(rooms) }),
                uid,
                None,
            ),
        ),
        Message::DisconnectSockets { opts, close, .. } => counted(
            ch.request,
            with_id(
                json!({ "type": wire::REMOTE_DISCONNECT, "opts": opts_json(opts), "close": close }),
                uid,
                None,
            ),
        ),
        Message::ServerSideEmit { packet, req } => {
            counted(ch.request, server_side_emit(uid, packet, req.as_ref()))
        }
        Message::FetchSockets { req, opts } => counted(
            ch.request,
            with_id(
                json!({ "type": wire::REMOTE_FETCH, "opts": opts_json(opts) }),
                uid,
                Some(req),
            ),
        ),
        Message::SocketIds { req, rooms } => counted(
            ch.request,
            with_id(
                json!({ "type": wire::SOCKETS, "rooms": rooms_json(rooms) }),
                uid,
                Some(req),
            ),
        ),
        Message::AllRooms { req } => counted(
            ch.request,
            with_id(json!({ "type": wire::ALL_ROOMS }), uid, Some(req)),
        ),
        Message::BroadcastWithAck { req, packet, opts } => {
            let m = Mp::Map(vec![
                (Mp::from("uid"), Mp::from(uid)),
                (Mp::from("requestId"), Mp::from(&**req)),
                (Mp::from("type"), Mp::from(wire::BROADCAST)),
                (Mp::from("packet"), packet_mp(nsp, packet)),
                (Mp::from("opts"), opts_mp(opts)),
            ]);
            counted(ch.request, msgpack::encode(&m))
        }
        Message::Heartbeat => heartbeat("hb"),
        Message::InitialHeartbeat => heartbeat("init"),
        Message::Goodbye => heartbeat("bye"),
        Message::Response(_) => return None,
    })
}

/// A message to one node: an answer on the namespace's response channel (where Node
/// requesters listen), anything else on the node's own Skein channel.
pub(crate) fn send(key: &str, uid: &str, to: &str, nsp: &str, msg: &Message) -> Outgoing {
    let Message::Response(Response { req, body }) = msg else {
        let env = Envelope {
            from: uid.into(),
            nsp: nsp.into(),
            msg: msg.clone(),
        };
        return Outgoing {
            channel: node_channel(key, to),
            payload: skein::adapter::cluster::codec::encode(&env),
            reach: Reach::One,
        };
    };
    let channel = Channels::new(key, nsp, uid).response;
    let id = Some(req);
    let payload = match body {
        ResponseBody::Sockets(list) => with_id(json!({ "sockets": list }), uid, id),
        ResponseBody::SocketIds(ids) => with_id(json!({ "sockets": ids }), uid, id),
        ResponseBody::Rooms(rooms) => with_id(json!({ "rooms": rooms }), uid, id),
        ResponseBody::Done => with_id(json!({}), uid, id),
        ResponseBody::ClientCount(n) => with_id(
            json!({ "type": wire::BROADCAST_CLIENT_COUNT, "clientCount": n }),
            uid,
            id,
        ),
        // One value crosses, as in the reference; JSON cannot carry binaries.
        ResponseBody::ServerSideEmit(d) => {
            let arg = d.args.first().cloned().unwrap_or(Value::Null);
            with_id(
                json!({ "type": wire::SERVER_SIDE_EMIT, "data": arg }),
                uid,
                id,
            )
        }
        ResponseBody::BroadcastAck(d) => {
            let arg = d
                .args
                .first()
                .map(|v| to_mp(v, &d.binary))
                .unwrap_or(Mp::Nil);
            msgpack::encode(&Mp::Map(vec![
                (Mp::from("type"), Mp::from(wire::BROADCAST_ACK)),
                (Mp::from("requestId"), Mp::from(&**req)),
                (Mp::from("packet"), arg),
                (Mp::from("uid"), Mp::from(uid)),
            ]))
        }
    };
    Outgoing {
        channel,
        payload,
        reach: Reach::All,
    }
}

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

/// `{type, data: [event, ...args], nsp}` to an event, if it is for `nsp`.
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

fn envelope(from: &str, nsp: &str, msg: Message) -> Envelope {
    Envelope {
        from: NodeId::from(from),
        nsp: nsp.into(),
        msg,
    }
}

/// A broadcast (`[uid, packet, opts]` in msgpack) of namespace `nsp`.
pub(crate) fn decode_broadcast(nsp: &str, payload: &[u8]) -> Option<Envelope> {
    let Some(Mp::Array(parts)) = msgpack::decode(payload) else {
        return None;
    };
    if parts.len() < 3 {
        return None;
    }
    let from = parts[0].as_str().unwrap_or("emitter").to_owned();
    let mut bins = Vec::new();
    let packet = msgpack::from_mp(&parts[1], &mut bins);
    let opts = msgpack::from_mp(&parts[2], &mut Vec::new());
    let packet = event_of(&packet, bins, nsp)?;
    Some(envelope(
        &from,
        nsp,
        Message::Broadcast {
            packet,
            opts: opts_from(Some(&opts)),
        },
    ))
}

/// A request of the request channel of `nsp` (Node's or Skein's, legacy forms included).
pub(crate) fn decode_request(nsp: &str, payload: &[u8]) -> Option<Envelope> {
    let mut bins = Vec::new();
    let req = decode_body(payload, &mut bins)?;
    // Node's emitter sends socket management without a uid.
    let from = req
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("emitter")
        .to_owned();
    let id: Option<ReqId> = req
        .get("requestId")
        .and_then(Value::as_str)
        .map(ReqId::from);
    let opts = opts_from(req.get("opts"));
    // The legacy single-socket forms name a socket instead of options.
    let legacy = || -> Option<BroadcastOptions> {
        let sid = req.get("sid")?.as_str()?;
        Some(BroadcastOptions {
            rooms: vec![sid.into()],
            ..Default::default()
        })
    };
    let legacy_room = || -> Vec<Room> {
        req.get("room")
            .and_then(Value::as_str)
            .map(Room::from)
            .into_iter()
            .collect()
    };
    let msg = match req.get("type").and_then(Value::as_u64)? {
        wire::SOCKETS => Message::SocketIds {
            req: id?,
            rooms: rooms_of(req.get("rooms")),
        },
        wire::ALL_ROOMS => Message::AllRooms { req: id? },
        t @ (wire::REMOTE_JOIN | wire::REMOTE_LEAVE) => {
            let (opts, rooms, req_id) = if req.get("opts").is_some() {
                (opts, rooms_of(req.get("rooms")), None)
            } else {
                (legacy()?, legacy_room(), id)
            };
            if t == wire::REMOTE_JOIN {
                Message::SocketsJoin {
                    opts,
                    rooms,
                    req: req_id,
                }
            } else {
                Message::SocketsLeave {
                    opts,
                    rooms,
                    req: req_id,
                }
            }
        }
        wire::REMOTE_DISCONNECT => {
            let close = req.get("close") == Some(&Value::Bool(true));
            if req.get("opts").is_some() {
                Message::DisconnectSockets {
                    opts,
                    close,
                    req: None,
                }
            } else {
                Message::DisconnectSockets {
                    opts: legacy()?,
                    close,
                    req: id,
                }
            }
        }
        wire::REMOTE_FETCH => Message::FetchSockets { req: id?, opts },
        wire::SERVER_SIDE_EMIT => {
            let mut data = req.get("data")?.as_array()?.clone();
            if data.is_empty() {
                return None;
            }
            let event = event_name(data.remove(0))?;
            Message::ServerSideEmit {
                packet: EventPacket {
                    event,
                    data: Data {
                        args: data,
                        binary: bins,
                    },
                },
                req: id,
            }
        }
        wire::BROADCAST => Message::BroadcastWithAck {
            req: id?,
            packet: event_of(req.get("packet")?, bins, nsp)?,
            opts,
        },
        _ => return None,
    };
    Some(envelope(&from, nsp, msg))
}

/// An answer on a response channel of `nsp`. Node servers' answers carry no `uid`.
pub(crate) fn decode_response(nsp: &str, payload: &[u8]) -> Option<Envelope> {
    let mut bins = Vec::new();
    let body = decode_body(payload, &mut bins)?;
    let req: ReqId = body.get("requestId")?.as_str()?.into();
    let from = body
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let answer = match body.get("type").and_then(Value::as_u64) {
        Some(wire::BROADCAST_CLIENT_COUNT) => ResponseBody::ClientCount(
            body.get("clientCount").and_then(Value::as_u64).unwrap_or(0) as usize,
        ),
        Some(wire::BROADCAST_ACK) => ResponseBody::BroadcastAck(Data {
            args: vec![body.get("packet").cloned().unwrap_or(Value::Null)],
            binary: bins,
        }),
        Some(wire::SERVER_SIDE_EMIT) => ResponseBody::ServerSideEmit(Data {
            args: vec![body.get("data").cloned().unwrap_or(Value::Null)],
            binary: bins,
        }),
        _ => match (body.get("sockets"), body.get("rooms")) {
            (Some(Value::Array(list)), _)
                if list.iter().all(Value::is_string) && !list.is_empty() =>
            {
                ResponseBody::SocketIds(
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                )
            }
            (Some(Value::Array(list)), _) => ResponseBody::Sockets(
                list.iter()
                    .filter_map(|s| match serde_json::from_value::<SocketInfo>(s.clone()) {
                        Ok(info) => Some(info),
                        Err(e) => {
                            tracing::debug!(error = %e, "skipping a socket a node described oddly");
                            None
                        }
                    })
                    .collect(),
            ),
            (_, Some(Value::Array(rooms))) => ResponseBody::Rooms(
                rooms
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => ResponseBody::Done,
        },
    };
    Some(envelope(
        &from,
        nsp,
        Message::Response(Response { req, body: answer }),
    ))
}

/// A heartbeat of the Skein heartbeat channel.
pub(crate) fn decode_heartbeat(payload: &[u8]) -> Option<Envelope> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let from = v.get("uid")?.as_str()?;
    let msg = match v.get("type").and_then(Value::as_str) {
        Some("bye") => Message::Goodbye,
        Some("init") => Message::InitialHeartbeat,
        _ => Message::Heartbeat,
    };
    Some(envelope(from, "/", msg))
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
