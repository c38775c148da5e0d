//! `suite`: starts each server, runs every case against it with the generator as a
//! child process (pinned apart with taskset), alternates the servers within each
//! repetition, takes medians and writes the results file and BENCHMARKS.md.

use crate::cases::{self, Case};
use crate::procfs;
use crate::report;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// Servers to measure, in order: skein, node, socketioxide.
    #[arg(long, value_delimiter = ',', default_value = "skein,node,socketioxide")]
    pub targets: Vec<String>,
    /// The Skein binary.
    #[arg(long, env = "SKEIN_BIN")]
    pub skein_bin: Option<PathBuf>,
    /// Node executable for the socket.io peer.
    #[arg(long, default_value = "node")]
    pub node_bin: String,
    /// The socketioxide peer binary (built from bench/peers/socketioxide).
    #[arg(long, env = "SIOXIDE_BIN")]
    pub sioxide_bin: Option<PathBuf>,
    /// The bench/ directory (peers, results, BENCHMARKS.md live there).
    #[arg(long, default_value = env!("CARGO_MANIFEST_DIR"))]
    pub bench_dir: PathBuf,
    /// Repetitions of every case; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Case set: full, quick or smoke.
    #[arg(long, default_value = "full")]
    pub profile: String,
    /// Only cases whose name starts with one of these.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Add a cluster broadcast case with this many server instances per target (0: none).
    #[arg(long, default_value_t = 0)]
    pub cluster: usize,
    /// CPUs for the servers (taskset list; empty: no pinning).
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    /// CPUs for the generator (taskset list; empty: no pinning).
    #[arg(long, default_value = "1")]
    pub gen_cpus: String,
    /// Results directory (default: <bench-dir>/results).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Date stamp of the results file (default: today, UTC).
    #[arg(long)]
    pub date: Option<String>,
    /// Skip writing results and BENCHMARKS.md (smoke runs).
    #[arg(long)]
    pub no_report: bool,
    /// Exit non-zero unless every run printed a result line with "ok": true.
    #[arg(long)]
    pub check: bool,
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `taskset -c CPUS` prefix, or nothing.
fn pin(cpus: &str, enabled: bool) -> Vec<String> {
    if enabled && !cpus.is_empty() {
        vec!["taskset".into(), "-c".into(), cpus.into()]
    } else {
        vec![]
    }
}

/// The command line of a target's server (without --port).
fn server_cmd(a: &SuiteArgs, target: &str) -> Result<Vec<String>> {
    let exists = |p: &Path| -> Result<String> {
        if !p.exists() {
            bail!("{} not found", p.display());
        }
        Ok(p.display().to_string())
    };
    Ok(match target {
        "skein" => {
            let bin = a
                .skein_bin
                .clone()
                .unwrap_or_else(|| a.bench_dir.join("../target/release/skein"));
            vec![exists(&bin)?, "--bench-handlers".into()]
        }
        "node" => {
            let dir = a.bench_dir.join("peers/node");
            exists(&dir.join("node_modules/socket.io"))?;
            vec![a.node_bin.clone(), exists(&dir.join("server.mjs"))?]
        }
        "socketioxide" => {
            let bin = a.sioxide_bin.clone().unwrap_or_else(|| {
                let t = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| a.bench_dir.join("peers/socketioxide/target"));
                t.join("release/socketioxide-peer")
            });
            vec![exists(&bin)?]
        }
        other => bail!("unknown target {other:?} (skein, node, socketioxide)"),
    })
}

fn spawn_server(cmd: &[String], log: &Path) -> Result<Server> {
    let mut full = cmd.to_vec();
    full.extend(["--port", "0", "--host", "127.0.0.1"].map(String::from));
    let log_file = std::fs::File::create(log)?;
    let mut child = Command::new(&full[0])
        .args(&full[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("spawn {}", full.join(" ")))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining stdout so the server never blocks on it.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                let _ = tx.send(addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
            }
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(30)).ok().flatten();
    let mut server = Server { child, port: 0 };
    match port {
        Some(p) => server.port = p,
        None => bail!(
            "{} did not print `listening on 127.0.0.1:PORT` within 30 s",
            full.join(" ")
        ),
    }
    Ok(server)
}

