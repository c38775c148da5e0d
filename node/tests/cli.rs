//! The `skein` binary as a process: configuration precedence, clear errors for bad
//! configuration, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn skein() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_skein"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SKEIN_") {
            c.env_remove(k);
        }
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Starts a node and returns it with the address it printed.
fn start(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.spawn().expect("skein starts");
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("reads stdout");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().expect("wait works") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

fn fails_with(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let mut c = skein();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("skein runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
}

#[test]
fn bad_configuration_is_a_clear_error() {
    fails_with(
        &["--transports", "pigeon"],
        &[],
        "unknown transport \"pigeon\"",
    );
    fails_with(
        &["--ping-interval", "0"],
        &[],
        "ping_interval must be greater than 0",
    );
    fails_with(
        &["--config", "/nonexistent/skein.toml"],
        &[],
        "cannot read config file",
    );
    fails_with(&["--port", "seventy"], &[], "invalid value 'seventy'");
    fails_with(
        &["--max-connections", "0"],
        &[],
        "max_connections must be greater than 0",
    );
    fails_with(
        &[],
        &[("SKEIN_HEADER_TIMEOUT", "0")],
        "header_timeout must be greater than 0",
    );
    fails_with(
        &[],
        &[("SKEIN_BODY_TIMEOUT", "soon")],
        "invalid value 'soon'",
    );
    fails_with(&[], &[("SKEIN_PORT", "99999")], "invalid value '99999'");
    let dir = std::env::temp_dir().join(format!("skein-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(&f, "port = \"x\"\n").unwrap();
    fails_with(
        &["--config", f.to_str().unwrap()],
        &[],
        "port: invalid value \"x\"",
    );
    std::fs::write(&f, "port = \n").unwrap();
    fails_with(
        &["--config", f.to_str().unwrap()],
        &[],
        "invalid config file",
    );
    fails_with(
        &["--log-format", "xml"],
        &[],
        "log_format must be text or json",
    );
}

#[test]
fn flags_win_over_env_which_wins_over_file() {
    let dir = std::env::temp_dir().join(format!("skein-cli-prec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("node.toml");
    std::fs::write(&f, "host = \"127.0.0.2\"\nport = 1\n").unwrap();
    // File alone: host from the file; env overrides the port; the flag overrides the host.
    let mut c = skein();
    c.args(["--config", f.to_str().unwrap(), "--host", "127.0.0.1"])
        .env("SKEIN_PORT", "0")
        .env("SKEIN_HOST", "127.0.0.3");
    let (mut child, addr) = start(c);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_ne!(addr, "127.0.0.1:1");
    let _ = child.kill();
    let _ = child.wait();
    let mut c = skein();
    c.args(["--config", f.to_str().unwrap()])
        .env("SKEIN_PORT", "0");
    let (mut child, addr) = start(c);
    assert!(addr.starts_with("127.0.0.2:"), "{addr}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn busy_port_fails_and_sigterm_exits_zero() {
    let mut c = skein();
    c.args(["--host", "127.0.0.1", "--port", "0"]);
    let (mut child, addr) = start(c);
    let port = addr.rsplit(':').next().unwrap();
    let out = skein()
        .args(["--host", "127.0.0.1", "--port", port])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
}

#[test]
fn bad_redis_configuration_stops_the_node_clearly() {
    let run = |args: &[&str]| {
        let out = skein()
            .args(["--host", "127.0.0.1", "--port", "0", "--adapter", "redis"])
            .args(args)
            .output()
            .expect("skein runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A URL that does not parse is a configuration error (exit 2), found before any
    // connection is tried.
    let (code, err) = run(&["--redis-url", "not a url"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("redis_url: invalid redis URL"), "{err}");
    // Nothing listens on port 1: the node refuses to start alone.
    let (code, err) = run(&["--redis-url", "redis://127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("redis unreachable"), "{err}");
    fails_with(
        &["--adapter", "carrier-pigeon"],
        &[],
        "unknown adapter \"carrier-pigeon\"",
    );
}

#[test]
fn bad_nats_configuration_stops_the_node_clearly() {
    let run = |args: &[&str]| {
        let out = skein()
            .args(["--host", "127.0.0.1", "--port", "0", "--adapter", "nats"])
            .args(args)
            .output()
            .expect("skein runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Each bad value is a configuration error (exit 2) naming its option, found before
    // any connection is tried, and no secret appears in the message.
    for (args, needle) in [
        (&["--nats-url", "http://u:hunter2@host:1"][..], "nats_url: "),
        (
            &["--nats-url", "nats://127.0.0.1:4222,nats://h:notaport"],
            "nats_url: ",
        ),
        (&["--nats-prefix", "a b"], "nats_prefix: "),
        (&["--nats-nkey", "SUhunter2"], "nats_nkey: not an nkey seed"),
        (
            &["--nats-creds", "/nonexistent/x.creds"],
            "nats_creds: cannot read",
        ),
        (
            &["--nats-user", "u"],
            "nats_password is needed with nats_user",
        ),
        (
            &[
                "--nats-token",
                "hunter2",
                "--nats-user",
                "u",
                "--nats-password",
                "p",
            ],
            "give one way to authenticate",
        ),
        (
            &["--nats-tls-ca", "/nonexistent/ca.pem"],
            "nats_tls_ca: cannot read",
        ),
        (
            &["--nats-tls-cert", "/etc/hostname"],
            "nats_tls_cert and nats_tls_key go together",
        ),
        (
            &["--nats-request-timeout", "0"],
            "nats_request_timeout must be greater than 0",
        ),
        (
            &["--nats-replicas", "9"],
            "nats_replicas must be between 1 and 5",
        ),
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
        assert!(!err.contains("hunter2"), "{args:?}: a secret in {err}");
    }
    // Nothing listens on port 1: the node refuses to start alone (exit 1).
    let (code, err) = run(&["--nats-url", "nats://u:hunter2@127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("NATS unreachable"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // --check-config shows the servers with their passwords redacted, and hides the rest.
    let out = skein()
        .args(["--check-config", "--adapter", "nats"])
        .args([
            "--nats-url",
            "nats://app:hunter2@127.0.0.1:1,nats://127.0.0.1:2",
        ])
        .args(["--nats-token", "tok3n", "--nats-prefix", "chat.prod"])
        .output()
        .expect("skein runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("nats_url = [\"nats://app:<redacted>@127.0.0.1:1\", \"nats://127.0.0.1:2\"]"),
        "{text}"
    );
    assert!(text.contains("nats_prefix = \"chat.prod\""), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("tok3n"),
        "{text}"
    );
}

/// Writes `text` to a fresh file of this test process.
fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("skein-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn check_config_reports_every_error_at_once() {
    let f = temp_file("bad.toml", "drain_period = \"long\"\nprot = 1\n");
    let out = skein()
        .args(["--check-config", "--config", f.to_str().unwrap()])
        .args(["--adapter", "carrier-pigeon"])
        .args([
            "--grpc-port",
            "50051",
            "--grpc-tokens-file",
            "/nonexistent/tokens",
        ])
        .env("SKEIN_REDIS_URL", "redis://:pw@[bad")
        .output()
        .expect("skein runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "nothing printed as valid");
    for needle in [
        "unknown adapter \"carrier-pigeon\" (expected memory, redis, redis-streams, nats or mesh) (from --adapter)",
        "grpc_tokens_file: cannot read /nonexistent/tokens",
        "grpc_port needs at least one token",
        "drain_period: invalid value \"long\"",
        "unknown field `prot`",
    ] {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    assert!(err.contains("5 configuration error(s)"), "{err}");
    // With a Redis adapter, the URL is checked too (syntax only).
    let out = skein()
        .args(["--check-config", "--adapter", "redis-streams"])
        .env("SKEIN_REDIS_URL", "http://example.com")
        .output()
        .expect("skein runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("redis_url: invalid redis URL") && err.contains("(from SKEIN_REDIS_URL)"),
        "{err}"
    );
}

#[test]
fn check_config_prints_the_effective_configuration_without_starting() {
    let tokens = temp_file("tokens", "# app servers\nfirst-token\nsecond-token\n");
    let f = temp_file("ok.toml", "port = 1\nlog_format = \"json\"\n");
    let started = Instant::now();
    // Port 1 is privileged and nothing listens on redis port 1: the check neither
    // binds nor connects, so it still succeeds.
    let out = skein()
        .args(["--check-config", "--config", f.to_str().unwrap()])
        .args([
            "--adapter",
            "redis-streams",
            "--redis-url",
            "redis://:hunter2@127.0.0.1:1",
        ])
        .args([
            "--grpc-port",
            "50051",
            "--grpc-tokens-file",
            tokens.to_str().unwrap(),
        ])
        .env("SKEIN_DRAIN_PERIOD", "2500")
        .output()
        .expect("skein runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    for line in [
        "port = 1  # file ",
        "drain_period = 2500  # SKEIN_DRAIN_PERIOD",
        "adapter = \"redis-streams\"  # --adapter",
        "redis_url = \"redis://:<redacted>@127.0.0.1:1\"  # --redis-url",
        "grpc_tokens = [\"<redacted>\", \"<redacted>\"]",
        "recovery = true  # default",
        "ping_interval = 25000  # default",
    ] {
        assert!(stdout.contains(line), "expected {line:?} in:\n{stdout}");
    }
    for secret in ["hunter2", "first-token", "second-token"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    assert!(!stdout.contains("listening on"), "{stdout}");
}

#[test]
fn a_start_reads_the_token_file_and_refuses_a_missing_one() {
    let out = skein()
        .args(["--host", "127.0.0.1", "--port", "0", "--grpc-port", "0"])
        .args(["--grpc-tokens-file", "/nonexistent/skein/grpc-tokens"])
        .output()
        .expect("skein runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("grpc_tokens_file: cannot read /nonexistent/skein/grpc-tokens"),
        "{err}"
    );
    let tokens = temp_file("start-tokens", "only-token\n");
    let mut c = skein();
    c.args(["--host", "127.0.0.1", "--port", "0", "--grpc-port", "0"])
        .args(["--grpc-tokens-file", tokens.to_str().unwrap()]);
    let (mut child, _) = start(c);
    let _ = child.kill();
    let _ = child.wait();
}

/// One HTTP/1.1 GET on a fresh connection; the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn one_worker_thread_serves_many_connections_at_once() {
    fails_with(
        &["--worker-threads", "0"],
        &[],
        "worker_threads must be greater than 0",
    );
    let mut c = skein();
    c.args([
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--worker-threads",
        "1",
    ]);
    let (mut child, addr) = start(c);
    // Idle connections that send nothing do not keep the single thread from others.
    let idle: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connects"))
        .collect();
    let handshakes: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http_get(&addr, "/socket.io/?EIO=4&transport=polling"))
        })
        .collect();
    for h in handshakes {
        let r = h.join().unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("0{\"sid\":"), "an open packet: {r}");
    }
    assert!(http_get(&addr, "/health/live").starts_with("HTTP/1.1 200"));
    drop(idle);
    stop_now(&mut child);
}

fn stop_now(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn check_config_names_every_missing_or_bad_mesh_option() {
    let out = skein()
        .args(["--check-config", "--adapter", "mesh", "--host", "0.0.0.0"])
        .args(["--mesh-seeds", "a:1,nonsense", "--mesh-voters", "0"])
        .output()
        .expect("skein runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        "mesh_port is required with adapter mesh",
        "mesh_seeds: \"nonsense\" is not host:port (from --mesh-seeds)",
        "mesh_data is required with adapter mesh",
        "mesh_secret_file (or mesh_secret) is required",
        "mesh_advertise is required when host is 0.0.0.0",
        "mesh_voters must be at least 1 (from --mesh-voters)",
    ] {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    // A complete set is valid, and the secret is never printed.
    let secret = temp_file("mesh-secret", "s3cret-value\n");
    let out = skein()
        .args(["--check-config", "--adapter", "mesh", "--host", "127.0.0.1"])
        .args(["--mesh-port", "7946", "--mesh-seeds", "127.0.0.1:7946"])
        .args(["--mesh-data", "/tmp/skein-mesh-check"])
        .args(["--mesh-secret-file", secret.to_str().unwrap()])
        .output()
        .expect("skein runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("s3cret-value"), "{text}");
    let out = skein()
        .args(["--check-config", "--adapter", "mesh", "--host", "127.0.0.1"])
        .args(["--mesh-port", "7946", "--mesh-seeds", "127.0.0.1:7946"])
        .args(["--mesh-data", "/tmp/skein-mesh-check"])
        .args(["--mesh-secret", "s3cret-value", "--recovery", "true"])
        .output()
        .expect("skein runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("s3cret-value"),
        "the secret is redacted: {text}"
    );
    // Sessions survive their node on the mesh too: recovery is accepted there.
    assert!(
        text.lines().any(|l| l == "recovery = true  # --recovery"),
        "{text}"
    );
}
