//! What a node does with the other nodes' messages: broadcasts and socket management
//! applied to its own sockets, and answers to requests.

use serde_json::Value;
use tokio::sync::mpsc;

use super::adapter::{ClusterAdapter, PROBE_EVENT};
use super::message::{Message, NodeId, ReqId, Response, ResponseBody};
use super::transport::Delivery;
use crate::adapter::{recovery::PROBE_TIMEOUT, AckEvent, ServerAck};
use crate::socketio::Data;

impl ClusterAdapter {
    /// Answers a request of `to`.
    fn respond(&self, to: &str, req: ReqId, body: ResponseBody) {
        let msg = Message::Response(Response { req, body });
        self.node.transport().send(to, self.local.nsp(), &msg);
    }

    pub(crate) fn on_message(&self, from: NodeId, msg: Message, delivery: Delivery) {
        let own = *from == *self.node.id;
        let local = &self.local;
        match msg {
            // With recovery on, a logged broadcast carries its offset to the clients.
            Message::Broadcast { packet, opts } => match delivery {
                Delivery::Log(offset) if !opts.flags.volatile && local.recovery().is_some() => {
                    local.broadcast_logged(packet, &opts, &offset)
                }
                _ => local.broadcast(&packet, &opts),
            },
            // This node applied its own socket management when it sent it.
            Message::SocketsJoin { .. }
            | Message::SocketsLeave { .. }
            | Message::DisconnectSockets { .. }
                if own => {}
            Message::SocketsJoin { opts, rooms, req } => {
                local.add_sockets(&opts, &rooms);
                // The join promise: answer once the joins are visible everywhere.
                match (req, self.node.transport().visible(local.nsp(), &rooms)) {
                    (Some(req), Some(visible)) => {
                        let (node, nsp) = (self.node.clone(), local.nsp().to_owned());
                        tokio::spawn(async move {
                            visible.await;
                            let body = ResponseBody::Done;
                            let msg = Message::Response(Response { req, body });
                            node.transport().send(&from, &nsp, &msg);
                        });
                    }
                    (req, _) => self.done(&from, req),
                }
            }
            Message::SocketsLeave { opts, rooms, req } => {
                local.del_sockets(&opts, &rooms);
                self.done(&from, req);
            }
            Message::DisconnectSockets { opts, close, req } => {
                local.disconnect_sockets(&opts, close);
                self.done(&from, req);
            }
            _ if own => {}
            Message::ServerSideEmit { packet, req } => {
                let ack = req.map(|req| {
                    let (me, to) = (self.node.clone(), from.clone());
                    let nsp = self.local.nsp().to_owned();
                    Box::new(move |d: Data| {
                        let body = ResponseBody::ServerSideEmit(d);
                        let msg = Message::Response(Response { req, body });
                        me.transport().send(&to, &nsp, &msg);
                    }) as ServerAck
                });
                if packet.event == PROBE_EVENT {
                    self.on_probe(packet.data, ack);
                } else {
                    local.server_event(&packet.event, packet.data, ack);
                }
            }
            Message::FetchSockets { req, opts } => {
                let sockets = local.fetch_sockets(&opts);
                self.respond(&from, req, ResponseBody::Sockets(sockets));
            }
            Message::SocketIds { req, rooms } => {
                let opts = crate::adapter::BroadcastOptions {
                    rooms,
                    ..Default::default()
                };
                let ids = local
                    .fetch_sockets(&opts)
                    .iter()
                    .map(|s| s.id.to_string())
                    .collect();
                self.respond(&from, req, ResponseBody::SocketIds(ids));
            }
            Message::AllRooms { req } => {
                self.respond(&from, req, ResponseBody::Rooms(local.rooms()));
            }
            Message::BroadcastWithAck { req, packet, opts } => {
                self.on_broadcast_with_ack(from, req, packet, opts)
            }
            Message::Heartbeat
            | Message::InitialHeartbeat
            | Message::Goodbye
            | Message::Response(_) => {}
        }
    }

    /// Node's legacy single-socket requests want to hear they were applied.
    fn done(&self, from: &str, req: Option<ReqId>) {
        if let Some(req) = req {
            self.respond(from, req, ResponseBody::Done);
        }
    }

    /// Another node asks whether a socket of this node is alive (a client presented its
    /// session there): a local connected socket is pinged; a dead one closes.
    fn on_probe(&self, args: Data, ack: Option<ServerAck>) {
        let Some(ack) = ack else { return };
        let socket = args
            .args
            .first()
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<crate::Sid>().ok())
            .and_then(|sid| self.local.get(sid))
            .filter(|s| s.connected());
        match socket {
            None => ack(Data::one(Value::Bool(false))),
            Some(s) => {
                tokio::spawn(async move {
                    let alive = s.probe(PROBE_TIMEOUT).await;
                    ack(Data::one(Value::Bool(alive)));
                });
            }
        }
    }

    /// Delivers a broadcast with acks here: the count first, then each ack as it comes,
    /// until the broadcast's timeout.
    fn on_broadcast_with_ack(
        &self,
        from: NodeId,
        req: ReqId,
        packet: crate::adapter::EventPacket,
        opts: crate::adapter::BroadcastOptions,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let count = self.local.broadcast_with_ack(&packet, &opts, tx);
        self.respond(&from, req.clone(), ResponseBody::ClientCount(count));
        if count == 0 {
            return;
        }
        let node = self.node.clone();
        let nsp = self.local.nsp().to_owned();
        let timeout = opts
            .flags
            .timeout
            .unwrap_or(crate::socketio::broadcast::DEFAULT_ACK_TIMEOUT);
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
                let msg = Message::Response(Response {
                    req: req.clone(),
                    body: ResponseBody::BroadcastAck(data),
                });
                node.transport().send(&from, &nsp, &msg);
            }
        });
    }
}
