//! Configuration of a mesh node, and its identity in the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::MeshError;
use crate::fsutil;

/// How a node finds, joins and watches the cluster. [`MeshConfig::new`] gives the
/// defaults; tests shorten the timings.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// This node's name (its Socket.IO node id). `None`: the one kept in the data
    /// directory, or a random one kept there on first start.
    pub node_id: Option<String>,
    /// Where the mesh port listens (`--mesh-port`).
    pub listen: SocketAddr,
    /// The `host:port` other nodes reach the mesh port at. `None`: `listen`'s address,
    /// with the port actually bound (required when `listen` is unspecified, 0.0.0.0).
    pub advertise: Option<String>,
    /// This node's Socket.IO and gRPC API addresses, as members list them.
    pub socketio_addr: String,
    pub api_addr: String,
    /// `host:port` entries (`--mesh-seeds`): each is resolved through DNS at every
    /// attempt, so a name whose records are the peers (a headless Service) works.
    pub seeds: Vec<String>,
    /// Raft's log, vote, snapshot and this node's identity (`--mesh-data`).
    pub data_dir: PathBuf,
    /// The shared cluster secret (`--mesh-secret-file`): every node-to-node call
    /// carries it, and a call without it is refused.
    pub secret: String,
    /// How many nodes vote (the others are learners).
    pub voters: usize,
    /// How many uninitialized nodes the bootstrap waits to see before the cluster is
    /// formed. `None`: the number of seeds (at most `voters`) when every seed is an IP
    /// address, else `voters` (DNS answers grow as pods start: see the crate docs).
    pub bootstrap_expect: Option<usize>,
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How often the leader probes each node, and each node checks its admission.
    pub probe_interval: Duration,
    /// A node unreachable this long is declared gone: out of the room index, and
    /// replaced among the voters when a live learner can take its place.
    pub gone_after: Duration,
    /// Bound of one node-to-node call.
    pub rpc_timeout: Duration,
    /// How long a change waits for a leader to commit it.
    pub propose_timeout: Duration,
    /// A snapshot is built every this many log entries.
    pub snapshot_every: u64,
    /// Entries kept in the log once a snapshot covers them: a node less far behind
    /// catches up from the log, one farther behind gets the snapshot.
    pub keep_logs: u64,
}

impl MeshConfig {
    pub fn new(
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        secret: impl Into<String>,
    ) -> Self {
        MeshConfig {
            node_id: None,
            listen,
            advertise: None,
            socketio_addr: String::new(),
            api_addr: String::new(),
            seeds: Vec::new(),
            data_dir: data_dir.into(),
            secret: secret.into(),
            voters: 3,
            bootstrap_expect: None,
            heartbeat: Duration::from_millis(200),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            probe_interval: Duration::from_millis(1000),
            gone_after: Duration::from_secs(15),
            rpc_timeout: Duration::from_secs(2),
            propose_timeout: Duration::from_secs(5),
            snapshot_every: 5000,
            keep_logs: 1000,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), MeshError> {
        let bad = |m: &str| Err(MeshError::Config(m.into()));
        if self.secret.trim().is_empty() {
            return bad("the cluster secret is empty");
        }
        if !self.secret.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("the cluster secret must be printable ASCII without spaces");
        }
        if self.voters == 0 {
            return bad("voters must be at least 1");
        }
        if self.election_timeout_min <= self.heartbeat
            || self.election_timeout_max <= self.election_timeout_min
        {
            return bad("timings: heartbeat < election_timeout_min < election_timeout_max");
        }
        if self.node_id.as_deref().is_some_and(str::is_empty) {
            return bad("node id is empty");
        }
        Ok(())
    }

    /// How many distinct uninitialized nodes the bootstrap waits for.
    pub(crate) fn expect(&self) -> usize {
        self.bootstrap_expect.unwrap_or_else(|| {
            let literal = self.seeds.iter().all(|s| s.parse::<SocketAddr>().is_ok());
            if literal && !self.seeds.is_empty() {
                self.seeds.len().min(self.voters)
            } else {
                self.voters
            }
        })
    }
}

/// Splits `--mesh-seeds`: comma-separated `host:port` entries (blanks skipped).
pub fn parse_seeds(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Who this node is, kept in `node.json`: the name, and a Raft id drawn at random on
/// the first start. A lost data directory means a new Raft id, so a node can never
/// come back with a forgotten vote under an id that voted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub node: String,
    pub raft_id: u64,
}

impl Identity {
    pub(crate) fn load_or_create(
        dir: &Path,
        configured: Option<&str>,
    ) -> Result<Identity, MeshError> {
        let storage = |e: std::io::Error| MeshError::Storage(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(storage)?;
        let path = dir.join("node.json");
        if let Some(bytes) = fsutil::read_optional(&path).map_err(storage)? {
            let id: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| MeshError::Storage(format!("{}: {e}", path.display())))?;
            return match configured {
                Some(name) if name != id.node => Err(MeshError::Config(format!(
                    "data directory {} belongs to node {:?}, not {name:?}",
                    dir.display(),
                    id.node
                ))),
                _ => Ok(id),
            };
        }
        // Zero is never drawn: it reads as "no node" in too many places.
        let raft_id = rand::random::<u64>().max(1);
        let id = Identity {
            node: configured
                .map(String::from)
                .unwrap_or_else(|| format!("mesh-{raft_id:016x}")),
            raft_id,
        };
        let bytes = serde_json::to_vec(&id).map_err(|e| MeshError::Storage(e.to_string()))?;
        fsutil::write_atomic(&path, &bytes).map_err(storage)?;
        Ok(id)
    }
}
