//! The layer over the in-memory bus: three nodes with real clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::testing::TestCluster;
use crate::adapter::{BroadcastOptions, EventPacket};
use crate::Data;

const T: Duration = Duration::from_millis(400);

fn ns(c: &TestCluster, i: usize) -> Arc<crate::Namespace> {
    c.nodes[i].io.of("/").expect("/ exists")
}

#[tokio::test]
async fn a_room_broadcast_reaches_its_members_on_every_node_once() {
    let (c, _) = TestCluster::memory(3, T).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut pair = vec![c.connect(i).await, c.connect(i).await];
        c.socket(i, &pair[0]).join("r");
        if i == 1 {
            c.socket(i, &pair[1]).join(["r", "s"]);
        }
        clients.append(&mut pair);
    }
    ns(&c, 2).to("r").emit("m", Data::one(json!(1))).unwrap();
    // Several rooms: a member of both gets it once; except holds across nodes.
    ns(&c, 0)
        .to(["r", "s"])
        .except(clients[0].sid)
        .emit("m", Data::one(json!(2)))
        .unwrap();
    let mut got = Vec::new();
    for cl in &mut clients {
        got.push(
            cl.events(Duration::from_millis(300))
                .await
                .into_iter()
                .map(|(_, a)| a[0].as_i64().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    // node0: [member of r, not], node1: [r, r+s], node2: [r, not]
    assert_eq!(
        got,
        vec![vec![1], vec![], vec![1, 2], vec![1, 2], vec![1, 2], vec![]]
    );
}

#[tokio::test]
async fn requests_gather_every_node_and_broadcast_acks_are_counted() {
    let (c, _) = TestCluster::memory(3, Duration::from_secs(2)).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let cl = c.connect(i).await;
        c.socket(i, &cl).join(format!("room-{i}"));
        c.socket(i, &cl).set_data(json!({ "n": i }));
        clients.push(cl);
    }
    let all = ns(&c, 0).fetch_sockets().await.unwrap();
    let mut data: Vec<_> = all
        .iter()
        .map(|s| s.info.data["n"].as_i64().unwrap())
        .collect();
    data.sort();
    assert_eq!(data, [0, 1, 2]);
    let remote = all.iter().find(|s| s.id() == clients[2].sid).unwrap();
    assert_eq!(remote.info.node.as_deref(), Some("node2"));
    let rooms = ns(&c, 1).all_rooms().await.unwrap();
    for r in ["room-0", "room-1", "room-2"] {
        assert!(rooms.items.contains(&r.to_owned()), "{r}");
    }
    assert!(rooms.missing.is_empty());
    assert_eq!(ns(&c, 2).adapter().server_count().await, 3);
    for i in 0..3 {
        ns(&c, i).on_server_event("ping", move |d, ack| {
            if let Some(ack) = ack {
                ack(Data::one(json!({ "node": i, "got": d.args })));
            }
        });
    }
    let g = ns(&c, 1)
        .server_side_emit_with_ack("ping", Data::one(json!(42)), Duration::from_secs(1))
        .await
        .unwrap();
    let mut answered: Vec<_> = g
        .items
        .iter()
        .map(|d| d.args[0]["node"].as_i64().unwrap())
        .collect();
    answered.sort();
    assert_eq!(answered, [0, 2], "every other node, once");
    // One node only.
    let one = ns(&c, 0)
        .server_side_emit_with_ack_to("node2", "ping", Data::one(json!(7)), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(one.args[0], json!({ "node": 2, "got": [7] }));
    // Acks from clients on two nodes (each client answers its ack).
    let op = ns(&c, 0)
        .to(["room-1", "room-2"])
        .timeout(Duration::from_secs(2));
    let acks = tokio::spawn(async move { op.emit_with_ack("q", Data::empty()).await });
    for (i, cl) in clients.iter_mut().enumerate().skip(1) {
        let _ = i;
        let raw = cl
            .raw_next(Duration::from_secs(2))
            .await
            .expect("the question");
        assert!(raw.starts_with("42"), "{raw}");
        let id: String = raw[2..].chars().take_while(char::is_ascii_digit).collect();
        cl.send_raw(&format!("43{id}[\"yes\"]")).await;
    }
    let acks = acks.await.unwrap().expect("every ack in time");
    assert_eq!(acks.len(), 2);
}

#[tokio::test]
async fn a_silent_node_is_named_and_a_goodbye_ends_the_wait() {
    let (c, ts) = TestCluster::memory(3, Duration::from_millis(500)).await;
    ts[2].mute(true);
    let start = Instant::now();
    let rooms = ns(&c, 0).all_rooms().await.unwrap();
    assert_eq!(rooms.missing, ["node2"]);
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );
    ts[2].mute(false);
    // A node that leaves is not waited for, nor reported missing.
    ts[1].mute(true);
    let n0 = ns(&c, 0);
    let req = tokio::spawn(async move { n0.all_rooms().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    ts[1].mute(false);
    c.nodes[1].factory.goodbye();
    let g = req.await.unwrap();
    assert!(g.missing.is_empty(), "{:?}", g.missing);
    let peers = c.nodes[0].factory.live_peers();
    assert_eq!(peers, ["node2"]);
}

#[tokio::test]
async fn server_side_events_to_one_node_reach_that_node_only() {
    let (c, ts) = TestCluster::memory(3, T).await;
    let got = Arc::new(parking_lot::Mutex::new(Vec::new()));
    for i in 0..3 {
        let got = got.clone();
        ns(&c, i).on_server_event("hi", move |d, _| got.lock().push((i, d.args[0].clone())));
    }
    let before = ts[2].sent();
    ns(&c, 0)
        .server_side_emit_to("node1", "hi", Data::one(json!("x")))
        .unwrap();
    ns(&c, 0)
        .adapter()
        .server_side_emit(&EventPacket {
            event: "hi".into(),
            data: Data::one(json!("all")),
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut g = got.lock().clone();
    g.sort_by_key(|(i, v)| (*i, v.to_string()));
    assert_eq!(
        g,
        vec![(1, json!("all")), (1, json!("x")), (2, json!("all"))]
    );
    assert_eq!(ts[2].sent(), before, "node2 said nothing back");
    let _ = BroadcastOptions::default();
}
