//! The stream writer: a bounded queue of entries, the latest write of each session, and
//! one task that pipelines them to Redis in order.
//!
//! What happens when Redis does not take the writes:
//! - a failed pipeline is retried for [`GRACE`] (a killed connection comes back within
//!   milliseconds, and nothing is lost); an entry that was written although its answer
//!   was lost is written twice, and readers drop the copy by its `seq` (see the reader);
//! - past the grace, the writer is *down*: the queued broadcasts, and every broadcast
//!   until Redis answers again, are delivered to this node's clients only, without an
//!   offset (local clients keep being served), and counted as not reaching the other
//!   nodes. The time span of those unlogged broadcasts is a *gap*, written to the sorted
//!   set `<stream>#gaps` as soon as Redis answers, before anything else: a recovery whose
//!   client was away during a gap is refused rather than replayed with a hole in it;
//! - the queue is bounded ([`MAX_QUEUED_BYTES`]): a broadcast that does not fit is
//!   delivered the same way. Session writes are not queued one by one: the latest write
//!   of each session replaces the previous one, so they are bounded by the sessions this
//!   node holds, and none is dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use skein::adapter::recovery::now_ms;
use tokio::sync::{watch, Notify};

use skein::adapter::cluster::message::{Envelope, Message};
use skein::adapter::cluster::Delivery;

use super::format::decode_broadcast;
use super::{StreamLog, BROADCAST};

/// Stream entries (their `data`) queued beyond which a broadcast is not logged.
pub(super) const MAX_QUEUED_BYTES: usize = 16 << 20;
/// How long a failing write is retried before the writer goes down.
pub(super) const GRACE: Duration = Duration::from_secs(1);
const BATCH: usize = 256;
/// How long one write attempt may take.
const ATTEMPT: Duration = Duration::from_millis(500);

/// An entry waiting to be written.
pub(super) struct Queued {
    /// This node's sequence number of the entry (see [`Queue::next_seq`]).
    pub seq: u64,
    pub nsp: String,
    pub kind: &'static str,
    pub data: String,
}

/// One session write: the socket instance it comes from, whether it is a claim (which
/// skips the owner check), and its command.
pub(super) struct SessionCmd {
    pub owner: String,
    pub claim: bool,
    pub discard: bool,
    pub cmd: redis::Cmd,
}

impl SessionCmd {
    fn same_kind(&self, o: &SessionCmd) -> bool {
        (self.owner.as_str(), self.claim, self.discard) == (o.owner.as_str(), o.claim, o.discard)
    }
}

/// The pending writes of one session and the sequence number of the newest. A write
/// replaces the previous one of the same kind and instance; a claim is never replaced
/// by an ordinary save (that save would be refused without it), so a few may queue.
struct SessionWrite {
    seq: u64,
    cmds: Vec<SessionCmd>,
}

/// Writes of one session kept while Redis is away, beyond which the oldest that is not a
/// claim is dropped (only alternating instances could queue that many).
const SESSION_CMDS: usize = 8;

#[derive(Default)]
struct Pending {
    entries: VecDeque<Queued>,
    bytes: usize,
    sessions: HashMap<String, SessionWrite>,
    /// Housekeeping (trims): only the latest matters.
    trim: Option<Vec<redis::Cmd>>,
    next_write: u64,
    /// Broadcasts go straight to local clients (see the module documentation).
    down: bool,
    /// Unix ms span of the unlogged broadcasts not yet recorded in Redis.
    gap: Option<(u64, u64)>,
    /// Seqs of own entries delivered here unlogged: if one reaches the stream anyway (its
    /// write succeeded but the answer was lost), the reader must not deliver it again.
    unlogged_seqs: HashSet<u64>,
}

/// Counters and state for `/metrics` and the logs.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Broadcasts delivered on this node only, because they could not be logged.
    pub unlogged: AtomicU64,
    /// Deliveries to other nodes that did not happen (one per message and node).
    pub lost: AtomicU64,
    pub writer_down: AtomicBool,
    pub reader_down: AtomicBool,
}

/// The writer's queue, shared by the callers and the write task.
pub(super) struct Queue {
    inner: Mutex<Pending>,
    /// Shared so that the write task can wait without keeping the log alive.
    wake: Arc<Notify>,
    /// The highest session write sequence number known to be in Redis.
    durable: watch::Sender<u64>,
    /// Entry sequence numbers: from the start time in µs, so that they keep growing
    /// across restarts of a node with the same id.
    seq: AtomicU64,
}

