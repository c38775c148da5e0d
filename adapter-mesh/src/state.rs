//! The replicated state: the cluster's members and the room index, and the commands
//! that change them. Every node applies the same commands in the same (log) order, so
//! every node's copy converges; lookups read a local copy and never wait for Raft.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Where a node can be reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// The Socket.IO endpoint (`host:port`).
    pub socketio: String,
    /// The gRPC API (`host:port`, empty when off).
    pub api: String,
    /// The mesh port, as the other nodes reach it.
    pub mesh: String,
}

/// A node's lifecycle, as the cluster sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Admitted, not yet serving clients.
    #[default]
    Joining,
    Serving,
    /// Closing its connections; still a member.
    Draining,
    /// Left, or unreachable past the timeout: out of the room index.
    Gone,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name (its Socket.IO node id): the key of the room index.
    pub node: String,
    /// Its Raft id, random and kept in its data directory: a node whose data directory
    /// is lost comes back under a new Raft id, so it can never vote twice in a term.
    pub raft_id: u64,
    pub addresses: Addresses,
    pub state: NodeState,
    /// Random per process start: a member record with a new incarnation means the
    /// process restarted, so the node holds no socket and its index entries are stale.
    pub incarnation: u64,
}

/// One change of the room index: `node` has its first member in `room` (`Add`), or no
/// member any more (`Remove`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IndexChange {
    Add {
        nsp: String,
        room: String,
        node: String,
    },
    Remove {
        nsp: String,
        room: String,
        node: String,
    },
}

impl IndexChange {
    /// The (namespace, room, node) the change is about: two changes of one key coalesce.
    pub fn key(&self) -> (&str, &str, &str) {
        match self {
            IndexChange::Add { nsp, room, node } | IndexChange::Remove { nsp, room, node } => {
                (nsp, room, node)
            }
        }
    }

    pub fn is_add(&self) -> bool {
        matches!(self, IndexChange::Add { .. })
    }
}

/// A change of the replicated state: the payload of one Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// A batch of index changes, applied together.
    Index(Vec<IndexChange>),
    /// A node is admitted or readmitted with these addresses. A new incarnation clears
    /// the node's index entries (a restarted process has no sockets).
    Admit(Member),
    /// A node's state changes; `Gone` also removes its index entries.
    SetState { node: String, state: NodeState },
}

/// namespace → room → nodes with at least one member there.
pub type RoomIndex = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The replicated state, as of one applied log index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    members: BTreeMap<String, Member>,
    rooms: RoomIndex,
    /// Entries (namespace, room, node) in the index.
    entries: usize,
}

