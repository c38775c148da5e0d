//! The state machine: applies committed commands to the [`ClusterState`] that readers
//! see, and keeps its snapshot in the data directory.
//!
//! Readers hold an `Arc` of the state: a lookup clones the `Arc` under a read lock and
//! never waits for Raft. Applying a batch of entries takes the write lock once and
//! changes the state in place (`Arc::make_mut`: it is copied only while a reader still
//! holds the previous version), then publishes the applied index.
//!
//! `snapshot.bin` holds the latest snapshot: `length of meta (u32 LE) · meta (JSON) ·
//! state (JSON)`, replaced atomically. The state machine itself is not written on each
//! apply: on restart it is loaded from the snapshot and openraft re-applies the
//! committed entries of the log after it.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::fsutil;
use crate::raft_types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::state::ClusterState;

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// What the state machine publishes to the rest of the node.
pub(crate) struct Published {
    view: RwLock<Arc<ClusterState>>,
    applied: watch::Sender<Option<u64>>,
}

impl Published {
    /// The state as of the last applied entry.
    pub(crate) fn view(&self) -> Arc<ClusterState> {
        self.view.read().clone()
    }

    /// The last applied log index, as it changes.
    pub(crate) fn applied(&self) -> watch::Receiver<Option<u64>> {
        self.applied.subscribe()
    }

    pub(crate) fn applied_index(&self) -> Option<u64> {
        *self.applied.borrow()
    }
}

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

pub(crate) struct StateMachine {
    dir: PathBuf,
    published: Arc<Published>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    builds: u64,
}

fn decode_state(data: &[u8]) -> Result<ClusterState, io::Error> {
    serde_json::from_slice(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl StateMachine {
    /// Opens the state machine of `dir`, from its snapshot if there is one.
    pub(crate) fn open(dir: &Path) -> io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let current = read_snapshot(&dir.join(SNAPSHOT_FILE))?;
        let (state, last_applied, last_membership) = match &current {
            Some(s) => (
                decode_state(&s.data)?,
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
            ),
            None => (ClusterState::default(), None, StoredMembership::default()),
        };
        let (applied, _) = watch::channel(last_applied.map(|l| l.index));
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            published: Arc::new(Published {
                view: RwLock::new(Arc::new(state)),
                applied,
            }),
            last_applied,
            last_membership,
            current: Arc::new(Mutex::new(current)),
            builds: 0,
        })
    }

    pub(crate) fn published(&self) -> Arc<Published> {
        self.published.clone()
    }
}

fn read_snapshot(path: &Path) -> io::Result<Option<StoredSnapshot>> {
    let Some(bytes) = fsutil::read_optional(path)? else {
        return Ok(None);
    };
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "snapshot.bin: bad header");
    let len = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(bad)?;
    let meta = bytes.get(4..4 + len).ok_or_else(bad)?;
    let meta =
        serde_json::from_slice(meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some(StoredSnapshot {
        meta,
        data: bytes[4 + len..].to_vec(),
    }))
}

/// Persists `snapshot` and makes it the current one, unless a newer one already is.
fn store_snapshot(
    dir: &Path,
    current: &Mutex<Option<StoredSnapshot>>,
    snapshot: StoredSnapshot,
) -> io::Result<()> {
    let meta = serde_json::to_vec(&snapshot.meta).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(4 + meta.len() + snapshot.data.len());
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&snapshot.data);
    let mut current = current.lock();
    if current
        .as_ref()
        .is_some_and(|c| c.meta.last_log_id > snapshot.meta.last_log_id)
    {
        return Ok(());
    }
    fsutil::write_atomic(&dir.join(SNAPSHOT_FILE), &bytes)?;
    *current = Some(snapshot);
    Ok(())
}

/// Builds a snapshot of the state as it was when the build was asked for.
pub(crate) struct SnapshotBuilder {
    dir: PathBuf,
    state: Arc<ClusterState>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    build: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data =
            serde_json::to_vec(&*self.state).map_err(|e| StorageIOError::read_state_machine(&e))?;
        // Unique per build: the applied log id, and a counter for builds at the same one.
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.build),
            None => format!("--{}", self.build),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        store_snapshot(&self.dir, &self.current, stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        {
            let mut view = self.published.view.write();
            let state = Arc::make_mut(&mut view);
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(command) => state.apply(command),
                    EntryPayload::Membership(m) => {
                        self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                }
                replies.push(());
            }
        }
        let applied = self.last_applied.map(|l| l.index);
        self.published.applied.send_replace(applied);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builds += 1;
        SnapshotBuilder {
            dir: self.dir.clone(),
            state: self.published.view(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            current: self.current.clone(),
            build: self.builds,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // The bytes came from the network: a bad snapshot is an error, not a panic.
        let state = decode_state(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        store_snapshot(&self.dir, &self.current, stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        *self.published.view.write() = Arc::new(state);
        self.published
            .applied
            .send_replace(self.last_applied.map(|l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.current.lock().clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
