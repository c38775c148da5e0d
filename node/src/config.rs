//! Configuration: a TOML file (`--config`), then `SKEIN_*` environment variables, then
//! flags; flags win over the environment, which wins over the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Deserialize;
use skein::adapter::RecoveryConfig;
use skein::engineio::{CookieConfig, CorsConfig, CorsOrigin, TransportKind};
use skein::{EngineConfig, SocketIoConfig};

/// A Socket.IO node. Every option can also be set in the TOML file given by --config
/// (same names, with underscores: `ping_interval = 25000`) and in the environment
/// (`SKEIN_PING_INTERVAL=25000`). Flags win over the environment, which wins over the file.
#[derive(Debug, Parser, Default)]
#[command(name = "skein", version, about, long_about = None)]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, env = "SKEIN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, env = "SKEIN_HOST")]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 3000].
    #[arg(long, env = "SKEIN_PORT")]
    pub port: Option<u16>,
    /// Path of the Socket.IO endpoint [default: /socket.io/].
    #[arg(long, env = "SKEIN_PATH")]
    pub path: Option<String>,
    /// Milliseconds between server pings [default: 25000].
    #[arg(long, env = "SKEIN_PING_INTERVAL")]
    pub ping_interval: Option<u64>,
    /// Milliseconds a client has to answer a ping [default: 20000].
    #[arg(long, env = "SKEIN_PING_TIMEOUT")]
    pub ping_timeout: Option<u64>,
    /// Milliseconds a polling → WebSocket upgrade may take [default: 10000].
    #[arg(long, env = "SKEIN_UPGRADE_TIMEOUT")]
    pub upgrade_timeout: Option<u64>,
    /// Largest message or polling body in bytes (maxHttpBufferSize) [default: 1000000].
    #[arg(long, env = "SKEIN_MAX_PAYLOAD")]
    pub max_payload: Option<usize>,
    /// Milliseconds a client may stay without joining a namespace [default: 45000].
    #[arg(long, env = "SKEIN_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<u64>,
    /// Transports, comma-separated: polling,websocket [default: polling,websocket].
    #[arg(long, env = "SKEIN_TRANSPORTS", value_delimiter = ',')]
    pub transports: Option<Vec<String>>,
    /// CORS origins allowed for polling, comma-separated; `*` allows any [default: none].
    #[arg(long, env = "SKEIN_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Send Access-Control-Allow-Credentials with CORS [default: false].
    #[arg(long, env = "SKEIN_CORS_CREDENTIALS")]
    pub cors_credentials: Option<bool>,
    /// Set the `io` cookie for cookie-based sticky sessions [default: false].
    #[arg(long, env = "SKEIN_COOKIE")]
    pub cookie: Option<bool>,
    /// Compress polling responses of 1024 bytes or more [default: true].
    #[arg(long, env = "SKEIN_HTTP_COMPRESSION")]
    pub http_compression: Option<bool>,
    /// Packets queued for one client before it is dropped as too slow [default: 4096].
    #[arg(long, env = "SKEIN_MAX_BUFFERED_PACKETS")]
    pub max_buffered_packets: Option<usize>,
    /// Milliseconds given to connections to finish on shutdown [default: 5000].
    #[arg(long, env = "SKEIN_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Milliseconds a connection has to send a complete request head, from when it opens
    /// or its previous response went out; also closes idle keep-alive connections
    /// [default: 10000].
    #[arg(long, env = "SKEIN_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Milliseconds a polling POST has to deliver its body [default: 30000].
    #[arg(long, env = "SKEIN_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Connections served at once; more are answered 503 and closed
    /// [default: the open-file limit minus a reserve].
    #[arg(long, env = "SKEIN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Log filter, e.g. `info` or `skein=debug` [default: info].
    #[arg(long, env = "SKEIN_LOG")]
    pub log: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "SKEIN_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Serve the chat demo at `/`.
    #[arg(long, env = "SKEIN_DEMO")]
    pub demo: bool,
    /// Who runs the demo's chat: builtin (the node) or api (an app server through the
    /// gRPC API, e.g. examples/chat-app-server) [default: builtin].
    #[arg(long, env = "SKEIN_DEMO_LOGIC")]
    pub demo_logic: Option<String>,
    /// Register the benchmark handlers (`echo`, `join`, `pub`).
    #[arg(long, env = "SKEIN_BENCH_HANDLERS")]
    pub bench_handlers: bool,
    /// Register the test application of tests/CONTRACT.md.
    #[arg(long, env = "SKEIN_TEST_HANDLERS")]
    pub test_handlers: bool,
    /// Cluster adapter: memory (single node), redis (pub/sub) or redis-streams (pub/sub
    /// plus a stream: connection state recovery across nodes) [default: memory].
    #[arg(long, env = "SKEIN_ADAPTER")]
    pub adapter: Option<String>,
    /// Redis URL for --adapter redis [default: redis://127.0.0.1:6379].
    #[arg(long, env = "SKEIN_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Stream of --adapter redis-streams (`streamName`) [default: socket.io].
    #[arg(long, env = "SKEIN_REDIS_STREAM")]
    pub redis_stream: Option<String>,
    /// Channel prefix of the Redis adapter (`key` of @socket.io/redis-adapter) [default: socket.io].
    #[arg(long, env = "SKEIN_REDIS_KEY")]
    pub redis_key: Option<String>,
    /// Milliseconds a cluster request waits for the other nodes [default: 5000].
    #[arg(long, env = "SKEIN_REDIS_REQUEST_TIMEOUT")]
    pub redis_request_timeout: Option<u64>,
    /// This node's id in the cluster [default: random].
    #[arg(long, env = "SKEIN_NODE_ID")]
    pub node_id: Option<String>,
    /// Port of the gRPC API (skein.v1, health, reflection); 0 picks a free one [default: off].
    #[arg(long, env = "SKEIN_GRPC_PORT")]
    pub grpc_port: Option<u16>,
    /// Bearer tokens accepted by the gRPC API, comma-separated (required with --grpc-port).
    #[arg(
        long,
        env = "SKEIN_GRPC_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub grpc_tokens: Option<Vec<String>>,
    /// PEM certificate chain: serve the gRPC API over TLS (with --grpc-tls-key).
    #[arg(long, env = "SKEIN_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, env = "SKEIN_GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// Connection state recovery: clients resume their session (id, rooms, data, missed
    /// events) after a disconnect [default: false].
    #[arg(long, env = "SKEIN_RECOVERY", num_args = 0..=1, default_missing_value = "true")]
    pub recovery: Option<bool>,
    /// Milliseconds a disconnected session stays recoverable [default: 120000].
    #[arg(long, env = "SKEIN_RECOVERY_MAX_DISCONNECTION")]
    pub recovery_max_disconnection: Option<u64>,
    /// Whether a recovered socket skips the connect middlewares [default: true].
    #[arg(long, env = "SKEIN_RECOVERY_SKIP_MIDDLEWARES")]
    pub recovery_skip_middlewares: Option<bool>,
    /// Packets the recovery log keeps [default: 10000].
    #[arg(long, env = "SKEIN_RECOVERY_LOG_MAX_LEN")]
    pub recovery_log_max_len: Option<usize>,
    /// Milliseconds the recovery log keeps a packet [default: max disconnection + 60000].
    #[arg(long, env = "SKEIN_RECOVERY_LOG_MAX_AGE")]
    pub recovery_log_max_age: Option<u64>,
    /// Milliseconds over which SIGTERM closes the connections, so that they resume on
    /// other nodes without a thundering herd [default: 10000].
    #[arg(long, env = "SKEIN_DRAIN_PERIOD")]
    pub drain_period: Option<u64>,
    /// The official client bundle served at <path>socket.io.js
    /// [default: node/demo/node_modules/socket.io-client/dist/socket.io.min.js].
    #[arg(long, env = "SKEIN_CLIENT_BUNDLE")]
    pub client_bundle: Option<PathBuf>,
}

