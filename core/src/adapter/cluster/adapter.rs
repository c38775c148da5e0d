//! The adapter of one namespace over the cluster layer: what it sends, and how it waits
//! for the other nodes' answers. What it does with their messages is in `incoming`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::message::{Message, NodeId, ResponseBody};
use super::node::Node;
use super::requests::{gather, Answer};
use crate::adapter::{
    recovery::PROBE_TIMEOUT, AckEvent, AckStream, Adapter, AdapterError, Attach, BroadcastOptions,
    EventPacket, Gathered, LocalAdapter, NotRecovered, Room, SessionRecord, SocketInfo,
};
use crate::socketio::Data;

/// The server-side event a node sends to ask another whether a socket is alive (see
/// [`Adapter::session_alive`]); never handed to applications.
pub(crate) const PROBE_EVENT: &str = "skein:probe";

/// The cluster adapter of a namespace.
pub struct ClusterAdapter {
    pub(crate) local: LocalAdapter,
    pub(crate) node: Arc<Node>,
}

impl std::fmt::Debug for ClusterAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAdapter")
            .field("nsp", &self.local.nsp())
            .field("node", &self.node.id)
            .finish()
    }
}

impl ClusterAdapter {
    pub(crate) fn new(local: LocalAdapter, node: Arc<Node>) -> Arc<Self> {
        let a = Arc::new(ClusterAdapter { local, node });
        // Rooms that gain their first member here, or lose their last, change what this
        // node must receive (for a transport that routes by interest).
        let weak = Arc::downgrade(&a);
        a.local.on_room_change(Box::new(move |room, member| {
            if let Some(a) = weak.upgrade() {
                a.node.transport().interest(a.local.nsp(), room, member);
            }
        }));
        a
    }

    fn nsp(&self) -> &str {
        self.local.nsp()
    }

    /// Sends a one-way message to every node: through the log when there is one and it
    /// carries this kind, else through the transport.
    fn send_all(&self, msg: &Message) {
        match self.node.log.get() {
            Some(log) if msg.is_logged() => log.append(self.nsp(), msg),
            _ => self.node.transport().publish(self.nsp(), msg),
        }
    }

    /// How many other nodes should answer a request (`None`: the live peers).
    async fn others(&self) -> Result<Option<usize>, AdapterError> {
        match self.node.transport().node_count(self.nsp()).await {
            Ok(n) => Ok(n.map(|n| n.saturating_sub(1))),
            Err(e) => Err(AdapterError::Unavailable(e.to_string())),
        }
    }

    /// Sends a request to every node and gathers their answers.
    async fn request(
        &self,
        make: impl FnOnce(super::message::ReqId) -> Message,
        timeout: Duration,
    ) -> Result<(Vec<Answer>, Vec<String>), AdapterError> {
        let expected = self.others().await?;
        if expected == Some(0) {
            return Ok((vec![], vec![]));
        }
        let asked = self.node.peers.live();
        if expected.is_none() && asked.is_empty() {
            return Ok((vec![], vec![]));
        }
        let mut w = self.node.requests.register();
        self.node
            .transport()
            .publish(self.nsp(), &make(w.id.clone()));
        let timeout = timeout.min(self.node.cfg.request_timeout);
        let (got, missing) = gather(&mut w, &self.node.peers, asked, expected, timeout).await;
        if !missing.is_empty() {
            tracing::warn!(
                nsp = self.nsp(),
                ?missing,
                "cluster request: some nodes did not answer in time"
            );
        }
        Ok((got, missing))
    }

    /// Sends a request to the live peers among `nodes` only, and gathers their answers.
    async fn request_to(
        &self,
        nodes: Vec<String>,
        make: impl FnOnce(super::message::ReqId) -> Message,
        timeout: Duration,
    ) -> (Vec<Answer>, Vec<String>) {
        let asked: Vec<NodeId> = self
            .node
            .peers
            .live()
            .into_iter()
            .filter(|p| nodes.iter().any(|n| **n == **p))
            .collect();
        if asked.is_empty() {
            return (vec![], vec![]);
        }
        let mut w = self.node.requests.register();
        let msg = make(w.id.clone());
        for n in &asked {
            self.node.transport().send(n, self.nsp(), &msg);
        }
        let timeout = timeout.min(self.node.cfg.request_timeout);
        let expected = Some(asked.len());
        gather(&mut w, &self.node.peers, asked, expected, timeout).await
    }

    /// A request that could not be sent: this node's part, and every peer missing.
    fn degraded<T>(&self, items: Vec<T>, e: &AdapterError) -> Gathered<T> {
        tracing::warn!(error = %e, "cluster request answered by this node only");
        let mut missing: Vec<String> = self
            .node
            .peers
            .live()
            .iter()
            .map(|p| p.to_string())
            .collect();
        if missing.is_empty() {
            missing.push("cluster unreachable".into());
        }
        Gathered { items, missing }
    }
}

#[async_trait]
impl Adapter for ClusterAdapter {
    fn local(&self) -> &LocalAdapter {
        &self.local
    }

