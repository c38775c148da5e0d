//! The connection to NATS: its options, their checks (syntax and files, no network, for
//! `--check-config`), and the health the transport and the log read (up or down, and a
//! signal when it comes back).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tokio::sync::Notify;

use crate::{NatsAdapterConfig, NatsAdapterError, NatsAuth};

/// A server URL with any password in it replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{}{user}:<redacted>{}", &url[..s + 3], &url[at..])
            } else {
                // `nats://TOKEN@host`: the user part is the token.
                format!("{}<redacted>{}", &url[..s + 3], &url[at..])
            }
        }
        _ => url.to_owned(),
    }
}

/// Checks one server URL (`nats://`, `tls://`, or a bare `host:port`).
pub fn check_url(url: &str) -> Result<(), NatsAdapterError> {
    let bad = |m: String| NatsAdapterError::Config {
        option: "nats_url",
        message: format!("{}: {m}", redact(url)),
    };
    if url.trim().is_empty() {
        return Err(bad("empty server URL".into()));
    }
    let addr = ServerAddr::from_str(url.trim()).map_err(|e| bad(e.to_string()))?;
    if addr.host().is_empty() {
        return Err(bad("no host".into()));
    }
    Ok(())
}

/// Checks every option without connecting; every problem is reported.
pub fn check_config(cfg: &NatsAdapterConfig) -> Vec<NatsAdapterError> {
    let mut errors = Vec::new();
    let mut err = |option: &'static str, message: String| {
        errors.push(NatsAdapterError::Config { option, message })
    };
    if cfg.servers.is_empty() {
        err("nats_url", "at least one server is needed".into());
    }
    for s in &cfg.servers {
        if let Err(NatsAdapterError::Config { message, .. }) = check_url(s) {
            err("nats_url", message);
        }
    }
    if !crate::subjects::valid_prefix(&cfg.prefix) {
        err(
            "nats_prefix",
            format!(
                "{:?} is not a subject prefix (dot-separated tokens, no spaces, `*` or `>`)",
                cfg.prefix
            ),
        );
    }
    match &cfg.auth {
        NatsAuth::None => {}
        NatsAuth::Creds(path) => match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Err(e) = ConnectOptions::with_credentials(&text) {
                    err(
                        "nats_creds",
                        format!("{} is not a credentials file: {e}", path.display()),
                    );
                }
            }
            Err(e) => err("nats_creds", format!("cannot read {}: {e}", path.display())),
        },
        NatsAuth::UserPassword(user, _) => {
            if user.is_empty() {
                err("nats_user", "the user must not be empty".into());
            }
        }
        NatsAuth::Token(t) => {
            if t.is_empty() {
                err("nats_token", "the token must not be empty".into());
            }
        }
        NatsAuth::NKey(seed) => {
            // The seed itself is never printed.
            if nkeys::KeyPair::from_seed(seed.trim()).is_err() {
                err(
                    "nats_nkey",
                    "not an nkey seed (expected the `SU...` seed of a user nkey)".into(),
                );
            }
        }
    }
    let mut readable = |option: &'static str, path: &Option<std::path::PathBuf>| {
        if let Some(p) = path {
            if let Err(e) = std::fs::metadata(p) {
                err(option, format!("cannot read {}: {e}", p.display()));
            }
        }
    };
    readable("nats_tls_ca", &cfg.tls.ca);
    readable("nats_tls_cert", &cfg.tls.cert);
    readable("nats_tls_key", &cfg.tls.key);
    if cfg.tls.cert.is_some() != cfg.tls.key.is_some() {
        errors.push(NatsAdapterError::Config {
            option: "nats_tls_cert",
            message: "nats_tls_cert and nats_tls_key go together".into(),
        });
    }
    errors
}

/// The client, and what its events say about the connection.
#[derive(Clone)]
pub struct Conn {
    pub client: Client,
    /// The runtime of the connection's own thread.
    pub io: tokio::runtime::Handle,
    up: Arc<AtomicBool>,
    /// How many times the connection was (re)established.
    connections: Arc<std::sync::atomic::AtomicU64>,
    /// Notified when the connection comes back after an outage.
    pub reconnected: Arc<Notify>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("up", &self.is_up()).finish()
    }
}

