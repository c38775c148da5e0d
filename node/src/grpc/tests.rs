//! In-process tests of every RPC: the API over a `tokio::io::duplex` channel, the
//! Socket.IO server on a loopback port with raw WebSocket clients.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use skein::SocketIo;
use skein_proto::v1::skein_client::SkeinClient;
use skein_proto::v1::*;
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request};

use super::{api_service, Api, Auth, Hub};

const TOKEN: &str = "test-token";

pub(super) struct Fixture {
    pub io: SocketIo,
    pub url: String,
    pub client: SkeinClient<Channel>,
    pub hub: Hub,
}

pub(super) async fn fixture() -> Fixture {
    let io = SocketIo::default();
    let hub = Hub::new("node-test", Duration::from_millis(800));
    let h = hub.clone();
    io.ns("/", move |s| {
        h.install(&s);
        s.join("lobby");
        s.on("echo", |_, d, ack| {
            if let Some(a) = ack {
                a.send(d);
            }
        });
    });
    io.ns("/other", |_| {});
    hub.attach(&io.of("/").unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        listener.local_addr().unwrap()
    );
    tokio::spawn(skein::http::serve(
        listener,
        io.http_handler(),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let svc = api_service(
        Api::new(io.clone(), None, "node-test".into(), hub.clone()),
        Auth::new(vec![TOKEN.into()]),
    );
    tokio::spawn(
        Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_io))),
    );
    let mut slot = Some(client_io);
    let channel = Endpoint::try_from("http://in-process")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let io = slot.take();
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("connector used twice"))
            }
        }))
        .await
        .unwrap();
    Fixture {
        io,
        url,
        client: SkeinClient::new(channel),
        hub,
    }
}

pub(super) fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw Socket.IO client on `/`: returns it with its socket id.
pub(super) async fn sio_client(url: &str) -> (Ws, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = next_text(&mut ws).await;
    assert!(open.starts_with('0'), "{open}");
    ws.send(Message::text("40")).await.unwrap();
    let connect = next_text(&mut ws).await;
    let v: serde_json::Value = serde_json::from_str(&connect[2..]).unwrap();
    (ws, v["sid"].as_str().unwrap().to_owned())
}

/// The next text message, answering pings; panics after 5 s.
pub(super) async fn next_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .expect("valid frame");
        if let Message::Text(t) = m {
            if t.as_str() == "2" {
                ws.send(Message::text("3")).await.unwrap();
                continue;
            }
            return t.to_string();
        }
    }
}

fn target(rooms: &[&str]) -> Option<Selector> {
    Some(Selector {
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    })
}

pub(super) fn args(json: &str) -> Option<Args> {
    Some(Args {
        json: json.into(),
        binary: vec![],
    })
}

