//! BENCHMARKS.md and the plots, from a suite results document.

use crate::cases::{self, Case, Metric};
use crate::plot;
use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A results file written by `suite` (bench/results/<date>.json).
    #[arg(long)]
    pub results: PathBuf,
    /// The bench/ directory (BENCHMARKS.md is written there).
    #[arg(long, default_value = env!("CARGO_MANIFEST_DIR"))]
    pub bench_dir: PathBuf,
    /// Where the markdown goes (default: <bench-dir>/BENCHMARKS.md).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

pub fn run_cli(a: ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.results)
        .with_context(|| format!("read {}", a.results.display()))?;
    let doc: Value = serde_json::from_str(&text)?;
    let out_dir = a
        .results
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| a.bench_dir.join("results"));
    let md = a
        .markdown
        .clone()
        .unwrap_or_else(|| a.bench_dir.join("BENCHMARKS.md"));
    write_all(&doc, &a.bench_dir, &out_dir, &a.results, &md)
}

/// Writes the plots (`<out_dir>/<date>-latency.svg`, `-throughput.svg`,
/// `-churn-rss.svg`) and the markdown report at `md_path`.
pub fn write_all(
    doc: &Value,
    bench_dir: &Path,
    out_dir: &Path,
    results: &Path,
    md_path: &Path,
) -> Result<()> {
    let date = doc["date"].as_str().unwrap_or("undated");
    let mut plots = Vec::new();
    for (kind, f) in [
        (
            "latency",
            plot::latency_svg as fn(&Value, &Path) -> Result<bool>,
        ),
        ("throughput", plot::throughput_svg),
        ("churn-rss", plot::churn_rss_svg),
    ] {
        let path = out_dir.join(format!("{date}-{kind}.svg"));
        match f(doc, &path) {
            Ok(true) => plots.push((kind, path)),
            Ok(false) => {}
            Err(e) => eprintln!("report: {kind} plot failed: {e:#}"),
        }
    }
    let md_dir = md_path.parent().unwrap_or(bench_dir);
    let md = markdown(doc, bench_dir, md_dir, results, &plots);
    std::fs::write(md_path, md)?;
    eprintln!("report: wrote {}", md_path.display());
    Ok(())
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn rel(p: &Path, base: &Path) -> String {
    p.strip_prefix(base)
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.display().to_string())
}

/// How the generator bounded a value: `None` exact, else the direction the server's
/// true figure lies in (`Some(true)`: at least the value shown).
fn bound_dir(metric: &Metric, gen_bound: bool) -> Option<bool> {
    (metric.gen && gen_bound).then_some(metric.higher_is_better)
}

fn cell(v: Option<f64>, bound: Option<bool>) -> String {
    match (v, bound) {
        (None, _) => "—".into(),
        (Some(v), None) => fmt_num(v),
        (Some(v), Some(true)) => format!("≥ {} †", fmt_num(v)),
        (Some(v), Some(false)) => format!("≤ {} †", fmt_num(v)),
    }
}

/// `a ÷ b`, as a bound when one side is generator-bound, unknown when both are.
fn ratio_cell(
    metric: &Metric,
    a: Option<f64>,
    a_bound: bool,
    b: Option<f64>,
    b_bound: bool,
) -> String {
    let (Some(a), Some(b)) = (a, b) else {
        return "—".into();
    };
    if b <= 0.0 || a < 0.0 {
        return "—".into();
    }
    let r = a / b;
    let (ab, bb) = (metric.gen && a_bound, metric.gen && b_bound);
    let hi = metric.higher_is_better;
    match (ab, bb) {
        (false, false) => format!("{r:.2}×"),
        (true, true) => "? †".into(),
        // a's true value is beyond the shown one in the metric's good direction.
        (true, false) => format!("{} {r:.2}× †", if hi { "≥" } else { "≤" }),
        (false, true) => format!("{} {r:.2}× †", if hi { "≤" } else { "≥" }),
    }
}

/// The column name of a target.
fn column(t: &str) -> String {
    if t == "raw" {
        "ceiling (raw)".into()
    } else {
        t.to_string()
    }
}

