//! Redis pub/sub as a transport of the cluster layer: the channels and formats of
//! `@socket.io/redis-adapter` (see [`crate::codec`]) over a [`Driver`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use skein::adapter::cluster::message::Message;
use skein::adapter::cluster::{Delivery, Inbound, Transport, TransportError};
use skein::adapter::Room;

use crate::codec;
use crate::driver::{Driver, Health};
use crate::wire::{self, Channels};

/// A node's Redis transport.
pub struct RedisTransport {
    key: String,
    uid: String,
    driver: Arc<dyn Driver>,
    /// The real driver's health (an in-process stub has none).
    health: Option<Arc<Health>>,
    /// Per namespace, the rooms with a local member: a broadcast to one room that has
    /// none here is dropped by its channel name, before it is decoded.
    rooms: RwLock<HashMap<String, HashSet<Room>>>,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport")
            .field("key", &self.key)
            .field("uid", &self.uid)
            .finish()
    }
}

impl RedisTransport {
    pub fn new(key: &str, uid: &str, driver: Arc<dyn Driver>, health: Option<Arc<Health>>) -> Self {
        RedisTransport {
            key: key.to_owned(),
            uid: uid.to_owned(),
            driver,
            health,
            rooms: RwLock::default(),
        }
    }

    /// The node-level channels to subscribe once: heartbeats, and this node's own.
    pub fn node_channels(&self) -> Vec<String> {
        vec![
            codec::heartbeat_channel(&self.key),
            codec::node_channel(&self.key, &self.uid),
        ]
    }

    fn out(&self, o: codec::Outgoing) {
        self.driver.publish_to(o.channel, o.payload, o.reach);
    }

    /// Hands a message from a subscription to the cluster layer.
    pub fn route(&self, channel: &str, payload: &[u8], inbound: &Inbound) {
        let env = if channel == codec::heartbeat_channel(&self.key) {
            codec::decode_heartbeat(payload)
        } else if channel == codec::node_channel(&self.key, &self.uid) {
            skein::adapter::cluster::codec::decode(payload).ok()
        } else {
            let Some(nsp) = wire::nsp_of(channel, &self.key) else {
                return;
            };
            let ch = Channels::new(&self.key, nsp, &self.uid);
            if let Some(rest) = channel.strip_prefix(ch.broadcast.as_str()) {
                // `<room>#` for a one-room broadcast: skip rooms with no member here.
                let room = rest.strip_suffix('#').unwrap_or(rest);
                if !room.is_empty() && !self.has_room(nsp, room) {
                    return;
                }
                codec::decode_broadcast(nsp, payload)
            } else if channel == ch.request {
                codec::decode_request(nsp, payload)
            } else if channel == ch.response || channel == ch.own_response {
                codec::decode_response(nsp, payload)
            } else {
                None
            }
        };
        match env {
            Some(env) => inbound(env, Delivery::Bus),
            None => tracing::debug!(channel, "ignoring a message this node cannot read"),
        }
    }

    /// Whether a room may have a member here: a known room, or a socket id (a socket's
    /// own room is implicit, never tracked).
    fn has_room(&self, nsp: &str, room: &str) -> bool {
        room.parse::<skein::Sid>().is_ok()
            || self
                .rooms
                .read()
                .get(nsp)
                .is_some_and(|set| set.contains(room))
    }

    fn channels(&self, nsp: &str) -> (Vec<String>, Vec<String>) {
        let ch = Channels::new(&self.key, nsp, &self.uid);
        (
            vec![ch.request, ch.response, ch.own_response],
            vec![format!("{}*", ch.broadcast)],
        )
    }
}

#[async_trait]
impl Transport for RedisTransport {
    fn publish(&self, nsp: &str, msg: &Message) {
        if let Some(o) = codec::publish(&self.key, &self.uid, nsp, msg) {
            self.out(o);
        }
    }

    fn send(&self, to: &str, nsp: &str, msg: &Message) {
        self.out(codec::send(&self.key, &self.uid, to, nsp, msg));
    }

    async fn subscribe(&self, nsp: &str) -> Result<(), TransportError> {
        let (channels, patterns) = self.channels(nsp);
        self.driver
            .subscribe(channels, patterns)
            .await
            .map_err(|e| TransportError::Unavailable(e.to_string()))
    }

    async fn unsubscribe(&self, nsp: &str) {
        let (channels, patterns) = self.channels(nsp);
        self.driver.unsubscribe(channels, patterns).await;
        self.rooms.write().remove(nsp);
    }

    fn interest(&self, nsp: &str, room: &Room, member: bool) {
        let mut rooms = self.rooms.write();
        let set = rooms.entry(nsp.to_owned()).or_default();
        if member {
            set.insert(room.clone());
        } else {
            set.remove(room);
        }
    }

    /// As the reference counts nodes: the subscribers of the request channel (Node
    /// servers included), so a node that dies stops being waited for as soon as Redis
    /// sees its connection close.
    async fn node_count(&self, nsp: &str) -> Result<Option<usize>, TransportError> {
        let ch = Channels::new(&self.key, nsp, &self.uid);
        self.driver
            .num_sub(&ch.request)
            .await
            .map(Some)
            .map_err(|e| TransportError::Unavailable(e.to_string()))
    }

    fn is_up(&self) -> bool {
        self.health.as_ref().is_none_or(|h| !h.is_down())
    }

    fn undelivered(&self) -> u64 {
        self.health.as_ref().map_or(0, |h| {
            h.undelivered.load(std::sync::atomic::Ordering::Relaxed)
        })
    }
}
