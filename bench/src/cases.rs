//! What the suite runs (cases per profile) and which numbers it compares (metrics).

use crate::stats::median;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One scenario invocation, run against every target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    pub name: String,
    /// Generator arguments (subcommand first), without --url/--server-pid/--label.
    pub args: Vec<String>,
    /// Server processes per target (2+ for cluster broadcast).
    pub instances: usize,
    /// Connections this case holds at once (to check the open-file limit).
    pub conns: u64,
    /// The ceiling (the raw frame-level peer) runs it too.
    #[serde(default)]
    pub ceiling: bool,
    /// One repetition only, whatever --reps says (the long endurance runs).
    #[serde(default)]
    pub once: bool,
    /// Extra flags of the Skein server for this case.
    #[serde(default)]
    pub skein_args: Vec<String>,
    /// Shown under the case's table.
    #[serde(default)]
    pub note: Option<String>,
}

fn case(name: &str, args: &str, instances: usize, conns: u64) -> Case {
    Case {
        name: name.to_string(),
        args: args.split_whitespace().map(str::to_string).collect(),
        instances,
        conns,
        ceiling: false,
        once: false,
        skein_args: Vec::new(),
        note: None,
    }
}

impl Case {
    /// The ceiling runs this case too.
    fn ceiling(mut self) -> Case {
        self.ceiling = true;
        self
    }

    fn once(mut self) -> Case {
        self.once = true;
        self
    }

    fn note(mut self, note: impl Into<String>) -> Case {
        self.note = Some(note.into());
        self
    }
}

/// Connections asked of the idle case, and the most this machine allows: each
/// process (the server, the generator) may hold at most the open-file hard limit,
/// less a margin for everything else.
pub const IDLE_ASKED: u64 = 100_000;

pub fn idle_size(hard_limit: u64) -> u64 {
    (hard_limit.saturating_sub(200) / 100 * 100).min(IDLE_ASKED)
}

/// The idle-connections case at `n` connections on the 127.0.0.x source addresses
/// (its note says why when the open-file limit capped it).
fn idle_case(n: u64, hard_limit: u64, extra: &str) -> Case {
    let mut c = case(
        &format!("idle-{n}"),
        &format!("connect -n {n} --src-addrs 4 {extra}"),
        1,
        n,
    );
    // Skein keeps a tenth of the open-file limit (up to 1024) for other uses by
    // default, which would refuse the last connections of this case with 503.
    c.skein_args = vec!["--max-connections".into(), (n + 100).to_string()];
    if n < IDLE_ASKED && n == idle_size(hard_limit) {
        c.note = Some(format!(
            "{n} idle connections, not the {IDLE_ASKED} asked: the open-file hard limit \
             (ulimit -Hn) is {hard_limit} for every process here and cannot be raised (no \
             CAP_SYS_RESOURCE), so no server can hold more than ~{}. Clients spread over \
             127.0.0.1-4 as source addresses. Skein runs with --max-connections {} for this \
             case (its default keeps 1024 descriptors in reserve).",
            hard_limit.saturating_sub(100),
            n + 100
        ));
    }
    c
}

