//! NATS core as a transport of the cluster layer.
//!
//! **Routing by interest.** A broadcast to exactly one room (not a socket's own room)
//! is published on the room's subject, which only the nodes holding a member of the
//! room subscribe: NATS filters, and a node with no member never receives, decodes or
//! even wakes for it. A node subscribes when a room gains its first local member and
//! unsubscribes when it loses its last one ([`Transport::interest`], in the order the
//! changes happen). Every other broadcast (to the namespace, to several
//! rooms, where a node holding members of two rooms must get it once) goes on the
//! namespace's `all` subject, as do socket management and requests; answers and
//! node-to-node events go to the node's own subject, heartbeats to one subject for the
//! cluster.
//!
//! **Order.** A sender's messages on one subject arrive in order (one connection, one
//! reader task per subscription). A room broadcast and a namespace-wide one from the
//! same sender travel on different subjects: their relative order holds when they are
//! not sent within a moment of each other. With recovery on, broadcasts go through the
//! JetStream log instead, in one order for every node.
//!
//! **A new member and a broadcast right after.** A client told that it joined a room
//! must get what another node broadcasts to the room next. The SUB of a room's first
//! member is handed to the NATS connection inside the join, and the join then waits
//! until NATS confirms it has processed it (a request to a subject nobody serves: the
//! server answers "no responders" only after what came before it on the connection),
//! at most [`CONFIRM_TIMEOUT`]; so the join returns, and the application acks it, once
//! NATS routes the room to this node. It costs one round trip to NATS on a room's
//! first join on a node, not on later joins. Without the wait, a nats-server 2.9 on
//! loopback took up to 2 ms to register a SUB, and one broadcast in ten sent right
//! after a client's join was acked missed that client. While NATS is down a join does
//! not wait.
//!
//! **NATS down.** Publishing never blocks the caller: messages go through a bounded
//! queue to one publishing task. While the connection is down, each message is dropped
//! and counted once per live peer it would have reached (one for a message to one node)
//! in [`Transport::undelivered`]; the client reconnects by itself and renews the
//! subscriptions, heartbeats resume and the peers find each other again.
//!
//! **Requests.** Before a request, each live peer is asked on its own subject whether
//! it serves the namespace. NATS answers "no responders" at once for a node whose
//! connection is gone (a node killed before its heartbeats ran out), so a request does
//! not wait its timeout for it; a peer that does not answer in [`PROBE_TIMEOUT`] (hung)
//! is still waited for, and named when it does not answer the request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use skein::adapter::cluster::message::{Envelope, Message};
use skein::adapter::cluster::{
    codec, Delivery, Inbound, PeerCount, PeerIds, Transport, TransportError,
};
use skein::adapter::Room;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::connection::Conn;
use crate::subjects::Subjects;
use crate::NatsAdapterError;

/// How long a live peer has to say whether it serves a namespace before a request.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a room's first join waits for NATS to confirm its subscription.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_millis(100);
/// Messages waiting for the publishing task; beyond, they are counted as undelivered.
const QUEUE: usize = 65_536;

/// A task that ends with its owner.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Out {
    Msg {
        subject: String,
        payload: Bytes,
        /// Deliveries lost if it cannot be sent.
        lost: u64,
    },
    Flush(oneshot::Sender<()>),
}

/// A node's NATS transport.
pub struct NatsTransport {
    conn: Conn,
    subjects: Subjects,
    id: String,
    inbound: Inbound,
    peers: PeerCount,
    peer_ids: PeerIds,
    undelivered: Arc<AtomicU64>,
    out: mpsc::Sender<Out>,
    /// The namespaces served here, with the reader of their `all` subject.
    nsps: Arc<Mutex<HashMap<String, Task>>>,
    /// The rooms with a local member, with the reader of their subject.
    rooms: Mutex<HashMap<(String, Room), Task>>,
    _tasks: Vec<Task>,
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("prefix", &self.subjects.prefix())
            .field("id", &self.id)
            .finish()
    }
}

fn subscribe_error(e: impl std::fmt::Display) -> NatsAdapterError {
    NatsAdapterError::Unreachable {
        servers: "the connected server".into(),
        reason: format!("cannot subscribe: {e}"),
    }
}

/// Hands every message of a subscription to the layer, in order.
async fn read(mut sub: Subscriber, inbound: Inbound) {
    while let Some(m) = sub.next().await {
        match codec::decode(&m.payload) {
            Ok(env) => inbound(env, Delivery::Bus),
            Err(e) => {
                tracing::debug!(subject = %m.subject, error = %e, "ignoring a message this node cannot read")
            }
        }
    }
}

