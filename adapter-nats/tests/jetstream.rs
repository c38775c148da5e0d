//! The JetStream log and session bucket against a real `nats-server -js` of this test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{unique, until, NatsServer};
use parking_lot::Mutex;
use serde_json::json;
use skein::adapter::cluster::message::{Envelope, Message};
use skein::adapter::cluster::{ClusterLog, Delivery, Inbound};
use skein::adapter::recovery::now_ms;
use skein::adapter::{BroadcastOptions, EventPacket, NotRecovered, SessionRecord, SessionStore};
use skein::Data;
use skein_adapter_nats::jetstream::{JetStreamConfig, JetStreamLog};
use skein_adapter_nats::{connection, NatsAdapterConfig};

type Got = Arc<Mutex<Vec<(Envelope, Delivery)>>>;

async fn log_on(nats: &NatsServer, prefix: &str, uid: &str) -> (Arc<JetStreamLog>, Got) {
    let cfg = NatsAdapterConfig {
        servers: vec![nats.url()],
        prefix: prefix.into(),
        node_id: uid.into(),
        ..Default::default()
    };
    let conn = connection::connect(&cfg).await.expect("NATS");
    let got: Got = Arc::default();
    let sink = got.clone();
    let inbound: Inbound = Arc::new(move |env, d| sink.lock().push((env, d)));
    let log = JetStreamLog::start(
        conn,
        prefix,
        JetStreamConfig {
            max_len: 1000,
            max_age: Duration::from_secs(300),
            max_disconnection: Duration::from_secs(120),
            replicas: 1,
        },
        uid.into(),
        inbound,
        Arc::new(|| 2),
    )
    .await
    .expect("JetStream");
    (log, got)
}

fn broadcast(n: u64) -> Message {
    Message::Broadcast {
        packet: EventPacket {
            event: "m".into(),
            data: Data::one(json!(n)),
        },
        opts: BroadcastOptions::default(),
    }
}

fn record(pid: &str, owner: &str, offset: &str, seen: u64) -> SessionRecord {
    SessionRecord {
        sid: "s1".into(),
        pid: pid.into(),
        rooms: vec!["r".into()],
        data: json!({"k": 1}),
        nsp: Some("/".into()),
        offset: Some(offset.into()),
        seen: Some(seen),
        owner: Some(owner.into()),
        connected: false,
        node: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_taken_once_and_a_stale_instance_cannot_write_them_back() {
    let nats = NatsServer::start(true);
    let prefix = unique("js");
    let (a, _) = log_on(&nats, &prefix, "a").await;
    let (b, _) = log_on(&nats, &prefix, "b").await;
    let rec = record("pid.1/x", "o1", "0", now_ms());
    a.save(&rec).expect("NATS is up").await;
    // Two nodes take at once: one gets it.
    let (ta, tb) = tokio::join!(a.take("pid.1/x"), b.take("pid.1/x"));
    let got: Vec<_> = [ta.unwrap(), tb.unwrap()].into_iter().flatten().collect();
    assert_eq!(got.len(), 1, "exactly one take wins");
    assert_eq!(got[0].data, json!({"k": 1}));
    assert_eq!(
        got[0].node.as_deref(),
        Some("a"),
        "the writing node is recorded"
    );
    // The instance it left writes late: refused. The new socket's claim is kept.
    a.save(&rec).unwrap().await;
    assert_eq!(b.take("pid.1/x").await.unwrap(), None);
    let mine = record("pid.1/x", "o2", "0", now_ms());
    b.claim(&mine).unwrap().await;
    a.save(&rec).unwrap().await;
    let back = a.take("pid.1/x").await.unwrap().expect("claimed");
    assert_eq!(back.owner.as_deref(), Some("o2"));
    // Discard by a stranger does nothing; by the owner, it forgets.
    b.claim(&mine).unwrap().await;
    a.discard(&rec);
    b.discard(&mine);
    until(3000, "discarded", || async {
        b.take("pid.1/x").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_are_delivered_from_the_log_and_a_gap_refuses_recovery() {
    let mut nats = NatsServer::start(true);
    let prefix = unique("js");
    let (a, got_a) = log_on(&nats, &prefix, "a").await;
    let (_b, got_b) = log_on(&nats, &prefix, "b").await;
    for n in 0..3 {
        a.append("/", &broadcast(n));
    }
    until(3000, "three logged on both nodes", || async {
        got_a.lock().len() == 3 && got_b.lock().len() == 3
    })
    .await;
    let offsets: Vec<String> = got_b
        .lock()
        .iter()
        .map(|(_, d)| match d {
            Delivery::Log(o) => o.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got_a.lock()[2].1,
        Delivery::Log(offsets[2].clone()),
        "the sender too, from the log"
    );
    assert_eq!(a.position(), offsets[2]);
    // What a session missed after its offset, with the offsets as last argument.
    let rec = record("p2", "o", &offsets[0], now_ms());
    let missed = Arc::new(Mutex::new(Vec::new()));
    let m2 = missed.clone();
    a.replay("/", &rec, None, Box::new(move |p| *m2.lock() = p))
        .await
        .unwrap();
    let missed = missed.lock().clone();
    assert_eq!(missed.len(), 2);
    assert_eq!(
        missed[1].packet.data.args,
        vec![json!(2), json!(offsets[2])]
    );
    assert_eq!(
        a.replay("/", &rec, Some("999999"), Box::new(|_| {})).await,
        Err(NotRecovered::BadOffset)
    );

    // JetStream gone: after the grace, the broadcast reaches this node only, counted.
    nats.kill();
    a.append("/", &broadcast(3));
    until(5000, "delivered unlogged", || async {
        got_a.lock().iter().any(|(_, d)| *d == Delivery::Unlogged)
    })
    .await;
    assert!(
        a.undelivered() >= 2,
        "one per live peer: {}",
        a.undelivered()
    );
    assert!(!a.is_up());
    nats.restart();
    until(15_000, "logging again", || async {
        a.append("/", &broadcast(4));
        tokio::time::sleep(Duration::from_millis(300)).await;
        got_b.lock().iter().any(|(e, _)| e.msg == broadcast(4))
    })
    .await;
    until(5000, "up again", || async { a.is_up() }).await;
    // A client of b that left just after offsets[2] would miss broadcast 3: refused.
    let rec = record("p3", "o", &offsets[2], now_ms());
    let replay = a.replay("/", &rec, None, Box::new(|_| {})).await;
    assert_eq!(replay, Err(NotRecovered::LogGap));
    // One that left long after the gap had it delivered (or not targeted) meanwhile.
    let later = record("p4", "o", &offsets[2], now_ms() + 60_000);
    assert!(a.replay("/", &later, None, Box::new(|_| {})).await.is_ok());
}
