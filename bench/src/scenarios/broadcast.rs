//! broadcast: N members of one room and one publisher emitting `pub` with
//! `{room, seq, t}` at rate R; members receive `msg` and measure end-to-end latency
//! (`t` is this process's clock, so no clock sync is needed). With several URLs the
//! members are spread over them (or over the first `--member-nodes`) and the publisher
//! talks to the first (cluster mode): the result then splits the latency of members on
//! the publisher's node from the others' (the difference is what crossing nodes adds),
//! and gives each node's CPU, so that a node without members shows what a broadcast
//! it has nothing to deliver for costs it. `--search` finds the highest rate that
//! holds p99 under a target.

use super::{abort_all, spawn_clients_with, Ctx, Phase, SpawnOpts};
use crate::client::{Conn, Target};
use crate::procfs::{round1, round2, CpuMeters, NsMeters};
use crate::proto::{self, Packet};
use crate::stats::{self, clock, Errors, Shards};
use anyhow::{anyhow, Result};
use clap::Args;
use hdrhistogram::Histogram;
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
    /// Where the publisher connects (default: the first --url): with members on other
    /// nodes only, every delivery crosses the cluster.
    #[arg(long)]
    pub publisher_url: Option<String>,
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
    /// Members on the first K --url only (0: on all of them); the other nodes hold
    /// no member of the room, and their CPU is reported as what a broadcast costs a
    /// node that has nothing to deliver.
    #[arg(long, default_value_t = 0)]
    pub member_nodes: usize,
    /// Several nodes: longest wait for a probe published on the publisher's node to
    /// reach members on every node (the cluster forming) before the run.
    #[arg(long, default_value_t = 30.0)]
    pub form_timeout_secs: f64,
    /// Several nodes: quiet time before publishing, over which each node's idle CPU
    /// is measured (and subtracted from its CPU per broadcast).
    #[arg(long, default_value_t = 2.0)]
    pub idle_cpu_secs: f64,
    /// Padding added to every published message (bytes of a `pad` string).
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
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
        (90.0
            + self.members as f64 / 200.0
            + self.form_timeout_secs
            + self.idle_cpu_secs
            + step * steps) as u64
    }
}

/// Each member node's (latency histogram, messages received).
type PerNode = Vec<(Histogram<u64>, u64)>;

/// What members share: histograms per member node and the first seq of the current step.
pub(crate) struct Shared {
    /// One set of shards per node holding members (one in single-node runs).
    nodes: Vec<Shards>,
    /// Messages each member node received, of any step (to see the cluster form).
    seen: Vec<AtomicU64>,
    member_nodes: u64,
    first_seq: AtomicU64,
    errors: Errors,
}

impl Shared {
    fn node_of(&self, i: u64) -> usize {
        (i % self.member_nodes) as usize
    }

    fn count(&self) -> u64 {
        self.nodes.iter().map(Shards::count).sum()
    }

    /// Takes every node's shards: (merged histogram, count, stale, last_us) and each
    /// node's (histogram, count).
    fn take(&self) -> (Histogram<u64>, u64, u64, u64, PerNode) {
        let mut all = stats::new_hist();
        let (mut count, mut stale, mut last) = (0, 0, 0);
        let mut per = Vec::new();
        for n in &self.nodes {
            let (h, c, s, l) = n.take();
            let _ = all.add(&h);
            count += c;
            stale += s;
            last = last.max(l);
            per.push((h, c));
        }
        (all, count, stale, last, per)
    }
}

/// The nodes of a run: which one the publisher talks to, which hold members, the
/// server pids (in --url order) and each node's idle CPU.
struct Cluster {
    urls: Vec<String>,
    /// Index of the publisher's node among the targets, if it is one of them.
    publisher: Option<usize>,
    member_nodes: usize,
    /// Server pids in target order (empty when they do not line up with the URLs).
    pids: Vec<u32>,
    /// Each node's CPU at rest, ns per second.
    idle_ns_per_s: Vec<Option<f64>>,
}

impl Cluster {
    fn is_cluster(&self) -> bool {
        self.urls.len() > 1
    }
}