impl Queue {
    pub(super) fn new() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Queue {
            inner: Mutex::new(Pending::default()),
            wake: Arc::new(Notify::new()),
            durable: watch::channel(0).0,
            seq: AtomicU64::new(start),
        }
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues an entry; gives it back when it cannot be logged now.
    pub(super) fn push(&self, q: Queued) -> Result<(), Queued> {
        let mut p = self.inner.lock();
        if p.down || p.bytes + q.data.len() > MAX_QUEUED_BYTES {
            return Err(q);
        }
        p.bytes += q.data.len();
        p.entries.push_back(q);
        drop(p);
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a write of a session; returns its write sequence number.
    pub(super) fn session(&self, pid: &str, cmd: SessionCmd) -> u64 {
        let mut p = self.inner.lock();
        p.next_write += 1;
        let seq = p.next_write;
        let w = p
            .sessions
            .entry(pid.to_owned())
            .or_insert_with(|| SessionWrite {
                seq,
                cmds: Vec::new(),
            });
        w.seq = seq;
        match w.cmds.last_mut() {
            Some(last) if last.same_kind(&cmd) => *last = cmd,
            _ => w.cmds.push(cmd),
        }
        if w.cmds.len() > SESSION_CMDS {
            if let Some(i) = w.cmds.iter().position(|c| !c.claim) {
                w.cmds.remove(i);
            }
        }
        drop(p);
        self.wake.notify_one();
        seq
    }

    /// Whether the writer is down (a session write would not be confirmed soon).
    pub(super) fn is_down(&self) -> bool {
        self.inner.lock().down
    }

    pub(super) fn housekeeping(&self, cmds: Vec<redis::Cmd>) {
        self.inner.lock().trim = Some(cmds);
        self.wake.notify_one();
    }

    /// Follows the highest session write sequence number known to be in Redis.
    pub(super) fn subscribe_durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// The unix ms span of unlogged broadcasts not yet recorded in Redis.
    pub(super) fn open_gap(&self) -> Option<(u64, u64)> {
        self.inner.lock().gap
    }

    /// An own entry read from the stream: whether it was delivered here unlogged already.
    pub(super) fn was_delivered_unlogged(&self, seq: u64) -> bool {
        let mut p = self.inner.lock();
        if p.unlogged_seqs.is_empty() {
            return false;
        }
        // Own entries reach the stream in seq order: older unlogged ones never will now.
        let found = p.unlogged_seqs.remove(&seq);
        p.unlogged_seqs.retain(|s| *s > seq);
        found
    }

    fn take_batch(&self) -> Batch {
        let mut p = self.inner.lock();
        let n = p.entries.len().min(BATCH);
        let entries: Vec<Queued> = p.entries.drain(..n).collect();
        p.bytes -= entries.iter().map(|q| q.data.len()).sum::<usize>();
        let sessions = std::mem::take(&mut p.sessions);
        Batch {
            entries,
            durable: sessions.values().map(|w| w.seq).max(),
            sessions: sessions
                .into_values()
                .flat_map(|w| w.cmds.into_iter().map(|c| c.cmd))
                .collect(),
            trim: p.trim.take(),
        }
    }

    /// Stops logging: the queued entries are handed back, to deliver here unlogged.
    fn go_down(&self) -> Vec<Queued> {
        let mut p = self.inner.lock();
        p.down = true;
        p.bytes = 0;
        p.entries.drain(..).collect()
    }

    /// Notes entries delivered here unlogged: they make a gap.
    pub(super) fn note_unlogged(&self, seqs: impl Iterator<Item = u64>) {
        let now = now_ms();
        let mut p = self.inner.lock();
        p.unlogged_seqs.extend(seqs);
        p.gap = Some(match p.gap {
            Some((start, _)) => (start, now),
            None => (now, now),
        });
    }

    /// A pipeline went through: logging is back, and the gap it carried is recorded.
    fn up(&self, recorded: Option<(u64, u64)>) -> bool {
        let mut p = self.inner.lock();
        if let (Some((_, end)), Some((_, rec_end))) = (p.gap, recorded) {
            if end <= rec_end {
                p.gap = None;
            }
        }
        std::mem::replace(&mut p.down, false)
    }
}

#[cfg(test)]
impl Queue {
    /// The pending session writes: pid and the first argument of each command.
    pub(super) fn pending_session_args(&self) -> Vec<(String, Vec<String>)> {
        let p = self.inner.lock();
        let mut v: Vec<(String, Vec<String>)> = p
            .sessions
            .iter()
            .map(|(pid, w)| {
                let args = w
                    .cmds
                    .iter()
                    .map(|c| {
                        let packed = c.cmd.get_packed_command();
                        let text = String::from_utf8_lossy(&packed).to_string();
                        text.split("\r\n").nth(4).unwrap_or_default().to_owned()
                    })
                    .collect();
                (pid.clone(), args)
            })
            .collect();
        v.sort();
        v
    }

