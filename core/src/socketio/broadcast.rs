//! Broadcast operators (`to`, `in`, `except`, `volatile`, `local`, `timeout`) and the
//! sockets `fetch_sockets` returns.

use std::sync::Arc;
use std::time::Duration;

use super::namespace::Namespace;
use super::socket::{check_event, EmitError};
use super::Data;
use crate::adapter::{AdapterError, BroadcastOptions, EventPacket, Room, SocketInfo};
use crate::engineio::Sid;

/// Room names accepted by the operators.
pub trait IntoRooms {
    fn into_rooms(self) -> Vec<Room>;
}

impl IntoRooms for &str {
    fn into_rooms(self) -> Vec<Room> {
        vec![self.into()]
    }
}

impl IntoRooms for String {
    fn into_rooms(self) -> Vec<Room> {
        vec![self.into()]
    }
}

impl IntoRooms for &String {
    fn into_rooms(self) -> Vec<Room> {
        vec![self.as_str().into()]
    }
}

impl IntoRooms for Sid {
    fn into_rooms(self) -> Vec<Room> {
        vec![self.as_str().into()]
    }
}

impl IntoRooms for Room {
    fn into_rooms(self) -> Vec<Room> {
        vec![self]
    }
}

impl<T: IntoRooms> IntoRooms for Vec<T> {
    fn into_rooms(self) -> Vec<Room> {
        self.into_iter().flat_map(IntoRooms::into_rooms).collect()
    }
}

impl<T: IntoRooms + Clone> IntoRooms for &[T] {
    fn into_rooms(self) -> Vec<Room> {
        self.iter()
            .cloned()
            .flat_map(IntoRooms::into_rooms)
            .collect()
    }
}

impl<T: IntoRooms, const N: usize> IntoRooms for [T; N] {
    fn into_rooms(self) -> Vec<Room> {
        self.into_iter().flat_map(IntoRooms::into_rooms).collect()
    }
}

/// How long a broadcast with acks waits when no `timeout` was set.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Acks that did not all arrive in time: the error and the acks that did.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("operation has timed out ({} responses received)", responses.len())]
pub struct PartialAcks {
    pub responses: Vec<Data>,
    /// Nodes that never said how many clients they reached.
    pub missing_nodes: usize,
}

/// Selects sockets of a namespace, then emits to or manages them.
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    opts: BroadcastOptions,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> Self {
        BroadcastOperator {
            ns,
            opts: BroadcastOptions::default(),
        }
    }

    /// Targets the members of these rooms (added to any already targeted).
    pub fn to(mut self, rooms: impl IntoRooms) -> Self {
        self.opts.rooms.extend(rooms.into_rooms());
        self
    }

    /// Same as [`to`](Self::to).
    pub fn in_(self, rooms: impl IntoRooms) -> Self {
        self.to(rooms)
    }

    /// Leaves out the members of these rooms.
    pub fn except(mut self, rooms: impl IntoRooms) -> Self {
        self.opts.except.extend(rooms.into_rooms());
        self
    }

    /// Drops the packet for clients not ready to receive it.
    pub fn volatile(mut self) -> Self {
        self.opts.flags.volatile = true;
        self
    }

    /// Only this node's sockets.
    pub fn local(mut self) -> Self {
        self.opts.flags.local = true;
        self
    }

    /// How long `emit_with_ack` waits.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.opts.flags.timeout = Some(d);
        self
    }

    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    pub fn emit(&self, event: &str, data: Data) -> Result<(), EmitError> {
        check_event(event)?;
        let packet = EventPacket {
            event: event.to_owned(),
            data,
        };
        Ok(self.ns.adapter().broadcast(&packet, &self.opts)?)
    }

    /// Sends an event that each targeted client acks, and gathers the acks. Every node
    /// first says how many clients it reached; the call ends when all of them acked, or
    /// at the timeout with the acks received so far.
    pub async fn emit_with_ack(&self, event: &str, data: Data) -> Result<Vec<Data>, PartialAcks> {
        if let Err(e) = check_event(event) {
            tracing::warn!(error = %e, "emit_with_ack refused");
            return Err(PartialAcks {
                responses: vec![],
                missing_nodes: 0,
            });
        }
        let timeout = self.opts.flags.timeout.unwrap_or(DEFAULT_ACK_TIMEOUT);
        let deadline = tokio::time::Instant::now() + timeout;
        let packet = EventPacket {
            event: event.to_owned(),
            data,
        };
        let mut stream = match self
            .ns
            .adapter()
            .broadcast_with_ack(packet, self.opts.clone())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "broadcast with ack failed");
                return Err(PartialAcks {
                    responses: vec![],
                    missing_nodes: 0,
                });
            }
        };
        let mut responses = Vec::new();
        while let Some(data) = stream.next_ack(deadline).await {
            responses.push(data);
        }
        let summary = stream.summary();
        if !summary.timed_out {
            return Ok(responses);
        }
        Err(PartialAcks {
            responses,
            missing_nodes: summary.missing_nodes,
        })
    }

    pub async fn fetch_sockets(&self) -> Result<Vec<RemoteSocket>, AdapterError> {
        let g = self.ns.adapter().fetch_sockets(self.opts.clone()).await?;
        if !g.missing.is_empty() {
            tracing::warn!(missing = ?g.missing, "fetch_sockets: some nodes did not answer");
        }
        Ok(g.items
            .into_iter()
            .map(|info| RemoteSocket {
                info,
                ns: self.ns.clone(),
            })
            .collect())
    }

    pub fn sockets_join(&self, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        self.ns
            .adapter()
            .add_sockets(&self.opts, &rooms.into_rooms())
    }

    /// [`BroadcastOperator::sockets_join`] that returns once the joins are visible on
    /// every node of the cluster (see [`crate::Adapter::joined`]).
    pub async fn sockets_join_visible(&self, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        self.ns
            .adapter()
            .add_sockets_visible(&self.opts, &rooms.into_rooms())
            .await
    }

    pub fn sockets_leave(&self, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        self.ns
            .adapter()
            .del_sockets(&self.opts, &rooms.into_rooms())
    }

    pub fn disconnect_sockets(&self, close: bool) -> Result<(), AdapterError> {
        self.ns.adapter().disconnect_sockets(&self.opts, close)
    }
}

/// A socket found by `fetch_sockets`, on this node or another; every operation reaches
/// it through the adapter.
#[derive(Debug, Clone)]
pub struct RemoteSocket {
    pub info: SocketInfo,
    ns: Arc<Namespace>,
}

impl RemoteSocket {
    pub fn id(&self) -> Sid {
        self.info.id
    }

    fn only_me(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).to(self.info.id)
    }

    pub fn emit(&self, event: &str, data: Data) -> Result<(), EmitError> {
        self.only_me().emit(event, data)
    }

    /// Emits and waits for this socket's ack.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: Data,
        timeout: Duration,
    ) -> Result<Data, PartialAcks> {
        let mut v = self
            .only_me()
            .timeout(timeout)
            .emit_with_ack(event, data)
            .await?;
        v.pop().ok_or(PartialAcks {
            responses: vec![],
            missing_nodes: 0,
        })
    }

    pub fn join(&self, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        self.only_me().sockets_join(rooms)
    }

    pub fn leave(&self, rooms: impl IntoRooms) -> Result<(), AdapterError> {
        self.only_me().sockets_leave(rooms)
    }

    pub fn disconnect(&self, close: bool) -> Result<(), AdapterError> {
        self.only_me().disconnect_sockets(close)
    }
}
