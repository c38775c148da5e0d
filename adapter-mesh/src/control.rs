//! Membership: how a node gets into the cluster (bootstrap from seeds, join through the
//! leader) and stays in it, and the leader's maintenance (liveness probes, declaring a
//! node gone, keeping `voters` voters).
//!
//! The bootstrap rule, which cannot form two clusters out of one seed list: a node
//! initializes Raft only when (1) it has no Raft state, (2) every seed address answered
//! and none of them belongs to a cluster or knows a leader, (3) at least
//! `bootstrap_expect` distinct nodes answered, and (4) its own Raft id is the lowest of
//! those answers (so it is itself a seed). It then makes the lowest `voters` of them the
//! voters. Every node that sees the same seed set computes the same initializer, and
//! only that node initializes; every other node waits until some seed knows a leader,
//! and asks it to be admitted. With no seeds at all, a node forms a cluster of one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use openraft::ChangeMembers;
use rand::Rng;
use tokio::sync::watch;

use crate::core::Core;
use crate::network::bounded;
use crate::proto::{join_reply, JoinRequest, StatusReply, StatusRequest};
use crate::raft_types::MeshNode;
use crate::state::{Command, NodeState};

/// Keeps this node admitted: joins at start, rejoins after it was declared gone or
/// moved, and reconciles its state. `joined` tells whether it is admitted now.
pub(crate) async fn join_loop(core: Arc<Core>, joined: watch::Sender<bool>) {
    let mut was_admitted = false;
    while !core.stopped.load(Ordering::Acquire) {
        let admitted = is_admitted(&core);
        if admitted && !was_admitted {
            core.admissions.send_modify(|n| *n += 1);
            tracing::info!(node = %core.id.node, "mesh: admitted to the cluster");
        }
        was_admitted = admitted;
        joined.send_replace(admitted);
        if admitted {
            reconcile_state(&core).await;
        } else if let Err(e) = try_join(&core).await {
            tracing::debug!(node = %core.id.node, "mesh: not admitted yet: {e}");
        }
        // Faster while out of the cluster; jittered so that restarted nodes spread.
        let base = if admitted {
            core.config.probe_interval
        } else {
            core.config.probe_interval.min(Duration::from_millis(300))
        };
        let jitter = rand::rng().random_range(0..=base.as_millis() as u64 / 4);
        tokio::time::sleep(base + Duration::from_millis(jitter)).await;
    }
}

/// Whether the replicated state lists this process (its Raft id, incarnation and
/// addresses, not gone) and Raft's membership reaches it at its mesh address.
fn is_admitted(core: &Core) -> bool {
    let view = core.published.view();
    let listed = view.member(&core.id.node).is_some_and(|m| {
        m.raft_id == core.id.raft_id
            && m.incarnation == core.incarnation
            && m.state != NodeState::Gone
            && m.addresses == core.addresses
    });
    let metrics = core.raft.metrics();
    let metrics = metrics.borrow();
    let in_raft = metrics
        .membership_config
        .membership()
        .get_node(&core.id.raft_id)
        .is_some_and(|n| n.mesh == core.addresses.mesh);
    listed && in_raft
}

/// A state change that did not commit (no leader then) is retried here.
async fn reconcile_state(core: &Core) {
    let wanted = *core.state.lock();
    let listed = core.published.view().member(&core.id.node).map(|m| m.state);
    if listed.is_some_and(|s| s != wanted) {
        let command = Command::SetState {
            node: core.id.node.clone(),
            state: wanted,
        };
        if let Err(e) = core.propose(command).await {
            tracing::debug!("mesh: state {wanted:?} not committed: {e}");
        }
    }
}