/// This node's own subject: messages to it, and the presence probes of requests (a
/// message with a reply subject, whose payload names a namespace: "1" when it is
/// served here, "0" otherwise).
async fn read_own(
    mut sub: Subscriber,
    inbound: Inbound,
    client: Client,
    nsps: Arc<Mutex<HashMap<String, Task>>>,
) {
    while let Some(m) = sub.next().await {
        if let Some(reply) = m.reply {
            let served =
                std::str::from_utf8(&m.payload).is_ok_and(|nsp| nsps.lock().contains_key(nsp));
            let answer = Bytes::from_static(if served { b"1" } else { b"0" });
            let _ = client.publish(reply, answer).await;
            continue;
        }
        match codec::decode(&m.payload) {
            Ok(env) => inbound(env, Delivery::Bus),
            Err(e) => tracing::debug!(error = %e, "ignoring a message this node cannot read"),
        }
    }
}

/// Sends what the transport queued, in order; counts what cannot go.
async fn publisher(conn: Conn, mut rx: mpsc::Receiver<Out>, undelivered: Arc<AtomicU64>) {
    while let Some(o) = rx.recv().await {
        match o {
            Out::Msg {
                subject,
                payload,
                lost,
            } => {
                if !conn.is_up() || conn.client.publish(subject, payload).await.is_err() {
                    undelivered.fetch_add(lost, Ordering::Relaxed);
                }
            }
            Out::Flush(done) => {
                let _ = conn.client.flush().await;
                let _ = done.send(());
            }
        }
    }
}

impl NatsTransport {
    /// Subscribes the node-level subjects and starts the publishing and interest tasks.
    pub async fn start(
        conn: Conn,
        subjects: Subjects,
        id: &str,
        inbound: Inbound,
        peers: PeerCount,
        peer_ids: PeerIds,
    ) -> Result<Arc<Self>, NatsAdapterError> {
        let client = conn.client.clone();
        let nsps: Arc<Mutex<HashMap<String, Task>>> = Arc::default();
        let beats = client
            .subscribe(subjects.heartbeat())
            .await
            .map_err(subscribe_error)?;
        let own = client
            .subscribe(subjects.node(id))
            .await
            .map_err(subscribe_error)?;
        let undelivered = Arc::new(AtomicU64::new(0));
        let (out, out_rx) = mpsc::channel(QUEUE);
        let tasks = vec![
            Task(tokio::spawn(read(beats, inbound.clone()))),
            Task(tokio::spawn(read_own(
                own,
                inbound.clone(),
                client.clone(),
                nsps.clone(),
            ))),
            Task(tokio::spawn(publisher(
                conn.clone(),
                out_rx,
                undelivered.clone(),
            ))),
        ];
        client.flush().await.map_err(subscribe_error)?;
        Ok(Arc::new(NatsTransport {
            conn,
            subjects,
            id: id.to_owned(),
            inbound,
            peers,
            peer_ids,
            undelivered,
            out,
            nsps,
            rooms: Mutex::default(),
            _tasks: tasks,
        }))
    }

    /// The subject a message to every node of `nsp` goes on, and whether it counts
    /// as lost for each peer when it cannot go (heartbeats do not: they are renewed).
    fn route(&self, nsp: &str, msg: &Message) -> (String, bool) {
        match msg {
            Message::Heartbeat | Message::InitialHeartbeat | Message::Goodbye => {
                (self.subjects.heartbeat(), false)
            }
            Message::Broadcast { opts, .. } => match opts.rooms.as_slice() {
                // A socket's own room is never followed: its node is not known here.
                [room] if room.parse::<skein::Sid>().is_err() => {
                    (self.subjects.room(nsp, room), true)
                }
                _ => (self.subjects.all(nsp), true),
            },
            _ => (self.subjects.all(nsp), true),
        }
    }

