//! Every option the node knows, in one table: the flags, the `SKEIN_*` environment
//! variables and the keys of the TOML file are all derived from it, so the three can
//! never disagree, and `--check-config` can name and print each option.

use clap::{Arg, ArgAction, Command};

/// One option: `name` is the TOML key; the flag is `--name-with-dashes` and the
/// environment variable `SKEIN_NAME`.
#[derive(Debug)]
pub struct Opt {
    pub name: &'static str,
    /// Placeholder in `--help` (`MS`, `N`, ...); empty for a switch.
    pub value: &'static str,
    pub help: &'static str,
    /// Comma-separated on the command line and in the environment, an array in the file.
    pub list: bool,
    /// Its value is never printed (`--check-config` shows `<redacted>`).
    pub secret: bool,
}

impl Opt {
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }
    pub fn env(&self) -> String {
        format!("SKEIN_{}", self.name.to_uppercase())
    }
    /// A switch (`--demo`) may also be given a value (`--demo false`, `SKEIN_DEMO=0`).
    fn switch(&self) -> bool {
        self.value.is_empty()
    }
}

const fn opt(name: &'static str, value: &'static str, help: &'static str) -> Opt {
    Opt {
        name,
        value,
        help,
        list: false,
        secret: false,
    }
}

const fn list(name: &'static str, value: &'static str, help: &'static str) -> Opt {
    Opt {
        list: true,
        ..opt(name, value, help)
    }
}