/// The cases of a profile. `cluster` is the number of server instances of the
/// cluster broadcast cases (0 leaves them out); `hard_limit` the open-file hard
/// limit, which sizes the idle-connections case.
pub fn cases(profile: &str, cluster: usize, hard_limit: u64) -> Vec<Case> {
    let mut v = match profile {
        "smoke" => vec![
            case("connect-50", "connect -n 50 --settle-ms 200", 1, 50),
            idle_case(200, hard_limit, "--settle-ms 200 --warmup-conns 0"),
            case("echo-50", "echo -c 50 -d 2 --warmup-secs 0.5", 1, 50).ceiling(),
            case("broadcast-50", "broadcast -m 50 -r 20 -d 2 --warmup-secs 0.5 --max-drain-secs 3", 1, 51).ceiling(),
            case(
                "search-50",
                "broadcast --search -m 50 -d 1 --warmup-secs 0.5 --search-start 50 --search-max 100 --search-refine 1 --max-drain-secs 2",
                1,
                51,
            )
            .ceiling(),
            case("churn", "churn -d 2 -c 5 --settle-secs 2 --sample-ms 100", 1, 5),
            case(
                "slow-consumers",
                "slow-consumers -m 20 -k 2 -r 100 -d 1 --warmup-secs 0.3 --max-drain-secs 2 --catchup-secs 2",
                1,
                21,
            ),
        ],
        "quick" => vec![
            case("connect-1k", "connect -n 1000", 1, 1000),
            case("connect-10k", "connect -n 10000", 1, 10_000),
            case("echo-1k", "echo -c 1000 -d 5", 1, 1000).ceiling(),
            case("broadcast-1k", "broadcast -m 1000 -r 25 -d 5", 1, 1001).ceiling(),
            case("search-1k", "broadcast --search -m 1000 -d 3 --search-refine 3 --target-p99-ms 50", 1, 1001).ceiling(),
            case("churn", "churn -d 8 -c 50", 1, 50),
            case("slow-consumers", "slow-consumers -m 50 -k 5 -r 1000 -d 10", 1, 51),
        ],
        _ => vec![
            case("connect-1k", "connect -n 1000", 1, 1000),
            case("connect-10k", "connect -n 10000", 1, 10_000),
            idle_case(
                idle_size(hard_limit),
                hard_limit,
                "--connect-timeout-secs 30 --settle-ms 5000",
            ),
            case("echo-1k", "echo -c 1000 -d 10", 1, 1000).ceiling(),
            case("broadcast-1k", "broadcast -m 1000 -r 25 -d 10", 1, 1001).ceiling(),
            case("search-1k", "broadcast --search -m 1000 -d 5 --target-p99-ms 50", 1, 1001).ceiling(),
            // One publish to 10k members takes more than 50 ms to fan out on a 2-core
            // VM (server and generator alike), so the 50 ms target gives 0 everywhere:
            // this case searches under 1 s instead (see BENCHMARKS.md notes).
            case(
                "search-10k",
                "broadcast --search -m 10000 -d 5 --search-start 2 --target-p99-ms 1000",
                1,
                10_001,
            )
            .ceiling(),
            case("churn", "churn -d 15 -c 50", 1, 50),
            case(
                "churn-10min",
                "churn -d 600 -c 50 --sample-ms 1000 --settle-secs 30",
                1,
                50,
            )
            .once()
            .note("Endurance: 10 minutes of connect/disconnect, once per server; RSS sampled every second (plot below)."),
            case("slow-consumers", "slow-consumers -m 50 -k 5 -r 1000 -d 20", 1, 51),
        ],
    };
    if cluster >= 2 {
        // With 3 nodes or more, the last one holds no member: its CPU is what the
        // others' broadcasts cost a node that has nothing to deliver.
        let member_nodes = if cluster >= 3 { cluster - 1 } else { cluster };
        let (m, fixed, search) = match profile {
            "smoke" => (
                50,
                "-r 20 -d 2 --warmup-secs 0.5 --max-drain-secs 3 --idle-cpu-secs 0.5",
                "-d 1 --warmup-secs 0.5 --search-start 20 --search-max 40 --search-refine 1 --max-drain-secs 2 --idle-cpu-secs 0",
            ),
            "quick" => (
                1000,
                "-r 25 -d 5 --form-timeout-secs 60",
                "-d 3 --search-refine 3 --idle-cpu-secs 0 --form-timeout-secs 60",
            ),
            _ => (
                1000,
                "-r 25 -d 10 --form-timeout-secs 60",
                "-d 5 --idle-cpu-secs 0 --form-timeout-secs 60",
            ),
        };
        v.push(
            case(
                &format!("cluster-{cluster}x"),
                &format!("cluster-broadcast -m {m} {fixed} --member-nodes {member_nodes}"),
                cluster,
                m + 1,
            )
            .note(format!(
                "{cluster} nodes of each server, one cluster over Redis (Skein's other adapters in \
                 their own columns); members on the first {member_nodes} node(s), the publisher on \
                 the first: \"publisher's node\" is the one-node path, \"other nodes\" crosses the \
                 cluster, \"added\" is the difference.{}",
                if member_nodes < cluster {
                    " The last node holds no member: its CPU (idle CPU subtracted) is what a broadcast it has nothing to deliver for costs it."
                } else {
                    ""
                }
            )),
        );
        v.push(
            case(
                &format!("cluster-search-{cluster}x"),
                &format!("cluster-broadcast --search -m {m} {search}"),
                cluster,
                m + 1,
            )
            .note(format!(
                "Highest rate of the {cluster}-node cluster: members spread over every node, the publisher on the first."
            )),
        );
    }
    v
}