    fn enqueue(&self, subject: String, nsp: &str, msg: &Message, lost: u64) {
        let payload = codec::encode(&Envelope {
            from: self.id.as_str().into(),
            nsp: nsp.into(),
            msg: msg.clone(),
        });
        let o = Out::Msg {
            subject,
            payload: payload.into(),
            lost,
        };
        if self.out.try_send(o).is_err() {
            self.undelivered.fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// Waits (blocking, at most [`CONFIRM_TIMEOUT`]) until NATS has processed what this
    /// connection sent so far: a request to a subject nobody serves is answered "no
    /// responders" by the server only after everything before it on the connection,
    /// the SUB of a new room included. See the module documentation.
    fn confirm(&self) {
        if !self.conn.is_up() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let client = self.conn.client.clone();
        let subject = self.subjects.sync(&self.id);
        self.conn.io.spawn(async move {
            let _ = client.request(subject, Bytes::new()).await;
            let _ = tx.send(());
        });
        if rx.recv_timeout(CONFIRM_TIMEOUT).is_err() {
            tracing::debug!("NATS did not confirm a room subscription in time");
        }
    }

    /// Whether `peer` serves `nsp`: `Some(false)` when it said no or NATS knows no one
    /// there, `None` when it did not answer in time.
    async fn probe(&self, peer: &str, nsp: &str) -> Option<bool> {
        let req = self.conn.client.request(
            self.subjects.node(peer),
            Bytes::copy_from_slice(nsp.as_bytes()),
        );
        match tokio::time::timeout(PROBE_TIMEOUT, req).await {
            Ok(Ok(m)) => Some(&m.payload[..] == b"1"),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Some(false),
            _ => None,
        }
    }
}

#[async_trait]
impl Transport for NatsTransport {
    fn publish(&self, nsp: &str, msg: &Message) {
        let (subject, counted) = self.route(nsp, msg);
        let lost = if counted { (self.peers)() as u64 } else { 0 };
        self.enqueue(subject, nsp, msg, lost);
    }

    fn send(&self, to: &str, nsp: &str, msg: &Message) {
        self.enqueue(self.subjects.node(to), nsp, msg, 1);
    }

    async fn subscribe(&self, nsp: &str) -> Result<(), TransportError> {
        if self.nsps.lock().contains_key(nsp) {
            return Ok(());
        }
        let sub = self
            .conn
            .client
            .subscribe(self.subjects.all(nsp))
            .await
            .map_err(|e| TransportError::Unavailable(e.to_string()))?;
        let task = Task(tokio::spawn(read(sub, self.inbound.clone())));
        self.nsps.lock().insert(nsp.to_owned(), task);
        // Written before the namespace is used: what is sent after a client joined it
        // finds the subscription. (While NATS is away it is renewed on reconnection.)
        if self.conn.is_up() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.client.flush()).await;
        }
        Ok(())
    }

    async fn unsubscribe(&self, nsp: &str) {
        self.nsps.lock().remove(nsp);
        self.rooms.lock().retain(|(n, _), _| n != nsp);
    }

    /// Called inside the join (or leave) that changed the room, under one lock, so
    /// changes apply in order. The SUB is handed to the connection here, before the join
    /// returns: see the module documentation.
    fn interest(&self, nsp: &str, room: &Room, member: bool) {
        if room.parse::<skein::Sid>().is_ok() {
            return;
        }
        let key = (nsp.to_owned(), room.clone());
        let mut rooms = self.rooms.lock();
        if !member {
            // Dropping the reader drops its subscriber, which unsubscribes.
            rooms.remove(&key);
            return;
        }
        if rooms.contains_key(&key) {
            return;
        }
        let subject = self.subjects.room(nsp, room);
        let (client, inbound) = (self.conn.client.clone(), self.inbound.clone());
        // The client's command queue takes it at once unless it is full (NATS away for
        // long): then a task waits for room in it.
        let task = match client.subscribe(subject.clone()).now_or_never() {
            Some(Ok(sub)) => tokio::spawn(read(sub, inbound)),
            Some(Err(e)) => {
                tracing::warn!(nsp, %room, error = %e, "cannot subscribe to a room");
                return;
            }
            None => tokio::spawn(async move {
                match client.subscribe(subject).await {
                    Ok(sub) => read(sub, inbound).await,
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to a room"),
                }
            }),
        };
        rooms.insert(key, Task(task));
        drop(rooms);
        self.confirm();
    }

    async fn node_count(&self, nsp: &str) -> Result<Option<usize>, TransportError> {
        if !self.conn.is_up() {
            return Err(TransportError::Unavailable("NATS is not connected".into()));
        }
        let peers = (self.peer_ids)();
        let answers =
            futures_util::future::join_all(peers.iter().map(|p| self.probe(p, nsp))).await;
        // A hung peer (no answer) is still counted: it is waited for, and named.
        let serving = answers.iter().filter(|a| **a != Some(false)).count();
        Ok(Some(serving + 1))
    }

    fn is_up(&self) -> bool {
        self.conn.is_up()
    }

    fn undelivered(&self) -> u64 {
        self.undelivered.load(Ordering::Relaxed)
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.out.try_send(Out::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}
