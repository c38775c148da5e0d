//! Three nodes in one process, on 127.0.0.1:0: the cluster forms from seeds, elects one
//! leader, shares index changes, keeps taking them through a leader change, and
//! refuses a node without the secret.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use skein_adapter_mesh::{IndexChange, Mesh, MeshError, NodeState, Role};

fn add(room: &str, node: &str) -> IndexChange {
    IndexChange::Add {
        nsp: "/".into(),
        room: room.into(),
        node: node.into(),
    }
}

fn remove(room: &str, node: &str) -> IndexChange {
    IndexChange::Remove {
        nsp: "/".into(),
        room: room.into(),
        node: node.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_share_the_index() {
    let _serial = SERIAL.lock().await;
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (nodes, _) = cluster(dir.path(), 3).await;
        let refs: Vec<&Mesh> = nodes.iter().collect();

        // One leader, and every node names it, in the same term; all three vote.
        eventually(
            Duration::from_secs(10),
            "one leader known to all",
            || async {
                let Some(leader) = leader_of(&refs) else {
                    return false;
                };
                nodes.iter().all(|n| {
                    let m = n.metrics();
                    m.leader.as_deref() == Some(leader.node.as_str()) && m.term == leader.term
                })
            },
        )
        .await;
        for n in &nodes {
            let m = n.metrics();
            assert_eq!(m.peers.len(), 2, "{m:?}");
            assert!(m.peers.iter().all(|p| p.voter), "{m:?}");
            assert_eq!(m.live_members, 3, "{m:?}");
        }

        // A change made on a follower is, once visible, in every node's copy at once.
        let follower = nodes
            .iter()
            .find(|n| n.metrics().role != Role::Leader)
            .unwrap();
        let me = follower.node_id().to_string();
        let index = follower
            .apply_changes(vec![add("a", &me), add("b", &me)])
            .await
            .unwrap();
        follower
            .wait_visible(index, Duration::from_secs(5))
            .await
            .unwrap();
        for n in &nodes {
            let view = n.view();
            assert!(
                view.contains("/", "a", &me) && view.contains("/", "b", &me),
                "{}",
                n.node_id()
            );
            assert_eq!(n.metrics().index_entries, 2);
            assert!(n.metrics().applied_index >= Some(index));
        }

        // The batcher: an add then a remove of one key in one window is a remove; a
        // join through it is visible everywhere when it returns.
        let batcher = follower.batcher(Duration::from_millis(20), Duration::from_secs(5));
        batcher.push(add("c", &me));
        batcher.push(remove("c", &me));
        batcher.push(remove("a", &me));
        batcher.commit_visible(add("d", &me)).await.unwrap();
        for n in &nodes {
            let view = n.view();
            assert!(view.contains("/", "d", &me), "{}", n.node_id());
            assert!(!view.contains("/", "c", &me) && !view.contains("/", "a", &me));
            assert_eq!(view.rooms("/").collect::<Vec<_>>(), ["b", "d"]);
        }

        // States: serving counts; a node that shuts down leaves the index at once.
        for n in &nodes {
            n.set_state(NodeState::Serving).await.unwrap();
        }
        eventually(Duration::from_secs(5), "three serving", || async {
            nodes.iter().all(|n| n.view().serving_count() == 3)
        })
        .await;
        let mut nodes = nodes;
        let pos = nodes.iter().position(|n| n.node_id() == me).unwrap();
        let leaving = nodes.remove(pos);
        leaving.shutdown().await;
        eventually(
            Duration::from_secs(5),
            "the leaver's entries removed",
            || async {
                nodes.iter().all(|n| {
                    let v = n.view();
                    v.index_entries() == 0
                        && v.member(&me).is_some_and(|m| m.state == NodeState::Gone)
                        && v.serving_count() == 2
                })
            },
        )
        .await;
        for n in nodes {
            n.halt().await;
        }
    })
    .await
    .expect("test bounded at 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_under_load_loses_no_acknowledged_change() {
    let _serial = SERIAL.lock().await;
    init_logs();
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let (nodes, _) = cluster(dir.path(), 3).await;
        let refs: Vec<&Mesh> = nodes.iter().collect();
        eventually(Duration::from_secs(10), "a leader", || async {
            leader_of(&refs).is_some()
        })
        .await;
        let leader_name = leader_of(&refs).unwrap().node;

        let mut nodes: Vec<Arc<Mesh>> = nodes.into_iter().map(Arc::new).collect();
        let pos = nodes
            .iter()
            .position(|n| n.node_id() == leader_name)
            .unwrap();
        let leader = nodes.remove(pos);
        let writer = nodes[0].clone();
        let other = nodes[1].clone();

        // A writer on a follower commits one change after another, and keeps the
        // ones that were acknowledged.
        let acked = Arc::new(parking_lot_free::Acked::default());
        let count = Arc::new(AtomicU64::new(0));
        let load = {
            let (writer, acked, count) = (writer.clone(), acked.clone(), count.clone());
            tokio::spawn(async move {
                let me = writer.node_id().to_string();
                for i in 0..u64::MAX {
                    let room = format!("r{i}");
                    match writer.apply_changes(vec![add(&room, &me)]).await {
                        Ok(_) => {
                            acked.push(room);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(MeshError::NoLeader { .. }) => {}
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
            })
        };
        eventually(
            Duration::from_secs(10),
            "20 changes before the kill",
            || async { count.load(Ordering::Relaxed) >= 20 },
        )
        .await;

        // The leader's Raft dies without a word.
        let old_term = writer.metrics().term;
        leader.halt().await;
        let killed_at = count.load(Ordering::Relaxed);

        let survivors = [&*writer, &*other];
        eventually(
            Duration::from_secs(10),
            "a new leader among the survivors",
            || async {
                leader_of(&survivors).is_some_and(|m| m.node != leader_name && m.term > old_term)
            },
        )
        .await;
        eventually(
            Duration::from_secs(15),
            "20 more changes after the kill",
            || async { count.load(Ordering::Relaxed) >= killed_at + 20 },
        )
        .await;
        load.abort();
        let _ = load.await;

        // Every acknowledged change is in both survivors' copies.
        let acked = acked.take();
        let me = writer.node_id().to_string();
        eventually(
            Duration::from_secs(5),
            "both survivors hold every acked change",
            || async {
                survivors.iter().all(|n| {
                    let v = n.view();
                    acked.iter().all(|room| v.contains("/", room, &me))
                })
            },
        )
        .await;
        writer.halt().await;
        other.halt().await;
    })
    .await
    .expect("test bounded at 90 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_is_refused() {
    let _serial = SERIAL.lock().await;
    init_logs();
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        // A cluster of one (no seeds).
        let (ls, _) = listeners(1).await;
        let node = Mesh::start_on(
            config(dir.path(), "n1", &[]),
            ls.into_iter().next().unwrap(),
        )
        .await
        .unwrap();
        node.joined(Duration::from_secs(10)).await.unwrap();

        // A stranger that knows the address but not the secret.
        let mut c = config(dir.path(), "stranger", &[node.local_addr()]);
        c.secret = "another-secret".into();
        let stranger = Mesh::start(c).await.unwrap();
        let refused = stranger.joined(Duration::from_secs(3)).await;
        assert_eq!(refused, Err(MeshError::JoinTimeout(Duration::from_secs(3))));
        assert_eq!(node.members().len(), 1);
        assert_eq!(node.metrics().peers.len(), 0);
        // Nor is it a cluster of its own: it waits for a seed that never answers it.
        assert_eq!(stranger.metrics().leader, None);
        stranger.halt().await;
        node.halt().await;
    })
    .await
    .expect("test bounded at 30 s");
}

/// A list that the writer task appends to and the test reads at the end.
mod parking_lot_free {
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Acked(Mutex<Vec<String>>);

    impl Acked {
        pub fn push(&self, room: String) {
            self.0.lock().unwrap().push(room);
        }

        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }
}
