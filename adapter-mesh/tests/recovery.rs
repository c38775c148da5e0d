//! The mesh's recovery layer in one process: three mesh nodes, each with its
//! [`MeshLog`] over its bus. Every node delivers every logged message; an offset one
//! node gave replays exactly the rest on another; a session written on one node is
//! held by the others once the write resolves; of two takes of one pid one wins, also
//! after the node that wrote it halted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use skein::adapter::cluster::{ClusterLog, Delivery, Envelope, Inbound, Message};
use skein::adapter::{
    BroadcastOptions, EventPacket, LoggedPacket, RecoveryConfig, SessionRecord, SessionStore,
};
use skein::Data;
use skein_adapter_mesh::recovery::MeshLog;
use skein_adapter_mesh::{Mesh, MeshTransport};

use common::{cluster, eventually, SERIAL};

type Got = Arc<Mutex<Vec<(u64, String)>>>;

/// An inbound that records (event number, offset) of every logged broadcast.
fn recorder() -> (Inbound, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let inbound: Inbound = Arc::new(move |env: Envelope, d: Delivery| {
        if let (Message::Broadcast { packet, .. }, Delivery::Log(offset)) = (env.msg, d) {
            let n = packet.data.args[0].as_u64().unwrap_or(u64::MAX);
            g.lock().push((n, offset));
        }
    });
    (inbound, got)
}

fn broadcast(n: u64) -> Message {
    Message::Broadcast {
        packet: EventPacket {
            event: "e".into(),
            data: Data::one(json!(n)),
        },
        opts: BroadcastOptions {
            rooms: vec!["r".into()],
            ..Default::default()
        },
    }
}

fn record(pid: &str) -> SessionRecord {
    serde_json::from_value(json!({
        "sid": format!("sid-{pid}"), "pid": pid, "rooms": [format!("sid-{pid}"), "r"],
        "nsp": "/", "seen": skein::adapter::recovery::now_ms(), "connected": false,
        "owner": "instance-1",
    }))
    .unwrap()
}

async fn replay(log: &MeshLog, rec: &SessionRecord, offset: &str) -> Vec<LoggedPacket> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let attach = Box::new(move |p: Vec<LoggedPacket>| {
        let _ = tx.send(p);
    });
    log.replay("/", rec, Some(offset), attach)
        .await
        .expect("the replay is answered");
    rx.await.expect("attached")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_sessions_are_replicated_and_survive_the_node_that_wrote_them() {
    let _serial = SERIAL.lock().await;
    common::init_logs();
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let (nodes, _) = cluster(dir.path(), 3).await;
        let meshes: Vec<Arc<Mesh>> = nodes.into_iter().map(Arc::new).collect();
        let mut logs = Vec::new();
        let mut got = Vec::new();
        for m in &meshes {
            let none: Inbound = Arc::new(|_, _| {});
            let t = MeshTransport::new(m.clone(), none, Duration::from_secs(5));
            let (inbound, g) = recorder();
            logs.push(MeshLog::start(t, inbound, RecoveryConfig::default()));
            got.push(g);
        }

        // Every node delivers node0's five broadcasts, in order, with its own offsets.
        for n in 1..=5 {
            logs[0].append("/", &broadcast(n));
        }
        for (i, g) in got.iter().enumerate() {
            eventually(
                Duration::from_secs(15),
                &format!("node{i} delivers 5"),
                || {
                    let g = g.clone();
                    async move { g.lock().len() == 5 }
                },
            )
            .await;
            let nums: Vec<u64> = g.lock().iter().map(|(n, _)| *n).collect();
            assert_eq!(nums, vec![1, 2, 3, 4, 5], "node{i}");
        }

        // A session written on node0 is held by the others once the write resolves.
        let rec = record("p1");
        if let Some(w) = logs[0].save(&rec) {
            w.await;
        }
        eventually(Duration::from_secs(5), "node2 holds the session", || {
            let n = logs[2].sessions_held();
            async move { n == 1 }
        })
        .await;

        // node0's offset after event 2 replays exactly 3, 4, 5 on node2.
        let offset = got[0].lock()[1].1.clone();
        let missed = replay(&logs[2], &rec, &offset).await;
        let nums: Vec<u64> = missed
            .iter()
            .map(|p| p.packet.data.args[0].as_u64().unwrap())
            .collect();
        assert_eq!(nums, vec![3, 4, 5]);
        // The last replayed offset replays nothing more, on any node.
        let end = missed.last().unwrap().offset.clone();
        assert!(replay(&logs[1], &rec, &end).await.is_empty());

        // Two takes of one pid on two nodes at once: exactly one gets it.
        let (a, b) = tokio::join!(logs[1].take("p1"), logs[2].take("p1"));
        let won = [a.unwrap(), b.unwrap()].into_iter().flatten().count();
        assert_eq!(won, 1, "one take wins");

        // node0 writes another session and halts: a take elsewhere still finds it.
        let rec2 = record("p2");
        if let Some(w) = logs[0].save(&rec2) {
            w.await;
        }
        meshes[0].halt().await;
        let taken = logs[1].take("p2").await.expect("decided by a live node");
        assert_eq!(taken.map(|r| r.pid), Some("p2".to_owned()));
        assert_eq!(logs[2].take("p2").await.unwrap(), None, "and only once");
    })
    .await
    .expect("within the time bound");
}
