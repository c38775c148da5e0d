//! broadcast: N members of one room and one publisher emitting `pub` with
//! `{room, seq, t}` at rate R; members receive `msg` and measure end-to-end latency
//! (`t` is this process's clock, so no clock sync is needed). With several URLs the
//! members are spread over them and the publisher talks to the first (cluster mode).
//! `--search` finds the highest rate that holds p99 under a target.

use super::{abort_all, spawn_clients, Ctx, Phase};
use crate::client::Conn;
use crate::procfs::{round1, CpuMeters};
use crate::proto::{self, Packet};
use crate::stats::{self, clock, Errors, Shards};
use anyhow::{anyhow, Result};
use clap::Args;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

#[derive(Args, Clone, Debug)]
pub struct BroadcastArgs {
    /// Room members (receivers).
    #[arg(short = 'm', long, default_value_t = 1000)]
    pub members: u64,
    /// Published messages per second (fixed-rate mode).
    #[arg(short = 'r', long, default_value_t = 100.0)]
    pub rate: f64,
    /// Publishing time of a fixed-rate run, or of each search step.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Room name.
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Search the highest rate whose p99 stays under --target-p99-ms with no loss.
    #[arg(long)]
    pub search: bool,
    /// p99 latency target of the search, in ms.
    #[arg(long, default_value_t = 50.0)]
    pub target_p99_ms: f64,
    /// Largest share of lost messages a search step may have and still hold.
    #[arg(long, default_value_t = 0.0)]
    pub max_loss_ratio: f64,
    /// First rate tried by the search (then doubled until a step fails).
    #[arg(long, default_value_t = 25.0)]
    pub search_start: f64,
    /// Highest rate the search tries.
    #[arg(long, default_value_t = 100_000.0)]
    pub search_max: f64,
    /// Tries of a search step before its rate counts as failing.
    #[arg(long, default_value_t = 2)]
    pub step_tries: u32,
    /// Bisection steps after the doubling phase.
    #[arg(long, default_value_t = 4)]
    pub search_refine: u32,
    /// Unmeasured publishing before the run (at --rate, or at --search-start).
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Longest wait for in-flight messages after publishing stops.
    #[arg(long, default_value_t = 10.0)]
    pub max_drain_secs: f64,
}

impl BroadcastArgs {
    pub fn budget_secs(&self) -> u64 {
        let step = self.duration_secs + self.max_drain_secs + 2.0;
        let step = step + (self.warmup_secs + self.max_drain_secs) / 12.0;
        let steps = if self.search {
            (12.0 + 2.0 * self.search_refine as f64) * self.step_tries.max(1) as f64
        } else {
            1.0
        };
        (90.0 + self.members as f64 / 200.0 + step * steps) as u64
    }
}

/// What members share: histograms and the first seq of the current step.
struct Shared {
    shards: Shards,
    first_seq: AtomicU64,
    errors: Errors,
}

