//! Connection state recovery on the mesh (`--adapter mesh --recovery true`): the packet
//! log and the sessions, replicated to every live peer over the bus, never through Raft
//! (consensus stays off the per-message and per-socket path).
//!
//! - **The log.** A logged message (a broadcast, socket management) is numbered by its
//!   sender and streamed to every live node, whatever the room index says. Each node
//!   delivers the messages in the order they reach it, from one task, and keeps the
//!   broadcasts for the recovery window in a [`VectorLog`], whose offsets are vectors of
//!   per-sender numbers: an offset a client got on one node is understood by every
//!   other (see `vlog`). So when a node dies, its clients resume on any other node with
//!   what they missed, the broadcasts sent after the death included: every node logged
//!   them.
//! - **The sessions.** Every session write is applied here and streamed to every live
//!   peer; the socket's packets (the CONNECT reply, a join's ack) wait until one peer
//!   acknowledged it, so a session a client was told about survives its node. A take
//!   (a reconnect) is decided by one node, so that of two reconnects with one pid only
//!   one wins: the node that wrote the session if it answers, else the first live node
//!   in name order; it tells the others.
//!
//! What a failure loses: nothing while one node that received the messages lives. A
//! node that starts holds no history: a session whose offset predates it and names a
//! sender it never heard from is refused there ([`NotRecovered::LogGap`]), and the
//! client gets a new session (another node may still resume it on the next reconnect).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use skein::adapter::cluster::{codec, ClusterLog, Envelope, Inbound, Message, Replays};
use skein::adapter::recovery::now_ms;
use skein::adapter::{
    AdapterError, Attach, NotRecovered, RecoveryConfig, SessionRecord, SessionStore, SessionTable,
    Written,
};
use tokio::sync::{mpsc, oneshot};

use crate::log_task::{self, Channels, Ctl, Logged};
use crate::transport::MeshTransport;
use crate::vlog::{Offset, Sender, Snapshot, VectorLog};

/// How long a session write waits for a peer's acknowledgement, and a take for the
/// deciding node's answer.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a replay waits for messages its offset counts that are still in flight here.
pub const CATCH_UP: Duration = Duration::from_secs(1);

/// A frame of the recovery layer on the bus.
#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    /// A logged message: its sender (incarnation), its number, the cluster envelope.
    Entry {
        sender: Sender,
        seq: u64,
        /// As bytes (a msgpack `bin`), not a list of numbers.
        env: Bytes,
    },
    /// A session write (`claim`: whatever wrote it last), acknowledged to `from`.
    Save {
        req: u64,
        claim: bool,
        rec: SessionRecord,
        from: String,
    },
    Discard(SessionRecord),
    Ack(u64),
    /// Decide a take of `pid`, and answer `from` with `Taken`.
    Take {
        req: u64,
        pid: String,
        from: String,
    },
    Taken {
        req: u64,
        rec: Option<SessionRecord>,
    },
    /// Another node took `pid`.
    Gone(String),
    /// A node that starts asks for the log and the sessions.
    SyncAsk {
        req: u64,
        from: String,
    },
    Synced {
        req: u64,
        log: Box<Snapshot>,
        sessions: Vec<SessionRecord>,
    },
}

/// An answer a request waits for.
enum Answer {
    Ack,
    Taken(Option<Box<SessionRecord>>),
    Synced(Box<Snapshot>),
}

struct Inner {
    transport: Arc<MeshTransport>,
    node: String,
    me: Sender,
    /// The next number of this node's logged messages; the lock keeps them in order on
    /// the way to the log task and to the peers.
    next_seq: Mutex<u64>,
    to_log: mpsc::UnboundedSender<Logged>,
    ctl: mpsc::UnboundedSender<Ctl>,
    position: Arc<Mutex<Offset>>,
    sessions: Mutex<SessionTable>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_req: AtomicU64,
    replays: Replays,
    lost: AtomicU64,
    /// Set once this node copied a peer's log and sessions (or found none to copy): a
    /// take waits for it, since the session may be in the copy.
    synced: tokio::sync::watch::Sender<bool>,
}

