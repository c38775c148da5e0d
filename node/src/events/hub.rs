//! The subscriber hub behind `Subscribe` and `AckClientEvent`: client events that no
//! handler of the node takes go to exactly one app server subscribed on this node
//! (round-robin), else to one other node that advertised a matching subscriber (see
//! `relay`), else they are refused (ack error) or counted.
//!
//! A delivery id is `<node>/<epoch>/<counter>`: the origin node (the one the client is
//! connected to) keeps the client's pending ack under `counter`, bounded in count and
//! time; `epoch` is random per process, so an id from a previous run of the node is
//! never mistaken for a new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::json;
use skein::{AckSender, Data, Namespace, SocketRef};
use skein_proto::v1::ClientEvent;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

pub use super::subscription::{Filter, SubStream};
use crate::grpc::args::to_args;

/// How long a client's ack waits for an app server by default.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Pending deliveries kept at most; the oldest is expired first.
const MAX_PENDING: usize = 100_000;
/// Events queued for one subscriber stream before it counts as full.
const QUEUE: usize = 1024;
/// How long a forwarded event without an ack is kept for a retry elsewhere.
const FORWARD_KEEP: Duration = Duration::from_secs(10);
/// How often nodes advertise their subscribers, and how long an advert lasts.
pub(super) const ADVERT_EVERY: Duration = Duration::from_secs(5);
const ADVERT_TTL: Duration = Duration::from_secs(15);

struct Sub {
    id: u64,
    filter: Filter,
    tx: mpsc::Sender<ClientEvent>,
}

struct Remote {
    filters: Vec<Filter>,
    seen: Instant,
}

/// An event forwarded to another node, kept to try the next node if it cannot take it.
pub(super) struct Retry {
    pub ns: String,
    pub sid: String,
    pub data: Data,
    pub tried: Vec<String>,
}

pub(super) struct Pending {
    pub(super) socket: SocketRef,
    pub(super) ack: Option<AckSender>,
    pub(super) event: String,
    deadline: Instant,
    retry: Option<Retry>,
}

/// What became of an `AckClientEvent`.
#[derive(Debug, PartialEq, Eq)]
pub enum AckOutcome {
    Sent,
    NotFound,
    /// The origin node did not answer.
    Unreachable(String),
}

/// The hub of one node. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub node: String,
    epoch: u32,
    next: AtomicU64,
    next_sub: AtomicU64,
    rr: AtomicUsize,
    remote_rr: AtomicUsize,
    subs: RwLock<Vec<Sub>>,
    remotes: Mutex<HashMap<String, Remote>>,
    pub(super) pending: Mutex<BTreeMap<u64, Pending>>,
    ack_timeout: Duration,
    pub(super) delivered: AtomicU64,
    pub(super) unrouted: AtomicU64,
    refused: AtomicU64,
    /// The namespace whose adapter carries the messages between nodes ("/").
    pub ctl: RwLock<Option<Weak<Namespace>>>,
}

impl Hub {
    /// A hub for node `node`; its sweeper runs on the current runtime.
    pub fn new(node: &str, ack_timeout: Duration) -> Hub {
        let inner = Arc::new(Inner {
            node: node.to_owned(),
            epoch: rand_epoch(),
            next: AtomicU64::new(1),
            next_sub: AtomicU64::new(1),
            rr: AtomicUsize::new(0),
            remote_rr: AtomicUsize::new(0),
            subs: RwLock::new(Vec::new()),
            remotes: Mutex::new(HashMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            ack_timeout,
            delivered: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            ctl: RwLock::new(None),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            let mut next_advert = ADVERT_EVERY.as_secs();
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let hub = Hub { inner };
                hub.sweep();
                n += 1;
                if n == 1 {
                    // The adapter may not have been subscribed when we first said hello.
                    hub.hello();
                }
                if n >= next_advert {
                    next_advert = n + ADVERT_EVERY.as_secs();
                    if !hub.inner.subs.read().is_empty() {
                        hub.advertise();
                    }
                }
            }
        });
        Hub { inner }
    }

    /// Installs the fallback that routes a socket's unhandled events through the hub.
    pub fn install(&self, s: &SocketRef) {
        let weak = Arc::downgrade(&self.inner);
        s.on_fallback(move |s, event, data, ack| {
            if let Some(inner) = weak.upgrade() {
                Hub { inner }.route(s, event, data, ack);
            }
        });
    }

    pub fn delivered(&self) -> u64 {
        self.inner.delivered.load(Ordering::Relaxed)
    }

    /// Events without an ack that no subscriber could take.
    pub fn unrouted(&self) -> u64 {
        self.inner.unrouted.load(Ordering::Relaxed)
    }

    /// Events with an ack that no subscriber could take (answered with an error).
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    pub fn subscribers(&self) -> usize {
        self.inner.subs.read().len()
    }

