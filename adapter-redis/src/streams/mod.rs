//! Streams mode: broadcasts go through a Redis stream, which is also the packet log of
//! connection state recovery, and sessions live in keys. The formats are those of
//! `@socket.io/redis-streams-adapter` 0.3 (stream entries `uid`, `nsp`, `type`, `data`;
//! offsets are stream ids; sessions are `sio:session:<pid>` = base64(msgpack(session))),
//! so sessions move between its Node servers and Skein nodes.
//!
//! Where Skein differs, for crash safety and order:
//! - a session is written when it changes and refreshed every [`KEEPALIVE`] while its
//!   socket is connected (with a TTL of the disconnection duration plus three
//!   keepalives), not only when the socket closes: a node killed with SIGKILL leaves
//!   every session recoverable;
//! - a broadcast is delivered, on every node including its origin, by the stream
//!   reader, after `XADD` succeeded: what a client received is always in the log, and
//!   every node delivers in stream order, so a client's last offset names everything
//!   before it;
//! - a replay runs inside the reader, between two reads: the missed packets are those up
//!   to the reader's position, and everything after is delivered live, once.
//!
//! When Redis goes away (`writer` and `reader` have the details): the reader reconnects
//! with backoff and resumes after the last entry it delivered; the writer retries, then
//! delivers broadcasts to this node's clients without logging them, so local clients
//! keep being served; those broadcasts make a *gap*, recorded in Redis when it returns,
//! and a recovery that would pass over a gap is refused instead.
//!
//! `sockets_join`, `sockets_leave` and `disconnect_sockets` go through the stream too, as
//! in the Node adapter, so they apply in order with the broadcasts on every node (Node's
//! included). Requests that wait for answers (fetch_sockets, server-side emits,
//! broadcasts with acks) still use the classic pub/sub channels, which Node
//! streams-adapter servers do not read: in a mixed cluster those calls only reach Skein
//! nodes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::Value as RValue;
use rmpv::Value as Mp;
use serde_json::{json, Value};
use skein::adapter::recovery::{gap_is_safe, targets, with_offset};
use skein::adapter::{
    AdapterError, Attach, BroadcastOptions, EventPacket, LoggedPacket, NotRecovered, Room,
    SessionRecord, SessionStore, Written,
};
use skein::Data;

use crate::msgpack;
use crate::RedisAdapterError;
use skein::adapter::cluster::message::Message;
use skein::adapter::cluster::{ClusterLog, Inbound, PeerCount, ReplayReceiver, Replays};

mod format;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use format::{decode_session, encode_session, entries};
use reader::read_loop;
pub(crate) use writer::Stats;
use writer::{write_loop, Queue, Queued, SessionCmd};

/// How often a node rewrites the sessions of its connected sockets.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
const BROADCAST: &str = "3";

/// Writes a session unless another socket instance owns it: the owner is kept beside the
/// session (`<key>#owner`, which Node servers ignore). [`TAKE_SCRIPT`] sets the owner to
/// `taken`, so the instance a reconnect left cannot write the session back for a second
/// reconnect to take; the new socket claims it (ARGV[4]), and a refused take puts it back
/// the same way. A stale instance can neither overwrite nor delete it.
const SAVE_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[2])
if ARGV[4] ~= '1' and cur and cur ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return 1
"#;
/// GETDEL, and the owner becomes `taken` for the disconnection duration (ARGV[1] ms).
const TAKE_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], 'taken', 'PX', ARGV[1])
end
return v
"#;
const DISCARD_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[2])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"#;

/// Options of streams mode.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// The stream (`streamName`).
    pub stream: String,
    /// `XADD ... MAXLEN ~ max_len`.
    pub max_len: usize,
    /// `sessionKeyPrefix`.
    pub session_prefix: String,
    /// How long a disconnected session stays recoverable.
    pub max_disconnection: Duration,
    /// The oldest entry kept (`XTRIM MINID`, every keepalive).
    pub max_age: Duration,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            stream: "socket.io".into(),
            max_len: 10_000,
            session_prefix: "sio:session:".into(),
            max_disconnection: Duration::from_secs(120),
            max_age: Duration::from_secs(180),
        }
    }
}

/// The stream, the sessions, and the tasks that read and write them.
pub(crate) struct StreamLog {
    cfg: StreamsConfig,
    uid: String,
    queue: Queue,
    /// Held while broadcasts are delivered here unlogged, so that those delivered when
    /// the writer goes down (queued earlier) reach local clients before any broadcast
    /// that `push` refused since: without it, a client saw 322, 323, then 21….
    unlogged_order: Mutex<()>,
    pub(crate) stats: Stats,
    conn: ConnectionManager,
    replays: Replays,
    position: Mutex<String>,
    /// Where what the reader reads (and what could not be logged) goes: the cluster layer.
    inbound: Inbound,
    /// How many other nodes are alive (what an unlogged broadcast misses).
    peers: PeerCount,
    /// Redis answers again after an outage: the sessions of the connected sockets are
    /// written again at once (a restarted Redis without persistence lost them).
    pub(crate) resync: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for StreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog")
            .field("stream", &self.cfg.stream)
            .finish()
    }
}

