//! A subscription: what it takes (`Filter`) and its stream of events (`SubStream`).

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
    pub(super) fn matches(&self, ns: &str, event: &str) -> bool {
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
        if let Some(inner) = self.hub.upgrade() {
            Hub { inner }.unsubscribe(self.id);
        }
    }
}
