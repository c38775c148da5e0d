//! openraft's storage test suite, run on the log store and state machine of this crate.

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use crate::log_store::LogStore;
use crate::raft_types::{StorageError, TypeConfig};
use crate::sm_store::StateMachine;

struct DirBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DirBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(&e))?;
        let log = LogStore::open(dir.path()).map_err(|e| openraft::StorageIOError::read(&e))?;
        let sm = StateMachine::open(dir.path()).map_err(|e| openraft::StorageIOError::read(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(DirBuilder) {
        panic!("storage suite: {e}");
    }
}

mod durability {
    use std::io::Write;
    use std::path::Path;

    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

    use crate::log_store::LogStore;
    use crate::raft_types::{Entry, LogId, Vote};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    async fn indexes(dir: &Path) -> Vec<(u64, u64)> {
        let mut log = LogStore::open(dir).unwrap();
        log.try_get_log_entries(0..)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[tokio::test]
    async fn a_reopened_log_has_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            log.blocking_append((1..=5).map(|i| entry(1, i)))
                .await
                .unwrap();
            log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
                .await
                .unwrap();
            log.blocking_append([entry(2, 4)]).await.unwrap();
            log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
                .await
                .unwrap();
            log.save_vote(&Vote::new(2, 7)).await.unwrap();
        }
        assert_eq!(indexes(dir.path()).await, [(1, 3), (2, 4)]);
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 7)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(4));
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_and_later_appends_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            log.blocking_append((1..=3).map(|i| entry(1, i)))
                .await
                .unwrap();
        }
        // A crash in the middle of a write: a frame header announcing more than follows.
        let path = dir.path().join("raft.log");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        assert_eq!(indexes(dir.path()).await, [(1, 1), (1, 2), (1, 3)]);
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            log.blocking_append([entry(1, 4)]).await.unwrap();
        }
        assert_eq!(indexes(dir.path()).await, [(1, 1), (1, 2), (1, 3), (1, 4)]);

        // A flipped byte in the last record: its checksum fails, it is dropped.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(indexes(dir.path()).await, [(1, 1), (1, 2), (1, 3)]);
    }
}
