//! Engine.IO options over real HTTP on 127.0.0.1: CORS, the `io` cookie, the
//! `allow_request` hook and polling compression.

mod common;

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use skein::engineio::{CookieConfig, CorsConfig, CorsOrigin};
use skein::{Data, SocketIo, SocketIoConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(mut config: SocketIoConfig) -> std::net::SocketAddr {
    config.engine.cors = Some(CorsConfig {
        origin: CorsOrigin::List(vec!["https://app.example".into()]),
        credentials: true,
    });
    config.engine.cookie = Some(CookieConfig::default());
    config.engine.allow_request = Some(Arc::new(|parts| {
        let ok = parts.headers.get("x-deny").is_none();
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err("denied by policy".into())
            }
        })
    }));
    let io = SocketIo::new(config);
    io.ns("/", |s| {
        // A large first message, so the polling answer is big enough to compress.
        let _ = s.emit("big", Data::one(serde_json::json!("x".repeat(5000))));
    });
    common::serve(&io).await
}

/// One HTTP/1.1 request; returns the head (lower-cased) and the raw body.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_lowercase();
    (head, out[split + 4..].to_vec())
}

/// The body of a response that may be chunked.
fn dechunk(head: &str, body: Vec<u8>) -> Vec<u8> {
    if !head.contains("transfer-encoding: chunked") {
        return body;
    }
    let mut out = Vec::new();
    let mut rest = &body[..];
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
            .unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&rest[line_end + 2..line_end + 2 + n]);
        rest = &rest[line_end + 2 + n + 2..];
    }
}

#[tokio::test]
async fn cors_cookie_allow_request_and_compression() {
    let addr = start(SocketIoConfig::default()).await;
    let hs = "/socket.io/?EIO=4&transport=polling";

    // Handshake from an allowed origin: CORS headers and the sticky-session cookie.
    let (head, body) = request(addr, "GET", hs, "Origin: https://app.example\r\n", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-credentials: true"),
        "{head}"
    );
    let body = String::from_utf8(body).unwrap();
    let sid = serde_json::from_str::<serde_json::Value>(&body[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        head.contains(&format!(
            "set-cookie: io={}; path=/; httponly; samesite=lax",
            sid.to_lowercase()
        )),
        "{head}"
    );

    // Another origin gets no CORS headers; a preflight is answered.
    let (head, _) = request(addr, "GET", hs, "Origin: https://evil.example\r\n", "").await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let (head, _) = request(
        addr,
        "OPTIONS",
        hs,
        "Origin: https://app.example\r\nAccess-Control-Request-Headers: x-a\r\n",
        "",
    )
    .await;
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(head.contains("access-control-allow-headers: x-a"), "{head}");

    // allow_request refuses with its message and code 4.
    let (head, body) = request(addr, "GET", hs, "X-Deny: 1\r\n", "").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"code": 4, "message": "denied by policy"})
    );

    // Join `/`: the 5 kB event comes back gzip-compressed to a client that accepts it.
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let (head, body) = request(addr, "POST", &path, "Content-Type: text/plain\r\n", "40").await;
    assert!(head.starts_with("http/1.1 200") && body == b"ok", "{head}");
    let (head, body) = request(addr, "GET", &path, "Accept-Encoding: gzip\r\n", "").await;
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let body = dechunk(&head, body);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.starts_with("40{\"sid\":"),
        "{}",
        &text[..40.min(text.len())]
    );
    assert!(text.contains(&format!("42[\"big\",\"{}\"]", "x".repeat(5000))));
    assert!(body.len() < 1000, "compressed to {} bytes", body.len());
}