impl Conn {
    /// Changes each time the connection is established again (a consumer of the old
    /// connection may be gone with the server that held it).
    pub fn generation(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
            && self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Connects on a thread of its own, where the client's connection task then runs.
///
/// Why: a room's first member subscribes inside the join, and the application acks the
/// join at once. On the node's own runtime the connection task, woken by the join, waits
/// until the task that joined yields, often after the ack went out, and a broadcast that
/// another node sent as soon as the client heard the ack could reach NATS before the
/// subscription (about one in ten did, in tests/js/cluster.test.mjs). On its own thread
/// the connection task writes the SUB while the join is still being acked, and the join
/// can wait for NATS to confirm it (see `transport`) without stalling that task.
async fn on_io_thread(
    opts: ConnectOptions,
    servers: Vec<ServerAddr>,
) -> Result<(Client, tokio::runtime::Handle), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("nats-io".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let handle = rt.handle().clone();
            rt.block_on(async move {
                let r = opts.connect(servers.as_slice()).await;
                let ok = r.is_ok();
                let _ = tx.send(r.map(|c| (c, handle)).map_err(|e| e.to_string()));
                if ok {
                    // The connection task lives as long as the process (the client
                    // reconnects forever; a node has one).
                    std::future::pending::<()>().await;
                }
            });
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start the NATS thread: {e}"));
    }
    rx.await
        .unwrap_or_else(|_| Err("the NATS thread ended".into()))
}

/// Connects to the first server that answers. The client then reconnects by itself,
/// forever, to any server of the list or that the cluster announced; subscriptions are
/// renewed on each new connection.
pub async fn connect(cfg: &NatsAdapterConfig) -> Result<Conn, NatsAdapterError> {
    if let Some(e) = check_config(cfg).into_iter().next() {
        return Err(e);
    }
    let up = Arc::new(AtomicBool::new(false));
    let reconnected = Arc::new(Notify::new());
    let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (up2, back, gen) = (up.clone(), reconnected.clone(), connections.clone());
    let mut opts = match &cfg.auth {
        NatsAuth::None => ConnectOptions::new(),
        NatsAuth::Creds(path) => {
            ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| NatsAdapterError::Config {
                    option: "nats_creds",
                    message: format!("cannot use {}: {e}", path.display()),
                })?
        }
        NatsAuth::UserPassword(u, p) => {
            ConnectOptions::with_user_and_password(u.clone(), p.clone())
        }
        NatsAuth::Token(t) => ConnectOptions::with_token(t.clone()),
        NatsAuth::NKey(seed) => ConnectOptions::with_nkey(seed.trim().to_owned()),
    };
    if let Some(ca) = &cfg.tls.ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    opts = opts
        .name(format!("skein {}", cfg.node_id))
        // A node's own publishes need not come back to it: the layer would drop them.
        .no_echo()
        .connection_timeout(Duration::from_secs(5))
        // A hung server is noticed within two pings.
        .ping_interval(Duration::from_secs(5))
        .max_reconnects(None)
        // Back soon after an outage: 0, 100, 200... up to 1 s between attempts.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(1000))
        })
        .event_callback(move |ev| {
            let (up, back, gen) = (up2.clone(), back.clone(), gen.clone());
            async move {
                match ev {
                    Event::Connected => {
                        gen.fetch_add(1, Ordering::AcqRel);
                        if !up.swap(true, Ordering::AcqRel) {
                            tracing::info!("NATS connected");
                            back.notify_waiters();
                        }
                    }
                    Event::Disconnected => {
                        if up.swap(false, Ordering::AcqRel) {
                            tracing::warn!("NATS connection lost; reconnecting");
                        }
                    }
                    Event::Closed => up.store(false, Ordering::Release),
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "NATS: a subscription fell behind, messages dropped")
                    }
                    other => tracing::info!(event = %other, "NATS"),
                }
            }
        });
    let servers: Vec<ServerAddr> = cfg
        .servers
        .iter()
        .filter_map(|s| ServerAddr::from_str(s.trim()).ok())
        .collect();
    let (client, io) =
        on_io_thread(opts, servers)
            .await
            .map_err(|e| NatsAdapterError::Unreachable {
                servers: cfg
                    .servers
                    .iter()
                    .map(|s| redact(s))
                    .collect::<Vec<_>>()
                    .join(","),
                reason: e,
            })?;
    up.store(true, Ordering::Release);
    Ok(Conn {
        client,
        io,
        up,
        connections,
        reconnected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_never_shown() {
        assert!(check_url("nats://127.0.0.1:4222").is_ok());
        assert!(check_url("tls://nats.example:4222").is_ok());
        assert!(check_url("127.0.0.1:4222").is_ok());
        let e = check_url("http://u:s3cret@host:1").unwrap_err().to_string();
        assert!(e.starts_with("nats_url: "), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(check_url("").is_err());
        assert!(check_url("nats://host:notaport").is_err());
        assert_eq!(redact("nats://a:b@h:1"), "nats://a:<redacted>@h:1");
        assert_eq!(redact("nats://tok@h"), "nats://<redacted>@h");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
    }

    #[test]
    fn bad_options_name_themselves_without_secrets() {
        let cfg = NatsAdapterConfig {
            prefix: "a b".into(),
            auth: NatsAuth::NKey("SUnotaseed-topsecret".into()),
            tls: crate::NatsTls {
                ca: Some("/nonexistent/ca.pem".into()),
                cert: Some("/nonexistent/c.pem".into()),
                key: None,
            },
            ..Default::default()
        };
        let errs: Vec<String> = check_config(&cfg).iter().map(|e| e.to_string()).collect();
        let all = errs.join("\n");
        for option in ["nats_prefix", "nats_nkey", "nats_tls_ca", "nats_tls_cert"] {
            assert!(
                errs.iter().any(|e| e.starts_with(&format!("{option}: "))),
                "{option} in {all}"
            );
        }
        assert!(!all.contains("topsecret"), "{all}");
        assert!(check_config(&NatsAdapterConfig::default()).is_empty());
    }
}
