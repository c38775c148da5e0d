//! A node's shared core: its Raft, its published state, and the operations that both
//! the public API and the gRPC handlers use (propose a change, admit a node, wait until
//! a change is applied).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use openraft::error::{ClientWriteError as CwError, RaftError as RError};
use openraft::ChangeMembers;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::{Identity, MeshConfig};
use crate::error::MeshError;
use crate::network::{bounded, Peers};
use crate::proto::{propose_reply, ProposeRequest, StatusReply, WaitAppliedRequest};
use crate::raft_types::{MeshNode, Raft};
use crate::sm_store::Published;
use crate::state::{Addresses, Command, Member, NodeState};

/// Where a change went: committed at an index, or "ask that leader" (an address, or
/// `None` when no leader is known).
pub(crate) type Outcome = Result<u64, Option<String>>;

pub(crate) struct Core {
    pub(crate) id: Identity,
    pub(crate) incarnation: u64,
    pub(crate) addresses: Addresses,
    pub(crate) config: MeshConfig,
    pub(crate) raft: Raft,
    pub(crate) published: Arc<Published>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) stopped: AtomicBool,
    /// The state this node wants the cluster to list it in (sent when it (re)joins).
    pub(crate) state: Mutex<NodeState>,
    /// Counts this node's admissions: the adapter republishes its rooms when it changes.
    pub(crate) admissions: watch::Sender<u64>,
    /// Where the `Bus` service hands the frames other nodes stream to this one.
    pub(crate) bus: std::sync::OnceLock<BusSink>,
    /// Set once the node stops: open `Bus` streams end.
    pub(crate) halted: watch::Sender<bool>,
}

/// Receives every `Bus` frame another node sends: its kind and payload.
pub type BusSink = Arc<dyn Fn(u32, bytes::Bytes) + Send + Sync>;

impl Core {
    pub(crate) fn check_running(&self) -> Result<(), MeshError> {
        if self.stopped.load(Ordering::Acquire) {
            Err(MeshError::Stopped)
        } else {
            Ok(())
        }
    }

    /// This node's member record, as it asks to be admitted.
    pub(crate) fn member(&self) -> Member {
        Member {
            node: self.id.node.clone(),
            raft_id: self.id.raft_id,
            addresses: self.addresses.clone(),
            state: *self.state.lock(),
            incarnation: self.incarnation,
        }
    }

    /// The leader this node follows: its Raft id and mesh address.
    pub(crate) fn leader(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some((id, node.mesh.clone()))
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.leader().is_some_and(|(id, _)| id == self.id.raft_id)
    }

    pub(crate) fn status(&self) -> StatusReply {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader.and_then(|id| {
            let node = m.membership_config.membership().get_node(&id)?;
            Some((id, node.mesh.clone()))
        });
        StatusReply {
            node: self.id.node.clone(),
            raft_id: self.id.raft_id,
            mesh_addr: self.addresses.mesh.clone(),
            initialized: m
                .membership_config
                .membership()
                .voter_ids()
                .next()
                .is_some(),
            leader_id: leader.as_ref().map(|l| l.0),
            leader_addr: leader.map(|l| l.1).unwrap_or_default(),
            term: m.current_term,
            applied: self.published.applied_index(),
        }
    }

