//! The mesh as a transport of Skein's cluster layer (`skein::adapter::cluster`).
//!
//! - Messages travel on the `Bus` service: one long-lived stream from this node to each
//!   other live member, fed by a bounded queue ([`QUEUE`] frames; what does not fit is
//!   dropped and counted as undelivered). A stream that breaks is opened again with a
//!   backoff from [`MIN_BACKOFF`] to [`MAX_BACKOFF`]; frames queued for a previous life
//!   of a restarted node are dropped, never delivered to the new one.
//! - A broadcast to rooms goes only to the nodes the replicated room index lists for
//!   them; a broadcast without rooms (or to a socket's own room, which the index does
//!   not hold) and every other message go to every live member. Raft is never on this
//!   path: the index is read from the local copy.
//! - A room's first local member (or its last leaving) is an index change, batched
//!   ([`IndexBatcher`]) and committed through Raft. [`Transport::visible`] is the join
//!   promise: it resolves once the change listing this node is applied on every live
//!   node. A change that did not become visible (no quorum: a minority partition; a
//!   node that did not apply it in time) is proposed again while the room has a member
//!   here, and later joins of the room wait for it too; each wait is bounded by the
//!   visibility timeout, after which the join is acknowledged anyway (logged).
//! - After this node is admitted again (a partition outlasted `gone_after`, which
//!   cleared its entries), it republishes its rooms.
//! - The same streams carry the frames of the recovery layer (`recovery`: the packet
//!   log and the sessions, replicated to every live peer), as frames of their own kind.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use skein::adapter::cluster::{
    codec, Delivery, Envelope, Inbound, Message, PeerIds, Transport, TransportError,
};
use skein::adapter::Room;
use tokio::sync::{mpsc, watch};

use crate::batch::IndexBatcher;
use crate::error::MeshError;
use crate::link::{run_link, Item, Shared};
use crate::mesh::Mesh;
use crate::state::{IndexChange, NodeState};

/// Frames queued for one peer at most.
pub const QUEUE: usize = 16_384;
/// Backoff between attempts to open a peer's stream.
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long index changes are collected into one batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// How often the queues of peers that are gone are dropped (ending their stream tasks).
pub const PRUNE_EVERY: Duration = Duration::from_secs(2);

/// The queue of one peer's stream.
struct Link {
    tx: mpsc::Sender<Item>,
    /// Broadcasts queued for the peer (what a node pays for a room it holds no member
    /// of is what stays at zero here).
    broadcasts: AtomicU64,
}

/// Frame kinds on the bus.
pub(crate) const FRAME_CLUSTER: u32 = 0;
pub(crate) const FRAME_RECOVERY: u32 = 1;

/// Where the recovery layer receives its frames.
pub type RecoverySink = Arc<dyn Fn(Bytes) + Send + Sync>;

/// (namespace, room).
type RoomKey = (String, String);
type Pending = Arc<Mutex<HashMap<RoomKey, watch::Receiver<bool>>>>;

/// This node's end of the mesh bus. See the module documentation.
pub struct MeshTransport {
    shared: Arc<Shared>,
    batcher: IndexBatcher,
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Index changes of rooms that gained their first member here, until every live
    /// node applied them (`true`).
    pending: Pending,
    /// The longest a join waits for its index change to be visible.
    visible_timeout: Duration,
    /// The rooms with a member here (republished after a readmission).
    rooms: Arc<Mutex<HashSet<RoomKey>>>,
    /// The recovery layer, when recovery is on.
    recovery: Arc<std::sync::OnceLock<RecoverySink>>,
    /// The cluster layer's live peers (heartbeats), for `node_count`.
    peer_ids: std::sync::OnceLock<PeerIds>,
}

impl std::fmt::Debug for MeshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTransport")
            .field("node", &self.shared.node)
            .finish()
    }
}