pub const OPTIONS: &[Opt] = &[
    opt("config", "FILE", "TOML configuration file."),
    opt("host", "ADDR", "Address to listen on [default: 0.0.0.0]."),
    opt("port", "N", "Port to listen on; 0 picks a free one [default: 3000]."),
    opt("path", "P", "Path of the Socket.IO endpoint [default: /socket.io/]."),
    opt("ping_interval", "MS", "Milliseconds between server pings [default: 25000]."),
    opt("ping_timeout", "MS", "Milliseconds a client has to answer a ping [default: 20000]."),
    opt("upgrade_timeout", "MS", "Milliseconds a polling → WebSocket upgrade may take [default: 10000]."),
    opt("max_payload", "BYTES", "Largest message or polling body in bytes (maxHttpBufferSize) [default: 1000000]."),
    opt("connect_timeout", "MS", "Milliseconds a client may stay without joining a namespace [default: 45000]."),
    opt("cleanup_empty_child_namespaces", "BOOL", "Remove a child of a dynamic namespace when its last socket leaves (`cleanupEmptyChildNamespaces`) [default: true]."),
    list("transports", "LIST", "Transports, comma-separated: polling,websocket [default: polling,websocket]."),
    list("cors_origins", "LIST", "CORS origins allowed for polling, comma-separated; `*` allows any [default: none]."),
    opt("cors_credentials", "BOOL", "Send Access-Control-Allow-Credentials with CORS [default: false]."),
    opt("cookie", "BOOL", "Set the `io` cookie for cookie-based sticky sessions [default: false]."),
    opt("http_compression", "BOOL", "Compress polling responses of 1024 bytes or more [default: true]."),
    opt("max_buffered_packets", "N", "Packets queued for one client before it is dropped as too slow [default: 4096]."),
    opt("worker_threads", "N", "Threads serving connections; 1 runs a single-threaded scheduler (fair to every connection) [default: the CPUs this process may use]."),
    opt("shutdown_grace", "MS", "Milliseconds given to connections to finish on shutdown [default: 5000]."),
    opt("header_timeout", "MS", "Milliseconds a connection has to send a complete request head, from when it opens or its previous response went out; also closes idle keep-alive connections [default: 10000]."),
    opt("body_timeout", "MS", "Milliseconds a polling POST has to deliver its body [default: 30000]."),
    opt("max_connections", "N", "Connections served at once; more are answered 503 and closed [default: the open-file limit minus a reserve]."),
    opt("log", "FILTER", "Log filter, e.g. `info` or `skein=debug` [default: info,openraft=warn]."),
    opt("log_format", "F", "Log format: text or json [default: text]."),
    opt("demo", "", "Serve the chat demo at `/`."),
    opt("demo_logic", "L", "Who runs the demo's chat: builtin (the node) or api (an app server through the gRPC API, e.g. examples/chat-app-server) [default: builtin]."),
    opt("bench_handlers", "", "Register the benchmark handlers (`echo`, `join`, `pub`)."),
    opt("test_handlers", "", "Register the test application of tests/CONTRACT.md."),
    opt("adapter", "A", "Cluster adapter: memory (single node), redis (pub/sub), redis-streams (pub/sub plus a stream: connection state recovery across nodes), nats (NATS; with --recovery, JetStream) or mesh (nodes talk over gRPC, membership and room index replicated with Raft: no broker; with --recovery, sessions and the packet log replicated to every node) [default: memory]."),
    Opt { secret: true, ..opt("redis_url", "URL", "Redis URL of the redis adapters; a password in it is never printed [default: redis://127.0.0.1:6379].") },
    opt("redis_stream", "S", "Stream of --adapter redis-streams (`streamName`) [default: socket.io]."),
    opt("redis_key", "K", "Channel prefix of the Redis adapter (`key` of @socket.io/redis-adapter) [default: socket.io]."),
    opt("redis_request_timeout", "MS", "Milliseconds a cluster request waits for the other nodes [default: 5000]."),
    Opt { secret: true, ..list("nats_url", "URLS", "NATS servers of --adapter nats, comma-separated; a password in them is never printed [default: nats://127.0.0.1:4222].") },
    opt("nats_prefix", "P", "Subject prefix of --adapter nats, one per cluster; also names the JetStream stream and bucket [default: skein]."),
    opt("nats_creds", "FILE", "NATS credentials file (user JWT and nkey seed)."),
    opt("nats_user", "USER", "NATS user (with --nats-password)."),
    Opt { secret: true, ..opt("nats_password", "PASS", "NATS password of --nats-user.") },
    Opt { secret: true, ..opt("nats_token", "TOKEN", "NATS authentication token.") },
    Opt { secret: true, ..opt("nats_nkey", "SEED", "NATS user nkey seed (SU...).") },
    opt("nats_tls_ca", "FILE", "PEM CA certificate(s) to trust for NATS over TLS (turns TLS on)."),
    opt("nats_tls_cert", "FILE", "PEM client certificate for NATS over TLS (with --nats-tls-key)."),
    opt("nats_tls_key", "FILE", "PEM private key of --nats-tls-cert."),
    opt("nats_request_timeout", "MS", "Milliseconds a cluster request waits for the other nodes [default: 5000]."),
    opt("nats_replicas", "N", "Replicas of the JetStream stream and bucket of recovery (at most the NATS cluster's size) [default: 1]."),
    opt("node_id", "ID", "This node's id in the cluster [default: random]."),
    opt("grpc_port", "N", "Port of the gRPC API (skein.v1, health, reflection); 0 picks a free one [default: off]."),
    Opt { secret: true, ..list("grpc_tokens", "LIST", "Bearer tokens accepted by the gRPC API, comma-separated (this or --grpc-tokens-file is required with --grpc-port).") },
    opt("grpc_tokens_file", "FILE", "File of bearer tokens accepted by the gRPC API, one per line (blank lines and lines starting with # are skipped), e.g. a mounted Kubernetes Secret; adds to --grpc-tokens."),
    opt("grpc_tls_cert", "FILE", "PEM certificate chain: serve the gRPC API over TLS (with --grpc-tls-key)."),
    opt("grpc_tls_key", "FILE", "PEM private key of --grpc-tls-cert."),
    opt("mesh_port", "N", "Port of the mesh (node-to-node gRPC) on --host; required with --adapter mesh."),
    list("mesh_seeds", "LIST", "Nodes to join through with --adapter mesh: host:port entries, comma-separated, or a DNS name:port whose records are the nodes (a headless Service)."),
    opt("mesh_data", "DIR", "Directory of the mesh node's Raft log, snapshots and identity; a restart from it rejoins with no manual step."),
    opt("mesh_secret_file", "FILE", "File holding the cluster secret every node-to-node call carries (a stranger without it is refused)."),
    Opt { secret: true, ..opt("mesh_secret", "S", "The cluster secret itself (prefer --mesh-secret-file).") },
    opt("mesh_advertise", "HOST:PORT", "Address other nodes reach this node's mesh port at [default: --host:--mesh-port; required when --host is 0.0.0.0]."),
    opt("mesh_voters", "N", "How many nodes vote in Raft; later nodes are learners, promoted when a voter is gone [default: 3]."),
    opt("mesh_gone_after", "MS", "Milliseconds a node may stay unreachable before it is declared gone (out of the room index, replaced among the voters) [default: 15000]."),
    opt("mesh_request_timeout", "MS", "Milliseconds a cluster request waits for the other nodes with --adapter mesh [default: 5000]."),
    opt("recovery", "BOOL", "Connection state recovery: clients resume their session (id, rooms, data, missed events) after a disconnect [default: false; true with redis-streams]."),
    opt("recovery_max_disconnection", "MS", "Milliseconds a disconnected session stays recoverable [default: 120000]."),
    opt("recovery_skip_middlewares", "BOOL", "Whether a recovered socket skips the connect middlewares [default: true]."),
    opt("recovery_log_max_len", "N", "Packets the recovery log keeps [default: 10000]."),
    opt("recovery_log_max_age", "MS", "Milliseconds the recovery log keeps a packet [default: max disconnection + 60000]."),
    opt("drain_period", "MS", "Milliseconds over which SIGTERM closes the connections, so that they resume on other nodes without a thundering herd [default: 10000]."),
    opt("client_bundle", "FILE", "The official client bundle served at <path>socket.io.js [default: node/demo/node_modules/socket.io-client/dist/socket.io.min.js]."),
];

