//! JetStream for connection state recovery: a stream is the packet log and the path of
//! broadcasts and socket management, a key-value bucket holds the sessions.
//!
//! **The log.** Stream `<prefix>_log` (dots of the prefix become `_`), one subject
//! `<prefix>.log`, trimmed to `recovery_log_max_len` messages and `recovery_log_max_age`,
//! with `nats_replicas` replicas. A logged message (a broadcast, sockets join/leave,
//! disconnect) is published with its node's id and a sequence number in headers, and
//! delivered on every node, the sender included, by that node's reader (an ordered
//! consumer) in stream order; the offset a client echoes is the stream sequence, so a
//! client's last offset covers everything before it.
//!
//! **When JetStream does not acknowledge in time.** A message not acknowledged within
//! [`ACK_GRACE`] (NATS away, a stream without quorum) is delivered to this node's
//! clients without an offset ([`Delivery::Unlogged`]), counted once per live peer, and
//! opens a *gap*. When a publish is acknowledged again, a gap marker (its start and end
//! time) is written to the stream; a recovery whose replay range holds a marker (or that
//! meets this node's gap not written yet) is refused rather than missing packets,
//! unless the gap ended long enough before the client left to have reached it. If the
//! late message was stored after all, the reader drops it (its sequence number was
//! delivered unlogged).
//!
//! **Replay** runs inside the reader, between two messages: what a session missed is
//! read up to the reader's position, and everything after it is delivered live, once.
//! Messages trimmed after the client's offset refuse the recovery unless they predate
//! its disconnect by the delivery margin.
//!
//! **Sessions.** Bucket `<prefix>_sessions`, one key per session (its pid, base64url),
//! with a TTL of the disconnection duration plus three keepalives (a bucket-wide age: a
//! disconnected session may read up to 30 s longer, and the recovery checks its own
//! expiry). The value carries the socket instance that owns the session: a save is a
//! revision-checked update that a stale instance cannot make, a take replaces the
//! session with a `taken` mark in one revision-checked update (of two takers, one
//! wins), and the new socket's claim writes it back. Writes apply in call order, on one
//! task.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::header::HeaderMap;
use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use skein::adapter::cluster::message::{Envelope, Message};
use skein::adapter::cluster::{
    codec, ClusterLog, Delivery, Inbound, PeerCount, ReplayReceiver, Replays, KEEPALIVE,
};
use skein::adapter::recovery::{gap_is_safe, now_ms, targets, with_offset};
use skein::adapter::{
    AdapterError, Attach, EventPacket, LoggedPacket, NotRecovered, SessionRecord, SessionStore,
    Written,
};
use tokio::sync::{mpsc, oneshot};

use crate::connection::Conn;
use crate::subjects::token;
use crate::NatsAdapterError;

/// How long a logged message may wait for JetStream's acknowledgement before it is
/// delivered here unlogged.
pub const ACK_GRACE: Duration = Duration::from_secs(1);
/// Messages waiting for the writer; beyond, they are delivered unlogged at once.
const QUEUE: usize = 65_536;
const H_UID: &str = "skein-uid";
const H_SEQ: &str = "skein-seq";

/// Options of the JetStream log and bucket.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    pub max_len: usize,
    pub max_age: Duration,
    pub max_disconnection: Duration,
    pub replicas: usize,
}

/// A gap marker: broadcasts of `uid` between `start` and `end` (unix ms) were delivered
/// unlogged.
#[derive(Debug, Serialize, Deserialize)]
struct Gap {
    uid: String,
    start: u64,
    end: u64,
}

/// A stored session and the socket instance that owns it (`taken`: a reconnect took it
/// and its new socket has not claimed it yet).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    owner: String,
    session: Option<SessionRecord>,
}

struct Pending {
    seq: u64,
    env: Envelope,
    payload: Bytes,
}

enum SessionOp {
    Save {
        rec: SessionRecord,
        claim: bool,
        done: oneshot::Sender<()>,
    },
    Discard(SessionRecord),
}