impl StreamLog {
    pub(crate) async fn start(
        url: &str,
        cfg: StreamsConfig,
        uid: String,
        inbound: Inbound,
        peers: PeerCount,
    ) -> Result<Arc<Self>, RedisAdapterError> {
        let client = redis::Client::open(url).map_err(|e| RedisAdapterError::Url(e.to_string()))?;
        let unreachable = |e: redis::RedisError| RedisAdapterError::Unreachable(e.to_string());
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(unreachable)?;
        // The reader blocks in XREAD: it gets a connection of its own.
        let mut reader = reader::connect(&client).await.map_err(unreachable)?;
        let last: RValue = redis::cmd("XREVRANGE")
            .arg(&cfg.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut reader)
            .await
            .map_err(unreachable)?;
        let start = entries(&last)
            .first()
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| "0-0".into());
        let (replays, rrx) = Replays::channel();
        let log = Arc::new(StreamLog {
            cfg,
            uid,
            queue: Queue::new(),
            unlogged_order: Mutex::new(()),
            stats: Stats::default(),
            conn: conn.clone(),
            replays,
            position: Mutex::new(start.clone()),
            inbound,
            peers,
            resync: Arc::default(),
        });
        tokio::spawn(write_loop(Arc::downgrade(&log), conn));
        tokio::spawn(read_loop(client, reader, Arc::downgrade(&log), rrx, start));
        Ok(log)
    }

    /// The sorted set of the gaps: spans of broadcasts that a node could not log.
    fn gaps_key(&self) -> String {
        format!("{}#gaps", self.cfg.stream)
    }

    /// Logs a broadcast; every node (this one too) delivers it from the stream.
    fn append_broadcast(&self, nsp: &str, packet: &EventPacket, opts: &BroadcastOptions) {
        let rooms = |r: &[Room]| r.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut flags = serde_json::Map::new();
        if opts.flags.volatile {
            flags.insert("volatile".into(), Value::Bool(true));
        }
        let opts_v =
            json!({ "rooms": rooms(&opts.rooms), "except": rooms(&opts.except), "flags": flags });
        let data = if packet.data.binary.is_empty() {
            let mut arr = vec![Value::String(packet.event.clone())];
            arr.extend(packet.data.args.iter().cloned());
            json!({ "opts": opts_v, "packet": { "type": 2, "data": arr, "nsp": nsp } }).to_string()
        } else {
            let mp = Mp::Map(vec![
                (Mp::from("opts"), msgpack::to_mp(&opts_v, &[])),
                (
                    Mp::from("packet"),
                    Mp::Map(vec![
                        (Mp::from("type"), Mp::from(2)),
                        (
                            Mp::from("data"),
                            msgpack::event_to_mp(&packet.event, &packet.data),
                        ),
                        (Mp::from("nsp"), Mp::from(nsp)),
                    ]),
                ),
            ]);
            base64::engine::general_purpose::STANDARD.encode(msgpack::encode(&mp))
        };
        self.xadd(nsp, BROADCAST, data);
    }

    /// Queues an entry in the Node adapter's format; one that cannot be logged now is
    /// delivered here only (see [`writer`]).
    fn xadd(&self, nsp: &str, kind: &'static str, data: String) {
        let q = Queued {
            seq: self.queue.next_seq(),
            nsp: nsp.to_owned(),
            kind,
            data,
        };
        if let Err(q) = self.queue.push(q) {
            let _order = self.unlogged_order.lock();
            self.deliver_unlogged(vec![q]);
        }
    }

    /// `XADD`, trimming the stream to `max_len`. `seq` (ignored by Node servers) lets
    /// readers drop an entry written twice by a retry.
    fn xadd_cmd(&self, q: &Queued) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.cfg.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.cfg.max_len)
            .arg("*")
            .arg("uid")
            .arg(&self.uid)
            .arg("nsp")
            .arg(&q.nsp)
            .arg("type")
            .arg(q.kind)
            .arg("data")
            .arg(&q.data)
            .arg("seq")
            .arg(q.seq);
        cmd
    }

    /// Drops the entries, and the gaps, older than `max_age`.
    pub(crate) fn trim_by_age(&self) {
        let min =
            skein::adapter::recovery::now_ms().saturating_sub(self.cfg.max_age.as_millis() as u64);
        let mut trim = redis::cmd("XTRIM");
        trim.arg(&self.cfg.stream)
            .arg("MINID")
            .arg("~")
            .arg(format!("{min}-0"));
        let mut gaps = redis::cmd("ZREMRANGEBYSCORE");
        gaps.arg(self.gaps_key()).arg("-inf").arg(min);
        self.queue.housekeeping(vec![trim, gaps]);
    }

    /// Logs SOCKETS_JOIN (4), SOCKETS_LEAVE (5) or DISCONNECT_SOCKETS (6), as the Node
    /// streams adapter does: the other nodes apply it from the stream, in order with the
    /// broadcasts. The origin has applied it to its own sockets already.
    fn append_control(
        &self,
        nsp: &str,
        kind: &'static str,
        opts: &BroadcastOptions,
        mut data: Value,
    ) {
        let rooms = |r: &[Room]| r.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        data["opts"] =
            json!({ "rooms": rooms(&opts.rooms), "except": rooms(&opts.except), "flags": {} });
        self.xadd(nsp, kind, data.to_string());
    }

    fn position_now(&self) -> String {
        self.position.lock().clone()
    }

    /// A session write; `claim` skips the owner check (see [`SAVE_SCRIPT`]). Returns
    /// what the socket waits for: the write, unless the writer is down (it would not be
    /// confirmed soon, and local clients must keep being served).
    fn write(&self, rec: &SessionRecord, claim: bool) -> Written {
        let ttl = if rec.connected {
            self.cfg.max_disconnection + KEEPALIVE * 3
        } else {
            self.cfg.max_disconnection
        };
        let key = self.key(&rec.pid);
        // A record put back after a refused take keeps the node of its socket.
        let rec = SessionRecord {
            node: rec.node.clone().or_else(|| Some(self.uid.clone())),
            ..rec.clone()
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SAVE_SCRIPT)
            .arg(2)
            .arg(&key)
            .arg(format!("{key}#owner"))
            .arg(encode_session(&rec))
            .arg(ttl.as_millis() as u64)
            .arg(rec.owner.as_deref().unwrap_or(""))
            .arg(if claim { "1" } else { "0" });
        let seq = self.queue.session(
            &rec.pid,
            SessionCmd {
                owner: rec.owner.clone().unwrap_or_default(),
                claim,
                discard: false,
                cmd,
            },
        );
        if self.queue.is_down() {
            return None;
        }
        let mut durable = self.queue.subscribe_durable();
        Some(Box::pin(async move {
            let _ = durable.wait_for(|d| *d >= seq).await;
        }))
    }

    fn key(&self, pid: &str) -> String {
        format!("{}{}", self.cfg.session_prefix, pid)
    }
}

