//! connect: open N connections, report the connection rate and the server's memory
//! per idle connection (VmRSS before and after, divided by N).

use super::{abort_all, idle_until, spawn_clients, Ctx, Phase};
use crate::client::Conn;
use crate::procfs::{self, CpuMeters};
use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub conns: u64,
    /// Wait after the last connection before reading the server's memory.
    #[arg(long, default_value_t = 2000)]
    pub settle_ms: u64,
    /// Keep the connections open this long after measuring (e.g. to watch the server).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
    /// Connections opened and closed before the baseline is read, so that one-off
    /// costs (lazy initialisation, JIT) are not counted per connection.
    #[arg(long, default_value_t = 50)]
    pub warmup_conns: u64,
}

impl ConnectArgs {
    pub fn budget_secs(&self) -> u64 {
        60 + self.conns / 200 + self.settle_ms / 1000 + self.hold_secs
    }
}

pub async fn run(ctx: &Ctx, a: &ConnectArgs) -> Result<Value> {
    ctx.check_fds(a.conns);
    if a.warmup_conns > 0 {
        let (handles, _) =
            spawn_clients(ctx, a.warmup_conns, None, |_, conn: Conn| conn.close()).await;
        for h in handles {
            let _ = h.await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss_before = ctx.server_rss();
    let gen_rss_before = procfs::rss_kib(None).ok();
    let cpu = CpuMeters::start(&ctx.server_pids);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (handles, report) = spawn_clients(ctx, a.conns, None, move |_, conn| {
        let mut rx = phase_rx.clone();
        async move {
            let _ = idle_until(conn, &mut rx, Phase::Stop).await;
        }
    })
    .await;
    let cpu_json = cpu.json();
    tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
    let rss_after = ctx.server_rss();
    let gen_rss_after = procfs::rss_kib(None).ok();
    if a.hold_secs > 0 {
        tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    }
    let per_conn = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if report.ok > 0 => {
            Some(procfs::round2((a as f64 - b as f64) / report.ok as f64))
        }
        _ => None,
    };
    let out = json!({
        "conns": a.conns,
        "warmup_conns": a.warmup_conns,
        "connect": report.json(),
        "conn_per_s": procfs::round1(report.rate()),
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "mem_per_conn_kib": per_conn(rss_before, rss_after),
        "gen_mem_per_conn_kib": per_conn(gen_rss_before, gen_rss_after),
        "cpu": cpu_json,
        "ok": report.failed == 0,
    });
    let _ = phase_tx.send(Phase::Stop);
    abort_all(handles);
    Ok(out)
}