    pub(super) fn go_down_for_test(&self) -> Vec<Queued> {
        self.go_down()
    }
}

struct Batch {
    entries: Vec<Queued>,
    sessions: Vec<redis::Cmd>,
    durable: Option<u64>,
    trim: Option<Vec<redis::Cmd>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.sessions.is_empty() && self.trim.is_none()
    }
}

impl StreamLog {
    /// Delivers entries that could not be logged to this node's clients only, and
    /// counts them as not reaching the other nodes.
    pub(super) fn deliver_unlogged(&self, entries: Vec<Queued>) {
        if entries.is_empty() {
            return;
        }
        let peers = (self.peers)() as u64;
        self.queue.note_unlogged(entries.iter().map(|q| q.seq));
        for q in entries {
            self.stats.lost.fetch_add(peers, Ordering::Relaxed);
            // Socket management was applied here already; broadcasts are delivered now.
            if q.kind != BROADCAST {
                continue;
            }
            self.stats.unlogged.fetch_add(1, Ordering::Relaxed);
            let fields = HashMap::from([("data".to_owned(), q.data)]);
            if let Some((packet, opts)) = decode_broadcast(&fields) {
                let env = Envelope {
                    from: self.uid.as_str().into(),
                    nsp: q.nsp.as_str().into(),
                    msg: Message::Broadcast { packet, opts },
                };
                (self.inbound)(env, Delivery::Unlogged);
            }
        }
    }
}

/// Writes what is queued, in order, pipelined; see the module documentation for what
/// happens when Redis does not answer.
pub(super) async fn write_loop(log: Weak<StreamLog>, mut conn: ConnectionManager) {
    loop {
        let Some(l) = log.upgrade() else { return };
        let notify = l.queue.wake.clone();
        let wake = notify.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let mut batch = l.queue.take_batch();
        if batch.is_empty() && l.queue.open_gap().is_none() {
            drop(l);
            wake.await;
            continue;
        }
        let mut failing: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let gap = l.queue.open_gap();
            let mut pipe = redis::pipe();
            // The gap first: no entry written after it may be replayed without it.
            if let Some((start, end)) = gap {
                pipe.cmd("ZADD")
                    .arg(l.gaps_key())
                    .arg(end)
                    .arg(format!("{start}-{end}-{}", l.uid))
                    .ignore();
            }
            for q in &batch.entries {
                pipe.add_command(l.xadd_cmd(q)).ignore();
            }
            for c in batch.sessions.iter().chain(batch.trim.iter().flatten()) {
                pipe.add_command(c.clone()).ignore();
            }
            // Bounded: the connection manager may take long to give up reconnecting, and
            // a write that times out but runs later is dropped by the readers (`seq`).
            let res = tokio::time::timeout(ATTEMPT, pipe.query_async::<()>(&mut conn))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no answer in time",
                    )))
                });
            match res {
                Ok(()) => {
                    if l.queue.up(gap) {
                        tracing::info!(
                            unlogged_total = l.stats.unlogged.load(Ordering::Relaxed),
                            "redis streams: writes resumed"
                        );
                        l.resync.notify_one();
                    }
                    l.stats.writer_down.store(false, Ordering::Release);
                    if let Some(d) = batch.durable {
                        l.queue.durable.send_if_modified(|cur| {
                            let newer = d > *cur;
                            *cur = (*cur).max(d);
                            newer
                        });
                    }
                    break;
                }
                Err(e) => {
                    let since = *failing.get_or_insert_with(|| {
                        tracing::warn!(error = %e, "redis streams: write failed, retrying");
                        Instant::now()
                    });
                    if since.elapsed() >= GRACE && !l.stats.writer_down.load(Ordering::Acquire) {
                        tracing::error!(
                            error = %e,
                            "redis streams: redis does not take writes; broadcasts reach this node's clients only, unlogged, until it does"
                        );
                        l.stats.writer_down.store(true, Ordering::Release);
                        // Taken before going down: a broadcast refused from now on is
                        // delivered after these (see `StreamLog::unlogged_order`).
                        let _order = l.unlogged_order.lock();
                        let mut lost = std::mem::take(&mut batch.entries);
                        lost.extend(l.queue.go_down());
                        l.deliver_unlogged(lost);
                    }
                    // Wake at the end of the grace at the latest: that is when local
                    // clients must be served without the log.
                    let grace_left = GRACE.saturating_sub(since.elapsed());
                    let pause = if l.stats.writer_down.load(Ordering::Acquire) {
                        backoff
                    } else {
                        backoff.min(grace_left.max(Duration::from_millis(10)))
                    };
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
