//! Nodes that stop: one restarted from its data directory rejoins; a voter gone past
//! the timeout leaves the index and is replaced by a live learner.

mod common;

use std::time::Duration;

use common::*;
use skein_adapter_mesh::{IndexChange, Mesh, NodeState};
use tokio::net::TcpListener;

fn add(room: &str, node: &str) -> IndexChange {
    IndexChange::Add {
        nsp: "/".into(),
        room: room.into(),
        node: node.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_from_its_data_directory() {
    let _serial = SERIAL.lock().await;
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (mut nodes, addrs) = cluster(dir.path(), 3).await;
        let i = nodes.iter().position(|n| n.node_id() == "n3").unwrap();
        let n3 = nodes.remove(i);
        let i1 = nodes[0]
            .apply_changes(vec![add("kept", "n1")])
            .await
            .unwrap();
        let i3 = n3.apply_changes(vec![add("stale", "n3")]).await.unwrap();
        nodes[0]
            .wait_visible(i1.max(i3), Duration::from_secs(5))
            .await
            .unwrap();
        let before = n3.members().into_iter().find(|m| m.node == "n3").unwrap();

        // Crash n3, then start it again on the same port and data directory.
        n3.halt().await;
        let listener = TcpListener::bind(addrs[2]).await.unwrap();
        let n3 = Mesh::start_on(config(dir.path(), "n3", &addrs), listener)
            .await
            .unwrap();
        n3.joined(Duration::from_secs(20)).await.unwrap();

        let after = n3.members().into_iter().find(|m| m.node == "n3").unwrap();
        assert_eq!(
            after.raft_id, before.raft_id,
            "the Raft id is kept in the data dir"
        );
        assert_ne!(after.incarnation, before.incarnation);
        // Its log came back (n1's entry), and its previous life's entries are gone
        // everywhere: the new process holds no socket.
        let view = n3.view();
        assert!(view.contains("/", "kept", "n1"));
        assert!(!view.contains("/", "stale", "n3"));
        assert_eq!(n3.metrics().peers.len(), 2);
        assert!(n3.metrics().peers.iter().all(|p| p.voter));

        // And it takes part: a change from it is visible on all.
        let i = n3.apply_changes(vec![add("fresh", "n3")]).await.unwrap();
        n3.wait_visible(i, Duration::from_secs(5)).await.unwrap();
        for n in &nodes {
            assert!(n.view().contains("/", "fresh", "n3"));
            assert!(!n.view().contains("/", "stale", "n3"));
        }
        n3.halt().await;
        for n in nodes {
            n.halt().await;
        }
    })
    .await
    .expect("test bounded at 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_voter_leaves_the_index_and_a_learner_takes_its_seat() {
    let _serial = SERIAL.lock().await;
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (mut nodes, addrs) = cluster(dir.path(), 3).await;
        // A fourth node, with the same seeds: admitted as a learner (3 voters).
        let n4 = Mesh::start(config(dir.path(), "n4", &addrs)).await.unwrap();
        n4.joined(Duration::from_secs(20)).await.unwrap();
        eventually(Duration::from_secs(5), "n4 a learner", || async {
            nodes[0]
                .metrics()
                .peers
                .iter()
                .any(|p| p.node == "n4" && !p.voter)
                || nodes[1]
                    .metrics()
                    .peers
                    .iter()
                    .any(|p| p.node == "n4" && !p.voter)
        })
        .await;

        // The victim: a voter that is not the leader, with a room in the index.
        let refs: Vec<&Mesh> = nodes.iter().collect();
        eventually(Duration::from_secs(10), "a leader", || async {
            leader_of(&refs).is_some()
        })
        .await;
        let leader = leader_of(&refs).unwrap().node;
        let i = nodes.iter().position(|n| n.node_id() != leader).unwrap();
        let victim = nodes.remove(i);
        let name = victim.node_id().to_string();
        let idx = victim
            .apply_changes(vec![add("lobby", &name)])
            .await
            .unwrap();
        victim
            .wait_visible(idx, Duration::from_secs(5))
            .await
            .unwrap();
        victim.halt().await;

        // Within gone_after (2 s) plus probes and commits: gone, out of the index, and
        // replaced among the voters by n4.
        let mut live: Vec<&Mesh> = nodes.iter().collect();
        live.push(&n4);
        eventually(
            Duration::from_secs(15),
            "the victim gone from every index",
            || async {
                live.iter().all(|n| {
                    let v = n.view();
                    !v.contains("/", "lobby", &name)
                        && v.member(&name).is_some_and(|m| m.state == NodeState::Gone)
                })
            },
        )
        .await;
        eventually(
            Duration::from_secs(15),
            "n4 votes, the victim does not",
            || async {
                let m = n4.metrics();
                m.peers.len() == 2 && m.peers.iter().all(|p| p.voter && p.node != name)
            },
        )
        .await;
        // Three voters again: the cluster still commits, with n4's vote counted.
        let i = n4.apply_changes(vec![add("after", "n4")]).await.unwrap();
        n4.wait_visible(i, Duration::from_secs(5)).await.unwrap();
        for n in &live {
            assert!(n.view().contains("/", "after", "n4"));
        }
        n4.halt().await;
        for n in nodes {
            n.halt().await;
        }
    })
    .await
    .expect("test bounded at 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_purged_log_catches_up_from_a_snapshot() {
    let _serial = SERIAL.lock().await;
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (ls, addrs) = listeners(3).await;
        let short = |name: &str| {
            let mut c = config(dir.path(), name, &addrs);
            // A snapshot every 10 entries, and the log purged behind it.
            c.snapshot_every = 10;
            c.keep_logs = 0;
            c
        };
        let mut nodes = Vec::new();
        for (i, l) in ls.into_iter().enumerate() {
            nodes.push(
                Mesh::start_on(short(&format!("n{}", i + 1)), l)
                    .await
                    .unwrap(),
            );
        }
        for n in &nodes {
            n.joined(Duration::from_secs(20)).await.unwrap();
        }
        let mut last = 0;
        for i in 0..60 {
            last = nodes[0]
                .apply_changes(vec![add(&format!("r{i}"), "n1")])
                .await
                .unwrap();
        }
        nodes[0]
            .wait_visible(last, Duration::from_secs(5))
            .await
            .unwrap();
        eventually(
            Duration::from_secs(10),
            "a snapshot in n1's data dir",
            || async { dir.path().join("n1/snapshot.bin").exists() },
        )
        .await;

        // A new node cannot replay the log from its start: it installs the snapshot
        // (sent over the mesh in chunks), then follows the log.
        let n4 = Mesh::start(short("n4")).await.unwrap();
        n4.joined(Duration::from_secs(20)).await.unwrap();
        let view = n4.view();
        assert_eq!(view.rooms("/").count(), 60);
        assert!(n4.metrics().applied_index >= Some(last));

        // Restarted, it starts from its own snapshot and log.
        let n4_addr = n4.local_addr();
        n4.halt().await;
        let listener = TcpListener::bind(n4_addr).await.unwrap();
        let n4 = Mesh::start_on(short("n4"), listener).await.unwrap();
        assert_eq!(
            n4.view().rooms("/").count(),
            60,
            "loaded before any contact"
        );
        n4.joined(Duration::from_secs(20)).await.unwrap();
        n4.halt().await;
        for n in nodes {
            n.halt().await;
        }
    })
    .await
    .expect("test bounded at 60 s");
}
