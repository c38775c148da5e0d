use std::path::PathBuf;
use std::time::Duration;

use skein::engineio::TransportKind;

use super::*;

fn try_load(args: &[&str]) -> Result<Loaded, ConfigErrors> {
    let mut v = vec!["skein"];
    v.extend_from_slice(args);
    load(
        options::command()
            .try_get_matches_from(v)
            .expect("flags parse"),
    )
}

fn load_ok(args: &[&str]) -> Config {
    try_load(args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .config
}

fn errors(args: &[&str]) -> Vec<String> {
    match try_load(args) {
        Ok(_) => panic!("{args:?} loaded"),
        Err(e) => e.0,
    }
}

fn tmp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skein-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn defaults_match_reference() {
    let c = load_ok(&[]);
    assert_eq!(c.port, 3000);
    assert_eq!(c.io.engine.path, "/socket.io/");
    assert_eq!(c.io.engine.ping_interval, Duration::from_secs(25));
    assert_eq!(c.io.engine.ping_timeout, Duration::from_secs(20));
    assert_eq!(c.io.engine.max_payload, 1_000_000);
    assert_eq!(c.io.connect_timeout, Duration::from_secs(45));
    assert!(c.io.engine.cors.is_none());
    assert_eq!(c.drain_period, Duration::from_secs(10));
    assert_eq!(c.header_timeout, Duration::from_secs(10));
    assert_eq!(c.io.engine.body_timeout, Duration::from_secs(30));
    assert_eq!(c.max_connections, None);
    assert!(c.io.cleanup_empty_child_namespaces);
}

#[test]
fn connection_limits_load_and_refuse_zero() {
    let f = tmp_file("limits.toml", "max_connections = 7\nheader_timeout = 500\n");
    let c = load_ok(&["--config", f.to_str().unwrap(), "--body-timeout", "800"]);
    assert_eq!(c.max_connections, Some(7));
    assert_eq!(c.header_timeout, Duration::from_millis(500));
    assert_eq!(c.io.engine.body_timeout, Duration::from_millis(800));
    for opt in ["header_timeout", "body_timeout", "max_connections"] {
        let flag = format!("--{}", opt.replace('_', "-"));
        let e = errors(&[&flag, "0"]);
        assert!(e.iter().any(|m| m.contains(opt)), "{opt}: {e:?}");
    }
}

#[test]
fn flags_win_over_file() {
    let f = tmp_file(
        "c.toml",
        "port = 4000\nping_interval = 1000\ntransports = [\"websocket\"]\n",
    );
    let c = load_ok(&["--config", f.to_str().unwrap(), "--port", "5000"]);
    assert_eq!(c.port, 5000);
    assert_eq!(c.io.engine.ping_interval, Duration::from_secs(1));
    assert_eq!(c.io.engine.transports, vec![TransportKind::Websocket]);
}

#[test]
fn bad_config_is_a_clear_error() {
    let e = errors(&["--transports", "carrier-pigeon"]);
    assert!(e[0].contains("unknown transport"), "{e:?}");
    let e = errors(&["--ping-interval", "0"]);
    assert!(e[0].contains("ping_interval"), "{e:?}");
    let f = tmp_file("bad.toml", "prot = 1\n");
    let e = errors(&["--config", f.to_str().unwrap()]);
    assert!(e[0].contains("unknown field `prot`"), "{e:?}");
    assert!(try_load(&["--config", "/nonexistent/skein.toml"]).is_err());
    let e = errors(&["--grpc-port", "50051"]);
    assert!(e[0].contains("grpc_tokens"), "{e:?}");
    let c = load_ok(&["--grpc-port", "0", "--grpc-tokens", "a, b"]);
    let g = c.grpc.unwrap();
    assert_eq!(
        (g.port, g.tokens, g.tls),
        (0, vec!["a".to_owned(), "b".to_owned()], None)
    );
    let e = errors(&[
        "--grpc-port",
        "0",
        "--grpc-tokens",
        "a",
        "--grpc-tls-cert",
        "/x",
    ]);
    assert!(e[0].contains("go together"), "{e:?}");
    let e = errors(&["--demo", "--demo-logic", "api"]);
    assert!(e[0].contains("demo_logic"), "{e:?}");
    let e = errors(&["--demo-logic", "remote"]);
    assert!(e[0].contains("demo_logic"), "{e:?}");
    let c = load_ok(&[
        "--demo",
        "--demo-logic",
        "api",
        "--grpc-port",
        "0",
        "--grpc-tokens",
        "t",
    ]);
    assert!(c.demo && c.demo_api);
}

#[test]
fn every_error_is_reported_with_its_option() {
    let f = tmp_file(
        "many.toml",
        "prot = 1\nping_timeout = \"soon\"\nlog_format = \"xml\"\ntransports = [\"pigeon\"]\n",
    );
    let e = errors(&[
        "--config",
        f.to_str().unwrap(),
        "--adapter",
        "redis",
        "--redis-url",
        "not a url",
        "--port",
        "seventy",
        "--grpc-port",
        "50051",
    ]);
    let all = e.join("\n");
    for needle in [
        "unknown field `prot`",
        "ping_timeout: invalid value \"soon\"",
        "log_format must be text or json, got \"xml\"",
        "unknown transport \"pigeon\"",
        "redis_url: invalid redis URL",
        "port: invalid value 'seventy' (from --port)",
        "grpc_port needs at least one token",
    ] {
        assert!(all.contains(needle), "{needle:?} not in:\n{all}");
    }
    assert_eq!(e.len(), 7, "{all}");
}

#[test]
fn tokens_come_from_a_file_one_per_line() {
    let f = tmp_file("tokens", "# rotated 2026-01\nfirst\n\n  second  \n");
    let c = load_ok(&[
        "--grpc-port",
        "0",
        "--grpc-tokens-file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(c.grpc.unwrap().tokens, vec!["first", "second"]);
    let e = errors(&["--grpc-tokens-file", "/nonexistent/tokens"]);
    assert!(
        e[0].starts_with("grpc_tokens_file: cannot read /nonexistent/tokens"),
        "{e:?}"
    );
    let empty = tmp_file("empty-tokens", "# none yet\n");
    let e = errors(&[
        "--grpc-port",
        "0",
        "--grpc-tokens-file",
        empty.to_str().unwrap(),
    ]);
    assert!(e[0].contains("needs at least one token"), "{e:?}");
}

#[test]
fn the_effective_configuration_hides_secrets() {
    let f = tmp_file("secret-tokens", "tok-from-file\n");
    let out = try_load(&[
        "--grpc-port",
        "50051",
        "--grpc-tokens",
        "tok-from-flag",
        "--grpc-tokens-file",
        f.to_str().unwrap(),
        "--adapter",
        "redis-streams",
        "--redis-url",
        "redis://:hunter2@redis:6379",
        "--path",
        "/io",
    ])
    .unwrap()
    .effective;
    assert!(
        !out.contains("tok-from") && !out.contains("hunter2"),
        "{out}"
    );
    assert!(
        out.contains("grpc_tokens = [\"<redacted>\", \"<redacted>\"]"),
        "{out}"
    );
    assert!(
        out.contains("redis_url = \"redis://:<redacted>@redis:6379\""),
        "{out}"
    );
    assert!(out.contains("path = \"/io/\""), "{out}");
    // Derived: recovery is on with redis-streams.
    assert!(out.contains("recovery = true  # default"), "{out}");
    assert!(out.contains("grpc_port = 50051  # --grpc-port"), "{out}");
    // It is TOML: the check's output can be read back.
    let t: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(t["drain_period"].as_integer(), Some(10_000));
    let out = try_load(&["--redis-url", "redis://r:6379"])
        .unwrap()
        .effective;
    assert!(
        out.contains("# redis_url: given (--redis-url) but not used"),
        "{out}"
    );
}