/// A number compared across servers.
pub struct Metric {
    pub label: &'static str,
    /// JSON pointer into the result line.
    pub pointer: &'static str,
    pub higher_is_better: bool,
    /// Divide the raw value by this for display (e.g. µs → ms).
    pub scale: f64,
    /// A generator at its limit bounds this number (throughput, latency): such a
    /// value is shown as a bound, never as the server's figure.
    pub gen: bool,
    /// Ratios are shown (false: a fact about each server, not a score).
    pub compare: bool,
}

/// A throughput or latency metric (the generator can bound it).
const fn g(
    label: &'static str,
    pointer: &'static str,
    higher_is_better: bool,
    scale: f64,
) -> Metric {
    Metric {
        label,
        pointer,
        higher_is_better,
        scale,
        gen: true,
        compare: true,
    }
}

/// A metric of the server alone (memory, its own CPU).
const fn m(
    label: &'static str,
    pointer: &'static str,
    higher_is_better: bool,
    scale: f64,
) -> Metric {
    Metric {
        label,
        pointer,
        higher_is_better,
        scale,
        gen: false,
        compare: true,
    }
}

/// A fact shown without ratios.
const fn info(label: &'static str, pointer: &'static str, scale: f64) -> Metric {
    Metric {
        label,
        pointer,
        higher_is_better: false,
        scale,
        gen: false,
        compare: false,
    }
}

const GEN_CPU: Metric = info("generator CPU (%)", "/cpu/gen_cpu_pct", 1.0);

