//! A subscription: what it takes (`Filter`) and its stream of events (`SubStream`).

use std::sync::atomic::Ordering;
use std::sync::Weak;

use serde::{Deserialize, Serialize};
use skein_proto::v1::ClientEvent;
use tokio::sync::mpsc;

use super::hub::{Hub, Inner};

/// What a subscriber takes: one namespace, some events (all when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub ns: String,
    pub events: Vec<String>,
}

impl Filter {
    pub(crate) fn matches(&self, ns: &str, event: &str) -> bool {
        self.ns == ns && (self.events.is_empty() || self.events.iter().any(|e| e == event))
    }
}

/// A subscriber's events; dropping it (the app server went away) unsubscribes.
pub struct SubStream {
    rx: mpsc::Receiver<ClientEvent>,
    hub: Weak<Inner>,
    id: u64,
}

impl SubStream {
    pub(super) fn new(rx: mpsc::Receiver<ClientEvent>, hub: Weak<Inner>, id: u64) -> Self {
        SubStream { rx, hub, id }
    }
}

impl futures_util::Stream for SubStream {
    type Item = Result<ClientEvent, tonic::Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|o| o.map(Ok))
    }
}

impl Drop for SubStream {
    fn drop(&mut self) {
        let Some(inner) = self.hub.upgrade() else {
            return;
        };
        let hub = Hub { inner };
        hub.unsubscribe(self.id);
        // What was queued for this subscriber and never sent goes elsewhere.
        self.rx.close();
        while let Ok(ev) = self.rx.try_recv() {
            hub.requeue(ev);
        }
    }
}

impl Hub {
    /// An event left in the queue of a subscriber that went away: another subscriber
    /// here takes it; else a forwarded one goes back to its origin (which tries another
    /// node), and one of this node's is refused (ack error) or counted. Never dropped
    /// unseen.
    pub(crate) fn requeue(&self, ev: ClientEvent) {
        // It was counted as delivered when it was queued.
        self.inner.delivered.fetch_sub(1, Ordering::Relaxed);
        let (node, id) = (ev.node.clone(), ev.delivery_id.clone());
        if self.deliver_local(ev) {
            return;
        }
        if node != self.inner.node {
            self.nack(&node, &id);
            return;
        }
        let pending = self
            .own_counter(&id)
            .and_then(|n| self.inner.pending.lock().remove(&n));
        match pending {
            Some(p) => self.refuse(&p.socket, &p.event, p.ack),
            None => {
                self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
