//! Connection state recovery: the session store and the in-memory packet log.
//!
//! A session (`{sid, pid, rooms, data}`) is written when it changes — on connect, join,
//! leave and `set_data` — not only when the socket closes, as the reference does; a node
//! that dies therefore loses no session. Recoverable packets (events without an ack that
//! are not volatile, including `socket.emit`) are logged *before* they are delivered,
//! and each carries its log offset as its last argument, which the client echoes back
//! when it reconnects with `{pid, offset}`.
//!
//! The store sits behind [`SessionStore`]. The in-memory one here serves a single node;
//! a cluster backend brings its own (the Redis Streams adapter keeps sessions in keys and
//! the log in a stream). Replay ordering is the adapter's job ([`super::Adapter::replay`]):
//! it must register the socket at a point where no packet logged after the ones it
//! replays can be delivered first, so nothing is lost or delivered twice.
//!
//! What the log covers: entries are dropped beyond `log_max_len` or `log_max_age`. A
//! client whose offset fell out of the log still recovers when every dropped entry after
//! its offset was logged at least [`DELIVERY_MARGIN`] before it disconnected (it had
//! them already: this is what makes quiet long-lived connections recover, socket.io#5282).
//! Otherwise it gets a new session, and the reason is logged.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AdapterError, BroadcastOptions, EventPacket, Room, SessionTable};
use crate::socketio::Data;

/// How long a logged packet may take to reach a connected client. Dropped log entries
/// logged this long before a disconnect are taken as delivered.
pub const DELIVERY_MARGIN: Duration = Duration::from_secs(5);

/// How long a socket that still looks connected has to answer a ping when a client
/// presents its session (see [`crate::engineio::Session::probe`]).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Options of connection state recovery (`connectionStateRecovery` in the reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a disconnected session stays recoverable (reference default: 2 min).
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the connect middlewares (reference default).
    pub skip_middlewares: bool,
    /// The most packets the log keeps (per namespace in memory; per stream in Redis).
    pub log_max_len: usize,
    /// The oldest packet the log keeps.
    pub log_max_age: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(120),
            skip_middlewares: true,
            log_max_len: 10_000,
            log_max_age: Duration::from_secs(180),
        }
    }
}

/// A stored session. The first four fields are those of the reference (and of
/// `@socket.io/redis-streams-adapter`, which stores them as msgpack); the others are
/// Skein's and optional, so sessions written by Node servers still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sid: String,
    pub pid: String,
    pub rooms: Vec<String>,
    #[serde(default)]
    pub data: Value,
    /// The namespace (a pid presented to another namespace does not recover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp: Option<String>,
    /// The log position when the socket connected: a client that received nothing
    /// presents no offset and gets everything after it (socket.io#5538).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
    /// Unix ms: when the socket disconnected, or when it was last known connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<u64>,
    /// The socket instance that wrote it; a stale instance cannot overwrite a session
    /// that another instance has since restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether the socket was connected when this was written.
    #[serde(default)]
    pub connected: bool,
    /// The node that wrote it (cluster stores), to ask whether the socket is still alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A packet from the log, to replay: its offset, and the packet with that offset as its
/// last argument already (as it was delivered live).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedPacket {
    pub offset: String,
    pub packet: EventPacket,
}

/// The arguments of a logged event: its own, then its offset (what the client echoes).
pub fn with_offset(mut data: Data, offset: &str) -> Data {
    data.args.push(Value::String(offset.to_owned()));
    data
}

/// Why a session was not recovered (the client gets a new one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRecovered {
    #[error("unknown or expired session")]
    UnknownSession,
    #[error("session belongs to another namespace")]
    WrongNamespace,
    #[error("offset is not a log offset")]
    BadOffset,
    #[error("the log no longer covers the offset")]
    LogGap,
    #[error("the session is in use by a connected socket")]
    InUse,
    #[error("the client disconnected during recovery")]
    Gone,
    #[error("recovery is not supported by this adapter")]
    Unsupported,
    #[error(transparent)]
    Backend(#[from] AdapterError),
}

/// Registers the recovered socket and sends it the packets it missed. Called by
/// [`super::Adapter::replay`] at the one point where that loses and repeats nothing.
pub type Attach = Box<dyn FnOnce(Vec<LoggedPacket>) + Send>;

/// A session write on its way to the store: resolves once it is durable. `None`: it is
/// already (an in-memory store), or the store cannot tell now (it is down).
pub type Written = Option<futures_util::future::BoxFuture<'static, ()>>;

/// Where sessions are kept.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Writes a session (replacing it). Writes of one session apply in call order. The
    /// socket's packets wait for the returned write (see `socketio::gate`).
    fn save(&self, rec: &SessionRecord) -> Written;
    /// Writes a session whatever instance wrote it last: its restored socket becomes the
    /// owner, or a session taken but not restored is put back. Until then, a taken
    /// session refuses [`SessionStore::save`]s, so the instance it left cannot write it
    /// back for a second reconnect to take.
    fn claim(&self, rec: &SessionRecord) -> Written {
        self.save(rec)
    }
    /// Forgets a session (a disconnect that is not recoverable), unless another socket
    /// instance owns it by now.
    fn discard(&self, rec: &SessionRecord);
    /// Takes a session out of the store: of two callers with one pid, one gets it.
    async fn take(&self, pid: &str) -> Result<Option<SessionRecord>, AdapterError>;
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a socket with `rooms` (its own id among them) gets a packet sent with `opts`.
pub fn targets(rooms: &[String], target: &[Room], except: &[Room]) -> bool {
    let is_in = |list: &[Room]| list.iter().any(|r| rooms.iter().any(|x| **r == **x));
    (target.is_empty() || is_in(target)) && !is_in(except)
}

