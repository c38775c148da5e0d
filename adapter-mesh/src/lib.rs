//! The Raft core of Skein's mesh adapter (`--adapter mesh`): nodes talk to each other
//! over gRPC on a mesh port, and what they must agree on is replicated with Raft
//! (openraft, kept inside this crate: no openraft type is public).
//!
//! Replicated: the members (name, addresses, state) and the room index (namespace →
//! room → nodes with at least one member there). Not replicated: messages. The index
//! changes only when a node's first member joins a room or its last one leaves, and
//! changes are batched ([`IndexBatcher`]); lookups read a local copy
//! ([`Mesh::view`]) and never wait for consensus.
//!
//! # The join promise
//!
//! Once [`Mesh::wait_visible`] (or [`IndexBatcher::commit_visible`]) returns `Ok` for
//! an index change, every live member has applied it: every broadcast that starts
//! afterwards, on any node, reads an index that lists the node. It works as follows:
//! the change is committed through the leader (a follower forwards it), which returns
//! its log index; this node waits until it has applied that index itself, then asks
//! every member that its copy lists as live (not `Gone`) to answer once it has applied
//! the index (`WaitApplied`, a long poll). A member that is declared gone meanwhile is
//! not waited for: it is out of the index, and a node is only admitted again after its
//! copy has caught up on the log. At the timeout the call fails with
//! [`MeshError::NotVisible`], naming the nodes that had not answered. A leave needs no
//! such wait (a broadcast to a node that left the room finds nobody there).
//!
//! # Membership
//!
//! See `control` for the bootstrap rule. The first `voters` nodes vote; later ones are
//! learners. The leader probes every node each `probe_interval`; one unreachable for
//! `gone_after` is listed `Gone` (its index entries removed), a gone voter is replaced
//! by a live learner, and a gone learner leaves Raft's membership. A node comes back by
//! joining again: on restart (same data directory: same Raft id, log and vote), or
//! after a partition outlasted `gone_after` ([`Mesh::admissions`] tells the adapter to
//! republish its rooms then). A restarted process has a new incarnation, which clears
//! the index entries of its previous life.
//!
//! # Layout
//!
//! - `state`: the replicated state and its commands (public types);
//! - `log_store`, `sm_store`: the durable log and the state machine with snapshots;
//! - `network`, `server`: the gRPC client and server of `skein.mesh.v1`, the secret;
//! - `core`: proposing, admitting, waiting for visibility; `control`: bootstrap, join
//!   and the leader's maintenance; `batch`: the batcher; `metrics`; `mesh`: [`Mesh`];
//! - `transport`: the cluster layer's transport on the `Bus` service, `link`: one
//!   peer's stream;
//! - connection state recovery (`--recovery`): `recovery` ([`recovery::MeshLog`]: the
//!   log and sessions replicated to every peer, the sessions in a
//!   `skein::adapter::SessionTable`), `log_task`, `vlog` (the log and its per-sender
//!   offsets).

mod batch;
mod config;
mod control;
mod core;
mod error;
mod fsutil;
mod link;
mod log_store;
mod log_task;
mod mesh;
mod metrics;
mod network;
mod raft_types;
pub mod recovery;
mod server;
#[cfg(test)]
mod server_tests;
mod sm_store;
pub mod state;
#[cfg(test)]
mod storage_tests;
pub mod transport;
mod vlog;

/// Generated code of `skein.mesh.v1`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub(crate) mod proto {
    tonic::include_proto!("skein.mesh.v1");
}

pub use batch::IndexBatcher;
pub use config::{parse_seeds, MeshConfig};
pub use core::BusSink;
pub use error::MeshError;
pub use mesh::Mesh;
pub use metrics::{MeshMetrics, PeerMetrics, Role};
pub use state::{Addresses, ClusterState, IndexChange, Member, NodeState, RoomIndex};
pub use transport::MeshTransport;

use std::sync::Arc;
use std::time::Duration;

use skein::adapter::cluster::{Cluster, ClusterConfig, ClusterFactory};

/// Starts a mesh node and the cluster layer over it (`--adapter mesh`). The node joins
/// the cluster in the background: this returns once the mesh port listens, so that
/// nodes started one after the other (each waiting for the previous one to serve) still
/// form a cluster. `request_timeout` bounds cluster requests; a join waits at most
/// `propose_timeout` twice for its index change to be visible.
///
/// With `recovery`, sessions and the packet log are replicated to every live peer
/// ([`recovery::MeshLog`]): a client resumes its session on any node.
pub async fn start(
    config: MeshConfig,
    request_timeout: Duration,
    recovery: Option<skein::adapter::RecoveryConfig>,
) -> Result<(ClusterFactory, Arc<Mesh>), MeshError> {
    let visible_timeout = config.propose_timeout * 2;
    let mesh = Arc::new(Mesh::start(config).await?);
    let cluster = Cluster::new(ClusterConfig {
        node_id: mesh.node_id().to_owned(),
        request_timeout,
    });
    let transport = MeshTransport::new(mesh.clone(), cluster.inbound(), visible_timeout);
    transport.set_peer_ids(cluster.live_peers());
    let log = recovery.map(|cfg| {
        Arc::new(recovery::MeshLog::start(
            transport.clone(),
            cluster.inbound(),
            cfg,
        )) as Arc<dyn skein::adapter::cluster::ClusterLog>
    });
    // Listed as serving once admitted (the node accepts clients from its start).
    let serving = Arc::downgrade(&mesh);
    tokio::spawn(async move {
        loop {
            let Some(m) = serving.upgrade() else { return };
            if m.joined(Duration::from_secs(1)).await.is_ok() {
                if let Err(e) = m.set_state(NodeState::Serving).await {
                    tracing::warn!("mesh: not yet listed as serving: {e}");
                }
                return;
            }
        }
    });
    Ok((cluster.start(transport, log), mesh))
}
