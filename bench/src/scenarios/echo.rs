//! echo: C clients each doing emit-with-ack round trips of the `echo` event, one at
//! a time; reports acks/s and round-trip latency.

use super::{abort_all, idle_until, spawn_clients, Ctx, Phase};
use crate::procfs::{self, CpuMeters};
use crate::proto;
use crate::stats::{self, Errors, Shards};
use anyhow::anyhow;
use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Args, Clone, Debug)]
pub struct EchoArgs {
    /// Concurrent clients, each with one round trip in flight.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub clients: u64,
    /// Measured duration.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Size of the string argument sent (and echoed back).
    #[arg(long, default_value_t = 16)]
    pub payload_bytes: usize,
    /// Limit for one round trip; a client whose ack does not come in time stops.
    #[arg(long, default_value_t = 10)]
    pub ack_timeout_secs: u64,
}

impl EchoArgs {
    pub fn budget_secs(&self) -> u64 {
        60 + self.clients / 200
            + (self.duration_secs + self.warmup_secs) as u64
            + self.ack_timeout_secs
    }
}

struct Window {
    start: Instant,
    end: Instant,
}

pub async fn run(ctx: &Ctx, a: &EchoArgs) -> Result<Value> {
    ctx.check_fds(a.clients);
    let shards = Arc::new(Shards::new(64));
    let errors = Arc::new(Errors::default());
    let window: Arc<OnceLock<Window>> = Arc::new(OnceLock::new());
    let arg = Arc::new(proto::json_str(&"x".repeat(a.payload_bytes)));
    let ack_timeout = Duration::from_secs(a.ack_timeout_secs);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);

    let body = {
        let (shards, errors, window, arg) =
            (shards.clone(), errors.clone(), window.clone(), arg.clone());
        move |i: u64, conn| {
            let (shards, errors, window, arg) =
                (shards.clone(), errors.clone(), window.clone(), arg.clone());
            let mut rx = phase_rx.clone();
            async move {
                let Some(mut conn) = idle_until(conn, &mut rx, Phase::Run).await else {
                    errors.add(&anyhow!("disconnected before the run"));
                    return;
                };
                let Some(w) = window.get() else { return };
                loop {
                    let t0 = Instant::now();
                    if t0 >= w.end {
                        break;
                    }
                    let res = tokio::time::timeout(ack_timeout, async {
                        let id = conn.emit_with_ack("echo", &arg).await?;
                        conn.wait_ack(id).await
                    })
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("ack timed out")));
                    if let Err(e) = res {
                        errors.add(&e);
                        return;
                    }
                    let t1 = Instant::now();
                    if t0 >= w.start && t1 <= w.end {
                        shards.record(i as usize, (t1 - t0).as_micros() as u64, 0);
                    }
                }
                conn.close().await;
            }
        }
    };
    let (handles, report) = spawn_clients(ctx, a.clients, None, body).await;

    let warm = Duration::from_secs_f64(a.warmup_secs);
    let dur = Duration::from_secs_f64(a.duration_secs);
    let now = Instant::now();
    let _ = window.set(Window {
        start: now + warm,
        end: now + warm + dur,
    });
    let _ = phase_tx.send(Phase::Run);
    tokio::time::sleep(warm).await;
    let cpu = CpuMeters::start(&ctx.server_pids);
    tokio::time::sleep(dur).await;
    let cpu_json = cpu.json();
    // Let the round trips in flight finish (bounded by the ack timeout).
    let _ = tokio::time::timeout(ack_timeout + Duration::from_secs(1), async {
        for h in handles.iter() {
            while !h.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
    let _ = phase_tx.send(Phase::Stop);
    abort_all(handles);

    let (hist, acks, _, _) = shards.take();
    Ok(json!({
        "clients": a.clients,
        "duration_s": a.duration_secs,
        "payload_bytes": a.payload_bytes,
        "connect": report.json(),
        "acks": acks,
        "acks_per_s": procfs::round1(acks as f64 / a.duration_secs),
        "latency": stats::summary(&hist),
        "errors": errors.count(),
        "first_error": errors.first(),
        "cpu": cpu_json,
        "ok": report.failed == 0 && errors.count() == 0 && acks > 0,
    }))
}
