//! The cluster protocol: what nodes say to each other, typed.
//!
//! Every backend carries these messages; each has its own encoding of them (a codec):
//! the Redis adapter writes the formats of Node's `@socket.io/redis-adapter` and
//! streams adapter, so Node servers can share the cluster; NATS and the mesh use
//! [`super::codec`]. The shapes follow Node's `ClusterAdapter` (socket.io-adapter): a
//! message is one-way (broadcasts, socket management), a request (it carries a
//! [`ReqId`] and expects one answer from each node, or several for a broadcast with
//! acks), or an answer ([`Response`]) sent to the requester alone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::super::{BroadcastOptions, EventPacket, Room, SocketInfo};
use crate::socketio::Data;

/// A node's id in the cluster.
pub type NodeId = Arc<str>;
/// A request's id: answers carry it back.
pub type ReqId = Arc<str>;

/// A message, as it left its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The node that sent it (`"emitter"` for Node's emitter, which is not a node).
    pub from: NodeId,
    /// The namespace it concerns ("/" for node-level messages such as heartbeats).
    pub nsp: Arc<str>,
    pub msg: Message,
}

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// An event to the targeted sockets of every node.
    Broadcast {
        packet: EventPacket,
        opts: BroadcastOptions,
    },
    /// The targeted sockets join `rooms`. With `req` (Node's legacy single-socket form),
    /// the node holding the socket answers [`ResponseBody::Done`].
    SocketsJoin {
        opts: BroadcastOptions,
        rooms: Vec<Room>,
        req: Option<ReqId>,
    },
    /// The targeted sockets leave `rooms` (same `req` as [`Message::SocketsJoin`]).
    SocketsLeave {
        opts: BroadcastOptions,
        rooms: Vec<Room>,
        req: Option<ReqId>,
    },
    /// The targeted sockets are disconnected (`close`: their whole connection).
    DisconnectSockets {
        opts: BroadcastOptions,
        close: bool,
        req: Option<ReqId>,
    },
    /// An event to the other nodes' servers; with `req`, each answers once.
    ServerSideEmit {
        packet: EventPacket,
        req: Option<ReqId>,
    },
    /// The targeted sockets, described ([`ResponseBody::Sockets`]).
    FetchSockets { req: ReqId, opts: BroadcastOptions },
    /// Only their ids (Node's legacy `allSockets`, [`ResponseBody::SocketIds`]).
    SocketIds { req: ReqId, rooms: Vec<Room> },
    /// Every room with a local member ([`ResponseBody::Rooms`]).
    AllRooms { req: ReqId },
    /// An event each targeted client acks: every node answers how many clients it
    /// reached, then one answer per ack.
    BroadcastWithAck {
        req: ReqId,
        packet: EventPacket,
        opts: BroadcastOptions,
    },
    /// A node is alive.
    Heartbeat,
    /// A node started: every node answers with a heartbeat at once.
    InitialHeartbeat,
    /// A node is leaving: forget it now.
    Goodbye,
    /// An answer to a request of the node it is sent to.
    Response(Response),
}

impl Message {
    /// Whether an ordered log carries it (a broadcast without ack, and socket
    /// management): it applies in log order with the broadcasts on every node.
    pub fn is_logged(&self) -> bool {
        matches!(
            self,
            Message::Broadcast { .. }
                | Message::SocketsJoin { req: None, .. }
                | Message::SocketsLeave { req: None, .. }
                | Message::DisconnectSockets { req: None, .. }
        )
    }
}

/// An answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub req: ReqId,
    pub body: ResponseBody,
}

/// What an answer says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseBody {
    Sockets(Vec<SocketInfo>),
    SocketIds(Vec<String>),
    Rooms(Vec<String>),
    /// A server-side event's answer (one value, as in the reference).
    ServerSideEmit(Data),
    /// How many clients a broadcast with acks reached on the answering node.
    ClientCount(usize),
    /// One client's ack of a broadcast.
    BroadcastAck(Data),
    /// A legacy single-socket request was applied.
    Done,
}
