//! What `/metrics` and `ClusterInfo` show of the mesh.

use openraft::ServerState;

use crate::core::Core;

/// This node's part in Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// Replicates the log without a vote.
    Learner,
    Stopped,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Stopped => "stopped",
        }
    }
}

/// Another node of Raft's membership, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMetrics {
    pub node: String,
    pub mesh_addr: String,
    pub voter: bool,
    /// The last log index the leader knows the peer holds (on the leader only).
    pub matched_index: Option<u64>,
    /// Entries the peer is behind the leader's log (on the leader only).
    pub lag: Option<u64>,
}

/// A picture of the mesh from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshMetrics {
    pub node: String,
    pub role: Role,
    /// The leader's name, if one is known.
    pub leader: Option<String>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub peers: Vec<PeerMetrics>,
    /// Members listed in the replicated state, and how many of them are not gone.
    pub members: usize,
    pub live_members: usize,
    /// Rooms in the room index, and (namespace, room, node) entries.
    pub index_rooms: usize,
    pub index_entries: usize,
}

pub(crate) fn collect(core: &Core) -> MeshMetrics {
    let metrics = core.raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let me = core.id.raft_id;
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let role = match m.state {
        ServerState::Leader => Role::Leader,
        ServerState::Candidate => Role::Candidate,
        ServerState::Shutdown => Role::Stopped,
        ServerState::Follower | ServerState::Learner if !voters.contains(&me) => Role::Learner,
        ServerState::Follower | ServerState::Learner => Role::Follower,
    };
    let leader = m
        .current_leader
        .and_then(|id| membership.get_node(&id))
        .map(|n| n.name.clone());
    let peers = membership
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(id, node)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).copied().flatten())
                .map(|l| l.index);
            let lag = m.replication.as_ref().map(|_| {
                m.last_log_index
                    .unwrap_or(0)
                    .saturating_sub(matched.unwrap_or(0))
            });
            PeerMetrics {
                node: node.name.clone(),
                mesh_addr: node.mesh.clone(),
                voter: voters.contains(id),
                matched_index: matched,
                lag,
            }
        })
        .collect();
    let view = core.published.view();
    MeshMetrics {
        node: core.id.node.clone(),
        role,
        leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        applied_index: core.published.applied_index(),
        peers,
        members: view.members().len(),
        live_members: view.live_members().count(),
        index_rooms: view.index_rooms(),
        index_entries: view.index_entries(),
    }
}

/// Logs each change of leader, with its term: what an operator looks for first, and
/// openraft's own narration of it is below the default log level.
pub(crate) async fn log_leader_changes(core: std::sync::Arc<Core>) {
    let mut rx = core.raft.metrics();
    drop(core);
    let mut last = None;
    loop {
        let (leader, term, name) = {
            let m = rx.borrow_and_update();
            let name = m
                .current_leader
                .and_then(|id| m.membership_config.membership().get_node(&id))
                .map(|n| n.name.clone());
            (m.current_leader, m.current_term, name)
        };
        if leader != last {
            match name {
                Some(leader) => tracing::info!(leader, term, "mesh: leader elected"),
                None if leader.is_none() => tracing::info!(term, "mesh: no leader (electing)"),
                None => {}
            }
            last = leader;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
