//! In-process tests of Subscribe and AckClientEvent, on the fixture of `tests`.

use std::time::Duration;

use futures_util::SinkExt;
use skein_proto::v1::*;
use tokio_tungstenite::tungstenite::Message;
use tonic::{Code, Request};

use super::tests::{args, authed, fixture, next_text, sio_client};
use super::Hub;

fn sub_req(ns: &str, events: &[&str]) -> SubscribeRequest {
    SubscribeRequest {
        namespace: ns.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
    }
}

async fn next_event(s: &mut tonic::Streaming<ClientEvent>) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("an event within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn subscribe_gets_unhandled_events_and_acks_reach_the_client() {
    let mut f = fixture().await;
    let mut sub = f
        .client
        .subscribe(authed(sub_req("/", &["chat"])))
        .await
        .unwrap()
        .into_inner();
    let (mut a, a_id) = sio_client(&f.url).await;
    // Without an ack.
    a.send(Message::text(r#"42["chat","hi",{"n":1}]"#))
        .await
        .unwrap();
    let ev = next_event(&mut sub).await;
    assert_eq!(
        (
            ev.namespace.as_str(),
            ev.socket_id.as_str(),
            ev.node.as_str(),
            ev.event.as_str(),
            ev.wants_ack
        ),
        ("/", a_id.as_str(), "node-test", "chat", false)
    );
    assert_eq!(ev.args.unwrap().json, r#"["hi",{"n":1}]"#);
    // An event the node handles itself (`echo`) and one outside the filter are not
    // forwarded: the next event the subscriber sees is the next `chat`.
    a.send(Message::text(r#"427["echo","e"]"#)).await.unwrap();
    assert_eq!(next_text(&mut a).await, r#"437["e"]"#);
    a.send(Message::text(r#"42["other"]"#)).await.unwrap();
    // With an ack and a binary attachment; the answer goes back through the API.
    a.send(Message::text(
        r#"451-3["chat",{"_placeholder":true,"num":0}]"#,
    ))
    .await
    .unwrap();
    a.send(Message::binary(vec![9u8, 8, 7])).await.unwrap();
    let ev = next_event(&mut sub).await;
    assert!(ev.wants_ack);
    let got = ev.args.unwrap();
    assert_eq!(
        (got.json.as_str(), got.binary),
        (r#"[{"_placeholder":true,"num":0}]"#, vec![vec![9u8, 8, 7]])
    );
    f.client
        .ack_client_event(authed(AckClientEventRequest {
            delivery_id: ev.delivery_id.clone(),
            args: args(r#"["ok",2]"#),
        }))
        .await
        .unwrap();
    assert_eq!(next_text(&mut a).await, r#"433["ok",2]"#);
    // An ack is answered once.
    let e = f
        .client
        .ack_client_event(authed(AckClientEventRequest {
            delivery_id: ev.delivery_id,
            args: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(f.hub.delivered(), 2);
}

#[tokio::test]
async fn each_event_goes_to_exactly_one_subscriber() {
    let mut f = fixture().await;
    let mut subs = Vec::new();
    for _ in 0..2 {
        subs.push(
            f.client
                .subscribe(authed(sub_req("", &[])))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    // A subscriber of another namespace gets none of them.
    let mut other = f
        .client
        .subscribe(authed(sub_req("/other", &[])))
        .await
        .unwrap()
        .into_inner();
    let (mut a, _) = sio_client(&f.url).await;
    for i in 0..10 {
        a.send(Message::text(format!(r#"42["e{i}"]"#)))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for s in subs.iter_mut() {
        let mut mine = Vec::new();
        for _ in 0..5 {
            mine.push(next_event(s).await.event);
        }
        seen.extend(mine);
    }
    seen.sort();
    let want: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    assert_eq!(seen, want);
    for s in subs.iter_mut() {
        assert!(
            tokio::time::timeout(Duration::from_millis(200), s.message())
                .await
                .is_err(),
            "no extra event"
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), other.message())
            .await
            .is_err()
    );
    // A subscriber that goes away takes nothing more: the other one gets it all.
    drop(subs.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..4 {
        a.send(Message::text(format!(r#"42["f{i}"]"#)))
            .await
            .unwrap();
    }
    for i in 0..4 {
        assert_eq!(next_event(&mut subs[0]).await.event, format!("f{i}"));
    }
}

#[tokio::test]
async fn events_no_subscriber_takes_are_refused_or_counted() {
    let mut f = fixture().await;
    let (mut a, _) = sio_client(&f.url).await;
    a.send(Message::text(r#"425["nobody",1]"#)).await.unwrap();
    assert_eq!(
        next_text(&mut a).await,
        r#"435[{"error":"no subscriber","event":"nobody"}]"#
    );
    a.send(Message::text(r#"42["nobody",2]"#)).await.unwrap();
    // A subscriber that never answers: the client gets an ack timeout error.
    let mut sub = f
        .client
        .subscribe(authed(sub_req("/", &["slow"])))
        .await
        .unwrap()
        .into_inner();
    a.send(Message::text(r#"426["slow"]"#)).await.unwrap();
    let ev = next_event(&mut sub).await;
    assert!(ev.wants_ack);
    assert_eq!(
        next_text(&mut a).await,
        r#"436[{"error":"ack timeout","event":"slow"}]"#
    );
    let e = f
        .client
        .ack_client_event(authed(AckClientEventRequest {
            delivery_id: ev.delivery_id,
            args: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!((f.hub.unrouted(), f.hub.refused()), (1, 1));
}

#[tokio::test]
async fn subscribe_and_ack_refuse_bad_arguments() {
    let mut f = fixture().await;
    for (req, field) in [
        (sub_req("/nope", &[]), "namespace:"),
        (sub_req("/", &["ok", ""]), "events[1]:"),
        (sub_req("/", &["disconnect"]), "events[0]:"),
    ] {
        let e = f.client.subscribe(authed(req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    // A name a dynamic namespace accepts is fine before any client created it.
    f.io.dyn_ns(|n| n.starts_with("/dyn-"), |_| {});
    f.client
        .subscribe(authed(sub_req("/dyn-x", &[])))
        .await
        .unwrap();
    assert!(f.io.of("/dyn-x").is_none());
    let e = f
        .client
        .subscribe(Request::new(sub_req("/", &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = f
        .client
        .ack_client_event(authed(AckClientEventRequest {
            delivery_id: "garbage".into(),
            args: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("delivery_id:"), "{}", e.message());
    let e = f
        .client
        .ack_client_event(authed(AckClientEventRequest {
            delivery_id: "node-test/1/1".into(),
            args: args("{}"),
        }))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("args.json:"), "{}", e.message());
    // Unknown deliveries, of this node or of a node that is not there.
    for id in ["node-test/1/1", "elsewhere/1/1"] {
        let e = f
            .client
            .ack_client_event(authed(AckClientEventRequest {
                delivery_id: id.into(),
                args: None,
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}");
    }
    // The node's own server-side events cannot be spoofed through the API.
    let e = f
        .client
        .server_side_emit(authed(ServerSideEmitRequest {
            event: "skein:sub:fwd".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("event:"), "{}", e.message());
}

#[tokio::test]
async fn a_forwarded_event_tries_each_advertised_node_then_is_refused() {
    use crate::events::Filter;
    let mut f = fixture().await;
    // Two other nodes advertise a subscriber (nothing crosses with the memory adapter:
    // their answers are played here).
    let filter = Filter {
        ns: "/".into(),
        events: vec!["far".into()],
    };
    f.hub.set_remote("n1", vec![filter.clone()]);
    f.hub.set_remote("n2", vec![filter]);
    let (mut a, _) = sio_client(&f.url).await;
    let pending = |hub: &Hub| hub.pending_ids();
    for (round, ack_id) in [(1, "8"), (2, "9")] {
        a.send(Message::text(format!(r#"42{ack_id}["far",{round}]"#)))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let id = loop {
            if let Some(id) = pending(&f.hub).pop() {
                break id;
            }
            assert!(tokio::time::Instant::now() < deadline, "never pending");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The first node cannot take it: the event goes to the second one.
        f.hub.on_nack(&id);
        assert_eq!(pending(&f.hub), std::slice::from_ref(&id));
        if round == 1 {
            // The second one's subscriber answers, through the API.
            f.client
                .ack_client_event(authed(AckClientEventRequest {
                    delivery_id: id,
                    args: args(r#"["from afar"]"#),
                }))
                .await
                .unwrap();
            assert_eq!(next_text(&mut a).await, r#"438["from afar"]"#);
        } else {
            // Neither can: the client gets the error.
            f.hub.on_nack(&id);
            assert_eq!(
                next_text(&mut a).await,
                r#"439[{"error":"no subscriber","event":"far"}]"#
            );
        }
        assert!(pending(&f.hub).is_empty());
    }
}

#[tokio::test]
async fn events_queued_for_a_subscriber_that_leaves_go_to_another_or_are_counted() {
    use futures_util::StreamExt;
    let hub = Hub::new("n1", Duration::from_secs(30));
    let all = crate::events::Filter {
        ns: "/".into(),
        events: vec![],
    };
    let ev = |i: u32| ClientEvent {
        delivery_id: format!("n1/e/{i}"),
        namespace: "/".into(),
        socket_id: "s".into(),
        node: "n1".into(),
        event: "x".into(),
        args: None,
        wants_ack: false,
    };
    let a = hub.subscribe(all.clone());
    let mut b = hub.subscribe(all);
    // Round-robin: two events wait in each queue; then `a` goes away unread.
    for i in 0..4 {
        assert!(hub.deliver_local(ev(i)));
    }
    drop(a);
    let mut got = Vec::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(100), b.next()).await {
        got.push(e.delivery_id);
    }
    got.sort();
    assert_eq!(
        got,
        ["n1/e/0", "n1/e/1", "n1/e/2", "n1/e/3"],
        "b took a's queue"
    );
    assert_eq!(hub.unrouted(), 0);
    // `b` goes away with two events queued and nobody left: counted, not lost unseen.
    assert!(hub.deliver_local(ev(10)));
    assert!(hub.deliver_local(ev(11)));
    drop(b);
    assert_eq!(hub.unrouted(), 2);
}
