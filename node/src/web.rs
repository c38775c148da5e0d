//! The node's HTTP routes besides Socket.IO: the demo page and the client bundle.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use skein::adapter::cluster::ClusterFactory;
use skein::http::HttpHandler;
use skein::SocketIo;

use crate::apps::demo::INDEX_HTML;
use crate::config::Config;

/// Where the official client bundle is looked for when no path is configured: the
/// demo's own npm install, relative to the working directory and to this crate.
fn bundle_candidates() -> Vec<PathBuf> {
    let rel = "node_modules/socket.io-client/dist/socket.io.min.js";
    vec![
        PathBuf::from("node/demo").join(rel),
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("demo")
            .join(rel),
    ]
}

fn load_bundle(config: &Config) -> Result<Option<Bytes>> {
    if let Some(p) = &config.client_bundle {
        let b = std::fs::read(p)
            .map_err(|e| anyhow::anyhow!("cannot read client bundle {}: {e}", p.display()))?;
        return Ok(Some(Bytes::from(b)));
    }
    for p in bundle_candidates() {
        if let Ok(b) = std::fs::read(&p) {
            tracing::debug!(path = %p.display(), "serving the official client bundle");
            return Ok(Some(Bytes::from(b)));
        }
    }
    if config.demo {
        tracing::warn!(
            "the official client bundle was not found: run `npm ci --prefix node/demo` or pass --client-bundle"
        );
    }
    Ok(None)
}

fn respond(status: StatusCode, ctype: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(body))
        .expect("static response parts are valid")
}

/// What `/metrics` reports (Prometheus text format).
#[derive(Clone)]
pub struct Metrics {
    pub io: SocketIo,
    pub cluster: Option<ClusterFactory>,
    /// The gRPC API's subscriber hub, when the API is on.
    pub hub: Option<crate::grpc::Hub>,
}

impl Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE skein_engine_sessions gauge\n");
        out.push_str(&format!(
            "skein_engine_sessions {}\n",
            self.io.engine().session_count()
        ));
        // One series per namespace the application registered; the children of dynamic
        // namespaces, whose names clients choose, are summed in one, so that the number of
        // series stays bounded whatever clients send.
        out.push_str("# TYPE skein_namespace_sockets gauge\n");
        let (mut children, mut child_sockets) = (0usize, 0usize);
        for ns in self.io.namespaces() {
            if ns.is_child() {
                children += 1;
                child_sockets += ns.local_len();
                continue;
            }
            out.push_str(&format!(
                "skein_namespace_sockets{{nsp=\"{}\"}} {}\n",
                label(ns.name()),
                ns.local_len()
            ));
        }
        if children > 0 {
            out.push_str(&format!(
                "skein_namespace_sockets{{nsp=\"(dynamic children)\"}} {child_sockets}\n"
            ));
        }
        out.push_str("# HELP skein_dynamic_child_namespaces Children of dynamic namespaces that exist now.\n");
        out.push_str("# TYPE skein_dynamic_child_namespaces gauge\n");
        out.push_str(&format!("skein_dynamic_child_namespaces {children}\n"));
        if let Some(h) = &self.hub {
            for (name, help, kind, v) in [
                ("skein_grpc_subscribers", "Subscribe streams open on this node.", "gauge", h.subscribers() as u64),
                ("skein_grpc_events_delivered_total", "Client events handed to a subscriber of this node.", "counter", h.delivered()),
                ("skein_grpc_events_unrouted_total", "Client events without an ack that no subscriber could take (dropped).", "counter", h.unrouted()),
                ("skein_grpc_events_refused_total", "Client events with an ack that no subscriber could take (answered with an error).", "counter", h.refused()),
            ] {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
            }
        }
        if let Some(c) = &self.cluster {
            out.push_str("# HELP skein_cluster_undelivered_total Messages that could not reach the other nodes.\n");
            out.push_str("# TYPE skein_cluster_undelivered_total counter\n");
            out.push_str(&format!(
                "skein_cluster_undelivered_total {}\n",
                c.undelivered()
            ));
            out.push_str("# TYPE skein_cluster_backend_up gauge\n");
            out.push_str(&format!(
                "skein_cluster_backend_up {}\n",
                u8::from(c.backend_up())
            ));
            out.push_str("# TYPE skein_cluster_peers gauge\n");
            out.push_str(&format!("skein_cluster_peers {}\n", c.live_peers().len()));
        }
        if let Some(m) = crate::cluster::mesh() {
            mesh_metrics(&mut out, &m.metrics());
        }
        out
    }
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn handler(io: &SocketIo, config: &Config, metrics: Metrics) -> Result<HttpHandler> {
    let bundle = load_bundle(config)?;
    let demo = config.demo;
    let path = config.io.engine.path.clone();
    let io = io.clone();
    Ok(Arc::new(move |req| {
        let io = io.clone();
        let p = req.uri().path();
        let is_bundle = p
            .strip_prefix(path.as_str())
            .is_some_and(|rest| rest == "socket.io.js" || rest == "socket.io.min.js");
        if is_bundle {
            let r = match &bundle {
                Some(b) => respond(StatusCode::OK, "application/javascript", b.clone()),
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    Bytes::from_static(b"client bundle not installed"),
                ),
            };
            return Box::pin(async move { r });
        }
        // Kubernetes probes: live while the process serves; ready until a drain starts.
        if p == "/health/live" || p == "/health/ready" {
            let r = if p == "/health/ready" && io.is_draining() {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    Bytes::from_static(b"draining"),
                )
            } else {
                respond(StatusCode::OK, "text/plain", Bytes::from_static(b"ok"))
            };
            return Box::pin(async move { r });
        }
        if p == "/metrics" {
            let r = respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(metrics.render()),
            );
            return Box::pin(async move { r });
        }
        if demo && (p == "/" || p == "/index.html") {
            let r = respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                Bytes::from_static(INDEX_HTML.as_bytes()),
            );
            return Box::pin(async move { r });
        }
        Box::pin(async move { io.handle(req).await })
    }))
}

