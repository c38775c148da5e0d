//! The Redis adapter of one namespace: what it sends to the other nodes, and how it
//! waits for their answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rmpv::Value as Mp;
use serde_json::{json, Value};
use skein::adapter::{
    AckEvent, AckStream, Adapter, AdapterError, Attach, BroadcastOptions, EventPacket, Gathered,
    LocalAdapter, NotRecovered, Room, SessionRecord, SocketInfo,
};
use skein::Data;
use tokio::sync::mpsc;

use crate::msgpack::{self, event_to_mp};
use crate::wire::{self, Channels};
use crate::Shared;

/// An answer from another node, decoded.
#[derive(Debug)]
pub(crate) struct Response {
    pub uid: Option<String>,
    pub body: Value,
    pub bins: Vec<Bytes>,
}

/// The Redis adapter of a namespace.
pub struct RedisAdapter {
    pub(crate) local: LocalAdapter,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ch: Channels,
    pub(crate) pending: Mutex<HashMap<String, mpsc::UnboundedSender<Response>>>,
}

impl std::fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("nsp", &self.local.nsp())
            .field("uid", &self.shared.uid)
            .finish()
    }
}

pub(crate) fn rooms_json(r: &[Room]) -> Value {
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

impl RedisAdapter {
    pub(crate) fn new(local: LocalAdapter, shared: Arc<Shared>) -> Self {
        let ch = Channels::new(&shared.key, local.nsp(), &shared.uid);
        RedisAdapter {
            local,
            shared,
            ch,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The channels and patterns of this namespace.
    fn subscriptions(&self) -> (Vec<String>, Vec<String>) {
        (
            vec![
                self.ch.request.clone(),
                self.ch.response.clone(),
                self.ch.own_response.clone(),
            ],
            vec![format!("{}*", self.ch.broadcast)],
        )
    }

    pub(crate) fn packet_mp(&self, packet: &EventPacket) -> Mp {
        Mp::Map(vec![
            (Mp::from("type"), Mp::from(2)),
            (Mp::from("data"), event_to_mp(&packet.event, &packet.data)),
            (Mp::from("nsp"), Mp::from(self.local.nsp())),
        ])
    }

    fn publish_json(&self, channel: &str, v: &Value) {
        self.shared
            .driver
            .publish(channel.to_owned(), v.to_string().into_bytes());
    }

    /// Other nodes, as the reference counts them (`NUMSUB` of the request channel).
    async fn others(&self) -> Result<usize, AdapterError> {
        let n = self
            .shared
            .driver
            .num_sub(&self.ch.request)
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))?;
        Ok(n.saturating_sub(1))
    }

    /// Publishes a request and gathers up to `expected` answers within the timeout.
    /// The result names the live Skein peers that did not answer, and counts unnamed
    /// (Node) nodes that did not.
    async fn request(&self, mut body: Value, expected: usize) -> (Vec<Response>, Vec<String>) {
        let id = crate::random_id(12);
        body["uid"] = json!(self.shared.uid);
        body["requestId"] = json!(id);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        // The nodes asked are those alive now: one that hangs meanwhile (SIGSTOP) stops
        // heartbeating, but it is still the node that did not answer, by name.
        let asked = self.shared.live_peers();
        self.publish_json(&self.ch.request, &body);
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + self.shared.timeout;
        while got.len() < expected {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => got.push(r),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.pending.lock().remove(&id);
        let missing = self.missing(&got, expected, asked);
        if !missing.is_empty() {
            tracing::warn!(
                nsp = self.local.nsp(),
                ?missing,
                "cluster request: some nodes did not answer in time"
            );
        }
        (got, missing)
    }

    /// The peers `asked` that did not answer, plus unnamed (Node) nodes that did not.
    fn missing(&self, got: &[Response], expected: usize, asked: Vec<String>) -> Vec<String> {
        let answered: Vec<&str> = got.iter().filter_map(|r| r.uid.as_deref()).collect();
        let mut missing: Vec<String> = asked
            .into_iter()
            .filter(|p| !answered.contains(&p.as_str()))
            .collect();
        let unnamed = expected
            .saturating_sub(got.len())
            .saturating_sub(missing.len());
        missing.extend((0..unnamed).map(|i| format!("unknown-node-{}", i + 1)));
        missing
    }

    fn degraded<T>(&self, items: Vec<T>, e: &AdapterError) -> Gathered<T> {
        tracing::warn!(error = %e, "cluster request answered by this node only");
        let mut missing = self.shared.live_peers();
        if missing.is_empty() {
            missing.push("cluster unreachable".into());
        }
        Gathered { items, missing }
    }
}

#[async_trait]
impl Adapter for RedisAdapter {
    fn local(&self) -> &LocalAdapter {
        &self.local
    }

    async fn init(&self) -> Result<(), AdapterError> {
        let (channels, patterns) = self.subscriptions();
        self.shared
            .driver
            .subscribe(channels, patterns)
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))
    }

    /// The namespace is gone (the server stops, or an empty child namespace was removed):
    /// its channels are dropped. The node's goodbye is the factory's, once.
    async fn close(&self) {
        self.shared.forget(self.local.nsp(), self);
        let (channels, patterns) = self.subscriptions();
        self.shared.driver.unsubscribe(channels, patterns).await;
    }

    async fn session_alive(&self, rec: &SessionRecord) -> bool {
        self.probe_session(rec).await
    }

    fn log_position(&self) -> Option<String> {
        self.shared.streams.get().map(|l| l.position())
    }

    async fn replay(
        &self,
        rec: &SessionRecord,
        offset: Option<&str>,
        attach: Attach,
    ) -> Result<(), NotRecovered> {
        match self.shared.streams.get() {
            Some(log) => log.replay(self.local.nsp(), rec, offset, attach).await,
            None => Err(NotRecovered::Unsupported),
        }
    }

    async fn server_count(&self) -> usize {
        self.others().await.map_or(1, |n| n + 1)
    }

    fn broadcast(&self, packet: &EventPacket, opts: &BroadcastOptions) -> Result<(), AdapterError> {
        if let (Some(log), false) = (self.shared.streams.get(), opts.flags.local) {
            // Streams mode: every node, this one included, delivers it from the stream.
            log.append(self.local.nsp(), packet, opts);
            return Ok(());
        }
        if !opts.flags.local {
            let msg = Mp::Array(vec![
                Mp::from(self.shared.uid.as_str()),
                self.packet_mp(packet),
                opts_mp(opts),
            ]);
            self.shared
                .driver
                .publish(self.ch.broadcast_to(&opts.rooms), msgpack::encode(&msg));
        }
        self.local.broadcast(packet, opts);
        Ok(())
    }

    async fn broadcast_with_ack(
        &self,
        packet: EventPacket,
        opts: BroadcastOptions,
    ) -> Result<AckStream, AdapterError> {
        let (tx, mut stream) = self
            .local
            .ack_stream(&packet, &opts, self.shared.uid.clone());
        if opts.flags.local {
            return Ok(stream);
        }
        let others = match self.others().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "broadcast with acks reaches this node only");
                return Ok(stream);
            }
        };
        let id = crate::random_id(12);
        let timeout = opts
            .flags
            .timeout
            .unwrap_or(skein::socketio::broadcast::DEFAULT_ACK_TIMEOUT);
        let mut opts = opts;
        opts.flags.timeout = Some(timeout);
        let req = Mp::Map(vec![
            (Mp::from("uid"), Mp::from(self.shared.uid.as_str())),
            (Mp::from("requestId"), Mp::from(id.as_str())),
            (Mp::from("type"), Mp::from(wire::BROADCAST)),
            (Mp::from("packet"), self.packet_mp(&packet)),
            (Mp::from("opts"), opts_mp(&opts)),
        ]);
        // Answers become counts and acks on the caller's stream.
        let (rtx, mut rrx) = mpsc::unbounded_channel::<Response>();
        self.pending.lock().insert(id.clone(), rtx);
        self.shared
            .driver
            .publish(self.ch.request.clone(), msgpack::encode(&req));
        let me = self.pending_cleanup(id);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let r = tokio::select! {
                    r = rrx.recv() => r,
                    _ = tokio::time::sleep_until(deadline) => None,
                };
                let Some(r) = r else { break };
                let ev = match r.body.get("type").and_then(Value::as_u64) {
                    Some(wire::BROADCAST_CLIENT_COUNT) => AckEvent::Count {
                        node: r.uid.unwrap_or_default(),
                        count: r
                            .body
                            .get("clientCount")
                            .and_then(Value::as_u64)
                            .unwrap_or(0) as usize,
                    },
                    Some(wire::BROADCAST_ACK) => AckEvent::Ack {
                        sid: None,
                        data: Data {
                            args: vec![r.body.get("packet").cloned().unwrap_or(Value::Null)],
                            binary: r.bins,
                        },
                    },
                    _ => continue,
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
            me();
        });
        stream.nodes = others + 1;
        Ok(stream)
    }

    async fn fetch_sockets(
        &self,
        opts: BroadcastOptions,
    ) -> Result<Gathered<SocketInfo>, AdapterError> {
        let mut items = self.local.fetch_sockets(&opts);
        if opts.flags.local {
            return Ok(Gathered {
                items,
                missing: vec![],
            });
        }
        let others = match self.others().await {
            Ok(n) => n,
            Err(e) => return Ok(self.degraded(items, &e)),
        };
        if others == 0 {
            return Ok(Gathered {
                items,
                missing: vec![],
            });
        }
        let body = json!({ "type": wire::REMOTE_FETCH, "opts": opts_json(&opts) });
        let (got, missing) = self.request(body, others).await;
        for r in got {
            let Some(Value::Array(list)) = r.body.get("sockets") else {
                continue;
            };
            for s in list {
                match serde_json::from_value::<SocketInfo>(s.clone()) {
                    Ok(mut info) => {
                        info.node = r.uid.clone().or_else(|| Some("node".into()));
                        items.push(info);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "skipping a socket a node described oddly")
                    }
                }
            }
        }
        Ok(Gathered { items, missing })
    }

    fn add_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) -> Result<(), AdapterError> {
        self.local.add_sockets(opts, rooms);
        if self.to_stream("4", opts, json!({ "rooms": rooms_json(rooms) })) {
            return Ok(());
        }
        if !opts.flags.local {
            let body = json!({ "uid": self.shared.uid, "type": wire::REMOTE_JOIN,
                "opts": opts_json(opts), "rooms": rooms_json(rooms) });
            self.publish_json(&self.ch.request, &body);
        }
        Ok(())
    }

    fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) -> Result<(), AdapterError> {
        self.local.del_sockets(opts, rooms);
        if self.to_stream("5", opts, json!({ "rooms": rooms_json(rooms) })) {
            return Ok(());
        }
        if !opts.flags.local {
            let body = json!({ "uid": self.shared.uid, "type": wire::REMOTE_LEAVE,
                "opts": opts_json(opts), "rooms": rooms_json(rooms) });
            self.publish_json(&self.ch.request, &body);
        }
        Ok(())
    }

    fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) -> Result<(), AdapterError> {
        if self.to_stream("6", opts, json!({ "close": close })) {
            self.local.disconnect_sockets(opts, close);
            return Ok(());
        }
        if !opts.flags.local {
            let body = json!({ "uid": self.shared.uid, "type": wire::REMOTE_DISCONNECT,
                "opts": opts_json(opts), "close": close });
            self.publish_json(&self.ch.request, &body);
        }
        self.local.disconnect_sockets(opts, close);
        Ok(())
    }

    fn server_side_emit(&self, packet: &EventPacket) -> Result<(), AdapterError> {
        let body = self.server_emit_body(packet, None);
        self.shared.driver.publish(self.ch.request.clone(), body);
        Ok(())
    }

    async fn server_side_emit_with_ack(
        &self,
        packet: EventPacket,
        timeout: Duration,
    ) -> Result<Gathered<Data>, AdapterError> {
        let others = match self.others().await {
            Ok(n) => n,
            Err(e) => return Ok(self.degraded(vec![], &e)),
        };
        if others == 0 {
            return Ok(Gathered::default());
        }
        let id = crate::random_id(12);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        let asked = self.shared.live_peers();
        let body = self.server_emit_body(&packet, Some(&id));
        self.shared.driver.publish(self.ch.request.clone(), body);
        let mut got = Vec::new();
        // The adapter's request timeout bounds every cluster request, as in the reference.
        let deadline = tokio::time::Instant::now() + timeout.min(self.shared.timeout);
        while got.len() < others {
            tokio::select! {
                r = rx.recv() => match r { Some(r) => got.push(r), None => break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.pending.lock().remove(&id);
        let missing = self.missing(&got, others, asked);
        let items = got
            .into_iter()
            .map(|r| Data {
                args: vec![r.body.get("data").cloned().unwrap_or(Value::Null)],
                binary: r.bins,
            })
            .collect();
        Ok(Gathered { items, missing })
    }

    async fn all_rooms(&self) -> Result<Gathered<String>, AdapterError> {
        let mut rooms = self.local.rooms();
        let others = match self.others().await {
            Ok(n) => n,
            Err(e) => return Ok(self.degraded(rooms, &e)),
        };
        let missing = if others > 0 {
            let (got, missing) = self
                .request(json!({ "type": wire::ALL_ROOMS }), others)
                .await;
            for r in got {
                if let Some(Value::Array(list)) = r.body.get("rooms") {
                    rooms.extend(list.iter().filter_map(|x| x.as_str().map(str::to_owned)));
                }
            }
            missing
        } else {
            vec![]
        };
        rooms.sort();
        rooms.dedup();
        Ok(Gathered {
            items: rooms,
            missing,
        })
    }
}

impl RedisAdapter {
    /// SERVER_SIDE_EMIT: JSON, or msgpack when an argument is binary.
    fn server_emit_body(&self, packet: &EventPacket, request_id: Option<&str>) -> Vec<u8> {
        if packet.data.binary.is_empty() {
            let mut data = vec![Value::String(packet.event.clone())];
            data.extend(packet.data.args.iter().cloned());
            let mut body =
                json!({ "uid": self.shared.uid, "type": wire::SERVER_SIDE_EMIT, "data": data });
            if let Some(id) = request_id {
                body["requestId"] = json!(id);
            }
            return body.to_string().into_bytes();
        }
        let mut m = vec![
            (Mp::from("uid"), Mp::from(self.shared.uid.as_str())),
            (Mp::from("type"), Mp::from(wire::SERVER_SIDE_EMIT)),
            (Mp::from("data"), event_to_mp(&packet.event, &packet.data)),
        ];
        if let Some(id) = request_id {
            m.push((Mp::from("requestId"), Mp::from(id)));
        }
        msgpack::encode(&Mp::Map(m))
    }

    /// Forgets a broadcast-with-ack request when its timeout ends.
    fn pending_cleanup(&self, id: String) -> impl FnOnce() + Send + 'static {
        let weak = self.shared.adapter_handle(self.local.nsp());
        move || {
            if let Some(a) = weak.upgrade() {
                a.pending.lock().remove(&id);
            }
        }
    }
}
