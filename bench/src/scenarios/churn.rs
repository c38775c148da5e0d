//! churn: clients connecting and disconnecting continuously for a bounded time;
//! reports the server's memory at baseline, during and after (it should return to
//! baseline once the churn stops), and its curve: RSS sampled every `--sample-ms`
//! from before the churn to the end of the settling, with the slope over the second
//! half of the churn (flat once the server reached its working set).

use super::{abort_all, idle_until, spawn_clients, Ctx, Phase};
use crate::client::Conn;
use crate::procfs::{round1, round2, CpuMeters};
use crate::stats::{self, Errors, Shards};
use anyhow::{anyhow, Result};
use clap::Args;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Args, Clone, Debug)]
pub struct ChurnArgs {
    /// How long clients keep connecting and disconnecting.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Concurrent connect/disconnect loops.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: u64,
    /// Idle connections held open for the whole run, beside the churn.
    #[arg(long, default_value_t = 0)]
    pub idle: u64,
    /// Percent of cycles that drop the TCP connection instead of a clean close.
    #[arg(long, default_value_t = 25)]
    pub abrupt_pct: u64,
    /// Skip the one echo round trip each cycle does before disconnecting.
    #[arg(long)]
    pub no_echo: bool,
    /// Upper bound on cycles (0: none; the duration bounds the run anyway).
    #[arg(long, default_value_t = 0)]
    pub max_cycles: u64,
    /// Longest wait for the server's memory to come back after the churn.
    #[arg(long, default_value_t = 15.0)]
    pub settle_secs: f64,
    /// Memory counts as back at baseline within this percentage…
    #[arg(long, default_value_t = 10.0)]
    pub tolerance_pct: f64,
    /// …or within this many KiB, whichever is larger.
    #[arg(long, default_value_t = 4096)]
    pub tolerance_kib: u64,
    /// Interval of the server memory samples (the curve in the result line).
    #[arg(long, default_value_t = 250)]
    pub sample_ms: u64,
    /// Most points kept in the result line's curve (evenly thinned beyond).
    #[arg(long, default_value_t = 600)]
    pub max_points: usize,
}

impl ChurnArgs {
    pub fn budget_secs(&self) -> u64 {
        (90.0 + self.idle as f64 / 200.0 + self.duration_secs + self.settle_secs) as u64
    }
}

