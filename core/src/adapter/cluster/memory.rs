//! An in-memory transport: nodes in one process on a shared bus, for the layer's tests
//! and the in-process cluster fixture. Messages go through [`super::codec`] as they
//! would on a wire, are delivered in order per sender on a task of the receiving node,
//! and a node can be muted (it receives but sends nothing, like a hung node).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::codec;
use super::message::{Envelope, Message};
use super::transport::{Delivery, Inbound, Transport, TransportError};

/// The shared bus; each transport keeps it alive.
#[derive(Default)]
pub struct MemoryBus {
    nodes: Mutex<Vec<Weak<MemoryTransport>>>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("nodes", &self.nodes.lock().len())
            .finish()
    }
}

impl MemoryBus {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A transport for node `id` on this bus, delivering into `inbound`.
    pub fn transport(self: &Arc<Self>, id: &str, inbound: Inbound) -> Arc<MemoryTransport> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                match codec::decode(&bytes) {
                    Ok(env) => inbound(env, Delivery::Bus),
                    Err(e) => tracing::warn!(error = %e, "memory bus: undecodable message"),
                }
            }
        });
        let t = Arc::new(MemoryTransport {
            id: id.to_owned(),
            bus: self.clone(),
            tx,
            nsps: Mutex::default(),
            muted: AtomicBool::new(false),
            sent: AtomicU64::new(0),
        });
        self.nodes.lock().push(Arc::downgrade(&t));
        t
    }

    fn deliver(&self, from: &str, to: Option<&str>, nsp: &str, msg: &Message) {
        let node_level = matches!(
            msg,
            Message::Heartbeat | Message::InitialHeartbeat | Message::Goodbye
        );
        let bytes = codec::encode(&Envelope {
            from: from.into(),
            nsp: nsp.into(),
            msg: msg.clone(),
        });
        let nodes: Vec<_> = self.nodes.lock().iter().filter_map(Weak::upgrade).collect();
        for n in nodes {
            let wanted = match to {
                Some(to) => n.id == to,
                None => node_level || n.nsps.lock().contains(nsp),
            };
            if wanted {
                let _ = n.tx.send(bytes.clone());
            }
        }
    }
}

/// One node's end of the bus.
pub struct MemoryTransport {
    id: String,
    bus: Arc<MemoryBus>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    nsps: Mutex<HashSet<String>>,
    muted: AtomicBool,
    sent: AtomicU64,
}

impl MemoryTransport {
    /// A muted node receives but sends nothing: a node that stopped answering.
    pub fn mute(&self, muted: bool) {
        self.muted.store(muted, Ordering::Release);
    }

    /// Messages this node sent.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn out(&self, to: Option<&str>, nsp: &str, msg: &Message) {
        if self.muted.load(Ordering::Acquire) {
            return;
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.bus.deliver(&self.id, to, nsp, msg);
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn publish(&self, nsp: &str, msg: &Message) {
        self.out(None, nsp, msg);
    }

    fn send(&self, to: &str, nsp: &str, msg: &Message) {
        self.out(Some(to), nsp, msg);
    }

    async fn subscribe(&self, nsp: &str) -> Result<(), TransportError> {
        self.nsps.lock().insert(nsp.to_owned());
        Ok(())
    }

    async fn unsubscribe(&self, nsp: &str) {
        self.nsps.lock().remove(nsp);
    }

    fn is_up(&self) -> bool {
        true
    }

    fn undelivered(&self) -> u64 {
        0
    }
}
