//! The openraft type configuration. Nothing here leaves the crate: the public API
//! speaks of node names, `u64` indexes and the types of `state`.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::Command;

/// What openraft keeps of a node in its membership config: enough to reach it. The
/// rest of a member (Socket.IO and API addresses, state) is in the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MeshNode {
    pub name: String,
    pub mesh: String,
}

openraft::declare_raft_types!(
    pub(crate) TypeConfig:
        D = Command,
        R = (),
        NodeId = u64,
        Node = MeshNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<u64>;
pub(crate) type Vote = openraft::Vote<u64>;
pub(crate) type StorageError = openraft::StorageError<u64>;
pub(crate) type StoredMembership = openraft::StoredMembership<u64, MeshNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<u64, MeshNode>;
pub(crate) type Snapshot = openraft::storage::Snapshot<TypeConfig>;
pub(crate) type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<u64, E>;
pub(crate) type RpcError<E = openraft::error::Infallible> =
    openraft::error::RPCError<u64, MeshNode, RaftError<E>>;