impl MeshTransport {
    /// The transport of `mesh`'s node; what other nodes send goes to `inbound`.
    /// `visible_timeout` bounds the wait of one join for its index change.
    pub fn new(mesh: Arc<Mesh>, inbound: Inbound, visible_timeout: Duration) -> Arc<Self> {
        let recovery: Arc<std::sync::OnceLock<RecoverySink>> = Arc::default();
        let to_recovery = recovery.clone();
        mesh.set_bus_sink(Arc::new(move |kind: u32, payload: Bytes| match kind {
            FRAME_CLUSTER => match codec::decode(&payload) {
                Ok(env) => inbound(env, Delivery::Bus),
                Err(e) => tracing::warn!(error = %e, "mesh bus: undecodable frame"),
            },
            FRAME_RECOVERY => match to_recovery.get() {
                Some(sink) => sink(payload),
                None => tracing::warn!("mesh bus: a recovery frame, and recovery is off here"),
            },
            _ => tracing::warn!(kind, "mesh bus: a frame of an unknown kind"),
        }));
        let core = mesh.core();
        let shared = Arc::new(Shared {
            node: mesh.node_id().into(),
            auth: core.peers.auth(),
            timeout: core.config.rpc_timeout,
            undelivered: AtomicU64::new(0),
            unreachable: Mutex::default(),
            mesh: mesh.clone(),
        });
        let t = Arc::new(MeshTransport {
            batcher: mesh.batcher(BATCH_WINDOW, visible_timeout),
            visible_timeout,
            shared,
            links: Mutex::default(),
            pending: Arc::default(),
            rooms: Arc::default(),
            recovery,
            peer_ids: std::sync::OnceLock::new(),
        });
        tokio::spawn(republish(Arc::downgrade(&t), mesh.admissions()));
        tokio::spawn(prune_links(Arc::downgrade(&t)));
        t
    }

    /// The peers this node holds a queue (and a stream task) for, sorted.
    pub fn linked_peers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.links.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Where `node_count` learns the cluster layer's live peers (set once; without it
    /// the layer counts them itself).
    pub fn set_peer_ids(&self, peers: PeerIds) {
        let _ = self.peer_ids.set(peers);
    }

    /// Hands the recovery frames other nodes send to `sink` (set once).
    pub fn set_recovery_sink(&self, sink: RecoverySink) {
        let _ = self.recovery.set(sink);
    }

    /// Sends a recovery frame to one node.
    pub fn send_frame(&self, to: &str, payload: Bytes) {
        let incarnation = self.mesh().view().member(to).map_or(0, |m| m.incarnation);
        let item = Item {
            incarnation,
            kind: FRAME_RECOVERY,
            payload,
        };
        self.enqueue(to, item, false);
    }

    /// Sends a recovery frame to every other live node; returns how many.
    pub fn publish_frame(&self, payload: &Bytes) -> usize {
        // On the path of every logged broadcast: no list is built.
        let view = self.mesh().view();
        let me = &*self.shared.node;
        let mut n = 0;
        for m in view.live_members().filter(|m| m.node != me) {
            let item = Item {
                incarnation: m.incarnation,
                kind: FRAME_RECOVERY,
                payload: payload.clone(),
            };
            self.enqueue(&m.node, item, false);
            n += 1;
        }
        n
    }

    /// The other live members and their incarnations, sorted by name.
    pub fn live_peers(&self) -> Vec<(String, u64)> {
        let view = self.mesh().view();
        let me = &*self.shared.node;
        let mut v: Vec<(String, u64)> = view
            .live_members()
            .filter(|m| m.node != me)
            .map(|m| (m.node.clone(), m.incarnation))
            .collect();
        v.sort();
        v
    }

