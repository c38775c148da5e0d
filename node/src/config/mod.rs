//! Configuration: a TOML file (`--config`), then `SKEIN_*` environment variables, then
//! flags; flags win over the environment, which wins over the file. The options are
//! listed once, in `options`; `layers` reads and parses their values; this file turns
//! them into the node's settings and checks them together. Every problem is collected,
//! so that a start (and `--check-config`) reports all of them at once.

mod layers;
pub mod mesh;
pub mod options;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;
use skein::adapter::RecoveryConfig;
use skein::engineio::{CookieConfig, CorsConfig, CorsOrigin, TransportKind};
use skein::{EngineConfig, SocketIoConfig};

use self::layers::Layers;

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
    /// The gRPC mesh: no broker, membership and room index replicated with Raft.
    Mesh(mesh::MeshOptions),
    Nats {
        config: skein_adapter_nats::NatsAdapterConfig,
        /// Replicas of the JetStream stream and bucket (recovery).
        replicas: usize,
    },
}

/// The log filter without `--log`.
pub const DEFAULT_LOG: &str = "info,openraft=warn";

/// The resolved configuration of a node.
#[derive(Debug)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub io: SocketIoConfig,
    pub shutdown_grace: Duration,
    /// Threads serving connections (1: a single-threaded scheduler).
    pub worker_threads: usize,
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

/// Every problem found in a configuration, one message each, naming the option.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// A configuration that loaded, and what `--check-config` prints of it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The effective configuration as TOML, secrets redacted.
    pub effective: String,
}

/// Milliseconds that must not be zero.
fn ms(l: &mut Layers, name: &'static str, default: u64) -> Duration {
    let v = l.u64(name).unwrap_or(default);
    l.default(name, v as i64);
    if v == 0 {
        l.error(name, format!("{name} must be greater than 0"));
        return Duration::from_millis(default.max(1));
    }
    Duration::from_millis(v)
}

fn string_or(l: &mut Layers, name: &'static str, default: &str) -> String {
    let v = l.string(name).unwrap_or_else(|| default.to_owned());
    l.default(name, v.clone());
    v
}

fn bool_or(l: &mut Layers, name: &'static str, default: bool) -> bool {
    let v = l.bool(name).unwrap_or(default);
    l.default(name, v);
    v
}

fn count_or(l: &mut Layers, name: &'static str, default: usize) -> usize {
    let v = l.usize(name).unwrap_or(default);
    l.default(name, v as i64);
    v
}

/// A listen address: an IP address or a host name. Checked by syntax only, so that
/// `--check-config` needs no DNS; the start resolves it.
fn valid_host(h: &str) -> bool {
    h.parse::<IpAddr>().is_ok()
        || (!h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

/// Tokens of a `grpc_tokens_file`: one a line; blank lines and `#` comments skipped.
fn read_tokens(l: &mut Layers, path: &PathBuf) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.starts_with('#'))
            .map(str::to_owned)
            .collect(),
        Err(e) => {
            l.error(
                "grpc_tokens_file",
                format!("grpc_tokens_file: cannot read {}: {e}", path.display()),
            );
            Vec::new()
        }
    }
}

/// Loads the configuration as a start does: file, environment and flags in `matches`.
pub fn load(matches: ArgMatches) -> Result<Loaded, ConfigErrors> {
    let mut l = Layers::new(matches);
    let config = resolve(&mut l);
    match l.finish() {
        Ok(effective) => Ok(Loaded { config, effective }),
        Err(errors) => Err(ConfigErrors(errors)),
    }
}