/// The option named `name` (a TOML key).
pub fn find(name: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The command line: every option as a flag with its environment variable, plus
/// `--check-config`. Values stay strings here: they are parsed and checked together
/// with the file's, so that every bad value is reported at once, with its option.
pub fn command() -> Command {
    let mut cmd = Command::new("skein")
        .version(env!("CARGO_PKG_VERSION"))
        // The last occurrence of a flag wins (`--recovery true ... --recovery false`).
        .args_override_self(true)
        .about(
            "A Socket.IO node. Every option can also be set in the TOML file given by --config \
             (same names, with underscores: `ping_interval = 25000`) and in the environment \
             (`SKEIN_PING_INTERVAL=25000`). Flags win over the environment, which wins over the file.",
        )
        .arg(
            Arg::new("check_config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .help(
                    "Load the configuration as a start would (file, environment, flags), report \
                     every error (exit 2) or print the effective configuration with secrets \
                     redacted (exit 0); never listens nor connects.",
                ),
        );
    for o in OPTIONS {
        let mut arg = Arg::new(o.name)
            .long(o.flag().trim_start_matches("--").to_owned())
            .env(o.env())
            .help(o.help)
            .hide_env_values(o.secret);
        arg = if o.switch() {
            arg.num_args(0..=1)
                .default_missing_value("true")
                .value_name("BOOL")
        } else if o.list {
            arg.value_name(o.value)
                .value_delimiter(',')
                .action(ArgAction::Append)
        } else {
            arg.value_name(o.value)
        };
        if o.name == "recovery" {
            arg = arg.num_args(0..=1).default_missing_value("true");
        }
        cmd = cmd.arg(arg);
    }
    cmd
}
