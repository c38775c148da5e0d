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
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(DirBuilder)
}