pub async fn run(ctx: &Ctx, a: &BroadcastArgs) -> Result<Value> {
    clock::init();
    ctx.check_fds(a.members + 1);
    let shared = Arc::new(Shared {
        shards: Shards::new(64),
        first_seq: AtomicU64::new(0),
        errors: Errors::default(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let body = {
        let shared = shared.clone();
        move |i: u64, conn: Conn| member(i, conn, shared.clone(), phase_rx.clone())
    };
    let (handles, report) = spawn_clients(ctx, a.members, Some(&a.room), body).await;
    let mut publisher = Conn::connect_timeout(&ctx.targets[0], None, ctx.connect_timeout()).await?;
    let mut p = Publisher {
        conn: &mut publisher,
        room: proto::json_str(&a.room),
        next_seq: 1,
    };
    let members = report.ok;

    let mut out = json!({
        "members": a.members,
        "targets": ctx.targets.len(),
        "connect": report.json(),
    });
    let mut errors = 0;
    if a.warmup_secs > 0.0 {
        let rate = if a.search {
            a.search_start.max(1.0)
        } else {
            a.rate
        };
        let w = run_step(a, &mut p, &shared, members, rate, a.warmup_secs, &[]).await;
        errors += w["publish_error"].is_string() as usize;
    }
    if a.search {
        let (max_rate, steps) = search(a, &mut p, &shared, members, &ctx.server_pids).await?;
        errors += steps
            .iter()
            .filter(|s| s["publish_error"].is_string())
            .count();
        out["target_p99_ms"] = json!(a.target_p99_ms);
        out["max_rate"] = json!(max_rate);
        out["steps"] = json!(steps);
    } else {
        let step = run_step(
            a,
            &mut p,
            &shared,
            members,
            a.rate,
            a.duration_secs,
            &ctx.server_pids,
        )
        .await;
        errors += step["publish_error"].is_string() as usize;
        merge(&mut out, step);
    }
    let _ = phase_tx.send(Phase::Stop);
    abort_all(handles);
    let member_errors = shared.errors.count();
    out["member_errors"] = json!(member_errors);
    out["first_error"] = json!(shared.errors.first().or(report.errors.first()));
    out["ok"] = json!(report.failed == 0 && member_errors == 0 && errors == 0 && members > 0);
    Ok(out)
}

fn merge(out: &mut Value, add: Value) {
    if let (Some(o), Value::Object(m)) = (out.as_object_mut(), add) {
        o.extend(m);
    }
}

async fn member(i: u64, mut conn: Conn, sh: Arc<Shared>, mut phase: watch::Receiver<Phase>) {
    loop {
        tokio::select! {
            r = conn.recv() => match r {
                Ok(Some(text)) => {
                    let Packet::Event(p) = proto::parse(&text) else { continue };
                    if proto::event_name(p) != Some("msg") {
                        continue;
                    }
                    let now = clock::now_us();
                    let (Some(seq), Some(t)) = (proto::scan_u64(p, "seq"), proto::scan_u64(p, "t")) else {
                        sh.errors.add(&anyhow!("msg without seq/t: {p}"));
                        continue;
                    };
                    if seq >= sh.first_seq.load(Ordering::Relaxed) {
                        sh.shards.record(i as usize, now.saturating_sub(t), now);
                    } else {
                        sh.shards.stale(i as usize);
                    }
                }
                Ok(None) | Err(_) => {
                    if *phase.borrow() < Phase::Stop {
                        sh.errors.add(&anyhow!("member disconnected"));
                    }
                    return;
                }
            },
            r = phase.changed() => {
                if r.is_err() || *phase.borrow() == Phase::Stop {
                    return;
                }
            }
        }
    }
}

struct Publisher<'a> {
    conn: &'a mut Conn,
    room: String,
    next_seq: u64,
}

impl Publisher<'_> {
    /// Publishes at `rate` for `dur` (paced on a 1 ms tick, catching up in bursts);
    /// returns how many were sent. Stops early if it falls 5 s behind.
    async fn publish(&mut self, rate: f64, dur: Duration) -> Result<u64> {
        let total = (rate * dur.as_secs_f64()).round().max(1.0) as u64;
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut sent = 0u64;
        while sent < total {
            tokio::select! {
                _ = tick.tick() => {
                    let elapsed = start.elapsed();
                    if elapsed > dur + Duration::from_secs(5) {
                        break;
                    }
                    let due = ((elapsed.as_secs_f64() * rate) as u64 + 1).min(total);
                    while sent < due {
                        let args = format!("{{\"room\":{},\"seq\":{},\"t\":{}}}", self.room, self.next_seq, clock::now_us());
                        self.conn.send(&proto::emit("pub", &args, None)).await?;
                        self.next_seq += 1;
                        sent += 1;
                    }
                }
                r = self.conn.recv() => {
                    if r?.is_none() {
                        return Err(anyhow!("publisher disconnected"));
                    }
                }
            }
        }
        Ok(sent)
    }
}

/// One publishing period at `rate`, then a drain; the step's result object.
async fn run_step(
    a: &BroadcastArgs,
    p: &mut Publisher<'_>,
    sh: &Shared,
    members: u64,
    rate: f64,
    secs: f64,
    pids: &[u32],
) -> Value {
    let dur = Duration::from_secs_f64(secs);
    sh.first_seq.store(p.next_seq, Ordering::Relaxed);
    let _ = sh.shards.take();
    let cpu = CpuMeters::start(pids);
    let start_us = clock::now_us();
    let t0 = Instant::now();
    let published = p.publish(rate, dur).await;
    let pub_secs = t0.elapsed().as_secs_f64();
    let sent = *published.as_ref().unwrap_or(&0);
    let cpu_json = cpu.json();
    // Drain: until everything arrived, nothing arrived for 1 s, or max_drain_secs.
    let expected = sent * members;
    let drain_start = Instant::now();
    let (mut last, mut last_change) = (sh.shards.count(), Instant::now());
    while last < expected
        && last_change.elapsed() < Duration::from_secs(1)
        && drain_start.elapsed().as_secs_f64() < a.max_drain_secs
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = sh.shards.count();
        if c != last {
            (last, last_change) = (c, Instant::now());
        }
    }
    let (hist, received, stale, last_us) = sh.shards.take();
    let span = (last_us.saturating_sub(start_us) as f64 / 1e6)
        .max(pub_secs)
        .max(1e-6);
    let lost = expected.saturating_sub(received);
    let lat = stats::summary(&hist);
    let loss_ratio = if expected > 0 {
        lost as f64 / expected as f64
    } else {
        0.0
    };
    let holds = received > 0
        && lat["p99_us"]
            .as_f64()
            .is_some_and(|p| p < a.target_p99_ms * 1000.0)
        && loss_ratio <= a.max_loss_ratio;
    json!({
        "rate": rate,
        "duration_s": secs,
        "sent": sent,
        "achieved_rate": round1(sent as f64 / pub_secs.max(1e-6)),
        "expected": expected,
        "delivered": received,
        "delivered_per_s": round1(received as f64 / span),
        "lost": lost,
        "extra": received.saturating_sub(expected),
        "stale": stale,
        "loss_ratio": loss_ratio,
        "latency": lat,
        "holds": holds,
        // A generator near its core's limit bounds the result, not the server.
        "gen_saturated": cpu_json["gen_cpu_pct"].as_f64().is_some_and(|g| g >= 90.0),
        "cpu": cpu_json,
        "publish_error": published.err().map(|e| format!("{e:#}")),
    })
}