fn resolve(l: &mut Layers) -> Config {
    let host = string_or(l, "host", "0.0.0.0");
    if !valid_host(&host) {
        l.error(
            "host",
            format!("host must be an IP address or a host name, got {host:?}"),
        );
    }
    let port = l.u16("port").unwrap_or(3000);
    l.default("port", i64::from(port));
    let mut path = string_or(l, "path", "/socket.io/");
    if !path.starts_with('/') {
        l.error("path", format!("path must start with '/', got {path:?}"));
    }
    if !path.ends_with('/') {
        path.push('/');
        l.derived("path", path.clone(), "a trailing / added");
    }
    let mut transports = Vec::new();
    let given = l
        .list("transports")
        .unwrap_or_else(|| vec!["polling".into(), "websocket".into()]);
    let none_given = given.is_empty();
    for t in given {
        match TransportKind::parse(&t) {
            Some(k) => transports.push(k),
            None => l.error(
                "transports",
                format!("transports: unknown transport {t:?} (expected polling or websocket)"),
            ),
        }
    }
    l.default(
        "transports",
        toml::Value::Array(vec!["polling".into(), "websocket".into()]),
    );
    if none_given {
        l.error("transports", "transports: at least one transport is needed");
    }
    if transports.is_empty() {
        transports.push(TransportKind::Websocket);
    }
    let cors = l.list("cors_origins").map(|origins| CorsConfig {
        origin: if origins.iter().any(|o| o == "*") {
            CorsOrigin::Any
        } else {
            CorsOrigin::List(origins)
        },
        credentials: bool_or(l, "cors_credentials", false),
    });
    let max_payload = count_or(l, "max_payload", 1_000_000);
    if max_payload == 0 {
        l.error("max_payload", "max_payload must be greater than 0");
    }
    let engine = EngineConfig {
        path,
        ping_interval: ms(l, "ping_interval", 25_000),
        ping_timeout: ms(l, "ping_timeout", 20_000),
        upgrade_timeout: ms(l, "upgrade_timeout", 10_000),
        max_payload: max_payload.max(1),
        transports,
        allow_upgrades: true,
        cors,
        cookie: bool_or(l, "cookie", false).then(CookieConfig::default),
        allow_request: None,
        http_compression_threshold: bool_or(l, "http_compression", true).then_some(1024),
        max_buffered_packets: count_or(l, "max_buffered_packets", 4096).max(1),
        body_timeout: ms(l, "body_timeout", 30_000),
    };
    let header_timeout = ms(l, "header_timeout", 10_000);
    // The CPUs the process may use (affinity, cgroup quota), as tokio's default.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let worker_threads = count_or(l, "worker_threads", cpus);
    if worker_threads == 0 {
        l.error("worker_threads", "worker_threads must be greater than 0");
    }
    let max_connections = l.usize("max_connections");
    if max_connections == Some(0) {
        l.error("max_connections", "max_connections must be greater than 0");
    }
    // openraft narrates every election and replication step at INFO; the mesh logs the
    // changes an operator acts on (leader, membership, gone nodes) itself.
    let log = string_or(l, "log", DEFAULT_LOG);
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        l.error("log", format!("log: invalid filter {log:?}: {e}"));
    }
    let log_format = string_or(l, "log_format", "text");
    if log_format != "text" && log_format != "json" {
        l.error(
            "log_format",
            format!("log_format must be text or json, got {log_format:?}"),
        );
    }
    let adapter = resolve_adapter(l, &host);
    let grpc = resolve_grpc(l, port);
    // Streams mode exists for recovery: it is on unless turned off.
    let streams = matches!(
        adapter,
        AdapterChoice::Redis {
            stream: Some(_),
            ..
        }
    );
    let recovery = bool_or(l, "recovery", streams).then(|| resolve_recovery(l));
    let demo_logic = string_or(l, "demo_logic", "builtin");
    let demo_api = match demo_logic.as_str() {
        "builtin" => false,
        "api" if grpc.is_some() => true,
        "api" => {
            l.error(
                "demo_logic",
                "demo_logic api needs the gRPC API (grpc_port and grpc_tokens)",
            );
            false
        }
        other => {
            l.error(
                "demo_logic",
                format!("demo_logic must be builtin or api, got {other:?}"),
            );
            false
        }
    };
    let node_id = l.string("node_id");
    if node_id.as_deref().is_some_and(|n| n.trim().is_empty()) {
        l.error("node_id", "node_id must not be empty");
    }
    let client_bundle = l.path("client_bundle");
    if let Some(p) = &client_bundle {
        if let Err(e) = std::fs::metadata(p) {
            l.error(
                "client_bundle",
                format!("client_bundle: cannot read {}: {e}", p.display()),
            );
        }
    }
    Config {
        demo_api,
        drain_period: Duration::from_millis({
            let v = l.u64("drain_period").unwrap_or(10_000);
            l.default("drain_period", v as i64);
            v
        }),
        grpc,
        adapter,
        node_id,
        host,
        port,
        io: SocketIoConfig {
            engine,
            connect_timeout: ms(l, "connect_timeout", 45_000),
            cleanup_empty_child_namespaces: bool_or(l, "cleanup_empty_child_namespaces", true),
            recovery,
            ..SocketIoConfig::default()
        },
        shutdown_grace: Duration::from_millis({
            let v = l.u64("shutdown_grace").unwrap_or(5_000);
            l.default("shutdown_grace", v as i64);
            v
        }),
        header_timeout,
        worker_threads: worker_threads.max(1),
        max_connections,
        log,
        log_json: log_format == "json",
        demo: bool_or(l, "demo", false),
        bench_handlers: bool_or(l, "bench_handlers", false),
        test_handlers: bool_or(l, "test_handlers", false),
        client_bundle,
    }
}

