//! `suite`: starts each server, runs every case against it with the generator as a
//! child process (pinned apart with taskset), alternates the servers within each
//! repetition, takes medians and writes the results file and BENCHMARKS.md.
//!
//! Targets: `skein`, the peers `node` and `socketioxide`, and `raw`, the ceiling (a
//! frame-level server with no Socket.IO behind it, on the cases marked `ceiling`).
//! The cluster cases run N nodes of each server on Redis (a private redis-server
//! unless --redis-url), and Skein also on its other adapters (`skein-nats`,
//! `skein-mesh`), each skipped when the skein binary refuses it.

use crate::cases::{self, Case};
use crate::procfs;
use crate::report;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// Servers to measure, in order: skein, node, socketioxide, raw (the ceiling).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "skein,node,socketioxide,raw"
    )]
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
    /// The ceiling's binary (built from bench/peers/raw).
    #[arg(long, env = "RAW_BIN")]
    pub raw_bin: Option<PathBuf>,
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
    /// Nodes per server in the cluster cases (0: no cluster case). With 3 or more,
    /// the last node holds no member of the room.
    #[arg(long, default_value_t = 3)]
    pub cluster: usize,
    /// Skein's adapters in the cluster cases: `redis` is the `skein` column (the
    /// peers run on Redis too); others get a column each (`skein-nats`, …). An
    /// adapter the skein binary refuses (`--check-config`) is skipped.
    #[arg(long, value_delimiter = ',', default_value = "redis,nats,mesh")]
    pub skein_adapters: Vec<String>,
    /// Redis of the cluster cases (default: a private redis-server on a free port).
    #[arg(long, env = "BENCH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// NATS of Skein's nats adapter (default: a private nats-server on a free port).
    #[arg(long, env = "BENCH_NATS_URL")]
    pub nats_url: Option<String>,
    /// redis-server executable for the private Redis.
    #[arg(long, default_value = "redis-server")]
    pub redis_server_bin: String,
    /// nats-server executable for the private NATS.
    #[arg(long, default_value = "nats-server")]
    pub nats_server_bin: String,
    /// CPUs for the servers, and the cluster's Redis/NATS (taskset list; empty: no pinning).
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    /// CPUs for the generator (taskset list; empty: no pinning).
    #[arg(long, default_value = "1")]
    pub gen_cpus: String,
    /// Results directory (default: <bench-dir>/results).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Where BENCHMARKS.md goes (default: <bench-dir>/BENCHMARKS.md).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
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

/// One column of the report: a server, and for Skein in the cluster cases an adapter.
struct Target {
    name: String,
    /// skein, node, socketioxide or raw.
    kind: String,
    cmd: Vec<String>,
    /// Skein on a cluster adapter other than Redis: runs the cluster cases only.
    adapter: Option<String>,
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
        "raw" => {
            let bin = a.raw_bin.clone().unwrap_or_else(|| {
                let t = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| a.bench_dir.join("peers/raw/target"));
                t.join("release/raw-peer")
            });
            vec![exists(&bin)?]
        }
        other => bail!("unknown target {other:?} (skein, node, socketioxide, raw)"),
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

fn versions(a: &SuiteArgs, targets: &[Target], backends: &Backends) -> Value {
    let mut v = json!({
        "skein_bench": env!("CARGO_PKG_VERSION"),
        "rustc": cmd_output("rustc", &["--version"]),
        "node": cmd_output(&a.node_bin, &["--version"]),
        "git": cmd_output("git", &["-C", &a.bench_dir.display().to_string(), "rev-parse", "--short", "HEAD"]),
    });
    for pkg in ["socket.io", "@socket.io/redis-adapter", "redis"] {
        let path = a
            .bench_dir
            .join(format!("peers/node/node_modules/{pkg}/package.json"));
        if let Some(ver) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        {
            let key = if pkg == "redis" {
                "node redis client"
            } else {
                pkg
            };
            v[key] = ver["version"].clone();
        }
    }
    for (lockfile, crates) in [
        (
            "peers/socketioxide/Cargo.lock",
            &["socketioxide", "socketioxide-redis"][..],
        ),
        ("peers/raw/Cargo.lock", &["tokio-tungstenite"][..]),
    ] {
        let lock = std::fs::read_to_string(a.bench_dir.join(lockfile)).unwrap_or_default();
        let mut lines = lock.lines();
        while let Some(l) = lines.next() {
            for c in crates {
                if l.trim() == format!("name = \"{c}\"") {
                    let key = if lockfile.contains("raw") {
                        format!("{c} (raw peer)")
                    } else {
                        c.to_string()
                    };
                    v[key] = json!(lines.next().and_then(|n| n.split('"').nth(1)));
                }
            }
        }
    }
    if let Some(t) = targets.iter().find(|t| t.kind == "skein") {
        v["skein"] = json!(cmd_output(&t.cmd[0], &["--version"]));
    }
    if backends.redis_started {
        v["redis-server"] = json!(cmd_output(&a.redis_server_bin, &["--version"]));
    }
    if backends.nats_started {
        v["nats-server"] = json!(cmd_output(&a.nats_server_bin, &["--version"]));
    }
    v
}

