//! One peer's end of the mesh bus: the task that streams what is queued for the peer
//! (see `transport` for the queues), and what the transport and those tasks share.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use crate::mesh::Mesh;
use crate::network::{Auth, MAX_MESSAGE};
use crate::proto::bus_client::BusClient;
use crate::proto::BusFrame;
use crate::server::INCARNATION;
use crate::state::NodeState;
use crate::transport::{MAX_BACKOFF, MIN_BACKOFF};

/// A frame queued for a peer.
pub(crate) struct Item {
    /// The peer's incarnation when the frame was queued (0: unknown).
    pub incarnation: u64,
    pub kind: u32,
    pub payload: Bytes,
}

/// What the transport and its links share.
pub(crate) struct Shared {
    pub mesh: Arc<Mesh>,
    pub node: Arc<str>,
    pub auth: Auth,
    pub timeout: Duration,
    pub undelivered: AtomicU64,
    /// Peers whose stream could not be opened the last time it was tried (a killed
    /// node refuses at once): not waited for by cluster requests.
    pub unreachable: Mutex<HashSet<String>>,
}

/// Drops what is queued for a peer that is not a live member, counting it.
fn drain(shared: &Shared, rx: &mut mpsc::Receiver<Item>) {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    shared.undelivered.fetch_add(n, Ordering::Relaxed);
}

/// One peer's stream: opened when there is something to send, reopened with a backoff
/// when it breaks, ended when the transport is gone.
pub(crate) async fn run_link(shared: Weak<Shared>, peer: String, mut rx: mpsc::Receiver<Item>) {
    let mut backoff = MIN_BACKOFF;
    let mut held: Option<Item> = None;
    loop {
        let first = match held.take() {
            Some(i) => i,
            None => match rx.recv().await {
                Some(i) => i,
                None => return,
            },
        };
        let Some(s) = shared.upgrade() else { return };
        let addr = match s.mesh.view().member(&peer) {
            Some(m) if m.state != NodeState::Gone => m.addresses.mesh.clone(),
            _ => {
                s.undelivered.fetch_add(1, Ordering::Relaxed);
                drain(&s, &mut rx);
                continue;
            }
        };
        let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e
                .connect_timeout(s.timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(2))
                .keep_alive_timeout(s.timeout)
                .keep_alive_while_idle(true),
            Err(e) => {
                tracing::warn!(peer, addr, "mesh bus: bad address: {e}");
                s.undelivered.fetch_add(1, Ordering::Relaxed);
                drain(&s, &mut rx);
                continue;
            }
        };
        let mut client = BusClient::with_interceptor(endpoint.connect_lazy(), s.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (ftx, frx) = mpsc::channel::<BusFrame>(64);
        let timeout = s.timeout;
        drop(s);
        let opened = tokio::time::timeout(
            timeout,
            client.stream(tokio_stream::wrappers::ReceiverStream::new(frx)),
        )
        .await;
        let resp = match opened {
            Ok(Ok(resp)) => resp,
            other => {
                let why = match other {
                    Ok(Err(status)) => status.message().to_owned(),
                    _ => "no answer in time".into(),
                };
                tracing::debug!(peer, addr, "mesh bus: cannot open stream: {why}");
                if let Some(s) = shared.upgrade() {
                    s.unreachable.lock().insert(peer.clone());
                }
                held = Some(first);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        if let Some(s) = shared.upgrade() {
            s.unreachable.lock().remove(&peer);
        }
        let incarnation: Option<u64> = resp
            .metadata()
            .get(INCARNATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut replies = resp.into_inner();
        tracing::debug!(peer, addr, "mesh bus: stream open");
        let mut next = Some(first);
        loop {
            let item = match next.take() {
                Some(i) => i,
                None => tokio::select! {
                    i = rx.recv() => match i {
                        Some(i) => i,
                        None => return,
                    },
                    _ = replies.message() => break,
                },
            };
            let stale =
                item.incarnation != 0 && incarnation.is_some_and(|inc| inc != item.incarnation);
            if stale {
                if let Some(s) = shared.upgrade() {
                    s.undelivered.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let frame = BusFrame {
                payload: item.payload,
                kind: item.kind,
            };
            tokio::select! {
                sent = ftx.send(frame) => if sent.is_err() { break },
                _ = replies.message() => break,
            }
        }
        tracing::debug!(peer, addr, "mesh bus: stream closed, reopening");
    }
}