const CONNECT: &[Metric] = &[
    g("connections/s", "/conn_per_s", true, 1.0),
    m(
        "server memory per idle connection (KiB)",
        "/mem_per_conn_kib",
        false,
        1.0,
    ),
    g(
        "connect p99 (ms)",
        "/connect/connect_latency/p99_us",
        false,
        1000.0,
    ),
    m(
        "server CPU during connect (%)",
        "/cpu/server_cpu_pct",
        false,
        1.0,
    ),
    GEN_CPU,
];
const IDLE: &[Metric] = &[
    info("connections held", "/connect/connected", 1.0),
    g(
        "time to connect them all (s)",
        "/connect/connect_secs",
        false,
        1.0,
    ),
    g("connections/s", "/conn_per_s", true, 1.0),
    m(
        "server RSS per idle connection (KiB)",
        "/mem_per_conn_kib",
        false,
        1.0,
    ),
    m(
        "server RSS with every connection open (MiB)",
        "/server_rss_after_kib",
        false,
        1024.0,
    ),
    m(
        "server CPU during connect (%)",
        "/cpu/server_cpu_pct",
        false,
        1.0,
    ),
    GEN_CPU,
];
const ECHO: &[Metric] = &[
    g("acks/s", "/acks_per_s", true, 1.0),
    g("latency p50 (ms)", "/latency/p50_us", false, 1000.0),
    g("latency p99 (ms)", "/latency/p99_us", false, 1000.0),
    g("latency p999 (ms)", "/latency/p999_us", false, 1000.0),
    m("server CPU (%)", "/cpu/server_cpu_pct", false, 1.0),
    GEN_CPU,
];
const SEARCH: &[Metric] = &[
    g(
        "highest rate holding the p99 target (msg/s)",
        "/max_rate",
        true,
        1.0,
    ),
    g(
        "delivered msg/s at that rate",
        "/best/delivered_per_s",
        true,
        1.0,
    ),
    g(
        "latency p99 at that rate (ms)",
        "/best/latency/p99_us",
        false,
        1000.0,
    ),
    m(
        "server CPU at that rate (%)",
        "/best/cpu/server_cpu_pct",
        false,
        1.0,
    ),
    info(
        "generator CPU at that rate (%)",
        "/best/cpu/gen_cpu_pct",
        1.0,
    ),
];
const BROADCAST: &[Metric] = &[
    g("delivered msg/s", "/delivered_per_s", true, 1.0),
    g("latency p50 (ms)", "/latency/p50_us", false, 1000.0),
    g("latency p99 (ms)", "/latency/p99_us", false, 1000.0),
    g("latency p999 (ms)", "/latency/p999_us", false, 1000.0),
    g("lost messages", "/lost", false, 1.0),
    m("server CPU (%)", "/cpu/server_cpu_pct", false, 1.0),
    GEN_CPU,
];
const CLUSTER: &[Metric] = &[
    g("delivered msg/s", "/delivered_per_s", true, 1.0),
    g(
        "latency p50, members on the publisher's node (ms)",
        "/latency_local/p50_us",
        false,
        1000.0,
    ),
    g(
        "latency p99, members on the publisher's node (ms)",
        "/latency_local/p99_us",
        false,
        1000.0,
    ),
    g(
        "latency p50, members on other nodes (ms)",
        "/latency_remote/p50_us",
        false,
        1000.0,
    ),
    g(
        "latency p99, members on other nodes (ms)",
        "/latency_remote/p99_us",
        false,
        1000.0,
    ),
    g(
        "added by crossing nodes, p50 (ms)",
        "/added_p50_us",
        false,
        1000.0,
    ),
    g(
        "added by crossing nodes, p99 (ms)",
        "/added_p99_us",
        false,
        1000.0,
    ),
    g("lost messages", "/lost", false, 1.0),
    m(
        "member-less node CPU (%)",
        "/memberless/cpu_pct",
        false,
        1.0,
    ),
    m(
        "member-less node CPU per broadcast (µs)",
        "/memberless/cpu_us_per_broadcast",
        false,
        1.0,
    ),
    m(
        "server CPU, every node (%)",
        "/cpu/server_cpu_pct",
        false,
        1.0,
    ),
    GEN_CPU,
];
const CHURN: &[Metric] = &[
    g("connect+disconnect cycles/s", "/cycles_per_s", true, 1.0),
    m(
        "server RSS baseline (MiB)",
        "/server_rss_baseline_kib",
        false,
        1024.0,
    ),
    m(
        "server RSS during, max (MiB)",
        "/server_rss_during_max_kib",
        false,
        1024.0,
    ),
    m(
        "server RSS after (MiB)",
        "/server_rss_after_kib",
        false,
        1024.0,
    ),
    m(
        "after minus baseline (MiB)",
        "/server_rss_growth_kib",
        false,
        1024.0,
    ),
    m(
        "RSS growth over the churn's second half (MiB)",
        "/server_rss_second_half_growth_kib",
        false,
        1024.0,
    ),
    m(
        "RSS slope over the second half (MiB/min)",
        "/server_rss_slope_kib_per_min",
        false,
        1024.0,
    ),
    GEN_CPU,
];
const SLOW: &[Metric] = &[
    g(
        "healthy members' p50, every member reading (ms)",
        "/without_slow/latency/p50_us",
        false,
        1000.0,
    ),
    g(
        "healthy members' p99, every member reading (ms)",
        "/without_slow/latency/p99_us",
        false,
        1000.0,
    ),
    g(
        "healthy members' p50, slow members paused (ms)",
        "/with_slow/latency/p50_us",
        false,
        1000.0,
    ),
    g(
        "healthy members' p99, slow members paused (ms)",
        "/with_slow/latency/p99_us",
        false,
        1000.0,
    ),
    g("p99 paused ÷ p99 reading", "/p99_ratio", false, 1.0),
    g(
        "healthy members' lost messages, slow members paused",
        "/with_slow/lost",
        false,
        1.0,
    ),
    info(
        "slow members closed by the server",
        "/slow_members/closed_by_server",
        1.0,
    ),
    info(
        "share of the slow members' messages delivered",
        "/slow_members/received_ratio",
        1.0,
    ),
    m(
        "server RSS growth while they were paused (MiB)",
        "/server_rss_growth_kib",
        false,
        1024.0,
    ),
    info(
        "generator CPU, slow members paused (%)",
        "/with_slow/cpu/gen_cpu_pct",
        1.0,
    ),
];