    /// The mesh node under this transport.
    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.shared.mesh
    }

    /// Broadcasts this node queued for `peer` so far.
    pub fn broadcasts_sent(&self, peer: &str) -> u64 {
        self.links
            .lock()
            .get(peer)
            .map_or(0, |l| l.broadcasts.load(Ordering::Relaxed))
    }

    fn enqueue(&self, peer: &str, item: Item, broadcast: bool) {
        let link = {
            let mut links = self.links.lock();
            links
                .entry(peer.to_owned())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(run_link(Arc::downgrade(&self.shared), peer.to_owned(), rx));
                    Arc::new(Link {
                        tx,
                        broadcasts: AtomicU64::new(0),
                    })
                })
                .clone()
        };
        if broadcast {
            link.broadcasts.fetch_add(1, Ordering::Relaxed);
        }
        if link.tx.try_send(item).is_err() {
            self.shared.undelivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn out(&self, to: Option<&str>, nsp: &str, msg: &Message) {
        let view = self.shared.mesh.view();
        let payload: Bytes = codec::encode(&Envelope {
            from: self.shared.node.clone(),
            nsp: nsp.into(),
            msg: msg.clone(),
        })
        .into();
        let me = &*self.shared.node;
        let targets: Vec<(&str, u64)> = match to {
            Some(to) => vec![(to, view.member(to).map_or(0, |m| m.incarnation))],
            None => {
                let routed = match msg {
                    Message::Broadcast { opts, .. }
                        if !opts.rooms.is_empty()
                            && !opts.rooms.iter().any(|r| r.parse::<skein::Sid>().is_ok()) =>
                    {
                        Some(view.nodes_for(nsp, opts.rooms.iter().map(|r| &**r)))
                    }
                    _ => None,
                };
                view.live_members()
                    .filter(|m| m.node != me)
                    .filter(|m| routed.as_ref().is_none_or(|r| r.contains(m.node.as_str())))
                    .map(|m| (m.node.as_str(), m.incarnation))
                    .collect()
            }
        };
        let broadcast = matches!(msg, Message::Broadcast { .. });
        for (peer, incarnation) in targets {
            if peer == me {
                continue;
            }
            let item = Item {
                incarnation,
                kind: FRAME_CLUSTER,
                payload: payload.clone(),
            };
            self.enqueue(peer, item, broadcast);
        }
    }
}

#[async_trait]
impl Transport for MeshTransport {
    fn publish(&self, nsp: &str, msg: &Message) {
        self.out(None, nsp, msg);
    }

    fn send(&self, to: &str, nsp: &str, msg: &Message) {
        self.out(Some(to), nsp, msg);
    }

    async fn subscribe(&self, _nsp: &str) -> Result<(), TransportError> {
        // Every node receives every namespace's messages (one stream per peer).
        Ok(())
    }

    async fn unsubscribe(&self, _nsp: &str) {}

    fn interest(&self, nsp: &str, room: &Room, member: bool) {
        let key = (nsp.to_owned(), room.to_string());
        let node = self.shared.node.to_string();
        if member {
            self.rooms.lock().insert(key.clone());
            let (tx, rx) = watch::channel(false);
            self.pending.lock().insert(key.clone(), rx.clone());
            let change = IndexChange::Add {
                nsp: key.0.clone(),
                room: key.1.clone(),
                node,
            };
            let batcher = self.batcher.clone();
            let pending = self.pending.clone();
            let rooms = self.rooms.clone();
            // Until the change is visible everywhere, the room stays pending: a join
            // that comes later waits too (each wait is bounded: see `visible`). A
            // change that failed (no quorum, a node that did not apply it in time) is
            // proposed again, as long as the room still has a member here.
            tokio::spawn(async move {
                loop {
                    match batcher.commit_visible(change.clone()).await {
                        Ok(()) | Err(MeshError::Stopped) => break,
                        Err(e) => {
                            tracing::warn!(
                                nsp = key.0,
                                room = key.1,
                                "mesh: join not visible yet: {e}"
                            )
                        }
                    }
                    let current = pending
                        .lock()
                        .get(&key)
                        .is_some_and(|r| r.same_channel(&rx));
                    if !current || !rooms.lock().contains(&key) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let _ = tx.send(true);
                let mut p = pending.lock();
                if p.get(&key).is_some_and(|r| r.same_channel(&rx)) {
                    p.remove(&key);
                }
            });
        } else {
            self.rooms.lock().remove(&key);
            self.batcher.push(IndexChange::Remove {
                nsp: key.0,
                room: key.1,
                node,
            });
        }
    }

    fn visible(&self, nsp: &str, rooms: &[Room]) -> Option<BoxFuture<'static, ()>> {
        let waits: Vec<watch::Receiver<bool>> = {
            let p = self.pending.lock();
            rooms
                .iter()
                .filter_map(|r| p.get(&(nsp.to_owned(), r.to_string())).cloned())
                .collect()
        };
        let bound = self.visible_timeout;
        Some(Box::pin(async move {
            let all = async {
                for mut w in waits {
                    let _ = w.wait_for(|done| *done).await;
                }
            };
            if tokio::time::timeout(bound, all).await.is_err() {
                tracing::warn!(
                    ?bound,
                    "mesh: join acknowledged before it is visible everywhere"
                );
            }
        }))
    }