fn resolve_adapter(l: &mut Layers, host: &str) -> AdapterChoice {
    let kind = string_or(l, "adapter", "memory");
    match kind.as_str() {
        "memory" => AdapterChoice::Memory,
        "mesh" => mesh::resolve(l, host).map_or(AdapterChoice::Memory, AdapterChoice::Mesh),
        "redis" | "redis-streams" => {
            let url = string_or(l, "redis_url", "redis://127.0.0.1:6379");
            // Syntax only: the start connects, the check does not.
            if let Err(e) = skein_adapter_redis::check_url(&url) {
                l.error("redis_url", format!("redis_url: {e}"));
            }
            let key = string_or(l, "redis_key", "socket.io");
            if key.is_empty() {
                l.error("redis_key", "redis_key must not be empty");
            }
            let stream =
                (kind == "redis-streams").then(|| string_or(l, "redis_stream", "socket.io"));
            if stream.as_deref() == Some("") {
                l.error("redis_stream", "redis_stream must not be empty");
            }
            AdapterChoice::Redis {
                url,
                key,
                request_timeout: ms(l, "redis_request_timeout", 5_000),
                stream,
            }
        }
        "nats" => resolve_nats(l),
        other => {
            l.error(
                "adapter",
                format!(
                    "unknown adapter {other:?} (expected memory, redis, redis-streams, nats or mesh)"
                ),
            );
            AdapterChoice::Memory
        }
    }
}