/// The mesh's Raft state (`--adapter mesh`).
fn mesh_metrics(out: &mut String, m: &skein_adapter_mesh::MeshMetrics) {
    let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        ));
    };
    out.push_str("# HELP skein_mesh_role This node's part in Raft (1 for its role).\n");
    out.push_str("# TYPE skein_mesh_role gauge\n");
    for role in ["leader", "follower", "candidate", "learner", "stopped"] {
        out.push_str(&format!(
            "skein_mesh_role{{role=\"{role}\"}} {}\n",
            u8::from(m.role.as_str() == role)
        ));
    }
    out.push_str("# HELP skein_mesh_leader The leader this node follows (1; none when unknown).\n");
    out.push_str("# TYPE skein_mesh_leader gauge\n");
    if let Some(l) = &m.leader {
        out.push_str(&format!("skein_mesh_leader{{node=\"{}\"}} 1\n", label(l)));
    }
    gauge(
        out,
        "skein_mesh_is_leader",
        "Whether this node leads.",
        u64::from(m.role.as_str() == "leader"),
    );
    gauge(out, "skein_mesh_term", "The Raft term.", m.term);
    gauge(
        out,
        "skein_mesh_applied_index",
        "The last log index this node applied.",
        m.applied_index.unwrap_or(0),
    );
    gauge(
        out,
        "skein_mesh_last_log_index",
        "The last log index this node holds.",
        m.last_log_index.unwrap_or(0),
    );
    gauge(
        out,
        "skein_mesh_members",
        "Members listed in the replicated state.",
        m.members as u64,
    );
    gauge(
        out,
        "skein_mesh_live_members",
        "Members that are not gone.",
        m.live_members as u64,
    );
    gauge(
        out,
        "skein_mesh_index_rooms",
        "Rooms in the replicated room index.",
        m.index_rooms as u64,
    );
    gauge(
        out,
        "skein_mesh_index_entries",
        "(namespace, room, node) entries in the room index.",
        m.index_entries as u64,
    );
    out.push_str("# HELP skein_mesh_peers Other nodes of Raft's membership (voter 1 or 0).\n");
    out.push_str("# TYPE skein_mesh_peers gauge\n");
    for p in &m.peers {
        out.push_str(&format!(
            "skein_mesh_peers{{node=\"{}\",mesh_addr=\"{}\"}} {}\n",
            label(&p.node),
            label(&p.mesh_addr),
            u8::from(p.voter)
        ));
    }
    out.push_str(
        "# HELP skein_mesh_peer_lag Entries a peer is behind the leader's log (on the leader).\n",
    );
    out.push_str("# TYPE skein_mesh_peer_lag gauge\n");
    for p in &m.peers {
        if let Some(lag) = p.lag {
            out.push_str(&format!(
                "skein_mesh_peer_lag{{node=\"{}\"}} {lag}\n",
                label(&p.node)
            ));
        }
    }
}