/// Runs the generator once; its result line (if any) and the command shown in reports.
fn run_gen(
    a: &SuiteArgs,
    pinned: bool,
    case: &Case,
    servers: &[Server],
    label: &str,
    log: &Path,
) -> (Option<Value>, String) {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skein-bench"));
    let mut cmd = pin(&a.gen_cpus, pinned);
    cmd.push(exe.display().to_string());
    cmd.extend(case.args.iter().cloned());
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("http://127.0.0.1:{}", s.port))
        .collect();
    let pids: Vec<String> = servers.iter().map(|s| s.child.id().to_string()).collect();
    cmd.extend([
        "--url".into(),
        urls.join(","),
        "--server-pid".into(),
        pids.join(","),
        "--label".into(),
        label.into(),
    ]);
    let shown = {
        let mut c = cmd.clone();
        let i = c
            .iter()
            .position(|x| x.ends_with("skein-bench"))
            .unwrap_or(0);
        c[i] = "skein-bench".into();
        c.join(" ")
    };
    let Ok(log_file) = std::fs::File::create(log) else {
        return (None, shown);
    };
    let child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn();
    let Ok(mut child) = child else {
        return (None, shown);
    };
    // The generator bounds itself; this is a backstop in case it hangs.
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut last = None;
        if let Some(out) = stdout {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.trim_start().starts_with('{') {
                    last = Some(line);
                }
            }
        }
        last
    });
    let deadline = Instant::now() + Duration::from_secs(1800);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.wait();
    let line = reader.join().ok().flatten();
    (line.and_then(|l| serde_json::from_str(&l).ok()), shown)
}

fn cmd_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn versions(a: &SuiteArgs, cmds: &[(String, Vec<String>)]) -> Value {
    let mut v = json!({
        "skein_bench": env!("CARGO_PKG_VERSION"),
        "rustc": cmd_output("rustc", &["--version"]),
        "node": cmd_output(&a.node_bin, &["--version"]),
        "git": cmd_output("git", &["-C", &a.bench_dir.display().to_string(), "rev-parse", "--short", "HEAD"]),
    });
    let pkg = a
        .bench_dir
        .join("peers/node/node_modules/socket.io/package.json");
    if let Some(ver) = std::fs::read_to_string(pkg)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    {
        v["socket.io"] = ver["version"].clone();
    }
    let lock = std::fs::read_to_string(a.bench_dir.join("peers/socketioxide/Cargo.lock"))
        .unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"socketioxide\"" {
            v["socketioxide"] = json!(lines.next().and_then(|n| n.split('"').nth(1)));
        }
    }
    if let Some((_, cmd)) = cmds.iter().find(|(t, _)| t == "skein") {
        v["skein"] = json!(cmd_output(&cmd[0], &["--version"]));
    }
    v
}

