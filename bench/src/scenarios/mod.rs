//! Scenarios and what they share: the target list, server pids, many-client setup.

pub mod broadcast;
pub mod churn;
pub mod connect;
pub mod echo;
pub mod slow;

use crate::client::{Conn, SrcAddrs, Target, WsImpl};
use crate::procfs;
use crate::stats::{self, Errors};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

/// Options every scenario takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Server URL(s), e.g. http://127.0.0.1:3000; repeat or comma-separate for several
    /// nodes (clients are spread round-robin; a broadcast publisher uses the first).
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3000"
    )]
    pub urls: Vec<String>,
    /// Engine.IO path on the server.
    #[arg(long, default_value = "/socket.io/")]
    pub path: String,
    /// Server process id(s) to read memory and CPU from; found from the listening port if omitted.
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Number of 127.0.0.x source addresses to spread clients over (0: as many as the
    /// local port range requires, ~25k connections per address and server).
    #[arg(long, default_value_t = 0)]
    pub src_addrs: u32,
    /// Generator worker threads (0: the CPUs this process may run on).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Hard limit on the whole run, after which it reports a failure and exits.
    #[arg(long)]
    pub timeout_secs: Option<u64>,
    /// Name of the server under test, copied into the result line.
    #[arg(long)]
    pub label: Option<String>,
    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Limit for one connection handshake.
    #[arg(long, default_value_t = 15)]
    pub connect_timeout_secs: u64,
    /// WebSocket implementation of the clients.
    #[arg(long, value_enum, default_value_t = WsImpl::Lean)]
    pub ws: WsImpl,
}

/// Resolved run context.
pub struct Ctx {
    pub targets: Vec<Target>,
    pub server_pids: Vec<u32>,
    pub common: Common,
    pub nofile: u64,
}

impl Ctx {
    pub fn new(common: &Common) -> Result<Ctx> {
        if common.urls.is_empty() {
            bail!("no --url");
        }
        let targets = common
            .urls
            .iter()
            .map(|u| Target::parse(u, &common.path))
            .collect::<Result<Vec<_>>>()?;
        let server_pids = if common.server_pids.is_empty() {
            targets
                .iter()
                .filter_map(|t| procfs::find_listening_pid(t.addr.port()))
                .collect()
        } else {
            common.server_pids.clone()
        };
        crate::client::set_ws_impl(common.ws);
        Ok(Ctx {
            targets,
            server_pids,
            common: common.clone(),
            nofile: procfs::raise_nofile(),
        })
    }

    pub fn server_rss(&self) -> Option<u64> {
        procfs::servers_rss_kib(&self.server_pids)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.common.connect_timeout_secs)
    }

    /// Source addresses for `total` clients spread over the targets.
    pub fn src_addrs(&self, total: u64) -> SrcAddrs {
        self.src_addrs_over(total, self.targets.len())
    }

    /// Source addresses for `total` clients spread over `targets` servers.
    pub fn src_addrs_over(&self, total: u64, targets: usize) -> SrcAddrs {
        SrcAddrs::new(self.common.src_addrs, total.div_ceil(targets.max(1) as u64))
    }

    /// Fields every result line carries.
    pub fn base_json(&self, scenario: &str) -> Value {
        json!({
            "scenario": scenario,
            "label": self.common.label,
            "urls": self.targets.iter().map(|t| t.url.clone()).collect::<Vec<_>>(),
            "server_pids": self.server_pids,
            "gen_threads": self.common.threads,
            "nofile_limit": self.nofile,
            "ws_impl": format!("{:?}", self.common.ws).to_lowercase(),
        })
    }

    /// Warns on stderr when `n` connections will not fit under the open-file limit.
    pub fn check_fds(&self, n: u64) {
        if n + 64 > self.nofile {
            eprintln!(
                "warning: {n} connections exceed this process's open-file limit {} \
                 (ulimit -n); some will fail",
                self.nofile
            );
        }
    }
}

/// Phases broadcast to every client task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Setup,
    Run,
    Stop,
}

/// How the connection phase of many clients went.
pub struct ConnectReport {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latency: hdrhistogram::Histogram<u64>,
    pub errors: Arc<Errors>,
}