/// The mesh's [`ClusterLog`]. See the module documentation.
#[derive(Clone)]
pub struct MeshLog(Arc<Inner>);

impl MeshLog {
    /// Starts the log of `transport`'s node; what it delivers goes to `inbound`.
    pub fn start(transport: Arc<MeshTransport>, inbound: Inbound, cfg: RecoveryConfig) -> Self {
        let (to_log, rx) = mpsc::unbounded_channel();
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let (replays, replay_rx) = Replays::channel();
        let started = now_ms();
        let log = VectorLog::new(cfg.clone(), started);
        let inner = Arc::new(Inner {
            node: transport.mesh().node_id().to_owned(),
            me: transport.mesh().incarnation(),
            transport: transport.clone(),
            next_seq: Mutex::new(1),
            to_log,
            ctl,
            position: Arc::new(Mutex::new(log.position().clone())),
            // Connected sessions are rewritten every keepalive: a dead node's expire.
            sessions: Mutex::new(SessionTable::new(cfg.max_disconnection_duration, true)),
            waiting: Mutex::default(),
            next_req: AtomicU64::new(1),
            replays,
            lost: AtomicU64::new(0),
            synced: tokio::sync::watch::Sender::new(false),
        });
        let weak = Arc::downgrade(&inner);
        transport.set_recovery_sink(Arc::new(move |payload: Bytes| {
            if let Some(inner) = weak.upgrade() {
                inner.on_frame(&payload);
            }
        }));
        let channels = Channels {
            logged: rx,
            replays: replay_rx,
            ctl: ctl_rx,
        };
        let view = Arc::downgrade(&transport);
        let live = move || {
            view.upgrade().map_or_else(Vec::new, |t| {
                t.mesh()
                    .view()
                    .live_members()
                    .map(|m| m.incarnation)
                    .collect()
            })
        };
        let position = inner.position.clone();
        tokio::spawn(log_task::run(log, channels, inbound, position, live));
        tokio::spawn(sync(Arc::downgrade(&inner)));
        MeshLog(inner)
    }

    /// Sessions held here (this node's and its peers').
    pub fn sessions_held(&self) -> usize {
        self.0.sessions.lock().count()
    }
}

/// Named fields: a session record skips the fields it lacks, which a positional
/// (array) encoding could not decode.
fn encode(f: &Frame) -> Bytes {
    rmp_serde::to_vec_named(f).unwrap_or_default().into()
}