    /// Adds a subscriber; it stays until the returned receiver's stream is dropped.
    pub fn subscribe(&self, filter: Filter) -> SubStream {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.inner.next_sub.fetch_add(1, Ordering::Relaxed);
        self.inner.subs.write().push(Sub { id, filter, tx });
        self.advertise();
        SubStream::new(rx, Arc::downgrade(&self.inner), id)
    }

    pub(crate) fn unsubscribe(&self, id: u64) {
        self.inner.subs.write().retain(|s| s.id != id);
        self.advertise();
    }

    /// Ends every subscription (on shutdown), so that their streams finish.
    pub fn close(&self) {
        self.inner.subs.write().clear();
        self.advertise();
    }

    /// The distinct filters of the local subscribers.
    pub(crate) fn local_filters(&self) -> Vec<Filter> {
        let mut out: Vec<Filter> = Vec::new();
        for s in self.inner.subs.read().iter() {
            if !out.contains(&s.filter) {
                out.push(s.filter.clone());
            }
        }
        out
    }

    pub(crate) fn set_remote(&self, node: &str, filters: Vec<Filter>) {
        if node == self.inner.node {
            return;
        }
        let mut r = self.inner.remotes.lock();
        if filters.is_empty() {
            r.remove(node);
        } else {
            r.insert(
                node.to_owned(),
                Remote {
                    filters,
                    seen: Instant::now(),
                },
            );
        }
    }

    /// Other nodes with a subscriber for `event`, not yet tried, in rotating order.
    fn candidates(&self, ns: &str, event: &str, tried: &[String]) -> Vec<String> {
        let now = Instant::now();
        let mut c: Vec<String> = self
            .inner
            .remotes
            .lock()
            .iter()
            .filter(|(n, r)| {
                now.duration_since(r.seen) < ADVERT_TTL
                    && !tried.contains(n)
                    && r.filters.iter().any(|f| f.matches(ns, event))
            })
            .map(|(n, _)| n.clone())
            .collect();
        c.sort();
        if !c.is_empty() {
            let k = self.inner.remote_rr.fetch_add(1, Ordering::Relaxed) % c.len();
            c.rotate_left(k);
        }
        c
    }