    /// Bounds a local Raft write by `propose_timeout`: a leader cut off from its
    /// quorum (a minority partition) would otherwise wait for a commit until it hears
    /// of a newer term.
    pub(crate) async fn bounded_local<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, MeshError>>,
    ) -> Result<T, MeshError> {
        let timeout = self.config.propose_timeout;
        tokio::time::timeout(timeout, write)
            .await
            .unwrap_or_else(|_| {
                Err(MeshError::NoLeader {
                    timeout,
                    reason: "not committed in time: no quorum reached".into(),
                })
            })
    }

    /// Commits `command` through the local Raft, if this node leads.
    pub(crate) async fn propose_local(&self, command: Command) -> Result<Outcome, MeshError> {
        self.bounded_local(async {
            match self.raft.client_write(command).await {
                Ok(resp) => Ok(Ok(resp.log_id.index)),
                Err(RError::APIError(CwError::ForwardToLeader(f))) => {
                    Ok(Err(f.leader_node.map(|n| n.mesh)))
                }
                Err(e) => Err(MeshError::Raft(e.to_string())),
            }
        })
        .await
    }

    /// Commits `command`, through the leader wherever it is, retrying through
    /// elections until `propose_timeout`. Returns its log index.
    pub(crate) async fn propose(&self, command: Command) -> Result<u64, MeshError> {
        let timeout = self.config.propose_timeout;
        let deadline = Instant::now() + timeout;
        let mut hint: Option<String> = None;
        let mut last;
        loop {
            self.check_running()?;
            let target = hint.take().or_else(|| self.leader().map(|l| l.1));
            let outcome = match target {
                None => Err(MeshError::Raft("no leader known".into())),
                Some(addr) if addr == self.addresses.mesh => {
                    self.propose_local(command.clone()).await
                }
                Some(addr) => self.propose_remote(&addr, &command, deadline).await,
            };
            match outcome {
                Ok(Ok(index)) => return Ok(index),
                Ok(Err(leader)) => {
                    last = format!("redirected to {leader:?}");
                    hint = leader;
                }
                Err(MeshError::Stopped) => return Err(MeshError::Stopped),
                Err(e) => last = e.to_string(),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(MeshError::NoLeader {
                    timeout,
                    reason: last,
                });
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(50))).await;
        }
    }

    async fn propose_remote(
        &self,
        addr: &str,
        command: &Command,
        deadline: Instant,
    ) -> Result<Outcome, MeshError> {
        let bytes = serde_json::to_vec(command).map_err(|e| MeshError::Raft(e.to_string()))?;
        let mut client = self
            .peers
            .control(addr)
            .map_err(|e| MeshError::Raft(e.message().to_string()))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let reply = bounded(remaining, client.propose(ProposeRequest { command: bytes }))
            .await
            .map_err(|e| MeshError::Raft(format!("{addr}: {}", e.message())))?;
        match reply.outcome {
            Some(propose_reply::Outcome::Index(i)) => Ok(Ok(i)),
            Some(propose_reply::Outcome::LeaderAddr(a)) if !a.is_empty() => Ok(Err(Some(a))),
            _ => Ok(Err(None)),
        }
    }

    /// Leader side of a join: puts the node into Raft's membership (a learner; the
    /// leader's maintenance promotes it when voters are missing) and commits its member
    /// record.
    pub(crate) async fn admit(&self, member: Member) -> Result<Outcome, MeshError> {
        self.bounded_local(self.admit_unbounded(member)).await
    }

    async fn admit_unbounded(&self, member: Member) -> Result<Outcome, MeshError> {
        if member.raft_id == 0 || member.node.is_empty() || member.addresses.mesh.is_empty() {
            return Err(MeshError::Config(
                "a member needs a name, a Raft id and a mesh address".into(),
            ));
        }
        let raft_err = |e: RError<u64, CwError<u64, MeshNode>>| match e {
            RError::APIError(CwError::ForwardToLeader(f)) => Ok(Err(f.leader_node.map(|n| n.mesh))),
            e => Err(MeshError::Raft(e.to_string())),
        };
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        // The same name under another Raft id: its data directory was lost. The old id
        // will never answer again; drop it (a voter is only dropped while others vote).
        if let Some(old) = self.published.view().member(&member.node) {
            let voters: Vec<u64> = membership.voter_ids().collect();
            if old.raft_id != member.raft_id && membership.get_node(&old.raft_id).is_some() {
                let change = if voters.contains(&old.raft_id) {
                    let rest: std::collections::BTreeSet<u64> = voters
                        .iter()
                        .copied()
                        .filter(|v| *v != old.raft_id)
                        .collect();
                    (!rest.is_empty()).then_some(ChangeMembers::ReplaceAllVoters(rest))
                } else {
                    Some(ChangeMembers::RemoveNodes([old.raft_id].into()))
                };
                if let Some(change) = change {
                    if let Err(e) = self.raft.change_membership(change, false).await {
                        return raft_err(e);
                    }
                }
            }
        }
        let node = MeshNode {
            name: member.node.clone(),
            mesh: member.addresses.mesh.clone(),
        };
        let known = membership.get_node(&member.raft_id).cloned();
        let change = match known {
            None => Some(ChangeMembers::AddNodes([(member.raft_id, node)].into())),
            // Restarted at another address (a new pod IP).
            Some(n) if n != node => Some(ChangeMembers::SetNodes([(member.raft_id, node)].into())),
            Some(_) => None,
        };
        if let Some(change) = change {
            if let Err(e) = self.raft.change_membership(change, true).await {
                return raft_err(e);
            }
        }
        self.propose_local(Command::Admit(member)).await
    }

    /// Waits until this node has applied `index`; returns what it has applied.
    pub(crate) async fn wait_applied(&self, index: u64, timeout: Duration) -> Option<u64> {
        let mut rx = self.published.applied();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|a| a.is_some_and(|a| a >= index))).await;
        let applied = *rx.borrow();
        applied
    }

    /// The join promise: returns once every live member has applied `index`. See the
    /// crate documentation.
    pub(crate) async fn wait_visible(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<(), MeshError> {
        let deadline = Instant::now() + timeout;
        let not_visible = |pending| MeshError::NotVisible {
            index,
            timeout,
            pending,
        };
        // This node's own copy first: it says who the live members are as of `index`.
        if self.wait_applied(index, timeout).await < Some(index) {
            return Err(not_visible(vec![self.id.node.clone()]));
        }
        let view = self.published.view();
        let others: Vec<Member> = view
            .live_members()
            .filter(|m| m.node != self.id.node)
            .cloned()
            .collect();
        let results = join_all(others.iter().map(|m| self.wait_member(m, index, deadline))).await;
        let pending: Vec<String> = others
            .into_iter()
            .zip(results)
            .filter(|(_, ok)| !ok)
            .map(|(m, _)| m.node)
            .collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(not_visible(pending))
        }
    }

    /// Whether `member` applied `index` before `deadline`, or stopped being a live
    /// member (a node declared gone is not waited for: it is out of the index, and it
    /// catches up on the log before it is admitted again).
    async fn wait_member(&self, member: &Member, index: u64, deadline: Instant) -> bool {
        loop {
            let current = self.published.view();
            let still = current
                .member(&member.node)
                .is_some_and(|m| m.state != NodeState::Gone && m.raft_id == member.raft_id);
            if !still {
                return true;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            let wait = remaining.min(Duration::from_secs(5));
            let reply = match self.peers.control(&member.addresses.mesh) {
                Ok(mut client) => {
                    let req = WaitAppliedRequest {
                        index,
                        timeout_ms: wait.as_millis() as u32,
                    };
                    bounded(wait + self.peers.timeout(), client.wait_applied(req)).await
                }
                Err(e) => Err(e),
            };
            match reply {
                Ok(r) if r.applied.is_some_and(|a| a >= index) => return true,
                Ok(_) => {}
                Err(_) => {
                    let pause = remaining.min(Duration::from_millis(100));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}
