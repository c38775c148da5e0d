//! The client side of the mesh: connections to other nodes, the cluster secret on every
//! call, and openraft's network over the `Raft` service.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::proto::control_client::ControlClient;
use crate::proto::raft_client::RaftClient;
use crate::proto::{RaftReply, RaftRequest};
use crate::raft_types::{MeshNode, RaftError, RpcError, TypeConfig};

/// Largest message a node accepts or sends (snapshot chunks are kept well below it).
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// Adds `authorization: Bearer <secret>` to outgoing calls, and checks it on incoming
/// ones (in constant time: the comparison does not tell how much of a guess matched).
#[derive(Clone)]
pub(crate) struct Auth {
    header: AsciiMetadataValue,
}

impl Auth {
    pub(crate) fn new(secret: &str) -> Result<Auth, String> {
        format!("Bearer {secret}")
            .parse()
            .map(|header| Auth { header })
            .map_err(|_| "the cluster secret is not a valid header value".to_string())
    }

    pub(crate) fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let given = metadata
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if constant_time_eq(given, self.header.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("bad or missing cluster secret"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // The length of the secret is not a secret worth hiding; its bytes are.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(req)
    }
}

pub(crate) type Authed = InterceptedService<Channel, Auth>;

/// Connections to other nodes by mesh address, shared by Raft and the control calls.
/// A channel connects lazily and reconnects by itself; one HTTP/2 connection carries
/// every call to a node.
pub(crate) struct Peers {
    auth: Auth,
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    pub(crate) fn new(auth: Auth, timeout: Duration) -> Peers {
        Peers {
            auth,
            timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn auth(&self) -> Auth {
        self.auth.clone()
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        if let Some(c) = self.channels.lock().get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad mesh address {addr:?}: {e}")))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(self.timeout);
        let channel = endpoint.connect_lazy();
        self.channels
            .lock()
            .insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub(crate) fn raft(&self, addr: &str) -> Result<RaftClient<Authed>, Status> {
        Ok(
            RaftClient::with_interceptor(self.channel(addr)?, self.auth.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
    }

    pub(crate) fn control(&self, addr: &str) -> Result<ControlClient<Authed>, Status> {
        Ok(
            ControlClient::with_interceptor(self.channel(addr)?, self.auth.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
    }
}

/// Bounds a call: an unanswered call is an error after `timeout`, never a hang.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("no answer in time")),
    }
}

/// openraft's network: one [`PeerConn`] per target node.
pub(crate) struct Network {
    pub(crate) peers: std::sync::Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: u64, node: &MeshNode) -> PeerConn {
        PeerConn {
            target,
            addr: node.mesh.clone(),
            peers: self.peers.clone(),
        }
    }
}

pub(crate) struct PeerConn {
    target: u64,
    addr: String,
    peers: std::sync::Arc<Peers>,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl PeerConn {
    async fn call<Q, A, E>(&self, rpc: Rpc, req: &Q, ttl: Duration) -> Result<A, RpcError<E>>
    where
        Q: Serialize,
        A: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            serde_json::to_vec(req).map_err(|e| RpcError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .peers
            .raft(&self.addr)
            .map_err(|e| RpcError::Unreachable(Unreachable::new(&e)))?;
        let request = RaftRequest { payload };
        let reply: Result<RaftReply, Status> = match rpc {
            Rpc::Append => bounded(ttl, client.append_entries(request)).await,
            Rpc::Vote => bounded(ttl, client.vote(request)).await,
            Rpc::Snapshot => bounded(ttl, client.install_snapshot(request)).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            // Not listening, connection refused or reset: back off before the next try.
            Code::Unavailable | Code::Unknown => RpcError::Unreachable(Unreachable::new(&status)),
            _ => RpcError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<A, RaftError<E>> = serde_json::from_slice(&reply.payload)
            .map_err(|e| RpcError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RpcError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError> {
        self.call(Rpc::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcError<InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcError> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}