    async fn init(&self) -> Result<(), AdapterError> {
        self.node
            .transport()
            .subscribe(self.nsp())
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))
    }

    /// The namespace is gone (the server stops, or an empty child namespace was removed).
    async fn close(&self) {
        self.node.forget(self.nsp(), self);
        self.node.transport().unsubscribe(self.nsp()).await;
    }

    async fn server_count(&self) -> usize {
        match self.others().await {
            Ok(Some(n)) => n + 1,
            Ok(None) => self.node.peers.count() + 1,
            Err(_) => 1,
        }
    }

    fn broadcast(&self, packet: &EventPacket, opts: &BroadcastOptions) -> Result<(), AdapterError> {
        if opts.flags.local {
            self.local.broadcast(packet, opts);
            return Ok(());
        }
        let msg = Message::Broadcast {
            packet: packet.clone(),
            opts: opts.clone(),
        };
        match self.node.log.get() {
            // Every node, this one included, delivers it from the log.
            Some(log) => log.append(self.nsp(), &msg),
            None => {
                self.node.transport().publish(self.nsp(), &msg);
                self.local.broadcast(packet, opts);
            }
        }
        Ok(())
    }

    async fn broadcast_with_ack(
        &self,
        packet: EventPacket,
        opts: BroadcastOptions,
    ) -> Result<AckStream, AdapterError> {
        let (tx, mut stream) = self
            .local
            .ack_stream(&packet, &opts, self.node.id.to_string());
        if opts.flags.local {
            return Ok(stream);
        }
        let others = match self.others().await {
            Ok(Some(n)) => n,
            Ok(None) => self.node.peers.count(),
            Err(e) => {
                tracing::warn!(error = %e, "broadcast with acks reaches this node only");
                return Ok(stream);
            }
        };
        if others == 0 {
            return Ok(stream);
        }
        let timeout = opts
            .flags
            .timeout
            .unwrap_or(crate::socketio::broadcast::DEFAULT_ACK_TIMEOUT);
        let mut opts = opts;
        opts.flags.timeout = Some(timeout);
        let (req, mut rx) = self.node.requests.register_detached();
        self.node.transport().publish(
            self.nsp(),
            &Message::BroadcastWithAck {
                req: req.clone(),
                packet,
                opts,
            },
        );
        // Answers become counts and acks on the caller's stream, until the timeout.
        let node = Arc::downgrade(&self.node);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let a = tokio::select! {
                    a = rx.recv() => a,
                    _ = tokio::time::sleep_until(deadline) => None,
                };
                let Some((from, body)) = a else { break };
                let ev = match body {
                    ResponseBody::ClientCount(count) => AckEvent::Count {
                        node: from.to_string(),
                        count,
                    },
                    ResponseBody::BroadcastAck(data) => AckEvent::Ack { sid: None, data },
                    _ => continue,
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
            if let Some(n) = node.upgrade() {
                n.requests.forget(&req);
            }
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
        let timeout = self.node.cfg.request_timeout;
        // With an index of interest, a room's sockets are asked of its holders only.
        let holders = if opts.rooms.is_empty() {
            None
        } else {
            self.node.transport().holders(self.nsp(), &opts.rooms)
        };
        let asked = match holders {
            Some(nodes) => Ok(self
                .request_to(nodes, |req| Message::FetchSockets { req, opts }, timeout)
                .await),
            None => {
                self.request(|req| Message::FetchSockets { req, opts }, timeout)
                    .await
            }
        };
        let (got, missing) = match asked {
            Ok(r) => r,
            Err(e) => return Ok(self.degraded(items, &e)),
        };
        for (from, body) in got {
            if let ResponseBody::Sockets(list) = body {
                items.extend(list.into_iter().map(|mut s| {
                    s.node = Some(from.to_string());
                    s
                }));
            }
        }
        Ok(Gathered { items, missing })
    }

    fn add_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) -> Result<(), AdapterError> {
        self.local.add_sockets(opts, rooms);
        if !opts.flags.local {
            self.send_all(&Message::SocketsJoin {
                opts: opts.clone(),
                rooms: rooms.to_vec(),
                req: None,
            });
        }
        Ok(())
    }

    fn joined(&self, rooms: &[Room]) -> Option<BoxFuture<'static, ()>> {
        self.node.transport().visible(self.nsp(), rooms)
    }

    /// With a transport that routes by interest, every node joins its sockets and
    /// answers once the joins are visible; this call waits for those answers (up to the
    /// request timeout). Otherwise as [`Adapter::add_sockets`].
    async fn add_sockets_visible(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        self.local.add_sockets(opts, rooms);
        let Some(here) = self.joined(rooms) else {
            if !opts.flags.local {
                self.send_all(&Message::SocketsJoin {
                    opts: opts.clone(),
                    rooms: rooms.to_vec(),
                    req: None,
                });
            }
            return Ok(());
        };
        if opts.flags.local {
            here.await;
            return Ok(());
        }
        let make = |req| Message::SocketsJoin {
            opts: opts.clone(),
            rooms: rooms.to_vec(),
            req: Some(req),
        };
        let timeout = self.node.cfg.request_timeout;
        let (asked, ()) = tokio::join!(self.request(make, timeout), here);
        asked.map(drop)
    }

    fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) -> Result<(), AdapterError> {
        self.local.del_sockets(opts, rooms);
        if !opts.flags.local {
            self.send_all(&Message::SocketsLeave {
                opts: opts.clone(),
                rooms: rooms.to_vec(),
                req: None,
            });
        }
        Ok(())
    }

    fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) -> Result<(), AdapterError> {
        if !opts.flags.local {
            self.send_all(&Message::DisconnectSockets {
                opts: opts.clone(),
                close,
                req: None,
            });
        }
        self.local.disconnect_sockets(opts, close);
        Ok(())
    }

    fn server_side_emit(&self, packet: &EventPacket) -> Result<(), AdapterError> {
        self.node.transport().publish(
            self.nsp(),
            &Message::ServerSideEmit {
                packet: packet.clone(),
                req: None,
            },
        );
        Ok(())
    }

    async fn server_side_emit_with_ack(
        &self,
        packet: EventPacket,
        timeout: Duration,
    ) -> Result<Gathered<Data>, AdapterError> {
        let (got, missing) = match self
            .request(
                |req| Message::ServerSideEmit {
                    packet,
                    req: Some(req),
                },
                timeout,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(self.degraded(vec![], &e)),
        };
        let items = got
            .into_iter()
            .filter_map(|(_, body)| match body {
                ResponseBody::ServerSideEmit(d) => Some(d),
                _ => None,
            })
            .collect();
        Ok(Gathered { items, missing })
    }

    fn server_side_emit_to(&self, node: &str, packet: &EventPacket) -> Result<(), AdapterError> {
        self.node.transport().send(
            node,
            self.nsp(),
            &Message::ServerSideEmit {
                packet: packet.clone(),
                req: None,
            },
        );
        Ok(())
    }

    async fn server_side_emit_with_ack_to(
        &self,
        node: &str,
        packet: EventPacket,
        timeout: Duration,
    ) -> Result<Data, AdapterError> {
        let mut w = self.node.requests.register();
        self.node.transport().send(
            node,
            self.nsp(),
            &Message::ServerSideEmit {
                packet,
                req: Some(w.id.clone()),
            },
        );
        let asked: Vec<NodeId> = vec![node.into()];
        let (mut got, _) = gather(&mut w, &self.node.peers, asked, Some(1), timeout).await;
        match got.pop() {
            Some((_, ResponseBody::ServerSideEmit(d))) => Ok(d),
            _ => Err(AdapterError::Request(format!(
                "node {node:?} did not answer in time"
            ))),
        }
    }

    async fn all_rooms(&self) -> Result<Gathered<String>, AdapterError> {
        let mut rooms = self.local.rooms();
        let timeout = self.node.cfg.request_timeout;
        let (got, missing) = match self.request(|req| Message::AllRooms { req }, timeout).await {
            Ok(r) => r,
            Err(e) => return Ok(self.degraded(rooms, &e)),
        };
        for (_, body) in got {
            if let ResponseBody::Rooms(list) = body {
                rooms.extend(list);
            }
        }
        rooms.sort();
        rooms.dedup();
        Ok(Gathered {
            items: rooms,
            missing,
        })
    }

    fn log_position(&self) -> Option<String> {
        self.node.log.get().map(|l| l.position())
    }

    async fn replay(
        &self,
        rec: &SessionRecord,
        offset: Option<&str>,
        attach: Attach,
    ) -> Result<(), NotRecovered> {
        match self.node.log.get() {
            Some(log) => log.replay(self.nsp(), rec, offset, attach).await,
            None => Err(NotRecovered::Unsupported),
        }
    }

    /// A local socket is pinged; one that another live node wrote as connected is asked
    /// about there, and only there.
    async fn session_alive(&self, rec: &SessionRecord) -> bool {
        let local = rec
            .sid
            .parse::<crate::Sid>()
            .ok()
            .and_then(|sid| self.local.get(sid));
        if let Some(s) = local.filter(|s| s.connected()) {
            return s.probe(PROBE_TIMEOUT).await;
        }
        let Some(node) = rec
            .node
            .as_deref()
            .filter(|n| rec.connected && *n != &*self.node.id && self.node.peers.is_live(n))
        else {
            return false;
        };
        let packet = EventPacket {
            event: PROBE_EVENT.into(),
            data: Data::one(Value::String(rec.sid.clone())),
        };
        match self
            .server_side_emit_with_ack_to(node, packet, PROBE_TIMEOUT + Duration::from_secs(1))
            .await
        {
            Ok(d) => d.args.first() == Some(&Value::Bool(true)),
            // No answer: the node died (a killed node stays "live" for the peer timeout,
            // and its client is typically the one reconnecting here).
            Err(_) => false,
        }
    }
}