/// The cluster's services: Redis and NATS, private ones started here unless URLs
/// were given, and a scratch directory (mesh data, its secret, NATS storage).
struct Backends {
    redis: Option<String>,
    nats: Option<String>,
    redis_started: bool,
    nats_started: bool,
    children: Vec<Child>,
    tmp: PathBuf,
    secret: PathBuf,
    notes: Vec<String>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_port(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Backends {
    fn new(out_dir: &Path) -> Result<Backends> {
        let tmp = out_dir.join(format!("tmp/cluster-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        // The mesh's cluster secret: 32 random bytes, hex.
        let mut bytes = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let secret = tmp.join("mesh-secret");
        std::fs::write(&secret, hex + "\n")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Backends {
            redis: None,
            nats: None,
            redis_started: false,
            nats_started: false,
            children: Vec::new(),
            tmp,
            secret,
            notes: Vec::new(),
        })
    }

    /// Starts `cmd` (pinned) and waits for it to listen on `port`.
    fn start(&mut self, mut cmd: Vec<String>, port: u16, log: &str) -> Result<()> {
        let log_file = std::fs::File::create(self.tmp.join(log))?;
        let child = Command::new(&cmd[0])
            .args(cmd.drain(1..))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawn {}", cmd[0]))?;
        self.children.push(child);
        if !wait_port(port, Duration::from_secs(15)) {
            bail!("{} did not listen on 127.0.0.1:{port} within 15 s", cmd[0]);
        }
        Ok(())
    }

    fn start_redis(&mut self, a: &SuiteArgs, pin: &[String]) {
        if let Some(u) = &a.redis_url {
            self.redis = Some(u.clone());
            self.notes.push(format!("Redis at {u}"));
            return;
        }
        let res = free_port().and_then(|port| {
            let mut cmd = pin.to_vec();
            cmd.extend(
                [
                    a.redis_server_bin.as_str(),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
                .map(String::from),
            );
            self.start(cmd, port, "redis.log")?;
            Ok(port)
        });
        match res {
            Ok(port) => {
                self.redis = Some(format!("redis://127.0.0.1:{port}"));
                self.redis_started = true;
                self.notes.push(
                    "a private redis-server (no persistence), pinned with the servers".into(),
                );
            }
            Err(e) => self.notes.push(format!("no Redis: {e:#}")),
        }
    }

    fn start_nats(&mut self, a: &SuiteArgs, pin: &[String]) {
        if let Some(u) = &a.nats_url {
            self.nats = Some(u.clone());
            return;
        }
        let store = self.tmp.join("nats");
        let res = free_port().and_then(|port| {
            let mut cmd = pin.to_vec();
            cmd.extend([
                a.nats_server_bin.clone(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-js".into(),
                "-sd".into(),
                store.display().to_string(),
            ]);
            self.start(cmd, port, "nats.log")?;
            Ok(port)
        });
        match res {
            Ok(port) => {
                self.nats = Some(format!("nats://127.0.0.1:{port}"));
                self.nats_started = true;
            }
            Err(e) => self.notes.push(format!("no NATS: {e:#}")),
        }
    }
}

/// Where a cluster's services are.
struct Ends<'a> {
    redis: Option<&'a str>,
    nats: Option<&'a str>,
    tmp: &'a Path,
    secret: &'a Path,
}

impl Backends {
    fn ends(&self) -> Ends<'_> {
        Ends {
            redis: self.redis.as_deref(),
            nats: self.nats.as_deref(),
            tmp: &self.tmp,
            secret: &self.secret,
        }
    }
}

/// The flags of a Skein adapter for node `i` of a cluster `key` with `mesh_ports`
/// as the nodes' mesh ports. `None`: its backend is missing.
fn skein_adapter_args(
    adapter: &str,
    b: &Ends<'_>,
    key: &str,
    i: usize,
    mesh_ports: &[u16],
) -> Option<Vec<String>> {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Some(match adapter {
        "redis" => v(&[
            "--adapter",
            "redis",
            "--redis-url",
            b.redis?,
            "--redis-key",
            key,
        ]),
        "nats" => v(&[
            "--adapter",
            "nats",
            "--nats-url",
            b.nats?,
            "--nats-prefix",
            key,
        ]),
        "mesh" => {
            let seeds: Vec<String> = mesh_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
            let data = b.tmp.join(format!("{key}-mesh-{i}"));
            v(&[
                "--adapter",
                "mesh",
                "--mesh-port",
                &mesh_ports.get(i)?.to_string(),
                "--mesh-seeds",
                &seeds.join(","),
                "--mesh-data",
                &data.display().to_string(),
                "--mesh-secret-file",
                &b.secret.display().to_string(),
            ])
        }
        _ => return None,
    })
}

/// Whether the skein binary accepts an adapter's flags (`--check-config`); the
/// reason when it does not.
fn probe_adapter(skein: &[String], adapter: &str, b: &Backends) -> Result<(), String> {
    let ends = Ends {
        redis: Some("redis://127.0.0.1:6379"),
        nats: Some("nats://127.0.0.1:4222"),
        tmp: &b.tmp.join("probe"),
        secret: &b.secret,
    };
    let args = skein_adapter_args(adapter, &ends, "probe", 0, &[3001, 3002, 3003])
        .ok_or_else(|| format!("unknown adapter {adapter:?} (redis, nats, mesh)"))?;
    let out = Command::new(&skein[0])
        .args(&skein[1..])
        .args(["--check-config", "--host", "127.0.0.1", "--port", "3000"])
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("refused");
    Err(format!(
        "the skein binary refuses --adapter {adapter}: {}",
        first.trim()
    ))
}

/// Whether `t` runs `case`.
fn runs_case(a: &SuiteArgs, b: &Backends, t: &Target, case: &Case) -> bool {
    if t.kind == "raw" {
        return case.ceiling && case.instances == 1;
    }
    if case.instances <= 1 {
        return t.adapter.is_none();
    }
    match &t.adapter {
        Some(ad) if ad == "nats" => b.nats.is_some(),
        Some(_) => true,
        None => {
            b.redis.is_some()
                && (t.kind != "skein" || a.skein_adapters.iter().any(|x| x == "redis"))
        }
    }
}

/// The server command lines of one run of `case` on target `t` (one per instance).
fn instance_cmds(
    a: &SuiteArgs,
    b: &Backends,
    pinned: bool,
    t: &Target,
    case: &Case,
    tag: &str,
) -> Result<Vec<Vec<String>>> {
    let key = format!("bench-{tag}-{}", std::process::id());
    let mesh_ports: Vec<u16> = if t.adapter.as_deref() == Some("mesh") {
        (0..case.instances)
            .map(|_| free_port())
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    (0..case.instances)
        .map(|i| {
            let mut c = pin(&a.server_cpus, pinned);
            c.extend(t.cmd.iter().cloned());
            if t.kind == "skein" {
                c.extend(case.skein_args.iter().cloned());
            }
            if case.instances > 1 {
                let adapter = t.adapter.as_deref().unwrap_or("redis");
                let args = if t.kind == "skein" {
                    skein_adapter_args(adapter, &b.ends(), &key, i, &mesh_ports)
                } else {
                    // The peers' own Redis adapters (same flags in both peers).
                    skein_adapter_args("redis", &b.ends(), &key, i, &[])
                };
                c.extend(args.with_context(|| format!("no backend for {adapter}"))?);
            }
            Ok(c)
        })
        .collect()
}

pub fn run(a: SuiteArgs) -> Result<()> {
    // Children (servers, Redis) inherit the raised limit.
    procfs::raise_nofile();
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
    let mut targets: Vec<Target> = Vec::new();
    for t in &a.targets {
        match server_cmd(&a, t) {
            Ok(cmd) => targets.push(Target {
                name: t.clone(),
                kind: t.clone(),
                cmd,
                adapter: None,
            }),
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
    for c in cases::cases(&a.profile, a.cluster, hard) {
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

    // The cluster's services, and Skein's other adapters.
    let mut backends = Backends::new(&out_dir)?;
    if case_list.iter().any(|c| c.instances > 1) {
        let backend_pin = pin(&a.server_cpus, pinned);
        backends.start_redis(&a, &backend_pin);
        if backends.redis.is_none() {
            skipped.push(format!(
                "cluster cases on Redis: {}",
                backends.notes.last().cloned().unwrap_or_default()
            ));
        }
        let skein_cmd = targets
            .iter()
            .find(|t| t.kind == "skein")
            .map(|t| t.cmd.clone());
        for ad in a.skein_adapters.iter().filter(|x| *x != "redis") {
            let Some(cmd) = &skein_cmd else { break };
            match probe_adapter(cmd, ad, &backends) {
                Ok(()) => {
                    if ad == "nats" {
                        backends.start_nats(&a, &backend_pin);
                        if backends.nats.is_none() {
                            skipped.push(format!(
                                "target skein-nats: {}",
                                backends.notes.last().cloned().unwrap_or_default()
                            ));
                            continue;
                        }
                    }
                    targets.push(Target {
                        name: format!("skein-{ad}"),
                        kind: "skein".into(),
                        cmd: cmd.clone(),
                        adapter: Some(ad.clone()),
                    });
                }
                Err(why) => {
                    eprintln!("suite: skipping target skein-{ad}: {why}");
                    skipped.push(format!("target skein-{ad}: {why}"));
                }
            }
        }
    }

    let mut runs = Vec::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for rep in 0..a.reps.max(1) {
        for case in &case_list {
            if case.once && rep > 0 {
                continue;
            }
            // Alternate the order of the servers from one repetition to the next.
            let n = targets.len();
            for k in 0..n {
                let t = &targets[(k + rep) % n];
                if !runs_case(&a, &backends, t, case) {
                    continue;
                }
                let name = &t.name;
                let tag = format!("{}-{}-{}", case.name, name, rep + 1);
                let cmds = instance_cmds(&a, &backends, pinned, t, case, &tag);
                let server_line = cmds
                    .as_ref()
                    .ok()
                    .and_then(|c| c.first())
                    .map(|c| {
                        let mut c = c.clone();
                        c.extend(["--port", "0", "--host", "127.0.0.1"].map(String::from));
                        c.join(" ")
                    })
                    .unwrap_or_default();
                let servers: Result<Vec<Server>> = cmds.and_then(|cmds| {
                    cmds.iter()
                        .enumerate()
                        .map(|(i, c)| {
                            spawn_server(c, &log_dir.join(format!("{tag}-server{i}.log")))
                        })
                        .collect()
                });
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
                let bound = ok && cases::gen_bound(case, &result);
                eprintln!(
                    "suite: [{:>5.0}s] {tag}: {} ({:.1}s){}{}",
                    started.elapsed().as_secs_f64(),
                    if ok {
                        "ok".to_string()
                    } else {
                        format!("FAILED: {}", reason(&result))
                    },
                    t0.elapsed().as_secs_f64(),
                    summary(case, &result),
                    if bound { " [generator-bound]" } else { "" }
                );
                if !ok {
                    failures.push(format!("{tag}: {}", reason(&result)));
                }
                runs.push(json!({
                    "case": case.name, "target": name, "rep": rep + 1, "ok": ok,
                    "server_command": server_line, "instances": case.instances,
                    "gen_command": gen_line, "gen_bound": bound, "result": result,
                }));
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let medians = cases::medians(&case_list, &names, &runs);
    let date = a.date.clone().unwrap_or_else(procfs::today);
    let doc = json!({
        "date": date,
        "profile": a.profile,
        "reps": a.reps,
        "pinning": if pinned { json!({"server_cpus": a.server_cpus, "gen_cpus": a.gen_cpus}) } else { Value::Null },
        "machine": procfs::machine(),
        "versions": versions(&a, &targets, &backends),
        "suite_command": std::env::args().collect::<Vec<_>>().join(" "),
        "targets": targets.iter().map(|t| json!({
            "name": t.name, "kind": t.kind, "adapter": t.adapter, "command": t.cmd.join(" "),
        })).collect::<Vec<_>>(),
        "cluster": {
            "instances": a.cluster,
            "skein_adapters": a.skein_adapters,
            "backends": backends.notes,
        },
        "gen_bound_pct": cases::GEN_BOUND_PCT,
        "cases": case_list,
        "skipped": skipped,
        "failures": failures,
        "wall_s": procfs::round1(started.elapsed().as_secs_f64()),
        "medians": medians,
        "runs": runs,
    });
    drop(backends);
    if !a.no_report {
        let path = out_dir.join(format!("{date}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
        eprintln!("suite: wrote {}", path.display());
        let md = a
            .markdown
            .clone()
            .unwrap_or_else(|| a.bench_dir.join("BENCHMARKS.md"));
        report::write_all(&doc, &a.bench_dir, &out_dir, &path, &md)?;
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