/// Whether dropped log entries up to one logged at `dropped_ms` cost the session
/// nothing: they were logged long enough before it disconnected to have been delivered.
pub fn gap_is_safe(dropped_ms: u64, rec: &SessionRecord) -> bool {
    // `seen` is the disconnect, or for a session whose node died (written connected and
    // never closed) the last write or keepalive before the death.
    dropped_ms + (DELIVERY_MARGIN.as_millis() as u64) <= rec.seen.unwrap_or(0)
}

struct Entry {
    offset: u64,
    at_ms: u64,
    packet: EventPacket,
    rooms: Vec<Room>,
    except: Vec<Room>,
}

struct MemInner {
    next: u64,
    log: VecDeque<Entry>,
    /// The last entry dropped from the log: (offset, unix ms).
    dropped: Option<(u64, u64)>,
    sessions: SessionTable,
    last_sweep_ms: u64,
}

/// One namespace's log and sessions, in this process.
pub struct MemoryRecovery {
    cfg: RecoveryConfig,
    inner: Mutex<MemInner>,
}

impl std::fmt::Debug for MemoryRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRecovery")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// The log, locked: appending and delivering happen under it, and so does a replay, so
/// a recovering socket sees each packet once.
pub struct LogGuard<'a>(parking_lot::MutexGuard<'a, MemInner>, &'a RecoveryConfig);

impl LogGuard<'_> {
    /// Logs a packet, with its offset as its last argument, and returns the offset; the
    /// logged packet (to deliver) is [`LogGuard::last`].
    pub fn append(&mut self, packet: &EventPacket, opts: &BroadcastOptions) -> String {
        let now = now_ms();
        let inner = &mut *self.0;
        inner.next += 1;
        let offset = inner.next;
        let text = offset.to_string();
        inner.log.push_back(Entry {
            offset,
            at_ms: now,
            packet: EventPacket {
                event: packet.event.clone(),
                data: with_offset(packet.data.clone(), &text),
            },
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
        });
        let max_age = self.1.log_max_age.as_millis() as u64;
        // The entry just logged always stays: it is about to be delivered.
        while let Some(front) = inner.log.front().filter(|_| inner.log.len() > 1) {
            if inner.log.len() <= self.1.log_max_len && front.at_ms + max_age >= now {
                break;
            }
            inner.dropped = Some((front.offset, front.at_ms));
            inner.log.pop_front();
        }
        text
    }

    /// The packet logged last, its offset appended.
    pub fn last(&self) -> Option<&EventPacket> {
        self.0.log.back().map(|e| &e.packet)
    }
}

impl MemoryRecovery {
    pub fn new(cfg: RecoveryConfig) -> Self {
        // One node: a connected session is its own live socket, never stale.
        let sessions = SessionTable::new(cfg.max_disconnection_duration, false);
        MemoryRecovery {
            cfg,
            inner: Mutex::new(MemInner {
                next: 0,
                log: VecDeque::new(),
                dropped: None,
                sessions,
                last_sweep_ms: 0,
            }),
        }
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.cfg
    }

    pub fn lock(&self) -> LogGuard<'_> {
        LogGuard(self.inner.lock(), &self.cfg)
    }

    /// The offset of the last logged packet.
    pub fn position(&self) -> String {
        self.inner.lock().next.to_string()
    }

    /// Computes what a session missed after `offset` and runs `attach` with it, under
    /// the log lock.
    pub fn replay(
        &self,
        rec: &SessionRecord,
        offset: Option<&str>,
        attach: Attach,
    ) -> Result<(), NotRecovered> {
        let inner = self.inner.lock();
        let from = offset
            .or(rec.offset.as_deref())
            .unwrap_or("0")
            .parse::<u64>()
            .map_err(|_| NotRecovered::BadOffset)?;
        if from > inner.next {
            return Err(NotRecovered::BadOffset);
        }
        if let Some((dropped, at)) = inner.dropped {
            if dropped > from && !gap_is_safe(at, rec) {
                return Err(NotRecovered::LogGap);
            }
        }
        let mut rooms = rec.rooms.clone();
        rooms.push(rec.sid.clone());
        let missed = inner
            .log
            .iter()
            .filter(|e| e.offset > from && targets(&rooms, &e.rooms, &e.except))
            .map(|e| LoggedPacket {
                offset: e.offset.to_string(),
                packet: e.packet.clone(),
            })
            .collect();
        attach(missed);
        Ok(())
    }

    fn sweep(&self, inner: &mut MemInner) {
        let now = now_ms();
        if now < inner.last_sweep_ms + 10_000 {
            return;
        }
        inner.last_sweep_ms = now;
        inner.sessions.sweep();
    }
}

#[async_trait]
impl SessionStore for MemoryRecovery {
    fn save(&self, rec: &SessionRecord) -> Written {
        let mut inner = self.inner.lock();
        self.sweep(&mut inner);
        inner.sessions.save(rec);
        None
    }

    fn claim(&self, rec: &SessionRecord) -> Written {
        self.inner.lock().sessions.claim(rec);
        None
    }

    fn discard(&self, rec: &SessionRecord) {
        self.inner.lock().sessions.discard(rec);
    }

    async fn take(&self, pid: &str) -> Result<Option<SessionRecord>, AdapterError> {
        Ok(self.inner.lock().sessions.take(pid))
    }
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