impl Inner {
    fn on_frame(self: &Arc<Self>, payload: &[u8]) {
        let frame: Frame = match rmp_serde::from_slice(payload) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "mesh recovery: undecodable frame");
                return;
            }
        };
        match frame {
            Frame::Entry { sender, seq, env } => match codec::decode(&env) {
                Ok(env) => {
                    let _ = self.to_log.send(Logged { sender, seq, env });
                }
                Err(e) => tracing::warn!(error = %e, "mesh recovery: undecodable entry"),
            },
            Frame::Save {
                req,
                claim,
                rec,
                from,
            } => {
                self.apply(&rec, claim);
                self.transport.send_frame(&from, encode(&Frame::Ack(req)));
            }
            Frame::Discard(rec) => self.sessions.lock().discard(&rec),
            Frame::Ack(req) => self.answer(req, Answer::Ack),
            Frame::Taken { req, rec } => self.answer(req, Answer::Taken(rec.map(Box::new))),
            Frame::Gone(pid) => self.sessions.lock().taken_elsewhere(&pid),
            Frame::SyncAsk { req, from } => {
                let me = self.clone();
                tokio::spawn(async move {
                    let (tx, rx) = oneshot::channel();
                    if me.ctl.send(Ctl::Snapshot(tx)).is_err() {
                        return;
                    }
                    let Ok(log) = rx.await else { return };
                    let sessions = me.sessions.lock().records();
                    let log = Box::new(log);
                    let reply = encode(&Frame::Synced { req, log, sessions });
                    me.transport.send_frame(&from, reply);
                });
            }
            Frame::Synced { req, log, sessions } => {
                {
                    let mut s = self.sessions.lock();
                    for rec in &sessions {
                        s.adopt(rec);
                    }
                }
                self.answer(req, Answer::Synced(log));
            }
            Frame::Take { req, pid, from } => {
                let rec = decide(self, &pid);
                self.transport
                    .send_frame(&from, encode(&Frame::Taken { req, rec }));
            }
        }
    }

    fn answer(&self, req: u64, a: Answer) {
        if let Some(tx) = self.waiting.lock().remove(&req) {
            let _ = tx.send(a);
        }
    }

    /// Registers a request; the answer comes through [`Inner::answer`].
    fn request(&self) -> (u64, oneshot::Receiver<Answer>) {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(req, tx);
        (req, rx)
    }

    fn forget(&self, req: u64) {
        self.waiting.lock().remove(&req);
    }

    /// Applies a session write to this node's table; whether it was written.
    fn apply(&self, rec: &SessionRecord, claim: bool) -> bool {
        let mut s = self.sessions.lock();
        if claim {
            s.claim(rec);
            true
        } else {
            s.save(rec)
        }
    }

    /// Applies a session write here and streams it to every live peer; the returned
    /// write resolves once one of them acknowledged it (or at the timeout).
    fn write(self: &Arc<Self>, rec: &SessionRecord, claim: bool) -> Written {
        let rec = SessionRecord {
            node: rec.node.clone().or_else(|| Some(self.node.clone())),
            ..rec.clone()
        };
        if !self.apply(&rec, claim) {
            return None;
        }
        let (req, rx) = self.request();
        let from = self.node.clone();
        let save = Frame::Save {
            req,
            claim,
            rec,
            from,
        };
        if self.transport.publish_frame(&encode(&save)) == 0 {
            // No peer: nothing to wait for.
            self.forget(req);
            return None;
        }
        let me = self.clone();
        Some(Box::pin(async move {
            if tokio::time::timeout(ACK_TIMEOUT, rx).await.is_err() {
                me.forget(req);
                tracing::warn!("mesh recovery: no peer acknowledged a session write in time");
            }
        }))
    }
}

#[async_trait]
impl SessionStore for MeshLog {
    fn save(&self, rec: &SessionRecord) -> Written {
        self.0.write(rec, false)
    }

    fn claim(&self, rec: &SessionRecord) -> Written {
        self.0.write(rec, true)
    }

    fn discard(&self, rec: &SessionRecord) {
        self.0.sessions.lock().discard(rec);
        self.0
            .transport
            .publish_frame(&encode(&Frame::Discard(rec.clone())));
    }

    async fn take(&self, pid: &str) -> Result<Option<SessionRecord>, AdapterError> {
        take(&self.0, pid).await
    }
}

/// Takes `pid`: decided by the node that wrote it if it answers, else by the first live
/// node in name order (this one, possibly), which tells the others.
async fn take(inner: &Arc<Inner>, pid: &str) -> Result<Option<SessionRecord>, AdapterError> {
    let mut synced = inner.synced.subscribe();
    let _ = tokio::time::timeout(SYNC_WITHIN, synced.wait_for(|s| *s)).await;
    let writer = inner.sessions.lock().get(pid).and_then(|r| r.node.clone());
    let Some(writer) = writer else {
        return Ok(None);
    };
    let mut deciders = Vec::new();
    let peers = inner.transport.live_peers();
    if writer == inner.node || peers.iter().any(|(p, _)| *p == writer) {
        deciders.push(writer.clone());
    }
    let mut names: Vec<String> = peers.into_iter().map(|(p, _)| p).collect();
    names.push(inner.node.clone());
    names.sort();
    if let Some(first) = names.into_iter().find(|n| *n != writer) {
        deciders.push(first);
    }
    for decider in deciders {
        if decider == inner.node {
            return Ok(decide(inner, pid));
        }
        let (req, rx) = inner.request();
        let ask = Frame::Take {
            req,
            pid: pid.to_owned(),
            from: inner.node.clone(),
        };
        inner.transport.send_frame(&decider, encode(&ask));
        match tokio::time::timeout(ACK_TIMEOUT / 2, rx).await {
            Ok(Ok(Answer::Taken(rec))) => return Ok(rec.map(|r| *r)),
            _ => inner.forget(req),
        }
    }
    Err(AdapterError::Unavailable(
        "no node could decide the session's take".into(),
    ))
}