#[async_trait::async_trait]
impl SessionStore for StreamLog {
    fn save(&self, rec: &SessionRecord) -> Written {
        self.write(rec, false)
    }

    fn claim(&self, rec: &SessionRecord) -> Written {
        self.write(rec, true)
    }

    fn discard(&self, rec: &SessionRecord) {
        let key = self.key(&rec.pid);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(DISCARD_SCRIPT)
            .arg(2)
            .arg(&key)
            .arg(format!("{key}#owner"))
            .arg(rec.owner.as_deref().unwrap_or(""));
        self.queue.session(
            &rec.pid,
            SessionCmd {
                owner: rec.owner.clone().unwrap_or_default(),
                claim: false,
                discard: true,
                cmd,
            },
        );
    }

    async fn take(&self, pid: &str) -> Result<Option<SessionRecord>, AdapterError> {
        let mut conn = self.conn.clone();
        let key = self.key(pid);
        let raw: Option<String> = redis::cmd("EVAL")
            .arg(TAKE_SCRIPT)
            .arg(2)
            .arg(&key)
            .arg(format!("{key}#owner"))
            .arg(self.cfg.max_disconnection.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))?;
        Ok(raw.as_deref().and_then(decode_session))
    }
}

#[async_trait::async_trait]
impl ClusterLog for StreamLog {
    fn append(&self, nsp: &str, msg: &Message) {
        match msg {
            Message::Broadcast { packet, opts } => self.append_broadcast(nsp, packet, opts),
            Message::SocketsJoin { opts, rooms, .. } => {
                self.append_control(nsp, "4", opts, json!({ "rooms": rooms }))
            }
            Message::SocketsLeave { opts, rooms, .. } => {
                self.append_control(nsp, "5", opts, json!({ "rooms": rooms }))
            }
            Message::DisconnectSockets { opts, close, .. } => {
                self.append_control(nsp, "6", opts, json!({ "close": close }))
            }
            other => tracing::debug!(?other, "not a message the stream carries"),
        }
    }

    fn position(&self) -> String {
        self.position_now()
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
        use std::sync::atomic::Ordering::Acquire;
        !self.stats.writer_down.load(Acquire) && !self.stats.reader_down.load(Acquire)
    }

    fn undelivered(&self) -> u64 {
        self.stats.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn housekeeping(&self) {
        self.trim_by_age();
    }

    async fn resync(&self) {
        self.resync.notified().await
    }
}