    fn holders(&self, nsp: &str, rooms: &[Room]) -> Option<Vec<String>> {
        // A socket's own room is not in the index: ask everyone then.
        if rooms.iter().any(|r| r.parse::<skein::Sid>().is_ok()) {
            return None;
        }
        let view = self.shared.mesh.view();
        let nodes = view.nodes_for(nsp, rooms.iter().map(|r| &**r));
        Some(nodes.into_iter().map(String::from).collect())
    }

    /// The live peers (heartbeats) whose stream is not known to be down, this node
    /// included: a request does not wait for a node that was killed (its port refuses
    /// at once) until its heartbeats time out.
    async fn node_count(&self, _nsp: &str) -> Result<Option<usize>, TransportError> {
        let Some(peers) = self.peer_ids.get() else {
            return Ok(None);
        };
        let down = self.shared.unreachable.lock();
        let up = peers().iter().filter(|p| !down.contains(&***p)).count();
        Ok(Some(up + 1))
    }

    fn is_up(&self) -> bool {
        self.shared.mesh.is_joined()
    }

    fn undelivered(&self) -> u64 {
        self.shared.undelivered.load(Ordering::Relaxed)
    }

    async fn close(&self) {
        // Let the queues drain a moment, then leave the cluster (listed gone at once).
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let busy = self
                .links
                .lock()
                .values()
                .any(|l| l.tx.capacity() < l.tx.max_capacity());
            if !busy || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared
            .mesh
            .shutdown_within(Duration::from_secs(2))
            .await;
    }
}

/// Republishes this node's rooms whenever it is admitted (again).
async fn republish(t: Weak<MeshTransport>, mut admissions: watch::Receiver<u64>) {
    while admissions.changed().await.is_ok() {
        let Some(t) = t.upgrade() else { return };
        let rooms: Vec<(String, String)> = t.rooms.lock().iter().cloned().collect();
        if !rooms.is_empty() {
            tracing::info!(
                rooms = rooms.len(),
                "mesh: admitted again, republishing rooms"
            );
        }
        for (nsp, room) in rooms {
            t.batcher.push(IndexChange::Add {
                nsp,
                room,
                node: t.shared.node.to_string(),
            });
        }
    }
}

/// Drops the queues (and unreachable marks) of peers that are no longer live members,
/// so that a cluster whose pods come and go under new names keeps one stream task per
/// live peer, not one per peer ever seen. What was still queued is counted as undelivered by the task, which
/// then ends; a peer that comes back gets a new queue with its next message.
async fn prune_links(t: Weak<MeshTransport>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(t) = t.upgrade() else { return };
        let view = t.shared.mesh.view();
        let live = |peer: &String| {
            view.member(peer)
                .is_some_and(|m| m.state != NodeState::Gone)
        };
        t.links.lock().retain(|peer, _| live(peer));
        // A peer that is gone for good is not marked unreachable forever either.
        t.shared.unreachable.lock().retain(live);
    }
}
