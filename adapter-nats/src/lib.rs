//! Skein's NATS adapter: a transport of Skein's cluster layer (`skein::adapter::cluster`)
//! over NATS core, and with connection state recovery a JetStream log and key-value
//! bucket. The cross-node protocol is the layer's; this crate holds only what is NATS's:
//!
//! - [`subjects`]: subject names (each name one safe token);
//! - [`connection`]: the options (servers, credentials, TLS), their checks, connecting;
//! - [`transport`]: publishing, the subscriptions that follow the rooms with a local
//!   member (interest-based routing: NATS filters, a node with no member of a room
//!   never sees its broadcasts), the presence probe, and the count of what did not
//!   cross while NATS was away;
//!
//! - [`jetstream`]: with recovery, the log of broadcasts and the session store.
//!
//! Messages use the layer's native codec (MessagePack): NATS has no other server's
//! wire format to follow.

pub mod connection;
pub mod jetstream;
pub mod subjects;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use skein::adapter::cluster::{Cluster, ClusterConfig, ClusterFactory, ClusterLog};

pub use connection::{check_config, check_url};
pub use transport::NatsTransport;

/// Errors of the NATS adapter. Messages never carry a secret (password, token, seed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsAdapterError {
    /// A bad option, named by its key (`nats_url`, `nats_creds`...).
    #[error("{option}: {message}")]
    Config {
        option: &'static str,
        message: String,
    },
    #[error("NATS unreachable at {servers}: {reason}")]
    Unreachable { servers: String, reason: String },
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// How the node proves who it is to NATS (at most one).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    None,
    /// A `.creds` file (user JWT and nkey seed).
    Creds(PathBuf),
    UserPassword(String, String),
    Token(String),
    /// An nkey seed (`SU...`).
    NKey(String),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::Creds(p) => write!(f, "Creds({})", p.display()),
            NatsAuth::UserPassword(u, _) => write!(f, "UserPassword({u}, <redacted>)"),
            NatsAuth::Token(_) => f.write_str("Token(<redacted>)"),
            NatsAuth::NKey(_) => f.write_str("NKey(<redacted>)"),
        }
    }
}

/// TLS towards NATS: a CA to trust, and a client certificate when the server asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Options of the NATS adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsAdapterConfig {
    /// Servers to try, in order (`nats://host:4222`, `tls://...`).
    pub servers: Vec<String>,
    /// The first token(s) of every subject, and the name of the JetStream stream and
    /// bucket: one per cluster.
    pub prefix: String,
    pub auth: NatsAuth,
    pub tls: NatsTls,
    /// How long a cluster request waits for the other nodes.
    pub request_timeout: Duration,
    /// This node's id; random when empty.
    pub node_id: String,
}

impl Default for NatsAdapterConfig {
    fn default() -> Self {
        NatsAdapterConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            prefix: "skein".into(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            request_timeout: Duration::from_millis(5000),
            node_id: String::new(),
        }
    }
}

/// Connects to NATS and starts the node's cluster layer over it; with `recovery`, the
/// JetStream log carries broadcasts and socket management and the bucket stores the
/// sessions. A bad option or an unreachable server is an error here, so that a
/// misconfigured node fails at startup rather than running alone; once connected, the
/// client reconnects by itself.
pub async fn connect(
    config: NatsAdapterConfig,
    recovery: Option<jetstream::JetStreamConfig>,
) -> Result<ClusterFactory, NatsAdapterError> {
    let cluster = Cluster::new(ClusterConfig {
        node_id: config.node_id.clone(),
        request_timeout: config.request_timeout,
    });
    let conn = connection::connect(&config).await?;
    let transport = NatsTransport::start(
        conn.clone(),
        subjects::Subjects::new(&config.prefix),
        cluster.node_id(),
        cluster.inbound(),
        cluster.peer_count(),
        cluster.live_peers(),
    )
    .await?;
    let log = match recovery {
        Some(cfg) => Some(
            jetstream::JetStreamLog::start(
                conn,
                &config.prefix,
                cfg,
                cluster.node_id().to_owned(),
                cluster.inbound(),
                cluster.peer_count(),
            )
            .await? as Arc<dyn ClusterLog>,
        ),
        None => None,
    };
    Ok(cluster.start(transport, log))
}