/// Takes `pid` here and tells every peer.
fn decide(inner: &Arc<Inner>, pid: &str) -> Option<SessionRecord> {
    let rec = inner.sessions.lock().take(pid);
    inner
        .transport
        .publish_frame(&encode(&Frame::Gone(pid.to_owned())));
    rec
}

#[async_trait]
impl ClusterLog for MeshLog {
    fn append(&self, nsp: &str, msg: &Message) {
        let inner = &self.0;
        let env = Envelope {
            from: inner.node.as_str().into(),
            nsp: nsp.into(),
            msg: msg.clone(),
        };
        let mut next = inner.next_seq.lock();
        let seq = *next;
        *next += 1;
        let frame = encode(&Frame::Entry {
            sender: inner.me,
            seq,
            env: codec::encode(&env).into(),
        });
        // Peers first, then this node's own delivery: both in number order (the lock).
        inner.transport.publish_frame(&frame);
        let logged = Logged {
            sender: inner.me,
            seq,
            env,
        };
        if inner.to_log.send(logged).is_err() {
            inner.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn position(&self) -> String {
        self.0.position.lock().format()
    }

    async fn replay(
        &self,
        nsp: &str,
        rec: &SessionRecord,
        offset: Option<&str>,
        attach: Attach,
    ) -> Result<(), NotRecovered> {
        // Messages the client got on its old node may still be on their way here: wait
        // for them a moment rather than deliver them twice.
        if let Some(from) = offset.or(rec.offset.as_deref()).and_then(Offset::parse) {
            let until = tokio::time::Instant::now() + CATCH_UP;
            while self.0.position.lock().lacks(&from) && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.0.replays.run(nsp, rec, offset, attach).await
    }

    fn is_up(&self) -> bool {
        self.0.transport.mesh().is_joined()
    }

    fn undelivered(&self) -> u64 {
        self.0.lost.load(Ordering::Relaxed)
    }

    fn housekeeping(&self) {
        self.0.sessions.lock().sweep();
    }
}

/// How long a node that starts waits to join and copy a peer's log before it serves
/// from an empty one (meanwhile it holds what it receives).
pub const SYNC_WITHIN: Duration = Duration::from_secs(10);

/// Copies a peer's log and sessions once this node joined (see [`Ctl::Install`]).
async fn sync(inner: Weak<Inner>) {
    let deadline = tokio::time::Instant::now() + SYNC_WITHIN;
    let mut copy = None;
    'ask: while tokio::time::Instant::now() < deadline {
        let Some(i) = inner.upgrade() else { return };
        if !i.transport.mesh().is_joined() {
            drop(i);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for (peer, _) in i.transport.live_peers() {
            let (req, rx) = i.request();
            let ask = Frame::SyncAsk {
                req,
                from: i.node.clone(),
            };
            i.transport.send_frame(&peer, encode(&ask));
            match tokio::time::timeout(ACK_TIMEOUT, rx).await {
                Ok(Ok(Answer::Synced(log))) => {
                    tracing::info!(peer, "mesh recovery: copied the log and sessions of a peer");
                    copy = Some(log);
                    break 'ask;
                }
                _ => i.forget(req),
            }
        }
        break;
    }
    if let Some(i) = inner.upgrade() {
        let _ = i.ctl.send(Ctl::Install(copy));
        i.synced.send_replace(true);
    }
}