async fn search(
    a: &BroadcastArgs,
    p: &mut Publisher<'_>,
    sh: &Shared,
    members: u64,
    pids: &[u32],
) -> Result<(f64, Vec<Value>)> {
    let mut steps = Vec::new();
    // A rate holds if one of up to --step-tries tries holds: one hiccup (a GC pause,
    // another process on the core) must not end the search.
    let mut step = async |rate: f64, steps: &mut Vec<Value>| {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut s = run_step(a, p, sh, members, rate, a.duration_secs, pids).await;
            eprintln!(
                "search: rate {rate} try {tries} -> delivered/s {} p99 {} us lost {} holds {}",
                s["delivered_per_s"], s["latency"]["p99_us"], s["lost"], s["holds"]
            );
            let holds = s["holds"].as_bool().unwrap_or(false);
            let err = s["publish_error"].is_string();
            let again = !holds && !err && tries < a.step_tries;
            s["superseded"] = json!(again);
            steps.push(s);
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !again {
                return (holds, err);
            }
        }
    };
    let (mut pass, mut fail) = (0.0f64, f64::INFINITY);
    let mut rate = a.search_start.max(1.0);
    // Doubling (or halving, if the first step fails) until the boundary is bracketed.
    loop {
        let (holds, err) = step(rate, &mut steps).await;
        if err {
            return Ok((pass, steps));
        }
        if holds {
            pass = rate;
            if fail.is_finite() || rate >= a.search_max {
                break;
            }
            rate = (rate * 2.0).min(a.search_max);
        } else {
            fail = rate;
            if pass > 0.0 || rate <= 1.0 {
                break;
            }
            rate = (rate / 2.0).floor().max(1.0);
        }
    }
    // Bisection between the highest passing and the lowest failing rate.
    for _ in 0..a.search_refine {
        if !fail.is_finite() || pass <= 0.0 || (fail - pass) / pass < 0.1 {
            break;
        }
        let mid = ((pass + fail) / 2.0).round();
        let (holds, err) = step(mid, &mut steps).await;
        if err {
            break;
        }
        if holds {
            pass = mid;
        } else {
            fail = mid;
        }
    }
    Ok((pass, steps))
}