fn resolve_nats(l: &mut Layers) -> AdapterChoice {
    use skein_adapter_nats::{NatsAdapterConfig, NatsAuth, NatsTls};
    let servers = l
        .list("nats_url")
        .unwrap_or_else(|| vec!["nats://127.0.0.1:4222".into()]);
    l.default(
        "nats_url",
        toml::Value::Array(servers.iter().cloned().map(toml::Value::String).collect()),
    );
    let prefix = string_or(l, "nats_prefix", "skein");
    let creds = l.path("nats_creds");
    let user = l.string("nats_user");
    let password = l.string("nats_password");
    let token = l.string("nats_token");
    let nkey = l.string("nats_nkey");
    let given = [
        creds.is_some(),
        user.is_some() || password.is_some(),
        token.is_some(),
        nkey.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        l.error(
            "nats_creds",
            "nats: give one way to authenticate: nats_creds, nats_user with nats_password, nats_token or nats_nkey",
        );
    }
    let auth = match (creds, user, password, token, nkey) {
        (Some(c), ..) => NatsAuth::Creds(c),
        (_, Some(u), Some(p), ..) => NatsAuth::UserPassword(u, p),
        (_, Some(_), None, ..) => {
            l.error("nats_password", "nats_password is needed with nats_user");
            NatsAuth::None
        }
        (_, None, Some(_), ..) => {
            l.error("nats_user", "nats_user is needed with nats_password");
            NatsAuth::None
        }
        (_, _, _, Some(t), _) => NatsAuth::Token(t),
        (_, _, _, _, Some(k)) => NatsAuth::NKey(k),
        _ => NatsAuth::None,
    };
    let tls = NatsTls {
        ca: l.path("nats_tls_ca"),
        cert: l.path("nats_tls_cert"),
        key: l.path("nats_tls_key"),
    };
    let replicas = count_or(l, "nats_replicas", 1);
    if !(1..=5).contains(&replicas) {
        l.error("nats_replicas", "nats_replicas must be between 1 and 5");
    }
    let config = NatsAdapterConfig {
        servers,
        prefix,
        auth,
        tls,
        request_timeout: ms(l, "nats_request_timeout", 5_000),
        node_id: String::new(),
    };
    // Syntax and files only: the start connects, the check does not.
    for e in skein_adapter_nats::check_config(&config) {
        match e {
            skein_adapter_nats::NatsAdapterError::Config { option, .. } => {
                l.error(option, e.to_string())
            }
            other => l.error("nats_url", other.to_string()),
        }
    }
    AdapterChoice::Nats {
        config,
        replicas: replicas.clamp(1, 5),
    }
}

fn resolve_grpc(l: &mut Layers, http_port: u16) -> Option<GrpcConfig> {
    // Read even when the API is off: a token file that cannot be read is a mistake
    // worth reporting before the day the API is turned on.
    let mut tokens = l.list("grpc_tokens").unwrap_or_default();
    let file = l.path("grpc_tokens_file");
    let has_file = file.is_some();
    if let Some(file) = file {
        tokens.extend(read_tokens(l, &file));
    }
    let cert = l.path("grpc_tls_cert");
    let key = l.path("grpc_tls_key");
    let port = l.u16("grpc_port")?;
    if port != 0 && port == http_port {
        l.error(
            "grpc_port",
            format!("grpc_port {port} is also the Socket.IO port"),
        );
    }
    if tokens.is_empty() {
        l.error(
            "grpc_port",
            "grpc_port needs at least one token in grpc_tokens or grpc_tokens_file: every API call is authenticated",
        );
    }
    if has_file {
        l.derived(
            "grpc_tokens",
            toml::Value::Array(tokens.iter().cloned().map(toml::Value::String).collect()),
            "with the tokens of grpc_tokens_file",
        );
    }
    let mut read = |p: &PathBuf, what: &str| match std::fs::read(p) {
        Ok(b) => b,
        Err(e) => {
            l.error(what, format!("{what}: cannot read {}: {e}", p.display()));
            Vec::new()
        }
    };
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((read(&c, "grpc_tls_cert"), read(&k, "grpc_tls_key"))),
        _ => {
            l.error(
                "grpc_tls_cert",
                "grpc_tls_cert and grpc_tls_key go together",
            );
            None
        }
    };
    Some(GrpcConfig { port, tokens, tls })
}

fn resolve_recovery(l: &mut Layers) -> RecoveryConfig {
    let max = ms(l, "recovery_max_disconnection", 120_000);
    let log_max_len = count_or(l, "recovery_log_max_len", 10_000);
    if log_max_len == 0 {
        l.error(
            "recovery_log_max_len",
            "recovery_log_max_len must be greater than 0",
        );
    }
    let default_age = max.as_millis() as u64 + 60_000;
    RecoveryConfig {
        max_disconnection_duration: max,
        skip_middlewares: bool_or(l, "recovery_skip_middlewares", true),
        log_max_len: log_max_len.max(1),
        log_max_age: ms(l, "recovery_log_max_age", default_age),
    }
}

#[cfg(test)]
mod tests;
