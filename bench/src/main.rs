//! skein-bench: a Socket.IO v5 / Engine.IO v4 load generator and benchmark suite.
//!
//! Each scenario subcommand runs once, bounded in time, and prints one JSON result
//! line on stdout (progress goes to stderr). `suite` starts the servers, alternates
//! them, takes medians and writes bench/results/<date>.json and bench/BENCHMARKS.md.

mod cases;
mod client;
mod plot;
mod procfs;
mod proto;
mod report;
mod scenarios;
mod stats;
mod suite;
mod ws;

use anyhow::Result;
use clap::{Parser, Subcommand};
use scenarios::broadcast::BroadcastArgs;
use scenarios::churn::ChurnArgs;
use scenarios::connect::ConnectArgs;
use scenarios::echo::EchoArgs;
use scenarios::slow::SlowArgs;
use scenarios::{Common, Ctx};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "skein-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open N connections: connection rate and server memory per idle connection.
    Connect {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ConnectArgs,
    },
    /// C clients doing emit-with-ack round trips: acks/s and latency.
    Echo {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: EchoArgs,
    },
    /// Room broadcast at a fixed rate, or --search for the highest rate under a p99 target.
    Broadcast {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: BroadcastArgs,
    },
    /// Broadcast with members spread over several --url and the publisher on the first.
    ClusterBroadcast {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: BroadcastArgs,
    },
    /// Continuous connect/disconnect: server memory at baseline, during and after.
    Churn {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ChurnArgs,
    },
    /// A busy room where some members stop reading: the others' latency with and
    /// without them, and what the server does with the slow ones.
    SlowConsumers {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: SlowArgs,
    },
    /// Run every scenario against every server, alternating, and write the report.
    Suite(suite::SuiteArgs),
    /// Rewrite BENCHMARKS.md and the plots from a results JSON file.
    Report(report::ReportArgs),
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let threads = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    Ok(rt)
}

/// Runs one scenario bounded by a hard timeout, prints its result line, and exits
/// (without waiting on thousands of client tasks to wind down).
fn run_scenario(name: &str, common: Common, budget_secs: u64, cmd: Cmd) -> ! {
    let threads = if common.threads > 0 {
        common.threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    };
    let mut common = common;
    common.threads = threads;
    let limit = Duration::from_secs(common.timeout_secs.unwrap_or(budget_secs));
    let (mut line, code) = match runtime(threads) {
        Err(e) => (
            json!({ "scenario": name, "ok": false, "error": format!("{e:#}") }),
            2,
        ),
        Ok(rt) => rt.block_on(async {
            let ctx = match Ctx::new(&common) {
                Ok(c) => c,
                Err(e) => {
                    return (
                        json!({ "scenario": name, "ok": false, "error": format!("{e:#}") }),
                        2,
                    )
                }
            };
            let mut base = ctx.base_json(name);
            let fut = async {
                match &cmd {
                    Cmd::Connect { args, .. } => scenarios::connect::run(&ctx, args).await,
                    Cmd::Echo { args, .. } => scenarios::echo::run(&ctx, args).await,
                    Cmd::Broadcast { args, .. } | Cmd::ClusterBroadcast { args, .. } => {
                        scenarios::broadcast::run(&ctx, args).await
                    }
                    Cmd::Churn { args, .. } => scenarios::churn::run(&ctx, args).await,
                    Cmd::SlowConsumers { args, .. } => scenarios::slow::run(&ctx, args).await,
                    Cmd::Suite(_) | Cmd::Report(_) => unreachable!("not a scenario"),
                }
            };
            let started = std::time::Instant::now();
            let res = tokio::time::timeout(limit, fut).await;
            base["wall_s"] = json!(procfs::round2(started.elapsed().as_secs_f64()));
            match res {
                Ok(Ok(v)) => {
                    if let (Some(b), Value::Object(m)) = (base.as_object_mut(), v) {
                        b.extend(m);
                    }
                    let ok = base["ok"].as_bool().unwrap_or(false);
                    (base, if ok { 0 } else { 1 })
                }
                Ok(Err(e)) => {
                    base["ok"] = json!(false);
                    base["error"] = json!(format!("{e:#}"));
                    (base, 1)
                }
                Err(_) => {
                    base["ok"] = json!(false);
                    base["error"] = json!(format!("hard timeout after {}s", limit.as_secs()));
                    (base, 3)
                }
            }
        }),
    };
    line["gen_version"] = json!(env!("CARGO_PKG_VERSION"));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    std::process::exit(code)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Suite(args) => suite::run(args),
        Cmd::Report(args) => report::run_cli(args),
        cmd => {
            let (name, common, budget) = match &cmd {
                Cmd::Connect { common, args } => ("connect", common.clone(), args.budget_secs()),
                Cmd::Echo { common, args } => ("echo", common.clone(), args.budget_secs()),
                Cmd::Broadcast { common, args } => {
                    let name = if args.search {
                        "broadcast_search"
                    } else {
                        "broadcast"
                    };
                    (name, common.clone(), args.budget_secs())
                }
                Cmd::ClusterBroadcast { common, args } => {
                    let name = if args.search {
                        "cluster_broadcast_search"
                    } else {
                        "cluster_broadcast"
                    };
                    (name, common.clone(), args.budget_secs())
                }
                Cmd::Churn { common, args } => ("churn", common.clone(), args.budget_secs()),
                Cmd::SlowConsumers { common, args } => {
                    ("slow_consumers", common.clone(), args.budget_secs())
                }
                Cmd::Suite(_) | Cmd::Report(_) => unreachable!(),
            };
            run_scenario(name, common, budget, cmd)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case of every profile is a valid generator command line.
    #[test]
    fn every_case_parses() {
        for profile in ["smoke", "quick", "full"] {
            for case in cases::cases(profile, 3, 20_000) {
                let mut argv = vec!["skein-bench".to_string()];
                argv.extend(case.args.iter().cloned());
                argv.extend(["--url", "http://127.0.0.1:1", "--server-pid", "1"].map(String::from));
                if let Err(e) = Cli::try_parse_from(&argv) {
                    panic!("{profile} {}: {e}", case.name);
                }
            }
        }
    }
}