async fn seed_statuses(core: &Core) -> Vec<(String, Option<StatusReply>)> {
    let mut addrs = BTreeSet::new();
    for seed in &core.config.seeds {
        match tokio::time::timeout(
            core.config.rpc_timeout,
            tokio::net::lookup_host(seed.as_str()),
        )
        .await
        {
            Ok(Ok(found)) => addrs.extend(found.map(|a| a.to_string())),
            _ => {
                // An unresolvable seed is an unanswered one: the bootstrap waits.
                addrs.insert(seed.clone());
            }
        }
    }
    join_all(addrs.into_iter().map(|addr| async move {
        let reply = match core.peers.control(&addr) {
            Ok(mut c) => bounded(core.config.rpc_timeout, c.status(StatusRequest {}))
                .await
                .ok(),
            Err(_) => None,
        };
        (addr, reply)
    }))
    .await
}

async fn try_join(core: &Core) -> Result<(), String> {
    if let Some((id, addr)) = core.leader() {
        return join_via(core, id, addr).await;
    }
    let statuses = seed_statuses(core).await;
    if let Some((id, addr)) = statuses.iter().find_map(|(_, s)| {
        let s = s.as_ref()?;
        Some((s.leader_id?, s.leader_addr.clone()))
    }) {
        return join_via(core, id, addr).await;
    }
    let own = core.status();
    if own.initialized
        || statuses
            .iter()
            .any(|(_, s)| s.as_ref().is_some_and(|s| s.initialized))
    {
        return Err("the cluster exists but has no leader now".into());
    }
    if core.config.seeds.is_empty() {
        return initialize(core, BTreeMap::from([(own.raft_id, own)])).await;
    }
    if let Some((addr, _)) = statuses.iter().find(|(_, s)| s.is_none()) {
        return Err(format!(
            "seed {addr} did not answer: waiting for every seed"
        ));
    }
    let nodes: BTreeMap<u64, StatusReply> = statuses
        .into_iter()
        .filter_map(|(_, s)| s)
        .map(|s| (s.raft_id, s))
        .collect();
    let expect = core.config.expect();
    if nodes.len() < expect {
        return Err(format!("{} of {expect} nodes seen", nodes.len()));
    }
    match nodes.keys().next() {
        Some(first) if *first == core.id.raft_id => initialize(core, nodes).await,
        Some(first) => Err(format!(
            "waiting for {} to form the cluster",
            nodes[first].node
        )),
        None => Err("no seed answered".into()),
    }
}

async fn initialize(core: &Core, nodes: BTreeMap<u64, StatusReply>) -> Result<(), String> {
    let voters: BTreeMap<u64, MeshNode> = nodes
        .into_values()
        .take(core.config.voters)
        .map(|s| {
            let node = MeshNode {
                name: s.node,
                mesh: s.mesh_addr,
            };
            (s.raft_id, node)
        })
        .collect();
    let names: Vec<&str> = voters.values().map(|n| n.name.as_str()).collect();
    tracing::info!(voters = ?names, "mesh: forming the cluster");
    core.raft
        .initialize(voters)
        .await
        .map_err(|e| format!("initialize: {e}"))
}

async fn join_via(core: &Core, leader: u64, addr: String) -> Result<(), String> {
    if leader == core.id.raft_id {
        return match core.admit(core.member()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err("lost the leadership while admitting itself".into()),
            Err(e) => Err(e.to_string()),
        };
    }
    let member = serde_json::to_vec(&core.member()).map_err(|e| e.to_string())?;
    let mut addr = addr;
    // One redirect: the leader changed since the address was learnt.
    for _ in 0..2 {
        let mut client = core
            .peers
            .control(&addr)
            .map_err(|e| e.message().to_string())?;
        let request = JoinRequest {
            member: member.clone(),
        };
        let reply = bounded(core.config.propose_timeout, client.join(request))
            .await
            .map_err(|e| format!("join through {addr}: {}", e.message()))?;
        match reply.outcome {
            Some(join_reply::Outcome::Index(_)) => return Ok(()),
            Some(join_reply::Outcome::LeaderAddr(a)) if !a.is_empty() && a != addr => addr = a,
            _ => break,
        }
    }
    Err("no leader admitted the node".into())
}