/// What a case measures, from its scenario (first generator argument) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Idle,
    Echo,
    Broadcast,
    Cluster,
    Search,
    Churn,
    Slow,
}

pub fn kind(case: &Case) -> Kind {
    let search = case.args.iter().any(|a| a == "--search");
    match (case.args[0].as_str(), search) {
        ("connect", _) if case.name.starts_with("idle-") => Kind::Idle,
        ("connect", _) => Kind::Connect,
        ("echo", _) => Kind::Echo,
        (_, true) => Kind::Search,
        ("broadcast", false) => Kind::Broadcast,
        ("cluster-broadcast", false) => Kind::Cluster,
        ("slow-consumers", _) => Kind::Slow,
        _ => Kind::Churn,
    }
}

/// The headline metrics of a case, by its kind.
pub fn metrics(case: &Case) -> &'static [Metric] {
    match kind(case) {
        Kind::Connect => CONNECT,
        Kind::Idle => IDLE,
        Kind::Echo => ECHO,
        Kind::Search => SEARCH,
        Kind::Broadcast => BROADCAST,
        Kind::Cluster => CLUSTER,
        Kind::Churn => CHURN,
        Kind::Slow => SLOW,
    }
}

/// Where a result line keeps the generator's CPU of the measured window.
pub fn gen_cpu_pointer(case: &Case) -> &'static str {
    match kind(case) {
        Kind::Search => "/best/cpu/gen_cpu_pct",
        Kind::Slow => "/with_slow/cpu/gen_cpu_pct",
        _ => "/cpu/gen_cpu_pct",
    }
}

/// Generator CPU (percent of the cores it may use) at or above which a run counts
/// as bounded by the generator.
pub const GEN_BOUND_PCT: f64 = 90.0;

/// Whether the generator, not the server, bounded this run: its CPU over the
/// measured window reached `GEN_BOUND_PCT` of the cores it had (`gen_threads`).
pub fn gen_bound(case: &Case, result: &Value) -> bool {
    let Some(pct) = result
        .pointer(gen_cpu_pointer(case))
        .and_then(Value::as_f64)
    else {
        return false;
    };
    let cores = result["gen_threads"]
        .as_f64()
        .filter(|c| *c >= 1.0)
        .unwrap_or(1.0);
    pct >= GEN_BOUND_PCT * cores
}

/// The value of a metric in one result line, scaled for display.
pub fn value(result: &Value, metric: &Metric) -> Option<f64> {
    let v = result.pointer(metric.pointer)?;
    let x = v.as_f64().or_else(|| v.as_bool().map(|b| b as u8 as f64))?;
    Some(x / metric.scale)
}

/// Adds `best` (the highest holding step) to a search result, so that metrics can
/// point at it.
pub fn annotate(result: &mut Value) {
    let Some(steps) = result.get("steps").and_then(Value::as_array) else {
        return;
    };
    let best = steps
        .iter()
        .filter(|s| s["holds"].as_bool() == Some(true))
        .max_by(|a, b| {
            a["rate"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["rate"].as_f64().unwrap_or(0.0))
        })
        .cloned();
    if let Some(best) = best {
        result["best"] = best;
    }
}

