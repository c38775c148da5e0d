//! Coalescing index changes into batches: one log entry per batch, and one wait for
//! visibility per batch, however many joins waited on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::core::Core;
use crate::error::MeshError;
use crate::state::{Command, IndexChange};

/// The most changes one log entry carries.
const MAX_BATCH: usize = 512;

type Waiter = oneshot::Sender<Result<(), MeshError>>;

/// Collects index changes for a short window and commits them as one batch. Within a
/// window, changes of one (namespace, room, node) coalesce into the last one (an add
/// then a remove is a remove). Batches commit one after the other, so a change never
/// overtakes an earlier one of the same key.
#[derive(Clone)]
pub struct IndexBatcher {
    tx: mpsc::UnboundedSender<(IndexChange, Option<Waiter>)>,
}

impl std::fmt::Debug for IndexBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexBatcher")
    }
}

impl IndexBatcher {
    pub(crate) fn spawn(core: Arc<Core>, window: Duration, visible_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(core, rx, window, visible_timeout));
        IndexBatcher { tx }
    }

    /// Queues a change without waiting (a leave may lag).
    pub fn push(&self, change: IndexChange) {
        let _ = self.tx.send((change, None));
    }

    /// Queues a change and returns once its batch is applied on every live node (the
    /// join promise), or with the error that stopped it.
    pub async fn commit_visible(&self, change: IndexChange) -> Result<(), MeshError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((change, Some(tx)))
            .map_err(|_| MeshError::Stopped)?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }
}

async fn run(
    core: Arc<Core>,
    mut rx: mpsc::UnboundedReceiver<(IndexChange, Option<Waiter>)>,
    window: Duration,
    visible_timeout: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut changes: BTreeMap<(String, String, String), IndexChange> = BTreeMap::new();
        let mut waiters = Vec::new();
        let take = |changes: &mut BTreeMap<_, _>, waiters: &mut Vec<_>, item| {
            let (change, waiter): (IndexChange, Option<Waiter>) = item;
            let (nsp, room, node) = change.key();
            changes.insert((nsp.into(), room.into(), node.into()), change);
            waiters.extend(waiter);
        };
        take(&mut changes, &mut waiters, first);
        let deadline = tokio::time::Instant::now() + window;
        while changes.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => take(&mut changes, &mut waiters, item),
                _ => break,
            }
        }
        let batch: Vec<IndexChange> = changes.into_values().collect();
        // A batch that does not commit (no leader: an election, a minority partition)
        // fails its joins at once but is retried until it commits, before any later
        // batch: removes are not lost, and nothing overtakes them.
        let result = loop {
            match core.propose(Command::Index(batch.clone())).await {
                Ok(index) => break Ok(index),
                Err(MeshError::Stopped) => break Err(MeshError::Stopped),
                Err(e) => {
                    tracing::warn!("mesh: index batch not committed, retrying: {e}");
                    for w in waiters.drain(..) {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        };
        if waiters.is_empty() {
            continue;
        }
        // The wait runs beside the next batch's commit: visibility needs no ordering.
        let core = core.clone();
        tokio::spawn(async move {
            let result = match result {
                Ok(index) => core.wait_visible(index, visible_timeout).await,
                Err(e) => Err(e),
            };
            for w in waiters {
                let _ = w.send(result.clone());
            }
        });
    }
}