pub async fn run(ctx: &Ctx, a: &ChurnArgs) -> Result<Value> {
    ctx.check_fds(a.idle + a.concurrency);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (idle_handles, idle_report) = spawn_clients(ctx, a.idle, None, move |_, conn| {
        let mut rx = phase_rx.clone();
        async move {
            let _ = idle_until(conn, &mut rx, Phase::Stop).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = ctx.server_rss();

    // Sample the server's memory from here to the end of the settling: (ms since
    // the churn started, KiB).
    let (stop_tx, stop_rx) = watch::channel(false);
    let pids = ctx.server_pids.clone();
    let start = Instant::now();
    let sample_ms = a.sample_ms.max(10);
    let sampler = tokio::spawn(async move {
        let mut samples: Vec<(u64, u64)> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(sample_ms));
        while !*stop_rx.borrow() {
            tick.tick().await;
            if let Some(r) = crate::procfs::servers_rss_kib(&pids) {
                samples.push((start.elapsed().as_millis() as u64, r));
            }
        }
        samples
    });

    let cpu = CpuMeters::start(&ctx.server_pids);
    let cycles = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::default());
    let lat = Arc::new(Shards::new(16));
    let src = ctx.src_addrs(a.concurrency);
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration_secs);
    let mut workers = Vec::new();
    for w in 0..a.concurrency {
        let target = ctx.targets[(w % ctx.targets.len() as u64) as usize].clone();
        let (cycles, errors, lat) = (cycles.clone(), errors.clone(), lat.clone());
        let (limit, a) = (ctx.connect_timeout(), a.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let c = cycles.fetch_add(1, Ordering::Relaxed);
                if a.max_cycles > 0 && c >= a.max_cycles {
                    break;
                }
                let t0 = Instant::now();
                let res = async {
                    let mut conn = Conn::connect_timeout(&target, src.for_client(w), limit).await?;
                    lat.record(w as usize, t0.elapsed().as_micros() as u64, 0);
                    if !a.no_echo {
                        tokio::time::timeout(limit, async {
                            let id = conn.emit_with_ack("echo", "\"churn\"").await?;
                            conn.wait_ack(id).await
                        })
                        .await
                        .map_err(|_| anyhow!("echo timed out"))??;
                    }
                    Ok::<_, anyhow::Error>(conn)
                }
                .await;
                match res {
                    // Spread abrupt drops evenly over the cycles.
                    Ok(conn) if (n * a.abrupt_pct) % 100 + a.abrupt_pct >= 100 => drop(conn),
                    Ok(conn) => conn.close().await,
                    Err(e) => {
                        errors.add(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                n += 1;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let churn_secs = start.elapsed().as_secs_f64();
    let cpu_json = cpu.json();

    // After: wait (bounded) for the server's memory to come back near the baseline.
    let settle_start = Instant::now();
    let mut after = ctx.server_rss();
    let limit =
        baseline.map(|b| b + ((b as f64 * a.tolerance_pct / 100.0) as u64).max(a.tolerance_kib));
    while let (Some(l), Some(now)) = (limit, after) {
        if now <= l || settle_start.elapsed().as_secs_f64() >= a.settle_secs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = ctx.server_rss();
    }
    let _ = stop_tx.send(true);
    let all_samples = sampler.await.unwrap_or_default();
    let churn_ms = (churn_secs * 1000.0) as u64;
    let samples: Vec<u64> = all_samples
        .iter()
        .filter(|(t, _)| *t <= churn_ms)
        .map(|(_, r)| *r)
        .collect();
    let _ = phase_tx.send(Phase::Stop);
    abort_all(idle_handles);
    let second_half: Vec<(f64, f64)> = all_samples
        .iter()
        .filter(|(t, _)| *t * 2 >= churn_ms && *t <= churn_ms)
        .map(|(t, r)| (*t as f64 / 60_000.0, *r as f64))
        .collect();
    let slope = slope(&second_half);
    let at = |frac: f64| -> Option<u64> {
        let t = (churn_ms as f64 * frac) as u64;
        all_samples
            .iter()
            .filter(|(s, _)| *s <= churn_ms)
            .min_by_key(|(s, _)| s.abs_diff(t))
            .map(|(_, r)| *r)
    };
    let (half, end) = (at(0.5), at(1.0));

    let total = cycles.load(Ordering::Relaxed).min(if a.max_cycles > 0 {
        a.max_cycles
    } else {
        u64::MAX
    });
    let done = total.saturating_sub(errors.count());
    let (hist, _, _, _) = lat.take();
    let during_max = samples.iter().copied().max();
    let during_mean =
        (!samples.is_empty()).then(|| samples.iter().sum::<u64>() / samples.len() as u64);
    Ok(json!({
        "duration_s": round2(churn_secs),
        "concurrency": a.concurrency,
        "idle": a.idle,
        "idle_connect": idle_report.json(),
        "abrupt_pct": a.abrupt_pct,
        "cycles": done,
        "cycles_per_s": round1(done as f64 / churn_secs.max(1e-6)),
        "connect_latency": stats::summary(&hist),
        "errors": errors.count(),
        "first_error": errors.first(),
        "server_rss_baseline_kib": baseline,
        "server_rss_during_max_kib": during_max,
        "server_rss_during_mean_kib": during_mean,
        "server_rss_after_kib": after,
        "server_rss_growth_kib": baseline.zip(after).map(|(b, a)| a as i64 - b as i64),
        "settle_s": round2(settle_start.elapsed().as_secs_f64()),
        "returned_to_baseline": limit.zip(after).map(|(l, a)| a <= l),
        "server_rss_half_kib": half,
        "server_rss_end_kib": end,
        "server_rss_second_half_growth_kib": half.zip(end).map(|(h, e)| e as i64 - h as i64),
        "server_rss_slope_kib_per_min": slope.map(round1),
        "rss_curve": thin(&all_samples, a.max_points)
            .iter()
            .map(|(t, r)| json!([round2(*t as f64 / 1000.0), r]))
            .collect::<Vec<_>>(),
        "churn_end_s": round2(churn_secs),
        "cpu": cpu_json,
        "ok": idle_report.failed == 0 && errors.count() == 0 && done > 0,
    }))
}

/// Least-squares slope of (x, y) points, or None with fewer than 3.
fn slope(pts: &[(f64, f64)]) -> Option<f64> {
    if pts.len() < 3 {
        return None;
    }
    let n = pts.len() as f64;
    let (mx, my) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = pts.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

/// At most `max` points, evenly picked (the first and the last kept).
fn thin<T: Copy>(v: &[T], max: usize) -> Vec<T> {
    if v.len() <= max || max < 2 {
        return v.to_vec();
    }
    (0..max).map(|i| v[i * (v.len() - 1) / (max - 1)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_and_thinning() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        assert!((slope(&pts).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&pts[..2]), None);
        let v: Vec<u32> = (0..1000).collect();
        let t = thin(&v, 11);
        assert_eq!(t.len(), 11);
        assert_eq!((t[0], t[10]), (0, 999));
        assert_eq!(thin(&v[..5], 11).len(), 5);
    }
}
