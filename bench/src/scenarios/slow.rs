//! slow-consumers: N members of one busy room, K of whom stop reading (or read
//! slowly) halfway through. Reports the healthy members' broadcast latency without
//! the slow ones (every member reads) and with them (the K stopped), and what the
//! server did with the slow ones: disconnected them (a queue bound overflowed),
//! dropped some of their messages but kept them, or buffered everything (memory).
//!
//! Phases, each `-d` seconds of publishing at `-r` msg/s: (A) every member reads;
//! (B) members 0..K pause (`--mode pause`) or read `--slow-read-per-s` packets a
//! second (`--mode slow`); then (C) the slow members read again for up to
//! `--catchup-secs`, to count what they got and whether the server closed them.
//! The backlog of a paused member fills the kernel's buffers first (the server's send
//! buffer grows to a few MB on loopback), then the server's own queue: the rates are
//! chosen so that phase B sends well past both. While catching up, the slow members
//! emit an unhandled `catchup` event every 100 ms: its segment tells the server their
//! window opened (with a small `--slow-rcvbuf`, a window opening by less than the MSS,
//! 64 KiB on loopback, is not announced by itself, and the server would wait for its
//! next zero-window probe, seconds later).

use super::broadcast::{drain, Publisher};
use super::{abort_all, spawn_clients_with, Ctx, SpawnOpts};
use crate::client::Conn;
use crate::procfs::{round1, round2, CpuMeters};
use crate::proto::{self, Packet};
use crate::stats::{self, clock, Errors, Shards};
use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowMode {
    /// Stop reading altogether.
    Pause,
    /// Read --slow-read-per-s packets a second.
    Slow,
}

#[derive(Args, Clone, Debug)]
pub struct SlowArgs {
    /// Room members, slow ones included.
    #[arg(short = 'm', long, default_value_t = 50)]
    pub members: u64,
    /// Members that turn slow in phase B.
    #[arg(short = 'k', long, default_value_t = 5)]
    pub slow: u64,
    /// Published messages per second.
    #[arg(short = 'r', long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Publishing time of each phase.
    #[arg(short = 'd', long, default_value_t = 20.0)]
    pub duration_secs: f64,
    /// Padding of every message (bytes), so that a backlog builds up in bytes too.
    #[arg(long, default_value_t = 512)]
    pub payload_bytes: usize,
    /// What the slow members do in phase B.
    #[arg(long, value_enum, default_value_t = SlowMode::Pause)]
    pub mode: SlowMode,
    /// Packets a second a slow member reads in `--mode slow`.
    #[arg(long, default_value_t = 20.0)]
    pub slow_read_per_s: f64,
    /// Fixed socket receive buffer of the slow members, bytes (0: the kernel's default).
    #[arg(long, default_value_t = 0)]
    pub slow_rcvbuf: u32,
    /// Phase C ends when the slow members received nothing for this long.
    #[arg(long, default_value_t = 5.0)]
    pub catchup_quiet_secs: f64,
    /// Unmeasured publishing before phase A.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Longest wait for the healthy members' in-flight messages after a phase.
    #[arg(long, default_value_t = 5.0)]
    pub max_drain_secs: f64,
    /// Longest time the slow members get to read their backlog in phase C.
    #[arg(long, default_value_t = 20.0)]
    pub catchup_secs: f64,
    /// Room name.
    #[arg(long, default_value = "slow")]
    pub room: String,
}