#[tokio::test]
async fn calls_need_a_valid_bearer_token() {
    let mut f = fixture().await;
    let e = f
        .client
        .cluster_info(ClusterInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut r = Request::new(ClusterInfoRequest {});
    r.metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        f.client.cluster_info(r).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let info = f
        .client
        .cluster_info(authed(ClusterInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-test");
    assert_eq!(info.server_count, 1);
    let names: Vec<_> = info.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["/", "/other"]);
}

#[tokio::test]
async fn bad_arguments_name_the_field() {
    let mut f = fixture().await;
    let cases = [
        (
            EmitRequest {
                target: Some(Selector {
                    namespace: "/nope".into(),
                    ..Default::default()
                }),
                event: "e".into(),
                ..Default::default()
            },
            "target.namespace",
        ),
        (
            EmitRequest {
                target: target(&[""]),
                event: "e".into(),
                ..Default::default()
            },
            "target.rooms[0]",
        ),
        (
            EmitRequest {
                event: "e".into(),
                args: args("{not json"),
                ..Default::default()
            },
            "args.json",
        ),
        (
            EmitRequest {
                event: "e".into(),
                args: args("{\"a\":1}"),
                ..Default::default()
            },
            "args.json",
        ),
        (
            EmitRequest {
                event: "e".into(),
                args: args("[{\"_placeholder\":true,\"num\":0}]"),
                ..Default::default()
            },
            "args.json",
        ),
        (
            EmitRequest {
                event: "disconnect".into(),
                ..Default::default()
            },
            "event",
        ),
        (
            EmitRequest {
                event: String::new(),
                ..Default::default()
            },
            "event",
        ),
        (
            EmitRequest {
                event: "e".into(),
                args: Some(Args {
                    json: "[]".into(),
                    binary: vec![vec![0; 1_000_001]],
                }),
                ..Default::default()
            },
            "args",
        ),
        // An event name cannot carry what max_payload refuses in the arguments.
        (
            EmitRequest {
                event: "e".repeat(3_000_000),
                ..Default::default()
            },
            "event",
        ),
        (
            EmitRequest {
                event: "e".repeat(257),
                ..Default::default()
            },
            "event",
        ),
        // More attachments than a client may send in one packet.
        (
            EmitRequest {
                event: "e".into(),
                args: Some(Args {
                    json: "[]".into(),
                    binary: vec![vec![1]; 2000],
                }),
                ..Default::default()
            },
            "args.binary",
        ),
    ];
    for (req, field) in cases {
        let e = f.client.emit(authed(req.clone())).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert!(
            e.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            e.message()
        );
    }
    let e = f
        .client
        .sockets_join(authed(RoomsRequest {
            target: None,
            rooms: vec![],
        }))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("rooms:"), "{}", e.message());
    let e = f
        .client
        .emit_with_ack(authed(EmitWithAckRequest {
            event: "e".into(),
            timeout_ms: 0,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("timeout_ms:"), "{}", e.message());
    let e = f
        .client
        .fetch_sockets(authed(FetchSocketsRequest {
            page_size: 20_000,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("page_size:"), "{}", e.message());
    for token in ["garbage", "x".repeat(500).as_str(), "../../etc"] {
        let e = f
            .client
            .fetch_sockets(authed(FetchSocketsRequest {
                page_token: token.into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{token}");
        assert!(e.message().starts_with("page_token:"), "{}", e.message());
    }
    // The node is fine afterwards.
    f.client
        .emit(authed(EmitRequest {
            event: "ok".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
}

#[tokio::test]
async fn emit_join_leave_and_disconnect_reach_clients() {
    let mut f = fixture().await;
    let (mut a, a_id) = sio_client(&f.url).await;
    let (mut b, _) = sio_client(&f.url).await;
    let bin = Args {
        json: r#"["hi",{"_placeholder":true,"num":0}]"#.into(),
        binary: vec![vec![1, 2, 3]],
    };
    f.client
        .emit(authed(EmitRequest {
            target: target(&["lobby"]),
            event: "news".into(),
            args: Some(bin),
            ..Default::default()
        }))
        .await
        .unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(
            next_text(ws).await,
            r#"451-["news","hi",{"_placeholder":true,"num":0}]"#
        );
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m.into_data().as_ref(), &[1, 2, 3]);
    }
    // Join only `a` (its own room is its id), then emit to the new room.
    f.client
        .sockets_join(authed(RoomsRequest {
            target: target(&[&a_id]),
            rooms: vec!["vip".into()],
        }))
        .await
        .unwrap();
    f.client
        .emit(authed(EmitRequest {
            target: target(&["vip"]),
            event: "vip".into(),
            args: args("[1]"),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(next_text(&mut a).await, r#"42["vip",1]"#);
    let sock = f.io.of("/").unwrap().socket(a_id.parse().unwrap()).unwrap();
    assert!(sock.rooms().contains(&"vip".to_owned()));
    f.client
        .sockets_leave(authed(RoomsRequest {
            target: target(&[&a_id]),
            rooms: vec!["vip".into()],
        }))
        .await
        .unwrap();
    assert!(!sock.rooms().contains(&"vip".to_owned()));
    // `b` got nothing meanwhile: the next thing it sees is its disconnect.
    f.client
        .disconnect_sockets(authed(DisconnectRequest {
            target: target(&["lobby"]),
            close: false,
        }))
        .await
        .unwrap();
    assert_eq!(next_text(&mut b).await, "41");
    assert_eq!(next_text(&mut a).await, "41");
}

#[tokio::test]
async fn emit_with_ack_streams_acks_then_a_summary() {
    let mut f = fixture().await;
    let (mut a, _) = sio_client(&f.url).await;
    let (mut b, _) = sio_client(&f.url).await;
    let req = EmitWithAckRequest {
        target: target(&["lobby"]),
        event: "q".into(),
        args: args("[7]"),
        timeout_ms: 500,
    };
    let mut stream = f
        .client
        .emit_with_ack(authed(req))
        .await
        .unwrap()
        .into_inner();
    // `a` answers, `b` never does.
    let q = next_text(&mut a).await;
    let id: String = q[2..].chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(q, format!(r#"42{id}["q",7]"#));
    a.send(Message::text(format!(r#"43{id}["yes"]"#)))
        .await
        .unwrap();
    assert!(next_text(&mut b).await.starts_with("42"));
    let first = stream.next().await.unwrap().unwrap();
    let Some(emit_with_ack_event::Event::Ack(ack)) = first.event else {
        panic!("{first:?}")
    };
    assert_eq!(ack.args.unwrap().json, r#"["yes"]"#);
    let last = stream.next().await.unwrap().unwrap();
    let Some(emit_with_ack_event::Event::Summary(s)) = last.event else {
        panic!("{last:?}")
    };
    assert_eq!(
        (s.expected, s.received, s.timed_out, s.missing_nodes),
        (2, 1, true, 0)
    );
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn fetch_sockets_pages_and_server_side_emit() {
    let mut f = fixture().await;
    let mut ids = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..3 {
        let (ws, id) = sio_client(&f.url).await;
        keep.push(ws);
        ids.push(id);
    }
    ids.sort();
    f.io.of("/")
        .unwrap()
        .socket(ids[0].parse().unwrap())
        .unwrap()
        .set_data(serde_json::json!({"k": 1}));
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = f
            .client
            .fetch_sockets(authed(FetchSocketsRequest {
                target: None,
                page_size: 2,
                page_token: token,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.sockets.len() <= 2);
        seen.extend(page.sockets.iter().map(|s| s.id.clone()));
        if let Some(s) = page.sockets.iter().find(|s| s.id == ids[0]) {
            assert_eq!(s.data_json, r#"{"k":1}"#);
            assert!(s.rooms.contains(&"lobby".to_owned()));
            assert!(s.handshake_json.contains("\"url\""));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    // A single node has no other servers: the call succeeds with no answers.
    let r = f
        .client
        .server_side_emit(authed(ServerSideEmitRequest {
            event: "x".into(),
            timeout_ms: 100,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.responses_json.is_empty() && r.missing_nodes.is_empty());
}
