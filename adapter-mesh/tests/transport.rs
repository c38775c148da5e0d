//! The mesh as a cluster transport, in one process: three mesh nodes under the cluster
//! layer's fixture (real Socket.IO servers on loopback, real WebSocket clients). A room
//! broadcast reaches only the nodes the replicated index lists; a broadcast without
//! rooms reaches every node; a join awaited with `join_visible` is in every node's index
//! when it returns; a leave leaves the index; a gone peer's queue is dropped.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skein::adapter::cluster::testing::TestCluster;
use skein::adapter::cluster::Transport;
use skein::Data;
use skein_adapter_mesh::{Mesh, MeshTransport};

use common::{config, eventually, listeners, SERIAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_broadcasts_go_only_to_the_nodes_the_index_lists() {
    let _serial = SERIAL.lock().await;
    common::init_logs();
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let (ls, addrs) = listeners(3).await;
        let mut meshes = Vec::new();
        for (i, l) in ls.into_iter().enumerate() {
            let c = config(dir.path(), &format!("node{i}"), &addrs);
            meshes.push(Arc::new(Mesh::start_on(c, l).await.unwrap()));
        }
        for m in &meshes {
            m.joined(Duration::from_secs(20)).await.unwrap();
        }
        let mut ts: Vec<Arc<MeshTransport>> = Vec::new();
        let cluster = TestCluster::start(3, Duration::from_secs(2), |i, c| {
            let t = MeshTransport::new(meshes[i].clone(), c.inbound(), Duration::from_secs(10));
            ts.push(t.clone());
            (t as Arc<dyn Transport>, None)
        })
        .await;
        let mut c0 = cluster.connect(0).await;
        let mut c2 = cluster.connect(2).await;

        // A member on node0 only; the join returns once every node lists node0.
        let s0 = cluster.socket(0, &c0);
        let visible = s0.join_visible("r").expect("the mesh waits for visibility");
        visible.await;
        for m in &meshes {
            assert!(
                m.view().contains("/", "r", "node0"),
                "{} lists node0 in r once the join returned",
                m.node_id()
            );
        }
        assert!(!meshes[1].view().contains("/", "r", "node2"));

        // From node1: a room broadcast goes to node0 only.
        let (to0, to2) = (
            ts[1].broadcasts_sent("node0"),
            ts[1].broadcasts_sent("node2"),
        );
        let ns1 = cluster.nodes[1].io.of("/").unwrap();
        ns1.to("r").emit("m", Data::one(json!("room"))).unwrap();
        let got = c0.next_event(Duration::from_secs(5)).await;
        assert_eq!(got, Some(("m".into(), vec![json!("room")])));
        assert_eq!(ts[1].broadcasts_sent("node0"), to0 + 1);
        assert_eq!(
            ts[1].broadcasts_sent("node2"),
            to2,
            "node2 holds no member of r: it pays nothing"
        );
        assert_eq!(c2.next_event(Duration::from_millis(300)).await, None);

        // fetch_sockets on the room: asked of its holder (node0), which answers.
        let opts = skein::adapter::BroadcastOptions {
            rooms: vec!["r".into()],
            ..Default::default()
        };
        let found = ns1.adapter().fetch_sockets(opts).await.unwrap();
        assert_eq!(found.missing, Vec::<String>::new());
        assert_eq!(
            found.items.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![c0.sid]
        );

        // Without rooms: every node.
        ns1.emit("all", Data::one(json!(1))).unwrap();
        assert_eq!(
            c0.next_event(Duration::from_secs(5)).await,
            Some(("all".into(), vec![json!(1)]))
        );
        assert_eq!(
            c2.next_event(Duration::from_secs(5)).await,
            Some(("all".into(), vec![json!(1)]))
        );
        assert_eq!(ts[1].broadcasts_sent("node2"), to2 + 1);

        // The last member leaves: node0 leaves the index everywhere (a leave may lag).
        s0.leave("r");
        eventually(Duration::from_secs(10), "node0 out of r everywhere", || {
            let meshes = meshes.clone();
            async move { meshes.iter().all(|m| !m.view().contains("/", "r", "node0")) }
        })
        .await;
        assert!(ts.iter().all(|t| t.undelivered() == 0));

        // node2 stops: once it is listed gone, node1 drops its queue and stream task.
        assert_eq!(ts[1].linked_peers(), vec!["node0", "node2"]);
        meshes[2].halt().await;
        eventually(
            Duration::from_secs(20),
            "node1 holds no queue for node2",
            || {
                let t = ts[1].clone();
                async move { t.linked_peers() == vec!["node0"] }
            },
        )
        .await;
        for m in &meshes[..2] {
            m.halt().await;
        }
    })
    .await
    .expect("bounded at 90 s");
}
