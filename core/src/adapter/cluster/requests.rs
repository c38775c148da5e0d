//! Matching answers to requests: a request to every node gathers one answer per node
//! and names the nodes that did not answer.
//!
//! The nodes asked are those alive when the request starts: one that hangs meanwhile
//! (SIGSTOP) stops heartbeating, but it is still the node that did not answer, by name.
//! A node that says goodbye during the request is not waited for. When the backend
//! counts nodes itself (Redis counts Node servers too, which send no heartbeats), the
//! answers still missing beyond the named nodes are reported as `unknown-node-N`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::message::{NodeId, ReqId, ResponseBody};
use super::peers::Peers;

/// An answer, with the node it came from.
pub(crate) type Answer = (NodeId, ResponseBody);

/// Requests waiting for answers.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    waiting: Mutex<HashMap<ReqId, mpsc::UnboundedSender<Answer>>>,
}

/// A request's random id (the reference uses random strings too).
pub(crate) fn new_id() -> ReqId {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect::<String>()
        .into()
}

/// A registered request: answers arrive on it until it is dropped.
pub(crate) struct Waiting<'a> {
    requests: &'a Requests,
    pub id: ReqId,
    pub rx: mpsc::UnboundedReceiver<Answer>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.requests.waiting.lock().remove(&self.id);
    }
}

impl Requests {
    pub(crate) fn register(&self) -> Waiting<'_> {
        let id = new_id();
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiting.lock().insert(id.clone(), tx);
        Waiting {
            requests: self,
            id,
            rx,
        }
    }

    /// Registers a request whose answers outlive the caller (a broadcast with acks keeps
    /// receiving until its timeout); [`Requests::forget`] ends it.
    pub(crate) fn register_detached(&self) -> (ReqId, mpsc::UnboundedReceiver<Answer>) {
        let id = new_id();
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiting.lock().insert(id.clone(), tx);
        (id, rx)
    }

    pub(crate) fn forget(&self, id: &str) {
        self.waiting.lock().remove(id);
    }

    /// An answer arrived; one for no (or a finished) request is dropped.
    pub(crate) fn answer(&self, from: NodeId, req: &str, body: ResponseBody) {
        let tx = self.waiting.lock().get(req).cloned();
        if let Some(tx) = tx {
            let _ = tx.send((from, body));
        }
    }
}

/// Gathers one answer from each node asked until all came or `timeout` passed.
/// `expected`: how many nodes should answer when the backend counts them itself
/// (`None`: the `asked` peers). Returns the answers and the nodes that did not answer.
pub(crate) async fn gather(
    w: &mut Waiting<'_>,
    peers: &Arc<Peers>,
    asked: Vec<NodeId>,
    expected: Option<usize>,
    timeout: Duration,
) -> (Vec<Answer>, Vec<String>) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut departures = peers.departures();
    let mut got: Vec<Answer> = Vec::new();
    let mut waiting_for = asked;
    let mut expected = expected.unwrap_or(waiting_for.len());
    while got.len() < expected {
        tokio::select! {
            a = w.rx.recv() => match a {
                Some(a) => {
                    waiting_for.retain(|n| *n != a.0);
                    got.push(a);
                }
                None => break,
            },
            Ok(node) = departures.recv() => {
                // A node asked said goodbye: it will not answer, and it is not missing.
                if let Some(i) = waiting_for.iter().position(|n| *n == node) {
                    waiting_for.remove(i);
                    expected = expected.saturating_sub(1);
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let mut missing: Vec<String> = waiting_for.iter().map(|n| n.to_string()).collect();
    let unnamed = expected
        .saturating_sub(got.len())
        .saturating_sub(missing.len());
    missing.extend((0..unnamed).map(|i| format!("unknown-node-{}", i + 1)));
    (got, missing)
}