/// The log, the sessions, and the tasks that read and write them.
pub struct JetStreamLog {
    conn: Conn,
    js: jetstream::Context,
    uid: String,
    log_subject: String,
    gap_subject: String,
    stream: String,
    inbound: Inbound,
    peers: PeerCount,
    kv: kv::Store,
    next_seq: AtomicU64,
    queue: mpsc::Sender<Pending>,
    replays: Replays,
    sessions: mpsc::UnboundedSender<SessionOp>,
    /// The last stream sequence delivered here.
    position: AtomicU64,
    /// This node's messages delivered unlogged: the reader drops them if they were
    /// stored after all.
    unlogged: Mutex<HashSet<u64>>,
    /// This node's gap not written to the stream yet: (start, end) unix ms.
    open_gap: Mutex<Option<(u64, u64)>>,
    writer_down: AtomicBool,
    reader_down: AtomicBool,
    lost: AtomicU64,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("stream", &self.stream)
            .finish()
    }
}

fn js_error(e: impl std::fmt::Display) -> NatsAdapterError {
    NatsAdapterError::JetStream(e.to_string())
}

fn name_of(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl JetStreamLog {
    /// Creates (or updates) the stream and the bucket and starts the reader, the writer
    /// and the session writer.
    pub async fn start(
        conn: Conn,
        prefix: &str,
        cfg: JetStreamConfig,
        uid: String,
        inbound: Inbound,
        peers: PeerCount,
    ) -> Result<Arc<Self>, NatsAdapterError> {
        let mut js = jetstream::new(conn.client.clone());
        js.set_timeout(Duration::from_secs(3));
        let base = name_of(prefix);
        let stream_name = format!("{base}_log");
        let log_subject = format!("{prefix}.log");
        let gap_subject = format!("{prefix}.gap");
        let scfg = stream::Config {
            name: stream_name.clone(),
            subjects: vec![log_subject.clone(), gap_subject.clone()],
            max_messages: cfg.max_len as i64,
            max_age: cfg.max_age,
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        // Limits follow the configuration of the node that started last.
        let mut stream = match js.get_stream(&stream_name).await {
            Ok(s) => {
                js.update_stream(&scfg).await.map_err(js_error)?;
                s
            }
            Err(_) => js.create_stream(scfg).await.map_err(js_error)?,
        };
        let start = stream.info().await.map_err(js_error)?.state.last_sequence;
        let kv = bucket(&js, &format!("{base}_sessions"), &cfg).await?;
        let (queue, qrx) = mpsc::channel(QUEUE);
        let (replays, rrx) = Replays::channel();
        let (sessions, srx) = mpsc::unbounded_channel();
        let log = Arc::new(JetStreamLog {
            conn,
            js: js.clone(),
            uid,
            log_subject,
            gap_subject,
            stream: stream_name,
            inbound,
            peers,
            kv,
            next_seq: AtomicU64::new(1),
            queue,
            replays,
            sessions,
            position: AtomicU64::new(start),
            unlogged: Mutex::default(),
            open_gap: Mutex::default(),
            writer_down: AtomicBool::new(false),
            reader_down: AtomicBool::new(false),
            lost: AtomicU64::new(0),
        });
        let (acks, arx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(Arc::downgrade(&log), qrx, acks));
        tokio::spawn(ack_loop(Arc::downgrade(&log), arx));
        tokio::spawn(read_loop(Arc::downgrade(&log), stream, rrx));
        tokio::spawn(session_loop(Arc::downgrade(&log), srx));
        Ok(log)
    }

    /// Delivers a message of this node to its own clients only, and opens a gap.
    fn deliver_unlogged(&self, p: Pending) {
        self.unlogged.lock().insert(p.seq);
        self.lost
            .fetch_add((self.peers)() as u64, Ordering::Relaxed);
        let now = now_ms();
        {
            let mut gap = self.open_gap.lock();
            let start = gap.map_or(now, |(s, _)| s);
            *gap = Some((start, now));
        }
        if !self.writer_down.swap(true, Ordering::AcqRel) {
            tracing::warn!("JetStream does not acknowledge: broadcasts reach this node's clients only, unlogged");
        }
        (self.inbound)(p.env, Delivery::Unlogged);
    }

    /// An acknowledged publish: JetStream is back; the open gap is written.
    async fn acknowledged(&self) {
        if self.writer_down.swap(false, Ordering::AcqRel) {
            tracing::info!("JetStream acknowledges again");
        }
        let gap = *self.open_gap.lock();
        if let Some((start, end)) = gap {
            let marker = Gap {
                uid: self.uid.clone(),
                start,
                end,
            };
            let body = serde_json::to_vec(&marker).unwrap_or_default();
            let stored = match self.js.publish(self.gap_subject.clone(), body.into()).await {
                Ok(ack) => tokio::time::timeout(ACK_GRACE, ack)
                    .await
                    .is_ok_and(|a| a.is_ok()),
                Err(_) => false,
            };
            if stored {
                let mut g = self.open_gap.lock();
                // A later outage may have widened it meanwhile: keep that part open.
                if g.is_some_and(|(_, e)| e == end) {
                    *g = None;
                }
            }
        }
    }

    async fn replay_now(
        &self,
        stream: &stream::Stream,
        nsp: &str,
        rec: &SessionRecord,
        offset: Option<&str>,
    ) -> Result<Vec<LoggedPacket>, NotRecovered> {
        let from: u64 = offset
            .or(rec.offset.as_deref())
            .and_then(|o| o.parse().ok())
            .ok_or(NotRecovered::BadOffset)?;
        let last = self.position.load(Ordering::Acquire);
        if from > last {
            return Err(NotRecovered::BadOffset);
        }
        if let Some((_, end)) = *self.open_gap.lock() {
            if !gap_is_safe(end, rec) {
                return Err(NotRecovered::LogGap);
            }
        }
        if from == last {
            return Ok(vec![]);
        }
        let backend = |e: String| NotRecovered::Backend(AdapterError::Unavailable(e));
        let info = stream
            .get_info()
            .await
            .map_err(|e| backend(e.to_string()))?;
        if from + 1 < info.state.first_sequence {
            // Trimmed messages after the offset are older than the first one left.
            let first_ms = (info.state.first_timestamp.unix_timestamp_nanos() / 1_000_000) as u64;
            if !gap_is_safe(first_ms, rec) {
                return Err(NotRecovered::LogGap);
            }
        }
        let mut rooms = rec.rooms.clone();
        rooms.push(rec.sid.clone());
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| backend(e.to_string()))?;
        let mut msgs = consumer
            .messages()
            .await
            .map_err(|e| backend(e.to_string()))?;
        let mut missed = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = match tokio::time::timeout_at(deadline, msgs.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(backend(e.to_string())),
                Ok(None) | Err(_) => return Err(backend("replay: the log did not answer".into())),
            };
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
            if seq > last {
                break;
            }
            if *m.subject == *self.gap_subject {
                if let Ok(g) = serde_json::from_slice::<Gap>(&m.payload) {
                    if !gap_is_safe(g.end, rec) {
                        return Err(NotRecovered::LogGap);
                    }
                }
            } else if let Ok(env) = codec::decode(&m.payload) {
                if let Message::Broadcast { packet, opts } = env.msg {
                    if *env.nsp == *nsp
                        && !opts.flags.volatile
                        && targets(&rooms, &opts.rooms, &opts.except)
                    {
                        let offset = seq.to_string();
                        missed.push(LoggedPacket {
                            packet: EventPacket {
                                data: with_offset(packet.data, &offset),
                                ..packet
                            },
                            offset,
                        });
                    }
                }
            }
            if seq >= last {
                break;
            }
        }
        Ok(missed)
    }

    fn write(&self, rec: &SessionRecord, claim: bool) -> Written {
        let (done, rx) = oneshot::channel();
        let rec = SessionRecord {
            node: rec.node.clone().or_else(|| Some(self.uid.clone())),
            ..rec.clone()
        };
        let _ = self.sessions.send(SessionOp::Save { rec, claim, done });
        if !self.conn.is_up() {
            return None;
        }
        Some(Box::pin(async move {
            let _ = rx.await;
        }))
    }
}