    /// Hands an event to one matching local subscriber with room for it.
    pub(crate) fn deliver_local(&self, mut ev: ClientEvent) -> bool {
        let subs = self.inner.subs.read();
        let matching: Vec<&Sub> = subs
            .iter()
            .filter(|s| s.filter.matches(&ev.namespace, &ev.event))
            .collect();
        if matching.is_empty() {
            return false;
        }
        let start = self.inner.rr.fetch_add(1, Ordering::Relaxed);
        for i in 0..matching.len() {
            match matching[(start + i) % matching.len()].tx.try_send(ev) {
                Ok(()) => {
                    self.inner.delivered.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                // Full or gone: the next one.
                Err(TrySendError::Full(e) | TrySendError::Closed(e)) => ev = e,
            }
        }
        false
    }

    /// An event of a local client with no handler of its own.
    pub fn route(&self, s: &SocketRef, event: &str, data: Data, ack: Option<AckSender>) {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let wants_ack = ack.is_some();
        let ev = ClientEvent {
            delivery_id: format!("{}/{:x}/{n}", self.inner.node, self.inner.epoch),
            namespace: s.nsp().to_owned(),
            socket_id: s.id().to_string(),
            node: self.inner.node.clone(),
            event: event.to_owned(),
            args: Some(to_args(data.clone())),
            wants_ack,
        };
        let id = ev.delivery_id.clone();
        // Pending before delivery: the subscriber may answer at once.
        if wants_ack {
            self.insert(n, s, ack, event, self.inner.ack_timeout);
        }
        if self.deliver_local(ev) {
            return;
        }
        let cands = self.candidates(s.nsp(), event, &[]);
        let Some(first) = cands.into_iter().next() else {
            let ack = self.inner.pending.lock().remove(&n).and_then(|p| p.ack);
            self.refuse(s, event, ack);
            return;
        };
        if !wants_ack {
            self.insert(n, s, None, event, FORWARD_KEEP.min(self.inner.ack_timeout));
        }
        let retry = Retry {
            ns: s.nsp().to_owned(),
            sid: s.id().to_string(),
            data,
            tried: vec![first.clone()],
        };
        // Kept before it leaves, so that a quick "cannot take it" finds it.
        let mut pend = self.inner.pending.lock();
        if let Some(p) = pend.get_mut(&n) {
            let r = p.retry.insert(retry);
            self.forward(&first, &id, event, wants_ack, r);
        }
    }

    fn insert(&self, n: u64, s: &SocketRef, ack: Option<AckSender>, event: &str, keep: Duration) {
        let evicted = {
            let mut p = self.inner.pending.lock();
            let evicted = if p.len() >= MAX_PENDING {
                p.pop_first().map(|(_, v)| v)
            } else {
                None
            };
            p.insert(
                n,
                Pending {
                    socket: s.clone(),
                    ack,
                    event: event.to_owned(),
                    deadline: Instant::now() + keep,
                    retry: None,
                },
            );
            evicted
        };
        if let Some(p) = evicted {
            expire(p);
        }
    }

    /// No subscriber can take the event: an ack gets an error, else it is counted.
    pub(crate) fn refuse(&self, s: &SocketRef, event: &str, ack: Option<AckSender>) {
        tracing::debug!(sid = %s.id(), nsp = s.nsp(), event, "client event with no subscriber");
        match ack {
            Some(a) => {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                a.send(Data::one(
                    json!({ "error": "no subscriber", "event": event }),
                ));
            }
            None => {
                self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Another node could not take a forwarded event: try the next one, or refuse it.
    pub(crate) fn on_nack(&self, id: &str) {
        let Some(n) = self.own_counter(id) else {
            return;
        };
        let mut pend = self.inner.pending.lock();
        let Some(p) = pend.get_mut(&n) else { return };
        let Some(r) = p.retry.as_mut() else { return };
        let next = self
            .candidates(&r.ns, &p.event, &r.tried)
            .into_iter()
            .next();
        if let Some(node) = next {
            r.tried.push(node.clone());
            let (event, wants_ack) = (p.event.clone(), p.ack.is_some());
            self.forward(&node, id, &event, wants_ack, r);
            return;
        }
        let p = pend.remove(&n);
        drop(pend);
        if let Some(mut p) = p {
            // A subscriber may have appeared here meanwhile.
            let r = p.retry.take();
            if let Some(r) = r {
                let ev = ClientEvent {
                    delivery_id: id.to_owned(),
                    namespace: r.ns,
                    socket_id: r.sid,
                    node: self.inner.node.clone(),
                    event: p.event.clone(),
                    args: Some(to_args(r.data)),
                    wants_ack: p.ack.is_some(),
                };
                if self.deliver_local(ev) {
                    if p.ack.is_some() {
                        p.deadline = Instant::now() + self.inner.ack_timeout;
                        self.inner.pending.lock().insert(n, p);
                    }
                    return;
                }
            }
            self.refuse(&p.socket, &p.event, p.ack);
        }
    }

    /// The counter of a delivery id of this node and process.
    pub(crate) fn own_counter(&self, id: &str) -> Option<u64> {
        let (node, epoch, n) = parse_id(id)?;
        (node == self.inner.node && epoch == format!("{:x}", self.inner.epoch)).then_some(n)
    }

    /// Answers the client of a pending delivery of this node.
    pub(crate) fn ack_local(&self, id: &str, data: Data) -> bool {
        let Some(n) = self.own_counter(id) else {
            return false;
        };
        let mut pend = self.inner.pending.lock();
        if pend.get(&n).is_none_or(|p| p.ack.is_none()) {
            return false;
        }
        let p = pend.remove(&n);
        drop(pend);
        match p.and_then(|p| p.ack) {
            Some(a) => {
                a.send(data);
                true
            }
            None => false,
        }
    }

    /// Answers a delivery of any node: here, or through the node that holds it.
    pub async fn ack(&self, id: &str, data: Data) -> AckOutcome {
        let Some((node, _, _)) = parse_id(id) else {
            return AckOutcome::NotFound;
        };
        if node == self.inner.node {
            return if self.ack_local(id, data) {
                AckOutcome::Sent
            } else {
                AckOutcome::NotFound
            };
        }
        self.ack_remote(node, id, data).await
    }

    /// The delivery ids of the pending deliveries.
    #[cfg(test)]
    pub(crate) fn pending_ids(&self) -> Vec<String> {
        let p = self.inner.pending.lock();
        p.keys()
            .map(|n| format!("{}/{:x}/{n}", self.inner.node, self.inner.epoch))
            .collect()
    }

    /// Drops what expired: acks that waited too long (the client gets an error), and
    /// deliveries of sockets that left.
    fn sweep(&self) {
        let now = Instant::now();
        let gone: Vec<Pending> = {
            let mut pend = self.inner.pending.lock();
            let ids: Vec<u64> = pend
                .iter()
                .filter(|(_, p)| p.deadline <= now || !p.socket.connected())
                .map(|(k, _)| *k)
                .collect();
            ids.iter().filter_map(|k| pend.remove(k)).collect()
        };
        for p in gone {
            expire(p);
        }
        self.inner
            .remotes
            .lock()
            .retain(|_, r| now.duration_since(r.seen) < ADVERT_TTL);
    }
}

fn expire(p: Pending) {
    if let Some(a) = p.ack {
        if p.socket.connected() {
            a.send(Data::one(
                json!({ "error": "ack timeout", "event": p.event }),
            ));
        }
    }
}

/// `<node>/<epoch>/<counter>`: the node may itself contain slashes.
pub fn parse_id(id: &str) -> Option<(&str, &str, u64)> {
    let mut parts = id.rsplitn(3, '/');
    let n = parts.next()?.parse().ok()?;
    let epoch = parts.next()?;
    let node = parts.next()?;
    (!node.is_empty() && !epoch.is_empty()).then_some((node, epoch, n))
}

fn rand_epoch() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}
