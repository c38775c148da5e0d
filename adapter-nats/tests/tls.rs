//! TLS towards NATS, against a real `nats-server --tls` with certificates made by the
//! `openssl` command for this test: the node trusts a CA given with `nats_tls_ca`, and
//! refuses a server its CA did not sign.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use skein_adapter_nats::{connection, NatsAdapterConfig, NatsAdapterError, NatsTls};

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name} CA"),
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{name}-ca.pem"),
            "-CAkey",
            &format!("{name}-ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn tls_with_the_given_ca_connects_and_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), "good");
    certificates(dir.path(), "other");
    let port = free_port();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let _server = Server(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--tls"])
            .args(["--tlscert", &p("good.pem"), "--tlskey", &p("good.key")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server"),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = |ca: &str| NatsAdapterConfig {
        servers: vec![format!("tls://127.0.0.1:{port}")],
        prefix: "tls".into(),
        tls: NatsTls {
            ca: Some(dir.path().join(ca)),
            ..Default::default()
        },
        ..Default::default()
    };
    let conn = connection::connect(&cfg("good-ca.pem"))
        .await
        .expect("TLS with the right CA");
    assert!(conn.is_up());
    conn.client.publish("tls.x", "y".into()).await.unwrap();
    conn.client.flush().await.unwrap();
    match connection::connect(&cfg("other-ca.pem")).await {
        Err(NatsAdapterError::Unreachable { .. }) => {}
        other => panic!("a server the CA did not sign must be refused: {other:?}"),
    }
}
