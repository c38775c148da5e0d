//! Errors of the mesh.

use std::time::Duration;

/// What can go wrong in the mesh. `Clone`, so that one failed batch can answer every
/// join that waited on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    #[error("mesh configuration: {0}")]
    Config(String),
    /// The data directory could not be read or written.
    #[error("mesh data directory: {0}")]
    Storage(String),
    #[error("mesh port: {0}")]
    Bind(String),
    /// Raft refused or failed (shut down, storage failure).
    #[error("raft: {0}")]
    Raft(String),
    /// No leader could take the change in time (a minority partition, an election).
    #[error("no leader took the change within {timeout:?}: {reason}")]
    NoLeader { timeout: Duration, reason: String },
    /// The change was committed, but these live nodes had not applied it in time.
    #[error("change {index} not applied within {timeout:?} by: {}", pending.join(", "))]
    NotVisible {
        index: u64,
        timeout: Duration,
        pending: Vec<String>,
    },
    #[error("not admitted to the cluster within {0:?}")]
    JoinTimeout(Duration),
    #[error("mesh stopped")]
    Stopped,
}
