//! Starting the cluster adapter the configuration chooses. Every backend yields the
//! same handle, the cluster layer's [`ClusterFactory`]: the rest of the node (metrics,
//! the gRPC API, shutdown) does not know which backend runs.

use anyhow::{Context, Result};
use skein::adapter::cluster::ClusterFactory;
use skein::adapter::RecoveryConfig;
use skein_adapter_redis::RedisAdapterConfig;
use std::sync::{Arc, OnceLock};

/// The mesh node of this process, with `--adapter mesh` (one per process): `/metrics`
/// and `ClusterInfo` show its Raft state.
static MESH: OnceLock<Arc<skein_adapter_mesh::Mesh>> = OnceLock::new();

pub fn mesh() -> Option<&'static Arc<skein_adapter_mesh::Mesh>> {
    MESH.get()
}

use crate::config::{AdapterChoice, Config};

/// The node's cluster, when it has one (`None`: a single node, in memory).
pub async fn start(
    config: &Config,
    recovery: Option<&RecoveryConfig>,
) -> Result<Option<ClusterFactory>> {
    let node_id = config.node_id.clone().unwrap_or_default();
    let factory = match &config.adapter {
        AdapterChoice::Memory => return Ok(None),
        AdapterChoice::Redis {
            url,
            key,
            request_timeout,
            stream,
        } => {
            let streams = stream.as_ref().map(|stream| {
                let rec = recovery.cloned().unwrap_or_default();
                skein_adapter_redis::streams::StreamsConfig {
                    stream: stream.clone(),
                    max_len: rec.log_max_len,
                    max_disconnection: rec.max_disconnection_duration,
                    max_age: rec.log_max_age,
                    ..Default::default()
                }
            });
            let cfg = RedisAdapterConfig {
                url: url.clone(),
                key: key.clone(),
                request_timeout: *request_timeout,
                node_id,
            };
            let f = skein_adapter_redis::connect(cfg, streams)
                .await
                .context("cannot start the redis adapter")?;
            if let Some(stream) = stream {
                tracing::info!(
                    stream,
                    "redis streams mode: broadcasts and recovery through the stream"
                );
            }
            tracing::info!(node_id = f.node_id(), key, "redis adapter connected");
            f
        }
        AdapterChoice::Mesh(m) => {
            let mut cfg = skein_adapter_mesh::MeshConfig::new(
                m.listen,
                m.data_dir.clone(),
                m.secret.0.clone(),
            );
            cfg.node_id = config.node_id.clone();
            cfg.advertise = m.advertise.clone();
            cfg.seeds = m.seeds.clone();
            cfg.voters = m.voters;
            cfg.gone_after = m.gone_after;
            cfg.socketio_addr = format!("{}:{}", config.host, config.port);
            cfg.api_addr = config
                .grpc
                .as_ref()
                .map(|g| format!("{}:{}", config.host, g.port))
                .unwrap_or_default();
            let (f, mesh) = skein_adapter_mesh::start(cfg, m.request_timeout, recovery.cloned())
                .await
                .context("cannot start the mesh adapter")?;
            tracing::info!(
                node_id = f.node_id(),
                mesh = %mesh.local_addr(),
                seeds = ?m.seeds,
                "mesh adapter started; joining the cluster in the background"
            );
            let _ = MESH.set(mesh);
            f
        }
        AdapterChoice::Nats { config, replicas } => {
            let mut cfg = config.clone();
            cfg.node_id = node_id;
            let js = recovery.map(|rec| skein_adapter_nats::jetstream::JetStreamConfig {
                max_len: rec.log_max_len,
                max_age: rec.log_max_age,
                max_disconnection: rec.max_disconnection_duration,
                replicas: *replicas,
            });
            let with_js = js.is_some();
            let f = skein_adapter_nats::connect(cfg, js)
                .await
                .context("cannot start the nats adapter")?;
            tracing::info!(
                node_id = f.node_id(),
                prefix = config.prefix,
                jetstream = with_js,
                "nats adapter connected"
            );
            f
        }
    };
    Ok(Some(factory))
}