/// The bucket of sessions; created as a stream directly when the client's helper is
/// refused (it may ask for settings an older server lacks).
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    cfg: &JetStreamConfig,
) -> Result<kv::Store, NatsAdapterError> {
    let max_age = cfg.max_disconnection + KEEPALIVE * 3;
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let helper = js
        .create_key_value(kv::Config {
            bucket: name.to_owned(),
            history: 1,
            max_age,
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match helper {
        Ok(store) => Ok(store),
        Err(e) => {
            tracing::info!(error = %e, "creating the session bucket's stream directly");
            js.create_stream(stream::Config {
                name: format!("KV_{name}"),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_age,
                num_replicas: cfg.replicas,
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(js_error)?;
            js.get_key_value(name).await.map_err(js_error)
        }
    }
}

/// Publishes in order; acknowledgements are awaited by [`ack_loop`], in the same order.
async fn write_loop(
    log: Weak<JetStreamLog>,
    mut rx: mpsc::Receiver<Pending>,
    acks: mpsc::Sender<(
        tokio::time::Instant,
        jetstream::context::PublishAckFuture,
        Pending,
    )>,
) {
    while let Some(p) = rx.recv().await {
        let Some(l) = log.upgrade() else { return };
        if !l.conn.is_up() {
            l.deliver_unlogged(p);
            continue;
        }
        let mut headers = HeaderMap::new();
        headers.insert(H_UID, l.uid.as_str());
        headers.insert(H_SEQ, p.seq.to_string().as_str());
        let sent = tokio::time::Instant::now();
        let publish =
            l.js.publish_with_headers(l.log_subject.clone(), headers, p.payload.clone());
        match tokio::time::timeout(ACK_GRACE, publish).await {
            Ok(Ok(ack)) => {
                if let Err(mpsc::error::SendError((_, _, p))) = acks.send((sent, ack, p)).await {
                    l.deliver_unlogged(p);
                }
            }
            _ => l.deliver_unlogged(p),
        }
    }
}

async fn ack_loop(
    log: Weak<JetStreamLog>,
    mut rx: mpsc::Receiver<(
        tokio::time::Instant,
        jetstream::context::PublishAckFuture,
        Pending,
    )>,
) {
    while let Some((sent, ack, p)) = rx.recv().await {
        let ok = matches!(
            tokio::time::timeout_at(sent + ACK_GRACE, ack).await,
            Ok(Ok(_))
        );
        let Some(l) = log.upgrade() else { return };
        if ok {
            l.acknowledged().await;
        } else {
            l.deliver_unlogged(p);
        }
    }
}

/// Delivers the stream in order on this node; runs replays between two messages.
async fn read_loop(log: Weak<JetStreamLog>, stream: stream::Stream, mut replays: ReplayReceiver) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(l) = log.upgrade() else { return };
        let generation = l.conn.generation();
        let from = l.position.load(Ordering::Acquire) + 1;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await;
        let msgs = match consumer {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut msgs = match msgs {
            Ok(m) => {
                if l.reader_down.swap(false, Ordering::AcqRel) {
                    tracing::info!(from, "JetStream log: reading resumed");
                }
                backoff = Duration::from_millis(100);
                m
            }
            Err(e) => {
                if !l.reader_down.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %e, "JetStream log: cannot read, retrying");
                }
                drop(l);
                // Replays wait for the reader; they fail rather than hang.
                while let Ok(r) = replays.try_recv() {
                    r.refuse("the log cannot be read now");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        drop(l);
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                biased;
                _ = check.tick() => {
                    // A new connection: the consumer may have gone with the old server
                    // (a restarted one, or another of the cluster); read on from where
                    // this node is with a new one.
                    let Some(l) = log.upgrade() else { return };
                    if l.conn.generation() != generation {
                        break;
                    }
                }
                r = replays.recv() => {
                    let Some(r) = r else { return };
                    let Some(l) = log.upgrade() else { return };
                    let res = l.replay_now(&stream, &r.nsp, &r.rec, r.offset.as_deref()).await;
                    r.finish(res);
                }
                m = msgs.next() => {
                    let m = match m {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "JetStream log: reader interrupted");
                            break;
                        }
                        None => break,
                    };
                    let Some(l) = log.upgrade() else { return };
                    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                    if seq <= l.position.load(Ordering::Acquire) {
                        continue;
                    }
                    if *m.subject == *l.log_subject {
                        let own_unlogged = m.headers.as_ref().is_some_and(|h| {
                            h.get(H_UID).is_some_and(|u| u.as_str() == l.uid)
                                && h.get(H_SEQ)
                                    .and_then(|s| s.as_str().parse::<u64>().ok())
                                    .is_some_and(|s| l.unlogged.lock().remove(&s))
                        });
                        if !own_unlogged {
                            match codec::decode(&m.payload) {
                                Ok(env) => (l.inbound)(env, Delivery::Log(seq.to_string())),
                                Err(e) => tracing::debug!(error = %e, "JetStream log: unreadable message"),
                            }
                        }
                    }
                    l.position.store(seq, Ordering::Release);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies session writes in call order.
async fn session_loop(log: Weak<JetStreamLog>, mut rx: mpsc::UnboundedReceiver<SessionOp>) {
    while let Some(op) = rx.recv().await {
        let Some(l) = log.upgrade() else { return };
        match op {
            SessionOp::Save { rec, claim, done } => {
                if let Err(e) = save(&l.kv, &rec, claim).await {
                    tracing::debug!(error = %e, "session not written");
                }
                let _ = done.send(());
            }
            SessionOp::Discard(rec) => {
                if let Err(e) = discard(&l.kv, &rec).await {
                    tracing::debug!(error = %e, "session not discarded");
                }
            }
        }
    }
}

/// The stored value of a key and its revision (`None`: no value, or a deleted one).
async fn read(kv: &kv::Store, key: &str) -> Result<Option<(Stored, u64)>, String> {
    let entry = kv.entry(key).await.map_err(|e| e.to_string())?;
    Ok(entry.and_then(|e| {
        (e.operation == kv::Operation::Put)
            .then(|| {
                serde_json::from_slice::<Stored>(&e.value)
                    .ok()
                    .map(|s| (s, e.revision))
            })
            .flatten()
    }))
}

/// Whether the revision moved under us (another writer was first): read again.
fn raced(e: &impl std::fmt::Display) -> bool {
    let t = e.to_string().to_lowercase();
    t.contains("wrong last") || t.contains("already exists") || t.contains("10071")
}

async fn save(kv: &kv::Store, rec: &SessionRecord, claim: bool) -> Result<(), String> {
    let key = token(&rec.pid);
    let owner = rec.owner.clone().unwrap_or_default();
    let value: Bytes = serde_json::to_vec(&Stored {
        owner: owner.clone(),
        session: Some(rec.clone()),
    })
    .map_err(|e| e.to_string())?
    .into();
    for _ in 0..5 {
        let cur = read(kv, &key).await?;
        if !claim {
            if let Some((s, _)) = &cur {
                if !s.owner.is_empty() && s.owner != owner {
                    // Another instance owns it (or a reconnect took it): not ours to write.
                    return Ok(());
                }
            }
        }
        let r = match &cur {
            Some((_, rev)) => kv
                .update(&key, value.clone(), *rev)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            None => kv
                .create(&key, value.clone())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if raced(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err("too many concurrent writers".into())
}

async fn discard(kv: &kv::Store, rec: &SessionRecord) -> Result<(), String> {
    let key = token(&rec.pid);
    let owner = rec.owner.clone().unwrap_or_default();
    if let Some((s, rev)) = read(kv, &key).await? {
        if s.owner.is_empty() || s.owner == owner {
            kv.delete_expect_revision(&key, Some(rev))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl SessionStore for JetStreamLog {
    fn save(&self, rec: &SessionRecord) -> Written {
        self.write(rec, false)
    }

    fn claim(&self, rec: &SessionRecord) -> Written {
        self.write(rec, true)
    }

    fn discard(&self, rec: &SessionRecord) {
        let _ = self.sessions.send(SessionOp::Discard(rec.clone()));
    }

    async fn take(&self, pid: &str) -> Result<Option<SessionRecord>, AdapterError> {
        let key = token(pid);
        let taken: Bytes = serde_json::to_vec(&Stored {
            owner: "taken".into(),
            session: None,
        })
        .unwrap_or_default()
        .into();
        for _ in 0..5 {
            let cur = read(&self.kv, &key)
                .await
                .map_err(AdapterError::Unavailable)?;
            let Some((
                Stored {
                    session: Some(rec), ..
                },
                rev,
            )) = cur
            else {
                return Ok(None);
            };
            match self.kv.update(&key, taken.clone(), rev).await {
                Ok(_) => return Ok(Some(rec)),
                Err(e) if raced(&e) => continue,
                Err(e) => return Err(AdapterError::Unavailable(e.to_string())),
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl ClusterLog for JetStreamLog {
    fn append(&self, nsp: &str, msg: &Message) {
        let env = Envelope {
            from: self.uid.as_str().into(),
            nsp: nsp.into(),
            msg: msg.clone(),
        };
        let p = Pending {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            payload: codec::encode(&env).into(),
            env,
        };
        if let Err(mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p)) =
            self.queue.try_send(p)
        {
            self.deliver_unlogged(p);
        }
    }

    fn position(&self) -> String {
        self.position.load(Ordering::Acquire).to_string()
    }

    async fn replay(
        &self,
        nsp: &str,
        rec: &SessionRecord,
        offset: Option<&str>,
        attach: Attach,
    ) -> Result<(), NotRecovered> {
        self.replays.run(nsp, rec, offset, attach).await
    }

    fn is_up(&self) -> bool {
        !self.writer_down.load(Ordering::Acquire) && !self.reader_down.load(Ordering::Acquire)
    }

    fn undelivered(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    async fn resync(&self) {
        self.conn.reconnected.notified().await
    }
}