impl SlowArgs {
    pub fn budget_secs(&self) -> u64 {
        (90.0
            + self.members as f64 / 200.0
            + self.warmup_secs
            + 2.0 * (self.duration_secs + self.max_drain_secs + 7.0)
            + self.catchup_secs) as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum P {
    Setup,
    Normal,
    Slow,
    Catchup,
    Stop,
}

/// One slow member's record.
#[derive(Default)]
struct SlowMember {
    /// Messages of phase B (seq >= slow_first_seq) received.
    received: AtomicU64,
    /// The server closed it.
    closed: AtomicBool,
    /// When the close was seen, µs on the generator's clock (0: not seen).
    closed_at_us: AtomicU64,
}

struct Shared {
    healthy: Shards,
    slow_lat: Shards,
    slow: Vec<SlowMember>,
    k: u64,
    first_seq: AtomicU64,
    slow_first_seq: AtomicU64,
    slow_start_us: AtomicU64,
    /// Healthy members the server closed.
    healthy_closed: AtomicU64,
    errors: Errors,
}

pub async fn run(ctx: &Ctx, a: &SlowArgs) -> Result<Value> {
    clock::init();
    ctx.check_fds(a.members + 1);
    let k = a.slow.min(a.members);
    let sh = Arc::new(Shared {
        healthy: Shards::new(64),
        slow_lat: Shards::new(8),
        slow: (0..k).map(|_| SlowMember::default()).collect(),
        k,
        first_seq: AtomicU64::new(u64::MAX),
        slow_first_seq: AtomicU64::new(u64::MAX),
        slow_start_us: AtomicU64::new(0),
        healthy_closed: AtomicU64::new(0),
        errors: Errors::default(),
    });
    let (phase_tx, phase_rx) = watch::channel(P::Setup);
    let body = {
        let (sh, a) = (sh.clone(), a.clone());
        move |i: u64, conn: Conn| member(i, conn, sh.clone(), phase_rx.clone(), a.clone())
    };
    let opts = SpawnOpts {
        targets: vec![ctx.targets[0].clone()],
        small_rcvbuf: (a.slow_rcvbuf > 0).then_some((k, a.slow_rcvbuf)),
    };
    let (handles, report) = spawn_clients_with(ctx, &opts, a.members, Some(&a.room), body).await;
    let mut publisher = Conn::connect_timeout(&ctx.targets[0], None, ctx.connect_timeout()).await?;
    let mut p = Publisher {
        conn: &mut publisher,
        room: proto::json_str(&a.room),
        next_seq: 1,
        pad: Publisher::padding(a.payload_bytes),
    };
    let healthy = report.ok.saturating_sub(k);
    let _ = phase_tx.send(P::Normal);
    let mut publish_errors = Vec::new();
    if a.warmup_secs > 0.0 {
        if let Err(e) = p
            .publish(a.rate, Duration::from_secs_f64(a.warmup_secs))
            .await
        {
            publish_errors.push(format!("{e:#}"));
        }
    }

    // A: every member reads.
    let without = phase(ctx, a, &mut p, &sh, healthy, &mut publish_errors).await;
    let rss_before = ctx.server_rss();

    // B: the slow members stop (or slow down).
    sh.slow_first_seq.store(p.next_seq, Ordering::Relaxed);
    sh.slow_start_us.store(clock::now_us(), Ordering::Relaxed);
    let _ = phase_tx.send(P::Slow);
    let sent_before = p.next_seq;
    let mut with = phase(ctx, a, &mut p, &sh, healthy, &mut publish_errors).await;
    let sent_slow = p.next_seq - sent_before;
    let rss_slow_end = ctx.server_rss();
    with["server_rss_kib"] = json!(rss_slow_end);

    // C: the slow members read again; count what reached them and who was closed.
    let _ = phase_tx.send(P::Catchup);
    let catchup_start = Instant::now();
    let slow_count = || -> u64 {
        sh.slow
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .sum()
    };
    let all_done = || {
        sh.slow.iter().all(|s| {
            s.closed.load(Ordering::Relaxed) || s.received.load(Ordering::Relaxed) >= sent_slow
        })
    };
    let (mut last, mut last_change) = (slow_count(), Instant::now());
    while !all_done()
        && last_change.elapsed().as_secs_f64() < a.catchup_quiet_secs
        && catchup_start.elapsed().as_secs_f64() < a.catchup_secs
    {
        // The publisher keeps answering pings meanwhile.
        let _ = tokio::time::timeout(Duration::from_millis(50), p.conn.recv()).await;
        let c = slow_count();
        if c != last {
            (last, last_change) = (c, Instant::now());
        }
    }
    let catchup_s = catchup_start.elapsed().as_secs_f64();
    let _ = phase_tx.send(P::Stop);
    abort_all(handles);

    let closed = sh
        .slow
        .iter()
        .filter(|s| s.closed.load(Ordering::Relaxed))
        .count() as u64;
    let received: Vec<u64> = sh
        .slow
        .iter()
        .map(|s| s.received.load(Ordering::Relaxed))
        .collect();
    let caught_up = received.iter().filter(|r| **r >= sent_slow).count() as u64;
    let t0 = sh.slow_start_us.load(Ordering::Relaxed);
    let first_close = sh
        .slow
        .iter()
        .map(|s| s.closed_at_us.load(Ordering::Relaxed))
        .filter(|t| *t > 0)
        .min()
        .map(|t| round2(t.saturating_sub(t0) as f64 / 1e6));
    let expected = sent_slow * k;
    let got: u64 = received.iter().sum();
    let treatment = if k == 0 {
        "none slow"
    } else if closed == k {
        "disconnected"
    } else if closed > 0 {
        "some disconnected"
    } else if caught_up == k {
        "kept, every message delivered (buffered)"
    } else {
        "kept, messages dropped"
    };
    let ratio = |key: &str| {
        let (x, y) = (
            with["latency"][key].as_f64(),
            without["latency"][key].as_f64(),
        );
        x.zip(y)
            .filter(|(_, y)| *y > 0.0)
            .map(|(x, y)| round2(x / y))
    };
    let healthy_closed = sh.healthy_closed.load(Ordering::Relaxed);
    let ok = report.failed == 0
        && publish_errors.is_empty()
        && healthy_closed == 0
        && sh.errors.count() == 0
        && without["delivered"].as_u64().unwrap_or(0) > 0
        && with["delivered"].as_u64().unwrap_or(0) > 0;
    Ok(json!({
        "members": a.members,
        "slow": k,
        "healthy": healthy,
        "mode": format!("{:?}", a.mode).to_lowercase(),
        "rate": a.rate,
        "payload_bytes": a.payload_bytes,
        "slow_rcvbuf": a.slow_rcvbuf,
        "connect": report.json(),
        "without_slow": without,
        "with_slow": with,
        "p50_ratio": ratio("p50_us"),
        "p99_ratio": ratio("p99_us"),
        "slow_members": {
            "sent_while_slow": sent_slow,
            "closed_by_server": closed,
            "kept": k - closed,
            "caught_up": caught_up,
            "received_ratio": if expected > 0 { json!(round2(got as f64 / expected as f64)) } else { Value::Null },
            "received_min": received.iter().min(),
            "first_close_s": first_close,
            "catchup_s": round2(catchup_s),
        },
        "treatment": treatment,
        "server_rss_before_slow_kib": rss_before,
        "server_rss_end_slow_kib": rss_slow_end,
        "server_rss_growth_kib": rss_before.zip(rss_slow_end).map(|(b, e)| e as i64 - b as i64),
        "healthy_closed": healthy_closed,
        "member_errors": sh.errors.count(),
        "publish_error": publish_errors.first(),
        "first_error": sh.errors.first().or(report.errors.first()).or(publish_errors.first().cloned()),
        "ok": ok,
    }))
}

/// One measured phase: the healthy members' latency and losses.
async fn phase(
    ctx: &Ctx,
    a: &SlowArgs,
    p: &mut Publisher<'_>,
    sh: &Shared,
    healthy: u64,
    errors: &mut Vec<String>,
) -> Value {
    sh.first_seq.store(p.next_seq, Ordering::Relaxed);
    let _ = sh.healthy.take();
    let _ = sh.slow_lat.take();
    let cpu = CpuMeters::start(&ctx.server_pids);
    let t0 = Instant::now();
    let sent = match p
        .publish(a.rate, Duration::from_secs_f64(a.duration_secs))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            errors.push(format!("{e:#}"));
            0
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let cpu_json = cpu.json();
    let expected = sent * healthy;
    drain(|| sh.healthy.count(), expected, a.max_drain_secs).await;
    let (hist, received, _, _) = sh.healthy.take();
    json!({
        "sent": sent,
        "expected": expected,
        "delivered": received,
        "delivered_per_s": round1(received as f64 / secs.max(1e-6)),
        "lost": expected.saturating_sub(received),
        "latency": stats::summary(&hist),
        "cpu": cpu_json,
    })
}

async fn member(
    i: u64,
    mut conn: Conn,
    sh: Arc<Shared>,
    mut phase: watch::Receiver<P>,
    a: SlowArgs,
) {
    let slow = i < sh.k;
    let mut nudged = Instant::now();
    loop {
        let now_phase = *phase.borrow_and_update();
        if now_phase == P::Stop {
            return;
        }
        if slow && now_phase == P::Catchup && nudged.elapsed() >= Duration::from_millis(100) {
            // Any segment from us carries our (now open) receive window.
            let _ = conn.send(&proto::emit("catchup", "", None)).await;
            nudged = Instant::now();
        }
        if slow && now_phase == P::Slow {
            match a.mode {
                SlowMode::Pause => {
                    // Read nothing until the phase changes.
                    if phase.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                SlowMode::Slow => {
                    let pause = Duration::from_secs_f64(1.0 / a.slow_read_per_s.max(0.01));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        r = phase.changed() => if r.is_err() { return },
                    }
                    if *phase.borrow() != P::Slow {
                        continue;
                    }
                }
            }
        }
        let catching_up = slow && now_phase == P::Catchup;
        tokio::select! {
            // Wakes the loop to nudge again (timers only while catching up).
            _ = tokio::time::sleep(Duration::from_millis(100)), if catching_up => {}
            r = conn.recv() => match r {
                Ok(Some(text)) => on_packet(i, &text, &sh),
                Ok(None) | Err(_) => {
                    if *phase.borrow() < P::Stop {
                        if slow {
                            let s = &sh.slow[i as usize];
                            s.closed.store(true, Ordering::Relaxed);
                            s.closed_at_us.store(clock::now_us(), Ordering::Relaxed);
                        } else {
                            sh.healthy_closed.fetch_add(1, Ordering::Relaxed);
                            sh.errors.add(&anyhow!("a healthy member was disconnected"));
                        }
                    }
                    return;
                }
            },
            r = phase.changed() => if r.is_err() { return },
        }
    }
}

fn on_packet(i: u64, text: &str, sh: &Shared) {
    let Packet::Event(p) = proto::parse(text) else {
        return;
    };
    if proto::event_name(p) != Some("msg") {
        return;
    }
    let now = clock::now_us();
    let (Some(seq), Some(t)) = (proto::scan_u64(p, "seq"), proto::scan_u64(p, "t")) else {
        sh.errors.add(&anyhow!("msg without seq/t"));
        return;
    };
    if i < sh.k {
        if seq >= sh.slow_first_seq.load(Ordering::Relaxed) {
            sh.slow[i as usize].received.fetch_add(1, Ordering::Relaxed);
        } else if seq >= sh.first_seq.load(Ordering::Relaxed) {
            sh.slow_lat.record(i as usize, now.saturating_sub(t), now);
        }
    } else if seq >= sh.first_seq.load(Ordering::Relaxed) {
        sh.healthy.record(i as usize, now.saturating_sub(t), now);
    } else {
        sh.healthy.stale(i as usize);
    }
}