pub async fn run(ctx: &Ctx, a: &BroadcastArgs) -> Result<Value> {
    clock::init();
    ctx.check_fds(a.members + 1);
    let n_targets = ctx.targets.len();
    let member_nodes = if a.member_nodes == 0 {
        n_targets
    } else {
        a.member_nodes.min(n_targets)
    };
    let shared = Arc::new(Shared {
        nodes: (0..member_nodes)
            .map(|_| Shards::new((64 / member_nodes).max(8)))
            .collect(),
        seen: (0..member_nodes).map(|_| AtomicU64::new(0)).collect(),
        member_nodes: member_nodes as u64,
        first_seq: AtomicU64::new(0),
        errors: Errors::default(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let body = {
        let shared = shared.clone();
        move |i: u64, conn: Conn| member(i, conn, shared.clone(), phase_rx.clone())
    };
    let opts = SpawnOpts {
        targets: ctx.targets[..member_nodes].to_vec(),
        ..SpawnOpts::default()
    };
    let (handles, report) = spawn_clients_with(ctx, &opts, a.members, Some(&a.room), body).await;
    let publisher_target = match &a.publisher_url {
        Some(u) => Target::parse(u, &ctx.common.path)?,
        None => ctx.targets[0].clone(),
    };
    let mut publisher =
        Conn::connect_timeout(&publisher_target, None, ctx.connect_timeout()).await?;
    let mut p = Publisher {
        conn: &mut publisher,
        room: proto::json_str(&a.room),
        next_seq: 1,
        pad: Publisher::padding(a.payload_bytes),
    };
    let members = report.ok;
    let mut cluster = Cluster {
        urls: ctx.targets.iter().map(|t| t.url.clone()).collect(),
        publisher: ctx
            .targets
            .iter()
            .position(|t| t.addr == publisher_target.addr),
        member_nodes,
        pids: if ctx.server_pids.len() == n_targets {
            ctx.server_pids.clone()
        } else {
            Vec::new()
        },
        idle_ns_per_s: vec![None; n_targets],
    };

    let mut out = json!({
        "members": a.members,
        "targets": n_targets,
        "member_nodes": member_nodes,
        "connect": report.json(),
    });
    let mut errors = 0;
    if cluster.is_cluster() && members > 0 {
        let formed = form(a, &mut p, &shared).await;
        out["formation"] = formed.clone();
        if formed["ok"].as_bool() != Some(true) {
            let _ = phase_tx.send(Phase::Stop);
            abort_all(handles);
            out["ok"] = json!(false);
            out["first_error"] = formed["error"].clone();
            return Ok(out);
        }
        if a.idle_cpu_secs > 0.0 && !cluster.pids.is_empty() {
            let m = NsMeters::start(&cluster.pids);
            // The publisher keeps answering pings meanwhile.
            let _ = tokio::time::timeout(Duration::from_secs_f64(a.idle_cpu_secs), async {
                while let Ok(Some(_)) = p.conn.recv().await {}
            })
            .await;
            cluster.idle_ns_per_s = m
                .read()
                .into_iter()
                .map(|(ns, wall)| ns.map(|ns| ns as f64 / wall.max(1e-6)))
                .collect();
        }
    }
    let run = RunCtx {
        a,
        sh: &shared,
        members,
        cluster: &cluster,
        pids: &ctx.server_pids,
    };
    if a.warmup_secs > 0.0 {
        let rate = if a.search {
            a.search_start.max(1.0)
        } else {
            a.rate
        };
        let w = run_step(&run, &mut p, rate, a.warmup_secs, false).await;
        errors += w["publish_error"].is_string() as usize;
    }
    if a.search {
        let (max_rate, steps) = search(&run, &mut p).await?;
        errors += steps
            .iter()
            .filter(|s| s["publish_error"].is_string())
            .count();
        out["target_p99_ms"] = json!(a.target_p99_ms);
        out["max_rate"] = json!(max_rate);
        out["steps"] = json!(steps);
    } else {
        let step = run_step(&run, &mut p, a.rate, a.duration_secs, true).await;
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

/// Publishes probes until a message published on the publisher's node reached
/// members on every member node (every server subscribed to the others), bounded
/// by --form-timeout-secs.
async fn form(a: &BroadcastArgs, p: &mut Publisher<'_>, sh: &Shared) -> Value {
    // Probes are never counted as latency samples.
    sh.first_seq.store(u64::MAX, Ordering::Relaxed);
    let start = Instant::now();
    let mut probes = 0u64;
    loop {
        for s in &sh.seen {
            s.store(0, Ordering::Relaxed);
        }
        if let Err(e) = p.send_one().await {
            return json!({"ok": false, "error": format!("probe: {e:#}")});
        }
        probes += 1;
        let wait = Instant::now();
        while wait.elapsed() < Duration::from_millis(500) {
            if sh.seen.iter().all(|s| s.load(Ordering::Relaxed) > 0) {
                return json!({
                    "ok": true,
                    "probes": probes,
                    "secs": round2(start.elapsed().as_secs_f64()),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                r = p.conn.recv() => if !matches!(r, Ok(Some(_))) {
                    return json!({"ok": false, "error": "publisher disconnected while the cluster formed"});
                }
            }
        }
        if start.elapsed().as_secs_f64() > a.form_timeout_secs {
            let silent: Vec<usize> = sh
                .seen
                .iter()
                .enumerate()
                .filter(|(_, s)| s.load(Ordering::Relaxed) == 0)
                .map(|(i, _)| i)
                .collect();
            return json!({
                "ok": false,
                "probes": probes,
                "error": format!(
                    "the cluster did not form within {} s: members on node(s) {silent:?} received no probe",
                    a.form_timeout_secs
                ),
            });
        }
    }
}

fn merge(out: &mut Value, add: Value) {
    if let (Some(o), Value::Object(m)) = (out.as_object_mut(), add) {
        o.extend(m);
    }
}

async fn member(i: u64, mut conn: Conn, sh: Arc<Shared>, mut phase: watch::Receiver<Phase>) {
    let node = sh.node_of(i);
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
                    sh.seen[node].fetch_add(1, Ordering::Relaxed);
                    if seq >= sh.first_seq.load(Ordering::Relaxed) {
                        sh.nodes[node].record(i as usize, now.saturating_sub(t), now);
                    } else {
                        sh.nodes[node].stale(i as usize);
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

pub(crate) struct Publisher<'a> {
    pub(crate) conn: &'a mut Conn,
    pub(crate) room: String,
    pub(crate) next_seq: u64,
    /// `,"pad":"xxx…"` or empty.
    pub(crate) pad: String,
}

impl Publisher<'_> {
    /// The `pad` field of `bytes` bytes, or nothing.
    pub(crate) fn padding(bytes: usize) -> String {
        if bytes == 0 {
            return String::new();
        }
        format!(",\"pad\":{}", proto::json_str(&"x".repeat(bytes)))
    }

    pub(crate) async fn send_one(&mut self) -> Result<()> {
        let args = format!(
            "{{\"room\":{},\"seq\":{},\"t\":{}{}}}",
            self.room,
            self.next_seq,
            clock::now_us(),
            self.pad
        );
        self.conn.send(&proto::emit("pub", &args, None)).await?;
        self.next_seq += 1;
        Ok(())
    }

    /// Publishes at `rate` for `dur` (paced on a 1 ms tick, catching up in bursts);
    /// returns how many were sent. Stops early if it falls 5 s behind.
    pub(crate) async fn publish(&mut self, rate: f64, dur: Duration) -> Result<u64> {
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
                        self.send_one().await?;
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

/// What every step of a run shares.
struct RunCtx<'a> {
    a: &'a BroadcastArgs,
    sh: &'a Shared,
    members: u64,
    cluster: &'a Cluster,
    pids: &'a [u32],
}

/// Waits (bounded) until `expected` messages arrived, nothing arrived for 1 s, or
/// `max_drain_secs` passed.
pub(crate) async fn drain(count: impl Fn() -> u64, expected: u64, max_drain_secs: f64) {
    let drain_start = Instant::now();
    let (mut last, mut last_change) = (count(), Instant::now());
    while last < expected
        && last_change.elapsed() < Duration::from_secs(1)
        && drain_start.elapsed().as_secs_f64() < max_drain_secs
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = count();
        if c != last {
            (last, last_change) = (c, Instant::now());
        }
    }
}

/// One publishing period at `rate`, then a drain; the step's result object
/// (`measured`: with CPU meters).
async fn run_step(
    run: &RunCtx<'_>,
    p: &mut Publisher<'_>,
    rate: f64,
    secs: f64,
    measured: bool,
) -> Value {
    let (a, sh, members, cl) = (run.a, run.sh, run.members, run.cluster);
    let dur = Duration::from_secs_f64(secs);
    sh.first_seq.store(p.next_seq, Ordering::Relaxed);
    let _ = sh.take();
    let pids: &[u32] = if measured { run.pids } else { &[] };
    let cpu = CpuMeters::start(pids);
    let node_cpu =
        (measured && cl.is_cluster() && !cl.pids.is_empty()).then(|| NsMeters::start(&cl.pids));
    let start_us = clock::now_us();
    let t0 = Instant::now();
    let published = p.publish(rate, dur).await;
    let pub_secs = t0.elapsed().as_secs_f64();
    let sent = *published.as_ref().unwrap_or(&0);
    let cpu_json = cpu.json();
    let node_cpu = node_cpu.map(|m| m.read());
    let expected = sent * members;
    drain(|| sh.count(), expected, a.max_drain_secs).await;
    let (hist, received, stale, last_us, per_node) = sh.take();
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
    let mut step = json!({
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
    });
    if cl.is_cluster() {
        merge(
            &mut step,
            cluster_json(cl, members, sent, &per_node, node_cpu.as_deref()),
        );
    }
    step
}

/// The per-node part of a cluster step: latency on the publisher's node and on the
/// others (and the difference), and each node's CPU, per broadcast for the nodes
/// without members.
fn cluster_json(
    cl: &Cluster,
    members: u64,
    sent: u64,
    per_node: &[(Histogram<u64>, u64)],
    node_cpu: Option<&[(Option<u64>, f64)]>,
) -> Value {
    let mut nodes = Vec::new();
    let mut local = stats::new_hist();
    let mut remote = stats::new_hist();
    for (j, url) in cl.urls.iter().enumerate() {
        let mut n = json!({ "url": url, "has_members": j < cl.member_nodes });
        if let Some((h, c)) = per_node.get(j) {
            let m = members / cl.member_nodes as u64
                + u64::from((j as u64) < members % cl.member_nodes as u64);
            n["members"] = json!(m);
            n["delivered"] = json!(c);
            let mut sum = stats::summary(h);
            if let Some(o) = sum.as_object_mut() {
                o.remove("dist");
            }
            n["latency"] = sum;
            if Some(j) == cl.publisher {
                let _ = local.add(h);
            } else {
                let _ = remote.add(h);
            }
        }
        if let Some(&(Some(ns), wall)) = node_cpu.and_then(|c| c.get(j)) {
            n["cpu_pct"] = json!(round1(ns as f64 / 1e7 / wall.max(1e-6)));
            let idle = cl.idle_ns_per_s.get(j).copied().flatten();
            if let Some(idle) = idle {
                n["idle_cpu_pct"] = json!(round1(idle / 1e7));
            }
            if sent > 0 {
                let busy = ns as f64 - idle.unwrap_or(0.0) * wall;
                n["cpu_us_per_broadcast"] = json!(round2(busy.max(0.0) / 1e3 / sent as f64));
                n["cpu_us_per_broadcast_raw"] = json!(round2(ns as f64 / 1e3 / sent as f64));
            }
        }
        nodes.push(n);
    }
    let mut out = json!({ "nodes": nodes });
    if cl.publisher.is_some_and(|p| p < cl.member_nodes) && !local.is_empty() {
        out["latency_local"] = stats::summary(&local);
    }
    if !remote.is_empty() {
        out["latency_remote"] = stats::summary(&remote);
    }
    if !local.is_empty() && !remote.is_empty() {
        for q in ["p50", "p99"] {
            let at = if q == "p50" { 0.5 } else { 0.99 };
            out[format!("added_{q}_us")] =
                json!(remote.value_at_quantile(at) as i64 - local.value_at_quantile(at) as i64);
        }
    }
    // Nodes without members: what the others' broadcasts cost them.
    let idle_nodes: Vec<&Value> = out["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["has_members"] == json!(false))
        .collect();
    let mean = |k: &str| -> Option<f64> {
        let v: Vec<f64> = idle_nodes.iter().filter_map(|n| n[k].as_f64()).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    if !idle_nodes.is_empty() {
        out["memberless"] = json!({
            "nodes": idle_nodes.len(),
            "cpu_pct": mean("cpu_pct").map(round1),
            "idle_cpu_pct": mean("idle_cpu_pct").map(round1),
            "cpu_us_per_broadcast": mean("cpu_us_per_broadcast").map(round2),
            "cpu_us_per_broadcast_raw": mean("cpu_us_per_broadcast_raw").map(round2),
        });
    }
    out
}

async fn search(run: &RunCtx<'_>, p: &mut Publisher<'_>) -> Result<(f64, Vec<Value>)> {
    let a = run.a;
    let mut steps = Vec::new();
    // A rate holds if one of up to --step-tries tries holds: one hiccup (a GC pause,
    // another process on the core) must not end the search.
    let mut step = async |rate: f64, steps: &mut Vec<Value>| {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut s = run_step(run, p, rate, a.duration_secs, true).await;
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