fn markdown(
    doc: &Value,
    bench_dir: &Path,
    md_dir: &Path,
    results: &Path,
    plots: &[(&str, PathBuf)],
) -> String {
    let repo = bench_dir.parent().unwrap_or(bench_dir);
    let strip = |s: &str| s.replace(&format!("{}/", repo.display()), "");
    let date = doc["date"].as_str().unwrap_or("?");
    let targets: Vec<String> = doc["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect();
    // Skein on other cluster adapters has a column of its own but is no "peer".
    let kind_of = |t: &str| -> String {
        doc["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"].as_str() == Some(t))
            .and_then(|x| x["kind"].as_str())
            .unwrap_or(t)
            .to_string()
    };
    let has_skein = targets.iter().any(|t| t == "skein");
    let has_ceiling = targets.iter().any(|t| t == "raw");
    let bound_pct = doc["gen_bound_pct"]
        .as_f64()
        .unwrap_or(cases::GEN_BOUND_PCT);
    let mut s = String::new();
    let _ = writeln!(s, "# Skein benchmarks\n");
    let _ = writeln!(
        s,
        "_Generated by `skein-bench suite` on {date} ({} profile) from `{}`; rerun `bench/run.sh` rather than editing by hand._\n",
        doc["profile"].as_str().unwrap_or("?"),
        rel(results, repo)
    );
    let pin = &doc["pinning"];
    let pinning = if pin.is_null() {
        "not pinned (no taskset or one CPU)".to_string()
    } else {
        format!(
            "each server pinned to CPU {} and the generator to CPU {} with `taskset`",
            pin["server_cpus"].as_str().unwrap_or("?"),
            pin["gen_cpus"].as_str().unwrap_or("?")
        )
    };
    let _ = writeln!(
        s,
        "Skein beside Node's socket.io and socketioxide, same handler contract (`echo`, `join`, `pub` on `/`), \
         default server settings, WebSocket transport, all traffic on 127.0.0.1; {pinning}. \
         Every case ran {} time(s) per server, servers alternating within each repetition (a fresh server \
         process per run); tables show medians. **Ratio columns are Skein ÷ peer**: ↑ marks metrics where \
         higher is better, ↓ where lower is better, · a fact shown without ratio.\n",
        doc["reps"]
    );
    if has_ceiling {
        let _ = writeln!(
            s,
            "**The ceiling** (`ceiling (raw)`, bench/peers/raw) is what this machine does with the same frames \
             when no Socket.IO server stands behind them: a frame-level WebSocket server that answers the open \
             packet, CONNECT, `echo`, `join` and `pub` as directly as it can (the replies to one read in one \
             write; a broadcast frame encoded once and written straight to every member's socket). It runs the \
             echo and broadcast cases; `skein ÷ ceiling` says how far \
             Skein is from it, and the line under each table gives every server's share of it. \
             Writing every frame with its own write is the cheapest per frame while the load is light, \
             but it never batches: past about 100 msg/s to 1,000 members, a server that queues and writes \
             all of a socket's waiting frames in one `writev` (Skein, socketioxide) goes further, so \
             at high broadcast rates the ceiling is a reference, not a bound.\n"
        );
    }
    let _ = writeln!(
        s,
        "**Generator-bound results (†)**: a run counts as bounded by the generator when the generator's CPU over \
         the measured window reached {bound_pct:.0}% of its core; a server whose runs were mostly so has its \
         throughput and latency figures shown as bounds (`≥` / `≤`: the server would do at least / at most \
         that with a faster generator), never as its own figure, and ratios with it are bounds too, or `?` \
         when both sides are bounded.\n"
    );
    let m = &doc["machine"];
    let _ = writeln!(s, "## Machine\n\n| cores | memory | CPU | kernel | open files (hard limit) |\n|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} GiB | {} | {} | {} |\n",
        m["cores"],
        m["mem_gib"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["nofile_hard_limit"]
    );
    let _ = writeln!(s, "## Versions\n\n| component | version |\n|---|---|");
    if let Some(v) = doc["versions"].as_object() {
        for (k, v) in v {
            let shown = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            let _ = writeln!(s, "| {k} | {shown} |");
        }
    }
    let _ = writeln!(s, "\n## Results\n");
    if !has_skein {
        let _ = writeln!(
            s,
            "_Skein was not measured in this run (binary missing): no ratios._\n"
        );
    }
    let cases: Vec<Case> = serde_json::from_value(doc["cases"].clone()).unwrap_or_default();
    // Recomputed from the runs, so that a report of an older file follows today's metrics.
    let runs = doc["runs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let medians = cases::medians(&cases, &targets, runs);
    for case in &cases {
        // The columns: targets that ran this case.
        let cols: Vec<&String> = targets
            .iter()
            .filter(|t| {
                runs.iter().any(|r| {
                    r["case"].as_str() == Some(&case.name) && r["target"].as_str() == Some(t)
                })
            })
            .collect();
        if cols.is_empty() {
            continue;
        }
        let peers: Vec<&String> = cols
            .iter()
            .copied()
            .filter(|t| kind_of(t) != "skein")
            .collect();
        let ratios = has_skein && cols.iter().any(|t| *t == "skein");
        let _ = writeln!(s, "### {} — `{}`\n", case.name, case.args.join(" "));
        let names: Vec<String> = cols.iter().map(|t| column(t)).collect();
        let mut head = format!("| metric | {} |", names.join(" | "));
        let mut sep = "|---|".to_string() + &"---:|".repeat(cols.len());
        if ratios {
            for p in &peers {
                let p = if *p == "raw" { "ceiling" } else { p.as_str() };
                head += &format!(" skein ÷ {p} |");
                sep += "---:|";
            }
        }
        let _ = writeln!(s, "{head}\n{sep}");
        let med = &medians[&case.name];
        let bound = |t: &str| med[t]["gen_bound"].as_bool().unwrap_or(false);
        for metric in cases::metrics(case) {
            let arrow = match (metric.compare, metric.higher_is_better) {
                (false, _) => "·",
                (true, true) => "↑",
                (true, false) => "↓",
            };
            let mut row = format!("| {} {arrow} |", metric.label);
            let val = |t: &str| med[t][metric.label].as_f64();
            for t in &cols {
                row += &format!(" {} |", cell(val(t), bound_dir(metric, bound(t))));
            }
            if ratios {
                for p in &peers {
                    let r = if metric.compare {
                        ratio_cell(metric, val("skein"), bound("skein"), val(p), bound(p))
                    } else {
                        "".into()
                    };
                    row += &format!(" {r} |");
                }
            }
            let _ = writeln!(s, "{row}");
        }
        let runs_line: Vec<String> = cols
            .iter()
            .map(|t| format!("{} {}", column(t), med[t.as_str()]["runs"]))
            .collect();
        let _ = writeln!(s, "\nSuccessful runs: {}.", runs_line.join(", "));
        let bounded: Vec<String> = cols
            .iter()
            .filter(|t| bound(t))
            .map(|t| {
                format!(
                    "{} ({} of {} runs)",
                    column(t),
                    med[t.as_str()]["gen_bound_runs"],
                    med[t.as_str()]["runs"]
                )
            })
            .collect();
        if !bounded.is_empty() {
            let _ = writeln!(
                s,
                "\n† Generator-bound (generator CPU ≥ {bound_pct:.0}% of its core): {}. Their throughput and \
                 latency are the generator's limit, not the server's figure.",
                bounded.join(", ")
            );
        }
        // Every server's share of the ceiling, on the case's first metric.
        if cols.iter().any(|t| *t == "raw") {
            if let Some(first) = cases::metrics(case).first() {
                let ceil = med["raw"][first.label].as_f64();
                let shares: Vec<String> = cols
                    .iter()
                    .filter(|t| **t != "raw")
                    .map(|t| {
                        let v = med[t.as_str()][first.label].as_f64();
                        format!("{t} {}", ratio_cell(first, v, bound(t), ceil, bound("raw")))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "\nShare of the ceiling ({}): {}.",
                    first.label,
                    shares.join(", ")
                );
            }
        }
        if cases::kind(case) == cases::Kind::Slow {
            let what: Vec<String> = cols
                .iter()
                .filter_map(|t| {
                    let r = runs.iter().rev().find(|r| {
                        r["case"].as_str() == Some(&case.name)
                            && r["target"].as_str() == Some(t.as_str())
                            && r["ok"].as_bool() == Some(true)
                    })?;
                    Some(format!(
                        "{t}: {}",
                        r["result"]["treatment"].as_str().unwrap_or("?")
                    ))
                })
                .collect();
            if !what.is_empty() {
                let _ = writeln!(
                    s,
                    "\nWhat the server did with the slow members (last run): {}.",
                    what.join("; ")
                );
            }
        }
        if let Some(note) = &case.note {
            let _ = writeln!(s, "\n{note}");
        }
        let _ = writeln!(s);
    }
    if !plots.is_empty() {
        let _ = writeln!(s, "## Plots\n");
        for (kind, p) in plots {
            let _ = writeln!(s, "![{kind}]({})\n", rel(p, md_dir));
        }
        let _ = writeln!(
            s,
            "Latency: percentile curves of the median run (echo round trips; broadcast publish-to-receive). \
             Throughput: latency against rate, per server: delivered messages/s (top) and p50 (dashed) / p99 \
             (solid) latency (bottom) against the offered publish rate, over the steps of the search runs \
             (the cluster's too). Churn RSS: the server's memory over time during the churn cases (median \
             run), from the start of the churn through its settling.\n"
        );
    }
    let _ = writeln!(
        s,
        "## Commands\n\nSuite: `{}`\n\nServers (port chosen by the OS):\n",
        strip(doc["suite_command"].as_str().unwrap_or(""))
    );
    let pin_srv = if pin.is_null() {
        String::new()
    } else {
        format!("taskset -c {} ", pin["server_cpus"].as_str().unwrap_or(""))
    };
    for t in doc["targets"].as_array().into_iter().flatten() {
        let adapter = t["adapter"]
            .as_str()
            .map(|a| format!(" (cluster cases only, `--adapter {a}` and its flags)"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- {}: `{pin_srv}{} --port 0 --host 127.0.0.1`{adapter}",
            column(t["name"].as_str().unwrap_or("?")),
            strip(t["command"].as_str().unwrap_or(""))
        );
    }
    let cl = &doc["cluster"];
    if cases.iter().any(|c| c.instances > 1) {
        let backends: Vec<&str> = cl["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _ = writeln!(
            s,
            "\nCluster cases: every node adds `--adapter redis --redis-url URL --redis-key KEY` (Skein; the \
             Node peer through `@socket.io/redis-adapter`, socketioxide through `socketioxide-redis`), or for \
             Skein's other adapters `--adapter nats --nats-url URL --nats-prefix KEY` and `--adapter mesh \
             --mesh-port P --mesh-seeds … --mesh-data DIR --mesh-secret-file F`; a fresh key per run. Backends: \
             {}. The generator waits until a probe published on the first node reaches members on every node \
             before it measures.",
            if backends.is_empty() {
                "—".to_string()
            } else {
                backends.join("; ")
            }
        );
    }
    let _ = writeln!(
        s,
        "\nGenerator, one per case and server (URL and pid filled in per run):\n"
    );
    let pin_gen = if pin.is_null() {
        String::new()
    } else {
        format!("taskset -c {} ", pin["gen_cpus"].as_str().unwrap_or(""))
    };
    for case in &cases {
        let extra = if case.skein_args.is_empty() {
            String::new()
        } else {
            format!(" (skein with `{}`)", case.skein_args.join(" "))
        };
        let _ = writeln!(
            s,
            "- {}: `{pin_gen}skein-bench {} --url http://127.0.0.1:PORT --server-pid PID --label SERVER`{extra}",
            case.name,
            case.args.join(" ")
        );
    }
    for (title, key) in [("Skipped", "skipped"), ("Failed runs", "failures")] {
        let items: Vec<&str> = doc[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !items.is_empty() {
            let _ = writeln!(s, "\n## {title}\n");
            for i in items {
                let _ = writeln!(s, "- {}", strip(i));
            }
        }
    }
    let _ = writeln!(
        s,
        "\n## Notes\n\n\
         - Memory per idle connection is the server's VmRSS after the connections settled minus before, \
         divided by the connections opened. Node's figure moves with its garbage collector.\n\
         - The idle case holds as many connections as the open-file hard limit allows each process (the \
         server and the generator alike), up to the 100,000 asked, with the clients spread over 127.0.0.x \
         source addresses; its name carries the real number.\n\
         - Broadcast latency runs from the publisher's send to each member's receipt (one clock: the \
         generator's). A search step (5 s of publishing after a 2 s warm-up) holds when its p99 is under \
         the target with no lost message; a failing rate is tried twice before it counts as failing. The \
         search doubles the rate until a step fails, then bisects.\n\
         - search-10k uses a 1 s p99 target, not 50 ms: on a 2-core VM one publish to 10k members \
         costs the server ~20 µs and the generator ~15 µs per delivery at low rates (a syscall and a \
         loopback TCP segment each), i.e. 150–250 ms of fan-out, so a 50 ms p99 is out of reach for \
         every server and the 50 ms search would report 0 for all. Run it anyway with \
         `skein-bench broadcast --search -m 10000 --search-start 1`.\n\
         - Cluster cases: every node of a cluster and its Redis/NATS share the servers' CPU, so the cluster \
         figures are those of 3 nodes on one core. The member-less node's CPU per broadcast is its CPU over \
         the publishing window, less its idle CPU measured just before, divided by the broadcasts published.\n\
         - Slow consumers: the healthy members' latency is measured twice at the same rate, first with every \
         member reading, then with the slow ones paused; 20 s at 1,000 msg/s of 512-byte messages is ~12 MB \
         per paused member, past the kernel's buffers (a few MB) and any server's queue bound; then the slow \
         ones read again, to count what reached them and whether the server closed them.\n\
         - Churn: the 10-minute run samples the server's RSS every second; the slope over the second half of \
         the churn says whether memory is flat once the server reached its working set.\n\
         - Yardstick measured earlier on this machine (from the issue): Node socket.io 15.7 KiB per idle \
         connection, socketioxide 28.2 KiB; connect 2.6k/s vs 10.3k/s; echo with 1k clients 58k vs 126k \
         acks/s; broadcast to 1k members, highest rate with p99 < 50 ms: 75–100 vs 400 msg/s."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(case: &str, target: &str, acks: f64, gen: f64) -> Value {
        json!({"case": case, "target": target, "ok": true,
               "result": {"acks_per_s": acks, "latency": {"p99_us": 2000}, "cpu": {"gen_cpu_pct": gen}, "gen_threads": 1}})
    }

    #[test]
    fn tables_with_ceiling_and_generator_bound() {
        let echo = crate::cases::cases("full", 0, 20_000)
            .into_iter()
            .find(|c| c.name == "echo-1k")
            .unwrap();
        let doc = json!({
            "date": "2000-01-01", "profile": "full", "reps": 1,
            "targets": [{"name": "skein", "kind": "skein"}, {"name": "node", "kind": "node"},
                        {"name": "raw", "kind": "raw"}],
            "cases": [echo],
            "runs": [run("echo-1k", "skein", 300.0, 50.0), run("echo-1k", "node", 100.0, 20.0),
                     run("echo-1k", "raw", 600.0, 95.0)],
        });
        let md = markdown(
            &doc,
            Path::new("/b/bench"),
            Path::new("/b/bench"),
            Path::new("/b/bench/results/x.json"),
            &[],
        );
        assert!(
            md.contains(
                "| metric | skein | node | ceiling (raw) | skein ÷ node | skein ÷ ceiling |"
            ),
            "{md}"
        );
        // The ceiling was generator-bound: a lower bound, and Skein's share an upper one.
        assert!(
            md.contains("| acks/s ↑ | 300 | 100 | ≥ 600 † | 3.00× | ≤ 0.50× † |"),
            "{md}"
        );
        assert!(
            md.contains("Share of the ceiling (acks/s): skein ≤ 0.50× †, node ≤ 0.17× †."),
            "{md}"
        );
        assert!(md.contains("† Generator-bound"), "{md}");
        assert!(
            md.contains("| generator CPU (%) · | 50 | 20 | 95 |  |  |"),
            "{md}"
        );
    }

    #[test]
    fn ratio_bounds() {
        let m = &crate::cases::metrics(&crate::cases::cases("full", 0, 20_000)[3])[0];
        assert_eq!(ratio_cell(m, Some(2.0), false, Some(1.0), false), "2.00×");
        assert_eq!(
            ratio_cell(m, Some(2.0), true, Some(1.0), false),
            "≥ 2.00× †"
        );
        assert_eq!(
            ratio_cell(m, Some(2.0), false, Some(1.0), true),
            "≤ 2.00× †"
        );
        assert_eq!(ratio_cell(m, Some(2.0), true, Some(1.0), true), "? †");
        assert_eq!(ratio_cell(m, None, false, Some(1.0), false), "—");
    }
}
