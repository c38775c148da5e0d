//! Resuming a session on CONNECT (connection state recovery).
//!
//! A CONNECT whose auth carries `pid` (and `offset` once the client received an event)
//! asks for its previous session. The session is *taken* from the store, so of two
//! reconnects with one `pid` only one resumes it (socket.io#4880); the other, like any
//! failure here, gets a new session. The adapter then replays what was missed, in order,
//! before anything new (see [`crate::adapter::Adapter::replay`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::client::ClientData;
use super::handshake::ConnInfo;
use super::namespace::Namespace;
use super::packet::encode_event;
use super::socket::Socket;
use crate::adapter::{LoggedPacket, NotRecovered, Room};
use crate::engineio::{Session, Sid};

type Sess = Arc<Session<ClientData>>;

/// The longest offset a client may present.
const MAX_OFFSET: usize = 1024;

/// Whether a CONNECT asks to resume a session.
pub(crate) fn wants_recovery(ns: &Namespace, auth: &Value) -> bool {
    ns.adapter().local().recovery().is_some() && auth.get("pid").is_some_and(Value::is_string)
}

/// Resumes the session the CONNECT names. `Ok` means the CONNECT was answered (the
/// socket resumed, or a middleware refused it); `Err` means: make a new session.
pub(crate) async fn resume(
    ns: &Arc<Namespace>,
    s: &Sess,
    conn: Arc<ConnInfo>,
    auth: Value,
) -> Result<(), NotRecovered> {
    let local = ns.adapter().local();
    let (Some(cfg), Some(store)) = (local.recovery().cloned(), local.session_store().cloned())
    else {
        return Err(NotRecovered::Unsupported);
    };
    let pid = auth["pid"].as_str().unwrap_or_default().to_owned();
    // Pids are ours (20 characters); anything much longer is not worth a store lookup.
    if pid.is_empty() || pid.len() > 128 {
        return Err(NotRecovered::UnknownSession);
    }
    // No offset: the client received nothing. Anything but a string is not an offset.
    // Offsets are short (a stream id; on the mesh, one number per sender node), and the
    // bound keeps a forged one from costing more than a parse.
    let offset = match auth.get("offset") {
        None | Some(Value::Null) => None,
        Some(Value::String(o)) if o.len() <= MAX_OFFSET => Some(o.clone()),
        Some(_) => return Err(NotRecovered::BadOffset),
    };
    let rec = store
        .take(&pid)
        .await?
        .ok_or(NotRecovered::UnknownSession)?;
    if rec.nsp.as_deref().is_some_and(|n| n != ns.name()) {
        return Err(NotRecovered::WrongNamespace);
    }
    let sid: Sid = rec.sid.parse().map_err(|_| NotRecovered::UnknownSession)?;
    // A session whose socket still answers is in use: a second client with the same pid
    // (or one racing the restore of the first) does not get it. A socket that only looks
    // connected (its network went away unnoticed) fails the probe and is closed.
    if ns.adapter().session_alive(&rec).await {
        // Put back for the socket that still has it; nobody waits for this write.
        let _ = store.claim(&rec);
        return Err(NotRecovered::InUse);
    }
    // A local socket closed by the probe may still be leaving.
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while local.get(sid).is_some() {
        if tokio::time::Instant::now() >= until {
            let _ = store.claim(&rec);
            return Err(NotRecovered::InUse);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let socket = Socket::new(ns.clone(), s.clone(), conn, auth, Some((sid, &rec)));
    if !cfg.skip_middlewares {
        let middlewares = ns.handlers.middlewares.read().clone();
        if !super::client::run_middlewares(s, &socket, middlewares).await {
            return Ok(());
        }
    }
    let attached = Arc::new(AtomicBool::new(false));
    let rooms: Vec<Room> = rec
        .rooms
        .iter()
        .filter(|r| **r != rec.sid)
        .map(|r| Room::from(r.as_str()))
        .collect();
    let (sess, sock, done) = (s.clone(), socket.clone(), attached.clone());
    // The new socket owns the session from now on; the client hears of it (the CONNECT
    // reply, the missed packets) once that is stored. The claim is written after the
    // replay (a store may run `attach` under its own lock), so the gate waits for it.
    let (claimed_tx, claimed_rx) = tokio::sync::oneshot::channel::<crate::adapter::Written>();
    let attach = Box::new(move |missed: Vec<LoggedPacket>| {
        if sess.is_closed() {
            return;
        }
        sock.ns().adapter().local().add_rooms(&sock, &rooms);
        sock.hold_until(Some(Box::pin(async move {
            if let Ok(Some(write)) = claimed_rx.await {
                write.await;
            }
        })));
        super::client::register(&sess, &sock);
        for p in &missed {
            let enc = encode_event(sock.nsp(), &p.packet.event, &p.packet.data, None);
            sock.send_encoded(&enc, false);
        }
        done.store(true, Ordering::Release);
        tracing::debug!(sid = %sock.id(), nsp = sock.nsp(), missed = missed.len(), "session recovered");
    });
    // On failure the session is consumed: a forged or stale pid never reaches another
    // client's state, and the client simply starts over.
    ns.adapter().replay(&rec, offset.as_deref(), attach).await?;
    if !attached.load(Ordering::Acquire) {
        // The client left while its session was being read: keep it for the next try.
        let _ = store.claim(&rec);
        return Err(NotRecovered::Gone);
    }
    if let Some(rec) = local.session_record(&socket, true) {
        let _ = claimed_tx.send(store.claim(&rec));
    }
    super::client::run_connect_handler(socket);
    Ok(())
}