impl ConnectReport {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn json(&self) -> Value {
        json!({
            "connected": self.ok,
            "connect_failed": self.failed,
            "connect_secs": procfs::round2(self.elapsed.as_secs_f64()),
            "conn_per_s": procfs::round1(self.rate()),
            "connect_latency": stats::summary(&self.latency),
            "first_error": self.errors.first(),
        })
    }
}

/// Where and how `spawn_clients_with` opens its clients.
#[derive(Clone, Default)]
pub struct SpawnOpts {
    /// Servers to spread the clients over (empty: every --url).
    pub targets: Vec<crate::client::Target>,
    /// Clients `0..k` get a fixed socket receive buffer of this many bytes: `(k, bytes)`.
    pub small_rcvbuf: Option<(u64, u32)>,
}

/// Opens `n` clients (at most `connect_concurrency` handshakes at once), client `i`
/// on target `i % targets`, joining `room` first if given; each then runs
/// `body(i, conn)` in its own task. Returns once every handshake succeeded or failed.
pub async fn spawn_clients<F, Fut>(
    ctx: &Ctx,
    n: u64,
    room: Option<&str>,
    body: F,
) -> (Vec<JoinHandle<()>>, ConnectReport)
where
    F: Fn(u64, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    spawn_clients_with(ctx, &SpawnOpts::default(), n, room, body).await
}

/// `spawn_clients` on some of the targets, or with small receive buffers.
pub async fn spawn_clients_with<F, Fut>(
    ctx: &Ctx,
    opts: &SpawnOpts,
    n: u64,
    room: Option<&str>,
    body: F,
) -> (Vec<JoinHandle<()>>, ConnectReport)
where
    F: Fn(u64, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let targets = if opts.targets.is_empty() {
        ctx.targets.clone()
    } else {
        opts.targets.clone()
    };
    let sem = Arc::new(Semaphore::new(ctx.common.connect_concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<Duration, anyhow::Error>>();
    let src = ctx.src_addrs_over(n, targets.len());
    let limit = ctx.connect_timeout();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        let target = targets[(i % targets.len() as u64) as usize].clone();
        let (sem, tx, body) = (sem.clone(), tx.clone(), body.clone());
        let room = room.map(str::to_owned);
        let rcvbuf = opts
            .small_rcvbuf
            .and_then(|(k, bytes)| (i < k).then_some(bytes));
        handles.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let t0 = Instant::now();
            let res = async {
                let mut conn =
                    Conn::connect_timeout_with(&target, src.for_client(i), rcvbuf, limit).await?;
                if let Some(room) = &room {
                    tokio::time::timeout(limit, conn.join(room))
                        .await
                        .map_err(|_| anyhow::anyhow!("join timed out"))??;
                }
                Ok::<_, anyhow::Error>(conn)
            }
            .await;
            drop(permit);
            match res {
                Ok(conn) => {
                    let _ = tx.send(Ok(t0.elapsed()));
                    body(i, conn).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }));
    }
    drop(tx);
    let errors = Arc::new(Errors::default());
    let mut latency = stats::new_hist();
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = rx.recv().await {
        match r {
            Ok(d) => {
                ok += 1;
                let _ = latency.record((d.as_micros() as u64).max(1));
            }
            Err(e) => {
                failed += 1;
                errors.add(&e);
            }
        }
        if ok + failed == n {
            break;
        }
    }
    let elapsed = start.elapsed();
    (
        handles,
        ConnectReport {
            ok,
            failed,
            elapsed,
            latency,
            errors,
        },
    )
}

/// Keeps a connection alive (answering pings) until the phase reaches `until`.
/// Returns the connection, or None if the server closed it.
pub async fn idle_until(
    mut conn: Conn,
    phase: &mut watch::Receiver<Phase>,
    until: Phase,
) -> Option<Conn> {
    loop {
        if *phase.borrow_and_update() >= until {
            return Some(conn);
        }
        tokio::select! {
            r = conn.recv() => match r {
                Ok(Some(_)) => continue,
                _ => return None,
            },
            r = phase.changed() => if r.is_err() { return None },
        }
    }
}

/// Stops client tasks at the end of a run without waiting on each close handshake.
pub fn abort_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        h.abort();
    }
}