/// The same options as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    ping_interval: Option<u64>,
    ping_timeout: Option<u64>,
    upgrade_timeout: Option<u64>,
    max_payload: Option<usize>,
    connect_timeout: Option<u64>,
    transports: Option<Vec<String>>,
    cors_origins: Option<Vec<String>>,
    cors_credentials: Option<bool>,
    cookie: Option<bool>,
    http_compression: Option<bool>,
    max_buffered_packets: Option<usize>,
    shutdown_grace: Option<u64>,
    header_timeout: Option<u64>,
    body_timeout: Option<u64>,
    max_connections: Option<usize>,
    log: Option<String>,
    log_format: Option<String>,
    demo: Option<bool>,
    demo_logic: Option<String>,
    bench_handlers: Option<bool>,
    test_handlers: Option<bool>,
    client_bundle: Option<PathBuf>,
    adapter: Option<String>,
    redis_url: Option<String>,
    redis_key: Option<String>,
    redis_stream: Option<String>,
    redis_request_timeout: Option<u64>,
    node_id: Option<String>,
    grpc_port: Option<u16>,
    grpc_tokens: Option<Vec<String>>,
    grpc_tls_cert: Option<PathBuf>,
    grpc_tls_key: Option<PathBuf>,
    recovery: Option<bool>,
    recovery_max_disconnection: Option<u64>,
    recovery_skip_middlewares: Option<bool>,
    recovery_log_max_len: Option<usize>,
    recovery_log_max_age: Option<u64>,
    drain_period: Option<u64>,
}