impl ClusterState {
    /// Every member, `Gone` ones included, by name.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    pub fn member(&self, node: &str) -> Option<&Member> {
        self.members.get(node)
    }

    /// Members that are not `Gone`.
    pub fn live_members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.state != NodeState::Gone)
    }

    /// Nodes that serve clients (`server_count`).
    pub fn serving_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.state == NodeState::Serving)
            .count()
    }

    pub fn index(&self) -> &RoomIndex {
        &self.rooms
    }

    /// The rooms of a namespace that have a member on some node (`all_rooms`).
    pub fn rooms(&self, nsp: &str) -> impl Iterator<Item = &str> {
        self.rooms
            .get(nsp)
            .into_iter()
            .flat_map(|rooms| rooms.keys().map(String::as_str))
    }

    /// The nodes that hold a member of any of `rooms` in `nsp`: the nodes a broadcast
    /// to those rooms must reach.
    pub fn nodes_for<'a>(
        &'a self,
        nsp: &str,
        rooms: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<&'a str> {
        let Some(by_room) = self.rooms.get(nsp) else {
            return BTreeSet::new();
        };
        rooms
            .into_iter()
            .filter_map(|room| by_room.get(room))
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// Whether `node` is listed for `room` of `nsp`.
    pub fn contains(&self, nsp: &str, room: &str, node: &str) -> bool {
        self.rooms
            .get(nsp)
            .and_then(|r| r.get(room))
            .is_some_and(|nodes| nodes.contains(node))
    }

    /// (namespace, room, node) entries in the index.
    pub fn index_entries(&self) -> usize {
        self.entries
    }

    /// Rooms in the index, over all namespaces.
    pub fn index_rooms(&self) -> usize {
        self.rooms.values().map(BTreeMap::len).sum()
    }

    pub(crate) fn apply(&mut self, command: Command) {
        match command {
            Command::Index(changes) => {
                for change in changes {
                    self.apply_change(change);
                }
            }
            Command::Admit(member) => {
                let restarted = self
                    .members
                    .get(&member.node)
                    .is_some_and(|old| old.incarnation != member.incarnation);
                if restarted {
                    self.remove_node_entries(&member.node);
                }
                self.members.insert(member.node.clone(), member);
            }
            Command::SetState { node, state } => {
                if let Some(member) = self.members.get_mut(&node) {
                    member.state = state;
                }
                if state == NodeState::Gone {
                    self.remove_node_entries(&node);
                }
            }
        }
    }

    fn apply_change(&mut self, change: IndexChange) {
        match change {
            IndexChange::Add { nsp, room, node } => {
                // An add from a node the state knows as gone is stale (sent before it was
                // declared gone): applying it would leave an entry nothing removes.
                if self
                    .members
                    .get(&node)
                    .is_some_and(|m| m.state == NodeState::Gone)
                {
                    return;
                }
                if self
                    .rooms
                    .entry(nsp)
                    .or_default()
                    .entry(room)
                    .or_default()
                    .insert(node)
                {
                    self.entries += 1;
                }
            }
            IndexChange::Remove { nsp, room, node } => {
                let Some(by_room) = self.rooms.get_mut(&nsp) else {
                    return;
                };
                let Some(nodes) = by_room.get_mut(&room) else {
                    return;
                };
                if nodes.remove(&node) {
                    self.entries -= 1;
                }
                if nodes.is_empty() {
                    by_room.remove(&room);
                }
                if by_room.is_empty() {
                    self.rooms.remove(&nsp);
                }
            }
        }
    }

    fn remove_node_entries(&mut self, node: &str) {
        let mut removed = 0;
        self.rooms.retain(|_, by_room| {
            by_room.retain(|_, nodes| {
                if nodes.remove(node) {
                    removed += 1;
                }
                !nodes.is_empty()
            });
            !by_room.is_empty()
        });
        self.entries -= removed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(nsp: &str, room: &str, node: &str) -> IndexChange {
        IndexChange::Add {
            nsp: nsp.into(),
            room: room.into(),
            node: node.into(),
        }
    }

    fn member(node: &str, incarnation: u64) -> Member {
        Member {
            node: node.into(),
            raft_id: 1,
            addresses: Addresses::default(),
            state: NodeState::Serving,
            incarnation,
        }
    }

    #[test]
    fn index_changes_and_counts() {
        let mut s = ClusterState::default();
        s.apply(Command::Index(vec![
            add("/", "a", "n1"),
            add("/", "a", "n2"),
            add("/", "a", "n2"),
            add("/chat", "b", "n1"),
        ]));
        assert_eq!(s.index_entries(), 3);
        assert_eq!(s.index_rooms(), 2);
        assert_eq!(s.nodes_for("/", ["a", "zz"]), BTreeSet::from(["n1", "n2"]));
        s.apply(Command::Index(vec![IndexChange::Remove {
            nsp: "/".into(),
            room: "a".into(),
            node: "n1".into(),
        }]));
        assert_eq!(s.nodes_for("/", ["a"]), BTreeSet::from(["n2"]));
        assert_eq!(s.rooms("/chat").collect::<Vec<_>>(), ["b"]);
        assert_eq!(s.index_entries(), 2);
    }

    #[test]
    fn gone_and_restart_clear_a_nodes_entries() {
        let mut s = ClusterState::default();
        s.apply(Command::Admit(member("n1", 1)));
        s.apply(Command::Admit(member("n2", 1)));
        s.apply(Command::Index(vec![
            add("/", "a", "n1"),
            add("/", "a", "n2"),
        ]));
        // Same incarnation (an address update): entries stay.
        s.apply(Command::Admit(member("n1", 1)));
        assert!(s.contains("/", "a", "n1"));
        // New incarnation: the restarted process has no sockets.
        s.apply(Command::Admit(member("n1", 2)));
        assert!(!s.contains("/", "a", "n1"));
        s.apply(Command::SetState {
            node: "n2".into(),
            state: NodeState::Gone,
        });
        assert_eq!(s.index_entries(), 0);
        assert!(s.index().is_empty());
        // A late add from a gone node is dropped.
        s.apply(Command::Index(vec![add("/", "a", "n2")]));
        assert_eq!(s.index_entries(), 0);
        assert_eq!(s.serving_count(), 1);
    }
}
