//! The mesh port as a stranger sees it: refused without the secret, and bad payloads
//! answered with an error, never a panic.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::proto::bus_client::BusClient;
use crate::proto::control_client::ControlClient;
use crate::proto::raft_client::RaftClient;
use crate::proto::{BusFrame, JoinRequest, ProposeRequest, RaftRequest, StatusRequest};
use crate::{Mesh, MeshConfig};

fn authed<T>(msg: T, secret: &str) -> Request<T> {
    let mut req = Request::new(msg);
    let value: MetadataValue<_> = format!("Bearer {secret}").parse().unwrap();
    req.metadata_mut().insert("authorization", value);
    req
}

#[tokio::test]
async fn the_mesh_port_refuses_strangers_and_bad_payloads() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = MeshConfig::new(addr, dir.path(), "s3cret");
        config.node_id = Some("solo".into());
        let mesh = Mesh::start_on(config, listener).await.unwrap();
        mesh.joined(Duration::from_secs(10)).await.unwrap();

        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut control = ControlClient::new(channel.clone());
        let mut raft = RaftClient::new(channel);

        // No secret, a wrong one, a prefix of the right one: refused before any handler.
        let e = control.status(StatusRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        for wrong in ["s3creT", "s3cre", "s3crett"] {
            let e = control
                .status(authed(StatusRequest {}, wrong))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{wrong}");
        }
        let e = raft
            .vote(authed(
                RaftRequest {
                    payload: b"{}".to_vec(),
                },
                "nope",
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        // With the secret: served.
        let status = control
            .status(authed(StatusRequest {}, "s3cret"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.node, "solo");
        assert!(status.initialized);

        // Garbage from an authenticated peer is an error reply, and the node lives on.
        for payload in [b"".to_vec(), b"{\"vote\":".to_vec(), vec![0xff; 64]] {
            let e = raft
                .append_entries(authed(
                    RaftRequest {
                        payload: payload.clone(),
                    },
                    "s3cret",
                ))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            let e = control
                .join(authed(
                    JoinRequest {
                        member: payload.clone(),
                    },
                    "s3cret",
                ))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            let e = control
                .propose(authed(ProposeRequest { command: payload }, "s3cret"))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
        }
        let status = control
            .status(authed(StatusRequest {}, "s3cret"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.leader_id, Some(status.raft_id));
        mesh.halt().await;
    })
    .await
    .expect("test bounded at 30 s");
}

#[tokio::test]
async fn the_bus_refuses_strangers_and_hands_frames_over_in_order() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = MeshConfig::new(addr, dir.path(), "s3cret");
        config.node_id = Some("solo".into());
        let mesh = Mesh::start_on(config, listener).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        mesh.set_bus_sink(std::sync::Arc::new(move |_kind: u32, p: bytes::Bytes| {
            let _ = tx.send(p);
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut bus = BusClient::new(channel);
        let frames = |n: u32| {
            tokio_stream::iter((0..n).map(|i| BusFrame {
                payload: bytes::Bytes::from(i.to_string()),
                kind: 0,
            }))
        };
        // A stranger's stream is refused, and nothing it sent reaches the node.
        let e = bus.stream(frames(3)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = bus.stream(authed(frames(3), "wrong")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        // With the secret: every frame, in order, and the receiver's incarnation.
        let resp = bus.stream(authed(frames(500), "s3cret")).await.unwrap();
        let inc = resp.metadata().get("x-skein-incarnation").unwrap();
        assert_eq!(inc.to_str().unwrap(), mesh.incarnation().to_string());
        for i in 0..500u32 {
            let p = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(p, bytes::Bytes::from(i.to_string()), "frames in order");
        }
        mesh.halt().await;
    })
    .await
    .expect("test bounded at 30 s");
}