/// The gRPC API's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    pub port: u16,
    pub tokens: Vec<String>,
    /// PEM certificate chain and key, read at startup.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

/// Which cluster adapter a node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterChoice {
    Memory,
    Redis {
        url: String,
        key: String,
        request_timeout: Duration,
        /// Streams mode: the stream broadcasts and recovery go through.
        stream: Option<String>,
    },
}

/// The resolved configuration of a node.
#[derive(Debug)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub io: SocketIoConfig,
    pub shutdown_grace: Duration,
    /// Time a connection has to send a request head (also bounds idle keep-alive).
    pub header_timeout: Duration,
    /// Connections served at once; `None`: derived from the open-file limit at startup.
    pub max_connections: Option<usize>,
    /// How long SIGTERM takes to close the connections.
    pub drain_period: Duration,
    pub log: String,
    pub log_json: bool,
    pub demo: bool,
    /// The demo's chat runs through the gRPC API (`--demo-logic api`).
    pub demo_api: bool,
    pub bench_handlers: bool,
    pub test_handlers: bool,
    pub client_bundle: Option<PathBuf>,
    pub adapter: AdapterChoice,
    pub node_id: Option<String>,
    /// The gRPC API, when it is on.
    pub grpc: Option<GrpcConfig>,
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

impl Config {
    pub fn load(flags: Flags) -> Result<Config> {
        let file = match &flags.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        macro_rules! pick {
            ($name:ident, $default:expr) => {
                flags.$name.or(file.$name).unwrap_or($default)
            };
        }
        let path = pick!(path, "/socket.io/".to_owned());
        if !path.starts_with('/') {
            bail!("path must start with '/', got {path:?}");
        }
        let path = if path.ends_with('/') {
            path
        } else {
            format!("{path}/")
        };
        let ms = |v: u64, name: &str| -> Result<Duration> {
            if v == 0 {
                bail!("{name} must be greater than 0");
            }
            Ok(Duration::from_millis(v))
        };
        let transports = pick!(transports, vec!["polling".into(), "websocket".into()])
            .iter()
            .map(|t| {
                TransportKind::parse(t.trim()).with_context(|| {
                    format!("unknown transport {t:?} (expected polling or websocket)")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if transports.is_empty() {
            bail!("at least one transport is needed");
        }
        let cors = flags
            .cors_origins
            .or(file.cors_origins)
            .map(|origins| CorsConfig {
                origin: if origins.iter().any(|o| o == "*") {
                    CorsOrigin::Any
                } else {
                    CorsOrigin::List(origins)
                },
                credentials: flags
                    .cors_credentials
                    .or(file.cors_credentials)
                    .unwrap_or(false),
            });
        let max_payload = pick!(max_payload, 1_000_000);
        if max_payload == 0 {
            bail!("max_payload must be greater than 0");
        }
        let engine = EngineConfig {
            path,
            ping_interval: ms(pick!(ping_interval, 25_000), "ping_interval")?,
            ping_timeout: ms(pick!(ping_timeout, 20_000), "ping_timeout")?,
            upgrade_timeout: ms(pick!(upgrade_timeout, 10_000), "upgrade_timeout")?,
            max_payload,
            transports,
            allow_upgrades: true,
            cors,
            cookie: pick!(cookie, false).then(CookieConfig::default),
            allow_request: None,
            http_compression_threshold: pick!(http_compression, true).then_some(1024),
            max_buffered_packets: pick!(max_buffered_packets, 4096).max(1),
            body_timeout: ms(pick!(body_timeout, 30_000), "body_timeout")?,
        };
        let header_timeout = ms(pick!(header_timeout, 10_000), "header_timeout")?;
        let max_connections = flags.max_connections.or(file.max_connections);
        if max_connections == Some(0) {
            bail!("max_connections must be greater than 0");
        }
        let log_format = pick!(log_format, "text".to_owned());
        if log_format != "text" && log_format != "json" {
            bail!("log_format must be text or json, got {log_format:?}");
        }
        let adapter = match pick!(adapter, "memory".to_owned()).as_str() {
            "memory" => AdapterChoice::Memory,
            kind @ ("redis" | "redis-streams") => AdapterChoice::Redis {
                url: pick!(redis_url, "redis://127.0.0.1:6379".to_owned()),
                key: pick!(redis_key, "socket.io".to_owned()),
                request_timeout: ms(pick!(redis_request_timeout, 5_000), "redis_request_timeout")?,
                stream: (kind == "redis-streams")
                    .then(|| pick!(redis_stream, "socket.io".to_owned())),
            },
            other => bail!("unknown adapter {other:?} (expected memory, redis or redis-streams)"),
        };
        let grpc = match flags.grpc_port.or(file.grpc_port) {
            None => None,
            Some(port) => {
                let tokens: Vec<String> = flags
                    .grpc_tokens
                    .or(file.grpc_tokens)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect();
                if tokens.is_empty() {
                    bail!("grpc_port needs at least one token in grpc_tokens: every API call is authenticated");
                }
                let read = |p: &PathBuf, what: &str| {
                    std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
                };
                let tls = match (
                    flags.grpc_tls_cert.or(file.grpc_tls_cert),
                    flags.grpc_tls_key.or(file.grpc_tls_key),
                ) {
                    (None, None) => None,
                    (Some(c), Some(k)) => {
                        Some((read(&c, "grpc_tls_cert")?, read(&k, "grpc_tls_key")?))
                    }
                    _ => bail!("grpc_tls_cert and grpc_tls_key go together"),
                };
                Some(GrpcConfig { port, tokens, tls })
            }
        };
        // Streams mode exists for recovery: it is on unless turned off.
        let streams = matches!(
            adapter,
            AdapterChoice::Redis {
                stream: Some(_),
                ..
            }
        );
        let recovery = if pick!(recovery, streams) {
            let max = ms(
                pick!(recovery_max_disconnection, 120_000),
                "recovery_max_disconnection",
            )?;
            let log_max_len = pick!(recovery_log_max_len, 10_000);
            if log_max_len == 0 {
                bail!("recovery_log_max_len must be greater than 0");
            }
            let default_age = max.as_millis() as u64 + 60_000;
            Some(RecoveryConfig {
                max_disconnection_duration: max,
                skip_middlewares: pick!(recovery_skip_middlewares, true),
                log_max_len,
                log_max_age: ms(
                    pick!(recovery_log_max_age, default_age),
                    "recovery_log_max_age",
                )?,
            })
        } else {
            None
        };
        let demo_api = match pick!(demo_logic, "builtin".to_owned()).as_str() {
            "builtin" => false,
            "api" if grpc.is_some() => true,
            "api" => bail!("demo_logic api needs the gRPC API (grpc_port and grpc_tokens)"),
            other => bail!("demo_logic must be builtin or api, got {other:?}"),
        };
        Ok(Config {
            demo_api,
            drain_period: Duration::from_millis(pick!(drain_period, 10_000)),
            grpc,
            adapter,
            node_id: flags.node_id.or(file.node_id),
            host: pick!(host, "0.0.0.0".to_owned()),
            port: pick!(port, 3000),
            io: SocketIoConfig {
                engine,
                connect_timeout: ms(pick!(connect_timeout, 45_000), "connect_timeout")?,
                recovery,
                ..SocketIoConfig::default()
            },
            shutdown_grace: Duration::from_millis(pick!(shutdown_grace, 5_000)),
            header_timeout,
            max_connections,
            log: pick!(log, "info".to_owned()),
            log_json: log_format == "json",
            demo: flags.demo || file.demo.unwrap_or(false),
            bench_handlers: flags.bench_handlers || file.bench_handlers.unwrap_or(false),
            test_handlers: flags.test_handlers || file.test_handlers.unwrap_or(false),
            client_bundle: flags.client_bundle.or(file.client_bundle),
        })
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
