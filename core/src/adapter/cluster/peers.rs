//! Node liveness: who is alive, from their heartbeats.
//!
//! Every node sends a heartbeat every [`HEARTBEAT_EVERY`] and a goodbye when it leaves;
//! a node silent for [`PEER_TIMEOUT`] is taken as dead. A node that hears an unknown
//! node answers with a heartbeat at once, so that two nodes know each other within one
//! round trip of the later one starting, not one period.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::message::NodeId;

/// How often a node says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a node may stay silent before it is taken as dead: three heartbeats.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(6);

/// The other nodes heard from, and when.
#[derive(Debug)]
pub(crate) struct Peers {
    seen: Mutex<HashMap<NodeId, Instant>>,
    /// Nodes that said goodbye: the requests waiting on them stop waiting.
    left: broadcast::Sender<NodeId>,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            seen: Mutex::default(),
            left: broadcast::channel(16).0,
        }
    }
}

impl Peers {
    /// Follows the nodes that say goodbye from now on.
    pub(crate) fn departures(&self) -> broadcast::Receiver<NodeId> {
        self.left.subscribe()
    }

    /// A heartbeat from `node`; true when the node was not known.
    pub(crate) fn heard(&self, node: &NodeId) -> bool {
        self.seen
            .lock()
            .insert(node.clone(), Instant::now())
            .is_none()
    }

    /// A goodbye from `node`.
    pub(crate) fn gone(&self, node: &str) {
        if let Some((id, _)) = self.seen.lock().remove_entry(node) {
            let _ = self.left.send(id);
        }
    }

    /// The nodes heard from within the timeout, sorted.
    pub(crate) fn live(&self) -> Vec<NodeId> {
        let mut seen = self.seen.lock();
        seen.retain(|_, at| at.elapsed() < PEER_TIMEOUT);
        let mut v: Vec<NodeId> = seen.keys().cloned().collect();
        v.sort();
        v
    }

    pub(crate) fn count(&self) -> usize {
        let seen = self.seen.lock();
        seen.values()
            .filter(|at| at.elapsed() < PEER_TIMEOUT)
            .count()
    }

    /// Whether `node` is alive now.
    pub(crate) fn is_live(&self, node: &str) -> bool {
        self.seen
            .lock()
            .get(node)
            .is_some_and(|at| at.elapsed() < PEER_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_a_node_alive_and_silence_or_goodbye_ends_it() {
        let p = Peers::default();
        let (a, b): (NodeId, NodeId) = ("a".into(), "b".into());
        assert!(p.heard(&a), "new");
        assert!(!p.heard(&a), "known");
        p.heard(&b);
        assert_eq!(p.live(), vec![a.clone(), b.clone()]);
        tokio::time::advance(PEER_TIMEOUT - Duration::from_millis(10)).await;
        p.heard(&b);
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(p.live(), vec![b.clone()], "a went silent");
        assert!(!p.is_live("a"));
        p.gone("b");
        assert_eq!(p.count(), 0);
    }
}
