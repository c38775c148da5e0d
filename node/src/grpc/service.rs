//! `skein.v1.Skein`: each call maps onto the namespace's broadcast operators or adapter,
//! so it has cluster-wide effect.

use std::pin::Pin;

use futures_util::Stream;
use skein::adapter::cluster::ClusterFactory;
use skein::adapter::EventPacket;
use skein::SocketIo;
use skein_proto::v1::skein_server::Skein;
use skein_proto::v1::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::args;
use crate::events::{AckOutcome, Filter, Hub, SubStream};

/// The API over one node's server.
#[derive(Clone)]
pub struct Api {
    io: SocketIo,
    cluster: Option<ClusterFactory>,
    node_id: String,
    hub: Hub,
}

impl Api {
    /// The API of a node whose sockets route their unhandled events through `hub`.
    pub fn new(io: SocketIo, cluster: Option<ClusterFactory>, node_id: String, hub: Hub) -> Self {
        Api {
            io,
            cluster,
            node_id,
            hub,
        }
    }

    fn max_payload(&self) -> usize {
        self.io.config().engine.max_payload
    }
}

fn adapter_err(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("cluster: {e}"))
}

type AckStreamOut = Pin<Box<dyn Stream<Item = Result<EmitWithAckEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Skein for Api {
    async fn emit(&self, req: Request<EmitRequest>) -> Result<Response<EmitResponse>, Status> {
        let r = req.into_inner();
        let (ns, mut opts) = args::selector(&self.io, r.target.as_ref())?;
        opts.flags.volatile = r.volatile;
        let packet = EventPacket {
            event: args::event(&r.event)?,
            data: args::data(r.args.as_ref(), self.max_payload())?,
        };
        ns.adapter()
            .broadcast(&packet, &opts)
            .map_err(adapter_err)?;
        Ok(Response::new(EmitResponse {}))
    }

    type EmitWithAckStream = AckStreamOut;

    async fn emit_with_ack(
        &self,
        req: Request<EmitWithAckRequest>,
    ) -> Result<Response<Self::EmitWithAckStream>, Status> {
        let r = req.into_inner();
        let (ns, mut opts) = args::selector(&self.io, r.target.as_ref())?;
        let timeout = args::timeout("timeout_ms", r.timeout_ms)?;
        opts.flags.timeout = Some(timeout);
        let packet = EventPacket {
            event: args::event(&r.event)?,
            data: args::data(r.args.as_ref(), self.max_payload())?,
        };
        let mut stream = ns
            .adapter()
            .broadcast_with_ack(packet, opts)
            .await
            .map_err(adapter_err)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            while let Some(data) = stream.next_ack(deadline).await {
                let ack = emit_with_ack_event::Event::Ack(Ack {
                    args: Some(args::to_args(data)),
                });
                if tx
                    .send(Ok(EmitWithAckEvent { event: Some(ack) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let s = stream.summary();
            let summary = AckSummary {
                expected: s.expected,
                received: s.received,
                timed_out: s.timed_out,
                missing_nodes: s.missing_nodes as u64,
            };
            let ev = emit_with_ack_event::Event::Summary(summary);
            let _ = tx.send(Ok(EmitWithAckEvent { event: Some(ev) })).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn sockets_join(&self, req: Request<RoomsRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let (ns, opts) = args::selector(&self.io, r.target.as_ref())?;
        let rooms = args::room_list(&r.rooms)?;
        // Returns once the joins are visible on every node (the mesh's join promise).
        ns.adapter()
            .add_sockets_visible(&opts, &rooms)
            .await
            .map_err(adapter_err)?;
        Ok(Response::new(Empty {}))
    }

    async fn sockets_leave(&self, req: Request<RoomsRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let (ns, opts) = args::selector(&self.io, r.target.as_ref())?;
        let rooms = args::room_list(&r.rooms)?;
        ns.adapter()
            .del_sockets(&opts, &rooms)
            .map_err(adapter_err)?;
        Ok(Response::new(Empty {}))
    }

    async fn disconnect_sockets(
        &self,
        req: Request<DisconnectRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let (ns, opts) = args::selector(&self.io, r.target.as_ref())?;
        ns.adapter()
            .disconnect_sockets(&opts, r.close)
            .map_err(adapter_err)?;
        Ok(Response::new(Empty {}))
    }

    async fn fetch_sockets(
        &self,
        req: Request<FetchSocketsRequest>,
    ) -> Result<Response<FetchSocketsResponse>, Status> {
        let r = req.into_inner();
        let (ns, opts) = args::selector(&self.io, r.target.as_ref())?;
        let size = match r.page_size {
            0 => 1000,
            n @ 1..=10_000 => n as usize,
            _ => {
                return Err(Status::invalid_argument(
                    "page_size: must be between 1 and 10000",
                ))
            }
        };
        let after = args::page_token(&r.page_token)?;
        let g = ns
            .adapter()
            .fetch_sockets(opts)
            .await
            .map_err(adapter_err)?;
        let mut all = g.items;
        all.sort_by_key(|s| s.id);
        // The token is the last id of the previous page: pages stay consistent as sockets
        // come and go, at the price of one fetch per page.
        let start = match after {
            None => 0,
            Some(last) => all.partition_point(|s| s.id.as_str() <= last.as_str()),
        };
        let page: Vec<_> = all.iter().skip(start).take(size).collect();
        let next_page_token = if start + page.len() < all.len() {
            page.last().map(|s| s.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let sockets = page
            .into_iter()
            .map(|s| SocketInfo {
                id: s.id.to_string(),
                node: s.node.clone().unwrap_or_default(),
                rooms: s.rooms.clone(),
                handshake_json: serde_json::to_string(&s.handshake).unwrap_or_default(),
                data_json: s.data.to_string(),
            })
            .collect();
        Ok(Response::new(FetchSocketsResponse {
            sockets,
            next_page_token,
            missing_nodes: g.missing,
        }))
    }

    async fn server_side_emit(
        &self,
        req: Request<ServerSideEmitRequest>,
    ) -> Result<Response<ServerSideEmitResponse>, Status> {
        let r = req.into_inner();
        let ns = args::namespace(&self.io, "namespace", &r.namespace)?;
        let event = args::event(&r.event)?;
        if event.starts_with(crate::events::RESERVED_PREFIX) {
            return Err(Status::invalid_argument(format!(
                "event: the prefix {:?} is reserved for the nodes",
                crate::events::RESERVED_PREFIX
            )));
        }
        let data = args::data(r.args.as_ref(), self.max_payload())?;
        if r.timeout_ms == 0 {
            ns.server_side_emit(&event, data).map_err(adapter_err)?;
            return Ok(Response::new(ServerSideEmitResponse::default()));
        }
        let timeout = args::timeout("timeout_ms", r.timeout_ms)?;
        let g = ns
            .server_side_emit_with_ack(&event, data, timeout)
            .await
            .map_err(adapter_err)?;
        let responses_json = g
            .items
            .into_iter()
            .map(|d| d.args.into_iter().next().unwrap_or_default().to_string())
            .collect();
        Ok(Response::new(ServerSideEmitResponse {
            responses_json,
            missing_nodes: g.missing,
        }))
    }

    type SubscribeStream = SubStream;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.into_inner();
        let filter = Filter {
            ns: args::subscribable_namespace(&self.io, &r.namespace)?,
            events: args::event_filter(&r.events)?,
        };
        tracing::debug!(ns = filter.ns, events = ?filter.events, "subscriber added");
        Ok(Response::new(self.hub.subscribe(filter)))
    }

    async fn ack_client_event(
        &self,
        req: Request<AckClientEventRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        if crate::events::parse_id(&r.delivery_id).is_none() {
            return Err(Status::invalid_argument(
                "delivery_id: not a delivery id of a ClientEvent",
            ));
        }
        let data = args::data(r.args.as_ref(), self.max_payload())?;
        match self.hub.ack(&r.delivery_id, data).await {
            AckOutcome::Sent => Ok(Response::new(Empty {})),
            AckOutcome::NotFound => Err(Status::not_found(
                "delivery_id: unknown, already answered, without an ack, or expired",
            )),
            AckOutcome::Unreachable(node) => Err(Status::unavailable(format!(
                "delivery_id: node {node:?} that holds it did not answer"
            ))),
        }
    }

    async fn cluster_info(
        &self,
        _req: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        let mut namespaces = Vec::new();
        let mut server_count = 1;
        let mut list = self.io.namespaces();
        list.sort_by(|a, b| a.name().cmp(b.name()));
        for ns in list {
            if ns.name() == "/" {
                server_count = ns.adapter().server_count().await as u64;
            }
            let rooms = ns.all_rooms().await.map(|g| g.items).unwrap_or_default();
            namespaces.push(NamespaceInfo {
                name: ns.name().to_owned(),
                local_sockets: ns.local_len() as u64,
                rooms,
            });
        }
        Ok(Response::new(ClusterInfoResponse {
            node_id: self.node_id.clone(),
            server_count,
            peers: self
                .cluster
                .as_ref()
                .map(|c| c.live_peers())
                .unwrap_or_default(),
            backend_up: self.cluster.as_ref().is_none_or(|c| c.backend_up()),
            namespaces,
            mesh: crate::cluster::mesh().map(|m| mesh_info(&m.metrics())),
        }))
    }
}

/// The mesh's Raft state as `ClusterInfo` shows it.
fn mesh_info(m: &skein_adapter_mesh::MeshMetrics) -> skein_proto::v1::MeshInfo {
    skein_proto::v1::MeshInfo {
        role: m.role.as_str().to_owned(),
        leader: m.leader.clone().unwrap_or_default(),
        term: m.term,
        applied_index: m.applied_index.unwrap_or(0),
        peers: m
            .peers
            .iter()
            .map(|p| skein_proto::v1::MeshPeer {
                node: p.node.clone(),
                mesh_addr: p.mesh_addr.clone(),
                voter: p.voter,
                lag: p.lag,
            })
            .collect(),
        index_rooms: m.index_rooms as u64,
        index_entries: m.index_entries as u64,
        members: m.members as u64,
        live_members: m.live_members as u64,
    }
}