/// The leader's maintenance, every `probe_interval` while this node leads.
pub(crate) async fn leader_loop(core: Arc<Core>) {
    let mut seen: HashMap<u64, Instant> = HashMap::new();
    while !core.stopped.load(Ordering::Acquire) {
        tokio::time::sleep(core.config.probe_interval).await;
        if !core.is_leader() {
            // A new tenure starts every node's clock afresh.
            seen.clear();
            continue;
        }
        maintain(&core, &mut seen).await;
    }
}

async fn maintain(core: &Core, seen: &mut HashMap<u64, Instant>) {
    let me = core.id.raft_id;
    let membership = core.raft.metrics().borrow().membership_config.clone();
    let membership = membership.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let nodes: BTreeMap<u64, MeshNode> =
        membership.nodes().map(|(id, n)| (*id, n.clone())).collect();

    let probes = join_all(
        nodes
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, n)| async move {
                let reply = match core.peers.control(&n.mesh) {
                    Ok(mut c) => bounded(core.config.rpc_timeout, c.status(StatusRequest {}))
                        .await
                        .ok(),
                    Err(_) => None,
                };
                (*id, reply.is_some_and(|r| r.raft_id == *id))
            }),
    )
    .await;
    let now = Instant::now();
    seen.retain(|id, _| nodes.contains_key(id));
    for (id, ok) in probes {
        let last = seen.entry(id).or_insert(now);
        if ok {
            *last = now;
        }
    }
    seen.insert(me, now);
    let gone: BTreeSet<u64> = seen
        .iter()
        .filter(|(_, last)| now.duration_since(**last) > core.config.gone_after)
        .map(|(id, _)| *id)
        .collect();

    let view = core.published.view();
    for id in &gone {
        let Some(name) = nodes.get(id).map(|n| &n.name) else {
            continue;
        };
        if view
            .member(name)
            .is_some_and(|m| m.raft_id == *id && m.state != NodeState::Gone)
        {
            tracing::warn!(node = %name, "mesh: node unreachable past the timeout: gone");
            let command = Command::SetState {
                node: name.clone(),
                state: NodeState::Gone,
            };
            if let Err(e) = core.propose_local(command).await {
                tracing::warn!("mesh: could not mark {name} gone: {e}");
            }
        }
    }

    // Learners that can vote: reachable and admitted (their member record is live).
    let live_learners: Vec<u64> = nodes
        .iter()
        .filter(|(id, n)| {
            !voters.contains(id)
                && !gone.contains(id)
                && view
                    .member(&n.name)
                    .is_some_and(|m| m.raft_id == **id && m.state != NodeState::Gone)
        })
        .map(|(id, _)| *id)
        .collect();
    let gone_voter = voters.iter().find(|v| gone.contains(v)).copied();
    let change = match (gone_voter, live_learners.first()) {
        (Some(dead), Some(&learner)) => {
            let mut next = voters.clone();
            next.remove(&dead);
            next.insert(learner);
            tracing::warn!(dead, learner, "mesh: replacing a gone voter");
            Some((ChangeMembers::ReplaceAllVoters(next), false))
        }
        (_, Some(&learner)) if voters.len() < core.config.voters => {
            Some((ChangeMembers::AddVoterIds([learner].into()), true))
        }
        _ => {
            let gone_learners: BTreeSet<u64> = gone.difference(&voters).copied().collect();
            (!gone_learners.is_empty())
                .then_some((ChangeMembers::RemoveNodes(gone_learners), false))
        }
    };
    if let Some((change, retain)) = change {
        let write = async {
            (core.raft.change_membership(change, retain).await)
                .map_err(|e| crate::MeshError::Raft(e.to_string()))
        };
        if let Err(e) = core.bounded_local(write).await {
            tracing::warn!("mesh: membership change failed: {e}");
        }
    }
}
