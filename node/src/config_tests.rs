//! Configuration loading: defaults, precedence and clear errors.

use super::*;

fn load(args: &[&str]) -> Result<Config> {
    let mut v = vec!["skein"];
    v.extend_from_slice(args);
    Config::load(Flags::try_parse_from(v)?)
}

#[test]
fn defaults_match_reference() {
    let c = load(&[]).unwrap();
    assert_eq!(c.port, 3000);
    assert_eq!(c.io.engine.path, "/socket.io/");
    assert_eq!(c.io.engine.ping_interval, Duration::from_secs(25));
    assert_eq!(c.io.engine.ping_timeout, Duration::from_secs(20));
    assert_eq!(c.io.engine.max_payload, 1_000_000);
    assert_eq!(c.io.connect_timeout, Duration::from_secs(45));
    assert!(c.io.engine.cors.is_none());
    assert_eq!(c.header_timeout, Duration::from_secs(10));
    assert_eq!(c.io.engine.body_timeout, Duration::from_secs(30));
    assert_eq!(c.max_connections, None);
}

#[test]
fn flags_win_over_file() {
    let dir = std::env::temp_dir().join(format!("skein-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.toml");
    std::fs::write(
        &f,
        "port = 4000\nping_interval = 1000\ntransports = [\"websocket\"]\nmax_connections = 7\nheader_timeout = 500\n",
    )
    .unwrap();
    let c = load(&["--config", f.to_str().unwrap(), "--port", "5000"]).unwrap();
    assert_eq!(c.port, 5000);
    assert_eq!(c.io.engine.ping_interval, Duration::from_secs(1));
    assert_eq!(c.io.engine.transports, vec![TransportKind::Websocket]);
    assert_eq!(c.max_connections, Some(7));
    assert_eq!(c.header_timeout, Duration::from_millis(500));
}

#[test]
fn bad_config_is_a_clear_error() {
    let e = load(&["--transports", "carrier-pigeon"]).unwrap_err();
    assert!(e.to_string().contains("unknown transport"), "{e}");
    let e = load(&["--ping-interval", "0"]).unwrap_err();
    assert!(e.to_string().contains("ping_interval"), "{e}");
    for opt in ["header_timeout", "body_timeout", "max_connections"] {
        let flag = format!("--{}", opt.replace('_', "-"));
        let e = load(&[&flag, "0"]).unwrap_err();
        assert!(e.to_string().contains(opt), "{e}");
    }
    let dir = std::env::temp_dir().join(format!("skein-cfg-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.toml");
    std::fs::write(&f, "prot = 1\n").unwrap();
    let e = load(&["--config", f.to_str().unwrap()]).unwrap_err();
    assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
    assert!(load(&["--config", "/nonexistent/skein.toml"]).is_err());
    let e = load(&["--grpc-port", "50051"]).unwrap_err();
    assert!(e.to_string().contains("grpc_tokens"), "{e}");
    let c = load(&["--grpc-port", "0", "--grpc-tokens", "a, b"]).unwrap();
    let g = c.grpc.unwrap();
    assert_eq!(
        (g.port, g.tokens, g.tls),
        (0, vec!["a".to_owned(), "b".to_owned()], None)
    );
    let e = load(&[
        "--grpc-port",
        "0",
        "--grpc-tokens",
        "a",
        "--grpc-tls-cert",
        "/x",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("go together"), "{e}");
    let e = load(&["--demo", "--demo-logic", "api"]).unwrap_err();
    assert!(e.to_string().contains("demo_logic"), "{e}");
    let e = load(&["--demo-logic", "remote"]).unwrap_err();
    assert!(e.to_string().contains("demo_logic"), "{e}");
    let c = load(&[
        "--demo",
        "--demo-logic",
        "api",
        "--grpc-port",
        "0",
        "--grpc-tokens",
        "t",
    ])
    .unwrap();
    assert!(c.demo && c.demo_api);
}
