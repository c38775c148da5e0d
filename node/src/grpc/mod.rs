//! The gRPC API of a node (`skein.v1`, see `proto/skein/v1/skein.proto`): served on its
//! own port beside gRPC health and reflection. Calls to `skein.v1.Skein` need a bearer
//! token; health (for Kubernetes probes) and reflection (the schema only) do not.

pub(crate) mod args;
mod service;
#[cfg(test)]
mod subscribe_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use skein_proto::v1::skein_server::SkeinServer;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

pub use crate::events::{Hub, ACK_TIMEOUT};
pub use service::Api;

/// Checks `authorization: Bearer <token>` against the configured tokens.
#[derive(Clone)]
pub struct Auth {
    tokens: Arc<Vec<String>>,
}

impl Auth {
    pub fn new(tokens: Vec<String>) -> Self {
        Auth {
            tokens: Arc::new(tokens),
        }
    }

    #[allow(clippy::result_large_err)]
    fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t)
                if self
                    .tokens
                    .iter()
                    .any(|k| constant_time_eq(k.as_bytes(), t.as_bytes())) =>
            {
                Ok(req)
            }
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata",
            )),
        }
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(req)
    }
}

/// The authenticated API service.
pub fn api_service(api: Api, auth: Auth) -> InterceptedService<SkeinServer<Api>, Auth> {
    SkeinServer::with_interceptor(api, auth)
}

/// Serves the API, health and reflection on `addr` (over TLS when a PEM certificate and
/// key are given) until `shutdown` resolves. Health turns NOT_SERVING when `draining`
/// resolves: the API keeps working for app servers while the node drains, but probes
/// see it is on its way out.
pub async fn serve(
    addr: SocketAddr,
    api: Api,
    tokens: Vec<String>,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    draining: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {addr}"))?;
    let local = listener.local_addr()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<SkeinServer<Api>>().await;
    {
        let reporter = reporter.clone();
        tokio::spawn(async move {
            draining.await;
            reporter.set_not_serving::<SkeinServer<Api>>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        });
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(skein_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("gRPC reflection")?;
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .context("invalid gRPC TLS certificate or key")?;
    }
    let router = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(api_service(api, Auth::new(tokens)));
    // No Nagle: a streamed message (Subscribe, EmitWithAck) is a small write after the
    // headers, which would otherwise wait for the peer's delayed ACK (~40 ms).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            if let Ok(c) = &conn {
                let _ = c.set_nodelay(true);
            }
            conn
        },
    );
    tokio::spawn(async move {
        let stop = async move {
            shutdown.await;
            reporter.set_not_serving::<SkeinServer<Api>>().await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok(local)
}