/// `{case: {target: {metric label: median, "runs": n, "gen_bound": b}}}` over the
/// runs that printed a result line with `"ok": true`.
pub fn medians(cases: &[Case], targets: &[String], runs: &[Value]) -> Value {
    let mut out = json!({});
    for case in cases {
        for t in targets {
            let results: Vec<&Value> = runs
                .iter()
                .filter(|r| {
                    r["case"].as_str() == Some(&case.name)
                        && r["target"].as_str() == Some(t)
                        && r["ok"].as_bool() == Some(true)
                })
                .map(|r| &r["result"])
                .collect();
            let bound = results.iter().filter(|r| gen_bound(case, r)).count();
            let mut per = json!({
                "runs": results.len(),
                "gen_bound_runs": bound,
                // Most of its runs were bounded by the generator.
                "gen_bound": bound * 2 > results.len(),
            });
            for m in metrics(case) {
                let vals: Vec<f64> = results.iter().filter_map(|r| value(r, m)).collect();
                per[m.label] = json!(median(vals));
            }
            out[&case.name][t] = per;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_have_cases_and_metrics() {
        for p in ["smoke", "quick", "full"] {
            for c in cases(p, 3, 20_000) {
                assert!(!metrics(&c).is_empty(), "{}", c.name);
            }
        }
        assert!(cases("full", 0, 20_000).iter().all(|c| c.instances == 1));
        let full = cases("full", 3, 20_000);
        let names: Vec<&str> = full.iter().map(|c| c.name.as_str()).collect();
        for n in [
            "idle-19800",
            "churn-10min",
            "slow-consumers",
            "cluster-3x",
            "cluster-search-3x",
        ] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
        let cl = full.iter().find(|c| c.name == "cluster-3x").unwrap();
        assert_eq!(kind(cl), Kind::Cluster);
        assert!(cl.args.windows(2).any(|w| w == ["--member-nodes", "2"]));
        assert!(full.iter().any(|c| c.ceiling && kind(c) == Kind::Echo));
    }

    #[test]
    fn idle_size_follows_the_limit() {
        assert_eq!(idle_size(20_000), 19_800);
        assert_eq!(idle_size(1_048_576), IDLE_ASKED);
        let c = &cases("full", 0, 20_000)[2];
        assert_eq!(kind(c), Kind::Idle);
        assert!(c
            .note
            .as_deref()
            .unwrap()
            .contains("19800 idle connections"));
        assert_eq!(c.skein_args, ["--max-connections", "19900"]);
        assert!(cases("full", 0, 1 << 20)[2].note.is_none());
    }

    #[test]
    fn generator_bound_runs() {
        let c = &cases("full", 0, 20_000)[3];
        assert!(gen_bound(
            c,
            &json!({"cpu": {"gen_cpu_pct": 95.0}, "gen_threads": 1})
        ));
        assert!(!gen_bound(
            c,
            &json!({"cpu": {"gen_cpu_pct": 95.0}, "gen_threads": 2})
        ));
        assert!(!gen_bound(c, &json!({"cpu": {"gen_cpu_pct": 50.0}})));
        let runs = vec![
            json!({"case": c.name, "target": "skein", "ok": true, "result": {"acks_per_s": 1.0, "cpu": {"gen_cpu_pct": 99.0}}}),
            json!({"case": c.name, "target": "skein", "ok": true, "result": {"acks_per_s": 3.0, "cpu": {"gen_cpu_pct": 97.0}}}),
            json!({"case": c.name, "target": "skein", "ok": true, "result": {"acks_per_s": 2.0, "cpu": {"gen_cpu_pct": 20.0}}}),
        ];
        let med = medians(std::slice::from_ref(c), &["skein".to_string()], &runs);
        assert_eq!(med[&c.name]["skein"]["gen_bound"], json!(true));
        assert_eq!(med[&c.name]["skein"]["acks/s"], json!(2.0));
    }

    #[test]
    fn reads_values() {
        let c = &cases("full", 0, 20_000)[3];
        let r = json!({"acks_per_s": 1000.0, "latency": {"p99_us": 2500}});
        let ms = metrics(c);
        assert_eq!(value(&r, &ms[0]), Some(1000.0));
        assert_eq!(value(&r, &ms[2]), Some(2.5));
        let mut s =
            json!({"steps": [{"rate": 10.0, "holds": true}, {"rate": 20.0, "holds": false}]});
        annotate(&mut s);
        assert_eq!(s["best"]["rate"], json!(10.0));
    }
}