pub fn run(a: SuiteArgs) -> Result<()> {
    let pinned = have_taskset()
        && std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            >= 2;
    if !pinned {
        eprintln!(
            "suite: taskset unavailable or a single CPU: generator and servers are not pinned"
        );
    }
    let out_dir = a
        .out_dir
        .clone()
        .unwrap_or_else(|| a.bench_dir.join("results"));
    let log_dir = out_dir.join("tmp");
    std::fs::create_dir_all(&log_dir)?;
    let hard = procfs::nofile_hard_limit();
    let mut skipped: Vec<String> = Vec::new();
    let mut targets: Vec<(String, Vec<String>)> = Vec::new();
    for t in &a.targets {
        match server_cmd(&a, t) {
            Ok(cmd) => targets.push((t.clone(), cmd)),
            Err(e) => {
                eprintln!("suite: skipping target {t}: {e:#}");
                skipped.push(format!("target {t}: {e:#}"));
            }
        }
    }
    if targets.is_empty() {
        bail!("no target can be run");
    }
    let mut case_list = Vec::new();
    for c in cases::cases(&a.profile, a.cluster) {
        if !a.only.is_empty() && !a.only.iter().any(|p| c.name.starts_with(p.as_str())) {
            continue;
        }
        if c.conns + 100 > hard {
            let why = format!(
                "case {}: needs {} open files, the hard limit (ulimit -Hn) is {hard}",
                c.name, c.conns
            );
            eprintln!("suite: skipping {why}");
            skipped.push(why);
            continue;
        }
        case_list.push(c);
    }

    let mut runs = Vec::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for rep in 0..a.reps.max(1) {
        for case in &case_list {
            // Alternate the order of the servers from one repetition to the next.
            let n = targets.len();
            for k in 0..n {
                let (name, cmd) = &targets[(k + rep) % n];
                // Only Skein's peers run here without a cluster adapter: several of their
                // instances would not form one cluster, so the cluster case is Skein's.
                if case.instances > 1 && name != "skein" {
                    continue;
                }
                let tag = format!("{}-{}-{}", case.name, name, rep + 1);
                let server_line = {
                    let mut c = pin(&a.server_cpus, pinned);
                    c.extend(cmd.iter().cloned());
                    c.extend(["--port", "0", "--host", "127.0.0.1"].map(String::from));
                    c.join(" ")
                };
                let servers: Result<Vec<Server>> = (0..case.instances)
                    .map(|i| {
                        let mut c = pin(&a.server_cpus, pinned);
                        c.extend(cmd.iter().cloned());
                        if case.instances > 1 {
                            // One cluster over Redis, on a key of its own.
                            let url = std::env::var("BENCH_REDIS_URL")
                                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                            c.extend([
                                "--adapter".into(),
                                "redis".into(),
                                "--redis-url".into(),
                                url,
                            ]);
                            c.extend([
                                "--redis-key".into(),
                                format!("bench-{tag}-{}", std::process::id()),
                            ]);
                        }
                        spawn_server(&c, &log_dir.join(format!("{tag}-server{i}.log")))
                    })
                    .collect();
                let t0 = Instant::now();
                let (result, gen_line) = match &servers {
                    Ok(s) => run_gen(
                        &a,
                        pinned,
                        case,
                        s,
                        name,
                        &log_dir.join(format!("{tag}-gen.log")),
                    ),
                    Err(e) => (
                        Some(json!({"ok": false, "error": format!("server: {e:#}")})),
                        String::new(),
                    ),
                };
                drop(servers);
                let ok = result
                    .as_ref()
                    .and_then(|r| r["ok"].as_bool())
                    .unwrap_or(false);
                let mut result =
                    result.unwrap_or_else(|| json!({"ok": false, "error": "no result line"}));
                cases::annotate(&mut result);
                eprintln!(
                    "suite: [{:>5.0}s] {tag}: {} ({:.1}s){}",
                    started.elapsed().as_secs_f64(),
                    if ok {
                        "ok".to_string()
                    } else {
                        format!("FAILED: {}", reason(&result))
                    },
                    t0.elapsed().as_secs_f64(),
                    summary(case, &result)
                );
                if !ok {
                    failures.push(format!("{tag}: {}", reason(&result)));
                }
                runs.push(json!({
                    "case": case.name, "target": name, "rep": rep + 1, "ok": ok,
                    "server_command": server_line, "instances": case.instances,
                    "gen_command": gen_line, "result": result,
                }));
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    let names: Vec<String> = targets.iter().map(|(t, _)| t.clone()).collect();
    let medians = cases::medians(&case_list, &names, &runs);
    let date = a.date.clone().unwrap_or_else(procfs::today);
    let doc = json!({
        "date": date,
        "profile": a.profile,
        "reps": a.reps,
        "pinning": if pinned { json!({"server_cpus": a.server_cpus, "gen_cpus": a.gen_cpus}) } else { Value::Null },
        "machine": procfs::machine(),
        "versions": versions(&a, &targets),
        "suite_command": std::env::args().collect::<Vec<_>>().join(" "),
        "targets": targets.iter().map(|(t, c)| json!({"name": t, "command": c.join(" ")})).collect::<Vec<_>>(),
        "cases": case_list,
        "skipped": skipped,
        "failures": failures,
        "wall_s": procfs::round1(started.elapsed().as_secs_f64()),
        "medians": medians,
        "runs": runs,
    });
    if !a.no_report {
        let path = out_dir.join(format!("{date}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
        eprintln!("suite: wrote {}", path.display());
        report::write_all(&doc, &a.bench_dir, &out_dir, &path)?;
    }
    if a.check {
        // A plain closing line that CI runners understand.
        println!(
            "bench: {} passed, {} failed",
            runs.len() - failures.len(),
            failures.len()
        );
    }
    if a.check && !failures.is_empty() {
        eprintln!(
            "suite: {} run(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
        std::process::exit(1);
    }
    Ok(())
}

fn reason(r: &Value) -> &str {
    r["error"]
        .as_str()
        .or(r["first_error"].as_str())
        .unwrap_or("not ok")
}

fn summary(case: &Case, r: &Value) -> String {
    cases::metrics(case)
        .iter()
        .take(2)
        .filter_map(|m| cases::value(r, m).map(|v| format!(" {}={}", m.label, report::fmt_num(v))))
        .collect()
}
