//! The mesh port's gRPC server: the `Raft` and `Control` services of
//! `skein.mesh.v1`, behind the cluster secret.
//!
//! Everything a peer sends is decoded here: a payload that does not decode is
//! `INVALID_ARGUMENT`, never a panic. A stopped node answers `UNAVAILABLE` (its
//! connections may outlive it for a moment), so that it reads as dead to its peers.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::core::{Core, Outcome};
use crate::error::MeshError;
use crate::network::{Auth, MAX_MESSAGE};
use crate::proto::bus_server::{Bus, BusServer};
use crate::proto::control_server::{Control, ControlServer};
use crate::proto::raft_server::{Raft as RaftRpc, RaftServer};
use crate::proto::{
    join_reply, propose_reply, BusFrame, JoinReply, JoinRequest, ProposeReply, ProposeRequest,
    RaftReply, RaftRequest, StatusReply, StatusRequest, WaitAppliedReply, WaitAppliedRequest,
};
use crate::state::Member;

/// The longest a `WaitApplied` call may ask to wait.
const MAX_WAIT: Duration = Duration::from_secs(30);

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes).map_err(|e| Status::invalid_argument(format!("payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))
}

fn unavailable(e: MeshError) -> Status {
    match e {
        MeshError::Config(m) => Status::invalid_argument(m),
        e => Status::unavailable(e.to_string()),
    }
}

struct Handlers {
    core: Arc<Core>,
}

impl Handlers {
    fn running(&self) -> Result<(), Status> {
        self.core.check_running().map_err(unavailable)
    }
}

#[tonic::async_trait]
impl RaftRpc for Arc<Handlers> {
    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.running()?;
        let rpc = decode(&req.into_inner().payload)?;
        let result = self.core.raft.append_entries(rpc).await;
        Ok(Response::new(RaftReply {
            payload: encode(&result)?,
        }))
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.running()?;
        let rpc = decode(&req.into_inner().payload)?;
        let result = self.core.raft.vote(rpc).await;
        Ok(Response::new(RaftReply {
            payload: encode(&result)?,
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.running()?;
        let rpc = decode(&req.into_inner().payload)?;
        let result = self.core.raft.install_snapshot(rpc).await;
        Ok(Response::new(RaftReply {
            payload: encode(&result)?,
        }))
    }
}

#[tonic::async_trait]
impl Control for Arc<Handlers> {
    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.running()?;
        Ok(Response::new(self.core.status()))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        self.running()?;
        let member: Member = decode(&req.into_inner().member)?;
        let outcome = if self.core.is_leader() {
            self.core.admit(member).await.map_err(unavailable)?
        } else {
            Err(self.core.leader().map(|l| l.1))
        };
        let outcome = match outcome {
            Ok(index) => join_reply::Outcome::Index(index),
            Err(leader) => join_reply::Outcome::LeaderAddr(leader.unwrap_or_default()),
        };
        Ok(Response::new(JoinReply {
            outcome: Some(outcome),
        }))
    }

    async fn propose(
        &self,
        req: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        self.running()?;
        let command = decode(&req.into_inner().command)?;
        let outcome: Outcome = if self.core.is_leader() {
            self.core
                .propose_local(command)
                .await
                .map_err(unavailable)?
        } else {
            Err(self.core.leader().map(|l| l.1))
        };
        let outcome = match outcome {
            Ok(index) => propose_reply::Outcome::Index(index),
            Err(leader) => propose_reply::Outcome::LeaderAddr(leader.unwrap_or_default()),
        };
        Ok(Response::new(ProposeReply {
            outcome: Some(outcome),
        }))
    }

    async fn wait_applied(
        &self,
        req: Request<WaitAppliedRequest>,
    ) -> Result<Response<WaitAppliedReply>, Status> {
        self.running()?;
        let req = req.into_inner();
        let timeout = Duration::from_millis(u64::from(req.timeout_ms)).min(MAX_WAIT);
        let applied = self.core.wait_applied(req.index, timeout).await;
        Ok(Response::new(WaitAppliedReply { applied }))
    }
}

/// The metadata key of the receiving process's incarnation on a `Bus` stream.
pub(crate) const INCARNATION: &str = "x-skein-incarnation";

type FrameStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<BusFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Bus for Arc<Handlers> {
    type StreamStream = FrameStream;

    /// Reads the sender's frames in order on one task and hands them to the sink; the
    /// answer stream stays open (and empty) until the sender or this node stops.
    async fn stream(
        &self,
        req: Request<tonic::Streaming<BusFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        self.running()?;
        let mut frames = req.into_inner();
        let core = self.core.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BusFrame, Status>>(1);
        tokio::spawn(async move {
            let mut halted = core.halted.subscribe();
            loop {
                tokio::select! {
                    frame = frames.message() => match frame {
                        Ok(Some(f)) => {
                            if let Some(sink) = core.bus.get() {
                                sink(f.kind, f.payload);
                            }
                        }
                        _ => break,
                    },
                    _ = halted.wait_for(|h| *h) => break,
                }
            }
            drop(tx);
        });
        let mut resp =
            Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as FrameStream);
        if let Ok(v) = self.core.incarnation.to_string().parse() {
            resp.metadata_mut().insert(INCARNATION, v);
        }
        Ok(resp)
    }
}

/// Serves the mesh services on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    core: Arc<Core>,
    auth: Auth,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let handlers = Arc::new(Handlers { core });
    let check = |auth: Auth| {
        move |req: Request<()>| -> Result<Request<()>, Status> {
            auth.check(req.metadata())?;
            Ok(req)
        }
    };
    let raft = RaftServer::new(handlers.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let control = ControlServer::new(handlers.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let bus = BusServer::new(handlers)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(InterceptedService::new(raft, check(auth.clone())))
        .add_service(InterceptedService::new(control, check(auth.clone())))
        .add_service(InterceptedService::new(bus, check(auth)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
